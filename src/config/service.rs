//! The processing, server and observability sections.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::env::{validate_cron, Env};
use super::{
    ConfigError, DEFAULT_CLEANUP_SCHEDULE, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PROCESS_SCHEDULE,
};

/// The scheduled jobs and how a shipment is worked on: `CRON_*`, concurrency, retries,
/// claims, deadlines, the replica's name.
#[derive(Debug, Clone)]
pub struct ProcessingConfig {
    pub process_schedule: String,
    pub cleanup_schedule: String,
    /// 0 = the vendor's "never": then `retention_days` applies.
    pub cleanup_completed_days: u32,
    /// Ended shipments, their response keys with them, go after this many days when
    /// `CRON_DATA_CLEANUP_COMPLETED_DAYS` is 0 (`FIDO_CONNECTOR_RETENTION_DAYS`, 400; 0
    /// keeps them for ever).
    pub retention_days: u32,
    pub concurrency: usize,
    /// First retry delay after a transient failure (doubles per attempt up to
    /// `retry_max`); retries go on until the shipment's deadline, never a count.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a claim on a record or a job lease holds without renewal.
    pub claim_ttl: Duration,
    /// This replica's stable name (claims of its former incarnations are taken over at
    /// once after a restart) and this process's boot id.
    pub replica_name: String,
    pub boot_id: String,
    /// After registration, how long the PIN mail is retried before the shipment fails.
    pub mail_deadline: Duration,
    /// A challenge expiring within this while Yubico has not programmed the key makes a
    /// shipment "need attention" (`FIDO_CONNECTOR_ATTENTION_DAYS`).
    pub attention_window: Duration,
    /// How long one processing run may take (`FIDO_CONNECTOR_RUN_BUDGET_SECONDS`, 600):
    /// past it the run takes no new shipment and the rest stay due for the next run.
    pub run_budget: Duration,
}

impl ProcessingConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let process_schedule = env
            .get("CRON_PROCESS_SHIPMENT_SCHEDULE")
            .unwrap_or_else(|| DEFAULT_PROCESS_SCHEDULE.to_string());
        validate_cron("CRON_PROCESS_SHIPMENT_SCHEDULE", &process_schedule)?;
        let cleanup_schedule = env
            .get("CRON_DATA_CLEANUP_SCHEDULE")
            .unwrap_or_else(|| DEFAULT_CLEANUP_SCHEDULE.to_string());
        validate_cron("CRON_DATA_CLEANUP_SCHEDULE", &cleanup_schedule)?;
        let cleanup_completed_days: u32 = env.num("CRON_DATA_CLEANUP_COMPLETED_DAYS", 0)?;
        let retention_days: u32 = env.num_in("FIDO_CONNECTOR_RETENTION_DAYS", 400, 0..=3650)?;
        let concurrency: usize = env.num_in("FIDO_CONNECTOR_PROCESS_CONCURRENCY", 16, 1..=1024)?;
        if env.get("FIDO_CONNECTOR_MAX_ATTEMPTS").is_some() {
            return Err(ConfigError::new(
                "FIDO_CONNECTOR_MAX_ATTEMPTS",
                "no longer used: transient failures are retried until the shipment's deadline; \
                 remove it (see FIDO_CONNECTOR_RETRY_MAX_SECONDS and FIDO_CONNECTOR_MAIL_DEADLINE_HOURS)",
            ));
        }
        let retry_base_s: u64 = env.num_in("FIDO_CONNECTOR_RETRY_BASE_SECONDS", 30, 0..=3600)?;
        let retry_max_s: u64 = env.num_in("FIDO_CONNECTOR_RETRY_MAX_SECONDS", 900, 1..=86400)?;
        let claim_ttl_s: u64 = env.num_in("FIDO_CONNECTOR_CLAIM_TTL_SECONDS", 30, 2..=3600)?;
        let replica_name = env
            .get("FIDO_CONNECTOR_REPLICA_NAME")
            .or_else(|| env.get("CONTAINER_APP_REPLICA_NAME"))
            .or_else(|| env.get("HOSTNAME"))
            .unwrap_or_else(|| {
                format!(
                    "replica-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                )
            });
        if replica_name.contains('/') || replica_name.len() > 200 {
            return Err(ConfigError::new(
                "FIDO_CONNECTOR_REPLICA_NAME",
                "must be at most 200 characters without `/`",
            ));
        }
        let mail_deadline_h: u64 =
            env.num_in("FIDO_CONNECTOR_MAIL_DEADLINE_HOURS", 168, 1..=8760)?;
        let attention_days: u64 = env.num_in("FIDO_CONNECTOR_ATTENTION_DAYS", 3, 0..=90)?;
        let run_budget_s: u64 = env.num_in("FIDO_CONNECTOR_RUN_BUDGET_SECONDS", 600, 1..=86400)?;
        Ok(Self {
            process_schedule,
            cleanup_schedule,
            cleanup_completed_days,
            retention_days,
            concurrency,
            retry_base: Duration::from_secs(retry_base_s),
            retry_max: Duration::from_secs(retry_max_s),
            claim_ttl: Duration::from_secs(claim_ttl_s),
            replica_name,
            boot_id: uuid::Uuid::new_v4().simple().to_string(),
            mail_deadline: Duration::from_secs(mail_deadline_h * 3600),
            attention_window: Duration::from_secs(attention_days * 86400),
            run_budget: Duration::from_secs(run_budget_s),
        })
    }
}

/// The inbound side: listeners, limits and time limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served (`FIDO_CONNECTOR_METRICS_LISTEN`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Whole-request time limit for inbound requests.
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers (slow-header clients are cut off).
    pub header_read_timeout: Duration,
    /// Inbound requests served at once; more are shed with 503 + Retry-After.
    pub max_concurrent_requests: usize,
    pub max_body_bytes: usize,
    /// CSV exports one replica streams at once; more are answered 503 with Retry-After.
    pub exports_at_once: usize,
    /// An export's stream breaks (never ends short) past this.
    pub export_deadline: Duration,
    /// Rows one export sends at most; past it the transfer breaks, asking for a window.
    pub export_max_rows: usize,
}

impl ServerConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let listen_s = env
            .get("FIDO_CONNECTOR_LISTEN")
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            ConfigError::new(
                "FIDO_CONNECTOR_LISTEN",
                format!("`{listen_s}` is not host:port"),
            )
        })?;
        let metrics_listen: Option<SocketAddr> = match env.get("FIDO_CONNECTOR_METRICS_LISTEN") {
            None => None,
            Some(m) => Some(m.parse().map_err(|_| {
                ConfigError::new(
                    "FIDO_CONNECTOR_METRICS_LISTEN",
                    format!("`{m}` is not host:port"),
                )
            })?),
        };
        if metrics_listen.is_some_and(|m| m.port() != 0 && m.port() == listen.port()) {
            return Err(ConfigError::new(
                "FIDO_CONNECTOR_METRICS_LISTEN",
                "must be another port than FIDO_CONNECTOR_LISTEN (metrics are never served on the API's address)",
            ));
        }
        let request_timeout_s: u64 =
            env.num_in("FIDO_CONNECTOR_REQUEST_TIMEOUT_SECONDS", 60, 1..=3600)?;
        let header_read_timeout_s: u64 =
            env.num_in("FIDO_CONNECTOR_HEADER_READ_TIMEOUT_SECONDS", 10, 1..=300)?;
        let max_concurrent_requests: usize =
            env.num_in("FIDO_CONNECTOR_MAX_CONCURRENT_REQUESTS", 512, 1..=100_000)?;
        let max_body_bytes: usize = env.num_in(
            "FIDO_CONNECTOR_MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES,
            1024..=10 * 1024 * 1024,
        )?;
        let exports_at_once: usize = env.num_in("FIDO_CONNECTOR_EXPORTS_AT_ONCE", 2, 1..=64)?;
        let export_deadline_s: u64 =
            env.num_in("FIDO_CONNECTOR_EXPORT_DEADLINE_SECONDS", 300, 1..=3600)?;
        let export_max_rows: usize =
            env.num_in("FIDO_CONNECTOR_EXPORT_MAX_ROWS", 100_000, 1..=1_000_000)?;
        Ok(Self {
            exports_at_once,
            export_deadline: Duration::from_secs(export_deadline_s),
            export_max_rows,
            listen,
            metrics_listen,
            request_timeout: Duration::from_secs(request_timeout_s),
            header_read_timeout: Duration::from_secs(header_read_timeout_s),
            max_concurrent_requests,
            max_body_bytes,
        })
    }
}

/// How log lines are written: one JSON object each (for collectors), or one readable line
/// each (time, level, message, fields) for a person at a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// `FIDO_CONNECTOR_LOG_FORMAT`: `json`, `text`, or unset.
    pub fn load(env: &Env) -> Result<Option<Self>, ConfigError> {
        match env
            .get("FIDO_CONNECTOR_LOG_FORMAT")
            .as_deref()
            .map(str::trim)
        {
            None | Some("") => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(Some(Self::Json)),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(Some(Self::Text)),
            Some(v) => Err(ConfigError::new(
                "FIDO_CONNECTOR_LOG_FORMAT",
                format!("`{v}` is not json or text"),
            )),
        }
    }

    /// What a format left unset means here: text when stdout is a terminal.
    pub fn or_by_terminal(f: Option<Self>) -> Self {
        use std::io::IsTerminal;
        f.unwrap_or(if std::io::stdout().is_terminal() {
            Self::Text
        } else {
            Self::Json
        })
    }
}

/// Java-style level names accepted by `LOGGING_LEVEL_COM_YUBICO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Off,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "TRACE" | "ALL" => Self::Trace,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "WARN" | "WARNING" => Self::Warn,
            "ERROR" | "FATAL" => Self::Error,
            "OFF" => Self::Off,
            _ => return None,
        })
    }
    pub fn as_java(&self) -> &'static str {
        match self {
            Self::Trace => "TRACE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
            Self::Off => "OFF",
        }
    }
    pub fn as_filter(&self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Off => "off",
        }
    }
}

/// Logs and traces: `LOGGING_LEVEL_COM_YUBICO`, `FIDO_CONNECTOR_OTLP_ENDPOINT`.
#[derive(Debug, Clone)]
pub struct ObservabilityConfig {
    pub logging_level: LogLevel,
    /// `FIDO_CONNECTOR_LOG_FORMAT`; `None`: readable text when stdout is a terminal (and
    /// in the sandbox), JSON lines otherwise (containers).
    pub log_format: Option<LogFormat>,
    /// OTLP/HTTP traces endpoint (the full `/v1/traces` URL); `None`: no trace export.
    pub otlp_endpoint: Option<Url>,
}

impl ObservabilityConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let logging_level = match env.get("LOGGING_LEVEL_COM_YUBICO") {
            None => LogLevel::Info,
            Some(v) => LogLevel::parse(&v).ok_or_else(|| {
                ConfigError::new(
                    "LOGGING_LEVEL_COM_YUBICO",
                    format!("`{v}` is not one of TRACE, DEBUG, INFO, WARN, ERROR, OFF"),
                )
            })?,
        };
        let otlp_endpoint = match env
            .get("FIDO_CONNECTOR_OTLP_ENDPOINT")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => {
                let u = Url::parse(&s)
                    .map_err(|_| ConfigError::new("FIDO_CONNECTOR_OTLP_ENDPOINT", "not a URL"))?;
                if !super::allowed_outbound(&u) {
                    return Err(ConfigError::new(
                        "FIDO_CONNECTOR_OTLP_ENDPOINT",
                        "must be https (plain http only to a loopback collector)",
                    ));
                }
                Some(u)
            }
        };
        let log_format = LogFormat::load(env)?;
        Ok(Self {
            logging_level,
            log_format,
            otlp_endpoint,
        })
    }
}
