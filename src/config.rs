//! One typed configuration, loaded once from the environment at start.
//!
//! Every variable is documented in `docs/configuration.md`. A bad value stops the start with
//! one line naming the variable and what is wrong ([`ConfigError`]). Secrets are held as
//! [`SecretString`] so they never show in `Debug` output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// The vendor's defaults, kept so existing deployments behave the same.
pub const DEFAULT_TABLE_NAME: &str = "fprshipments";
pub const DEFAULT_PROCESS_SCHEDULE: &str = "0 0 * * * *";
pub const DEFAULT_CLEANUP_SCHEDULE: &str = "0 30 * * * *";
pub const DEFAULT_CHALLENGE_TIMEOUT_MINUTES: u32 = 20160;
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {var}: {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: &str, problem: impl Into<String>) -> Self {
        Self {
            var: var.to_string(),
            problem: problem.into(),
        }
    }
}

/// Which shipment store backs the service.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// A SQLite file in the data directory (single machine).
    Embedded { path: PathBuf },
    /// Azure Table Storage (production, N replicas).
    AzureTables {
        endpoint: Url,
        table: String,
        /// Shared-key account name/key (Azurite, or accounts that allow shared keys).
        /// Without them the service authenticates with its Entra identity.
        account: Option<String>,
        account_key: Option<SecretString>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretBackend {
    /// One file per secret (mode 0600) under this directory.
    File { dir: PathBuf },
    /// Azure Key Vault.
    KeyVault { endpoint: Url },
}

/// How the service obtains Entra tokens (Graph, and Azure resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraCredentialKind {
    /// Client secret read from the secret store (`entra-client-secret`).
    ClientSecret,
    /// Managed identity (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`).
    ManagedIdentity,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
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

/// An API key for setups without Entra: only its SHA-256 hash is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    pub name: String,
    /// Lower-case hex SHA-256 of the full key.
    pub sha256_hex: String,
    pub grants: Vec<String>,
}

/// `FIDO_CONNECTOR_PREFLIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightMode {
    /// Failed checks refuse the create; checks that cannot be evaluated are logged.
    Warn,
    /// Checks that cannot be evaluated refuse the create too.
    Strict,
    /// No pre-flight checks beyond the user's existence.
    Off,
}

/// AAGUIDs Yubico publishes for current YubiKey 5 Series models (firmware 5.1 to 5.7):
/// YubiKey 5 / 5 Nano, 5 NFC / 5C NFC, 5Ci. What a key ordered by a product id not in
/// `FIDO_CONNECTOR_PRODUCT_AAGUIDS` may report.
pub const YUBIKEY_5_AAGUIDS: [&str; 7] = [
    "cb69481e-8ff7-4039-93ec-0a2729a154a8", // YubiKey 5 (5.1)
    "ee882879-721c-4913-9775-3dfcce97072a", // YubiKey 5, 5 Nano (5.2, 5.4)
    "fa2b99dc-9e39-4257-8f92-4a30d23c4118", // YubiKey 5 NFC (5.1)
    "2fc0579f-8113-47ea-b116-bb5a8db9202a", // YubiKey 5 NFC, 5C NFC (5.2, 5.4)
    "c5ef55ff-ad9a-4b9f-b580-adebafe026d0", // YubiKey 5Ci (5.2, 5.4)
    "a25342c0-3cdc-4414-8e46-f4807fca511c", // YubiKey 5 NFC (5.7)
    "d7781e5d-e353-46aa-afe2-3ca49f13332a", // YubiKey 5 NFC (5.7.4)
];

/// Parses `FIDO_CONNECTOR_PRODUCT_AAGUIDS`: `<product_id>=<aaguid>[|<aaguid>…]`, pairs
/// separated by `;` or `,`.
pub fn parse_product_aaguids(
    s: &str,
) -> Result<std::collections::BTreeMap<u32, Vec<String>>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        let (id, list) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not <product_id>=<aaguid>[|<aaguid>]"))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` is not a product id"))?;
        let mut aaguids = Vec::new();
        for a in list.split('|').map(str::trim) {
            let u = uuid::Uuid::parse_str(a).map_err(|_| format!("`{a}` is not an AAGUID"))?;
            aaguids.push(u.hyphenated().to_string());
        }
        out.insert(id, aaguids);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Config {
    // ---- the vendor's variables (shown by /v1/status) ----
    pub azure_tables_endpoint: Option<Url>,
    pub azure_tables_table_name: String,
    pub azure_key_vault_endpoint: Option<Url>,
    pub azure_tenant_id: String,
    pub cron_process_shipment_schedule: String,
    pub cron_data_cleanup_schedule: String,
    /// 0 = never delete.
    pub cron_data_cleanup_completed_days: u32,
    /// The PIN mail trigger. Its query string is a signature: a secret.
    pub email_api_send_endpoint: Option<SecretString>,
    pub entra_fido_api_client_id: String,
    pub entra_fido_api_version: String,
    pub entra_fido_api_challenge_timeout_minutes: u32,
    pub logging_level: LogLevel,
    pub ye_api_base_url: Url,
    pub ye_jwks_sign_endpoint: Url,
    pub ye_jwks_transport_endpoint: Url,

    // ---- ours ----
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served (`FIDO_CONNECTOR_METRICS_LISTEN`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    pub store: StoreBackend,
    pub secrets: SecretBackend,
    pub data_dir: PathBuf,
    pub entra_login_endpoint: Url,
    pub graph_endpoint: Url,
    pub entra_credential: EntraCredentialKind,
    /// `AZURE_CLIENT_ID`: the user-assigned managed identity, or the app id of the
    /// workload-identity / client-secret credential for Azure resources.
    pub azure_client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`: client-secret credential for Azure resources only (the one
    /// secret that cannot live in the vault it opens).
    pub azure_client_secret: Option<SecretString>,
    /// `AZURE_FEDERATED_TOKEN_FILE`: the platform's token for workload identity.
    pub azure_federated_token_file: Option<PathBuf>,
    /// Audience of the token presented to the mail trigger (`EMAIL_API_TOKEN_AUDIENCE`);
    /// `None` sends no token (the trigger URL's signature alone authorizes the call).
    pub email_api_token_audience: Option<String>,
    /// Audiences accepted in caller tokens (`FIDO_CONNECTOR_ALLOWED_AUDIENCES`).
    pub allowed_audiences: Vec<String>,
    /// Tenant whose tokens callers present; defaults to `AZURE_TENANT_ID`.
    pub auth_tenant_id: String,
    /// Where caller-token signing keys are discovered (OpenID configuration host).
    pub auth_login_endpoint: Url,
    pub api_keys: Vec<ApiKeyConfig>,
    pub process_concurrency: usize,
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
    /// Minimum time between two key-set fetches caused by an unknown `kid`.
    pub key_refresh_cooldown: Duration,
    /// The vendor's behaviour: a delegated `create_request` scope grants every
    /// permission. Off by default; safe only when the app requires assignment.
    pub vendor_scope_grants_all: bool,
    /// When non-empty, `emails_to` addresses must be in one of these domains.
    pub allowed_mail_domains: Vec<String>,
    /// PIN resends per shipment within `resend_window`.
    pub resend_limit: u32,
    pub resend_window: Duration,
    /// Whole-request time limit for inbound requests.
    pub request_timeout: Duration,
    /// A challenge expiring within this while Yubico has not programmed the key makes a
    /// shipment "need attention" (`FIDO_CONNECTOR_ATTENTION_DAYS`).
    pub attention_window: Duration,
    /// Time a client has to send a request's headers (slow-header clients are cut off).
    pub header_read_timeout: Duration,
    /// What the pre-flight checks of a create do (`FIDO_CONNECTOR_PREFLIGHT`).
    pub preflight: PreflightMode,
    /// Name of the secret holding the alert webhook's URL (`FIDO_CONNECTOR_ALERT_WEBHOOK`);
    /// `None`: alerts are only logged and recorded.
    pub alert_webhook_secret: Option<String>,
    /// OTLP/HTTP traces endpoint (`FIDO_CONNECTOR_OTLP_ENDPOINT`, the full `/v1/traces`
    /// URL); `None`: no trace export.
    pub otlp_endpoint: Option<Url>,
    /// How long the tenant's passkey policy is reused between creates
    /// (`FIDO_CONNECTOR_POLICY_CACHE_SECONDS`, 300).
    pub policy_cache: Duration,
    /// YubiEnterprise `product_id` → the AAGUIDs its keys report
    /// (`FIDO_CONNECTOR_PRODUCT_AAGUIDS`); products not named here may be any model of
    /// [`YUBIKEY_5_AAGUIDS`].
    pub product_aaguids: std::collections::BTreeMap<u32, Vec<String>>,
    /// Inbound requests served at once; more are shed with 503 + Retry-After.
    pub max_concurrent_requests: usize,
    pub upstream_timeout: Duration,
    pub max_body_bytes: usize,
    /// Extra root certificate (PEM) trusted by outbound HTTPS clients (tests, private CAs).
    pub extra_root_ca_pem: Option<PathBuf>,
    /// True only when started by the sandbox command: simulators on loopback.
    pub sandbox: bool,
}

/// Where `fido-connector sandbox` puts things (`FIDO_CONNECTOR_DATA_DIR`,
/// `FIDO_CONNECTOR_LISTEN`, `FIDO_CONNECTOR_SANDBOX_SIM_PORT`).
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub data_dir: PathBuf,
    pub listen: String,
    /// The simulators listen on this port and the next three.
    pub sim_base_port: u16,
}

impl SandboxSettings {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            data_dir: PathBuf::from(
                env.get("FIDO_CONNECTOR_DATA_DIR")
                    .unwrap_or_else(|| "./data/sandbox".into()),
            ),
            listen: env
                .get("FIDO_CONNECTOR_LISTEN")
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            sim_base_port: env.num_in("FIDO_CONNECTOR_SANDBOX_SIM_PORT", 8081, 1024..=65000)?,
        })
    }
}

/// What the `import` and `export` commands need: the service's URL and a credential
/// (`FIDO_CONNECTOR_URL`, `FIDO_CONNECTOR_TOKEN` or `FIDO_CONNECTOR_API_KEY`).
pub struct ClientSettings {
    pub url: String,
    token: Option<SecretString>,
    api_key: Option<SecretString>,
}

impl ClientSettings {
    pub fn load(env: &Env) -> Self {
        Self {
            url: env
                .get("FIDO_CONNECTOR_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            token: env.get("FIDO_CONNECTOR_TOKEN").map(SecretString::from),
            api_key: env.get("FIDO_CONNECTOR_API_KEY").map(SecretString::from),
        }
    }

    /// The bearer credential: the token if set, else the API key.
    pub fn credential(&self) -> Option<String> {
        self.token
            .as_ref()
            .or(self.api_key.as_ref())
            .map(|s| s.expose_secret().to_string())
    }
}

/// The log filter: `RUST_LOG` when set (tracing's convention), else WARN for dependencies
/// and `level` for the service.
pub fn log_filter(level: LogLevel) -> String {
    Env::process()
        .get("RUST_LOG")
        .unwrap_or_else(|| format!("warn,fido_connector={}", level.as_filter()))
}

/// The crash point named by `FIDO_CONNECTOR_CRASH_AT` (feature `fault-injection`; tests).
pub fn crash_at() -> Option<&'static str> {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    AT.get_or_init(|| Env::process().get("FIDO_CONNECTOR_CRASH_AT"))
        .as_deref()
}

/// Reads the environment through a lookup function so tests need not touch the process env.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl<'a> Env<'a> {
    pub fn process() -> Env<'static> {
        Env {
            lookup: Box::new(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty())),
        }
    }
    pub fn from_map(map: &'a HashMap<String, String>) -> Env<'a> {
        Env {
            lookup: Box::new(move |k| map.get(k).cloned().filter(|v| !v.trim().is_empty())),
        }
    }
    fn get(&self, k: &str) -> Option<String> {
        (self.lookup)(k).map(|v| v.trim().to_string())
    }
    fn url(&self, k: &str) -> Result<Option<Url>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => parse_url(k, &v).map(Some),
        }
    }
    /// A number within `range` (inclusive), `default` when unset.
    fn num_in<T: FromStr + PartialOrd + std::fmt::Display + Copy>(
        &self,
        k: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError> {
        let v = self.num(k, default)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(
                k,
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    }

    fn num<T: FromStr>(&self, k: &str, default: T) -> Result<T, ConfigError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<T>()
                .map_err(|_| ConfigError::new(k, format!("`{v}` is not a valid number"))),
        }
    }
}

pub fn parse_url(var: &str, v: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(v).map_err(|e| ConfigError::new(var, format!("not a URL ({e})")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(ConfigError::new(var, "must be an http(s) URL"));
    }
    if u.host_str().is_none() {
        return Err(ConfigError::new(var, "URL has no host"));
    }
    Ok(u)
}

/// Refuses a plain-http URL to anything but this machine.
pub fn require_https(var: &str, u: &Url) -> Result<(), ConfigError> {
    if crate::upstream::http::allowed_outbound(u) {
        Ok(())
    } else {
        Err(ConfigError::new(
            var,
            format!(
                "`{}://{}` is not HTTPS; outbound calls must use https:// (plain http only to loopback)",
                u.scheme(),
                u.host_str().unwrap_or("")
            ),
        ))
    }
}

/// Validates a Spring-style 6-field cron string (seconds first).
pub fn validate_cron(var: &str, s: &str) -> Result<(), ConfigError> {
    let fields = s.split_whitespace().count();
    if fields != 6 {
        return Err(ConfigError::new(
            var,
            format!("`{s}` must have 6 fields (sec min hour day month weekday), found {fields}"),
        ));
    }
    // Parsed by the scheduler's own parser, so what validates here is what runs.
    tokio_cron_scheduler::Job::new_async(s, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| ConfigError::new(var, format!("`{s}` is not a valid cron expression ({e:?})")))
}

fn required(env: &Env, var: &str, missing: &mut Vec<String>) -> Option<String> {
    let v = env.get(var);
    if v.is_none() {
        missing.push(var.to_string());
    }
    v
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    /// Loads and validates. Outside the sandbox every production setting must be present:
    /// a deployment never falls back to simulators silently.
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let sandbox = matches!(
            env.get("FIDO_CONNECTOR_SANDBOX").as_deref(),
            Some("1") | Some("true")
        );

        let azure_tables_endpoint = env.url("AZURE_TABLES_ENDPOINT")?;
        let azure_tables_table_name = env
            .get("AZURE_TABLES_SHIPMENTS_TABLE_NAME")
            .unwrap_or_else(|| DEFAULT_TABLE_NAME.to_string());
        validate_table_name(&azure_tables_table_name)?;
        let azure_key_vault_endpoint = env.url("AZURE_KEY_VAULT_ENDPOINT")?;

        let cron_process_shipment_schedule = env
            .get("CRON_PROCESS_SHIPMENT_SCHEDULE")
            .unwrap_or_else(|| DEFAULT_PROCESS_SCHEDULE.to_string());
        validate_cron(
            "CRON_PROCESS_SHIPMENT_SCHEDULE",
            &cron_process_shipment_schedule,
        )?;
        let cron_data_cleanup_schedule = env
            .get("CRON_DATA_CLEANUP_SCHEDULE")
            .unwrap_or_else(|| DEFAULT_CLEANUP_SCHEDULE.to_string());
        validate_cron("CRON_DATA_CLEANUP_SCHEDULE", &cron_data_cleanup_schedule)?;
        let cron_data_cleanup_completed_days: u32 =
            env.num("CRON_DATA_CLEANUP_COMPLETED_DAYS", 0)?;

        let email_api_send_endpoint = match env.get("EMAIL_API_SEND_ENDPOINT") {
            None => None,
            Some(v) => {
                parse_url("EMAIL_API_SEND_ENDPOINT", &v)?;
                Some(SecretString::from(v))
            }
        };

        let entra_fido_api_version = env
            .get("ENTRA_FIDO_API_VERSION")
            .unwrap_or_else(|| "beta".to_string());
        if entra_fido_api_version != "beta" && entra_fido_api_version != "v1.0" {
            return Err(ConfigError::new(
                "ENTRA_FIDO_API_VERSION",
                format!("`{entra_fido_api_version}` must be `beta` or `v1.0`"),
            ));
        }
        let entra_fido_api_challenge_timeout_minutes: u32 = env.num_in(
            "ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES",
            DEFAULT_CHALLENGE_TIMEOUT_MINUTES,
            5..=43200,
        )?;
        let logging_level = match env.get("LOGGING_LEVEL_COM_YUBICO") {
            None => LogLevel::Info,
            Some(v) => LogLevel::parse(&v).ok_or_else(|| {
                ConfigError::new(
                    "LOGGING_LEVEL_COM_YUBICO",
                    format!("`{v}` is not one of TRACE, DEBUG, INFO, WARN, ERROR, OFF"),
                )
            })?,
        };

        // Production settings: all required unless in the sandbox (which sets them itself).
        let mut missing = Vec::new();
        let azure_tenant_id = required(env, "AZURE_TENANT_ID", &mut missing);
        let entra_fido_api_client_id = required(env, "ENTRA_FIDO_API_CLIENT_ID", &mut missing);
        let ye_api_base_url = required(env, "YE_API_BASE_URL", &mut missing);
        let ye_jwks_sign_endpoint = required(env, "YE_JWKS_SIGN_ENDPOINT", &mut missing);
        let ye_jwks_transport_endpoint = required(env, "YE_JWKS_TRANSPORT_ENDPOINT", &mut missing);
        if email_api_send_endpoint.is_none() {
            missing.push("EMAIL_API_SEND_ENDPOINT".to_string());
        }
        if !missing.is_empty() {
            return Err(ConfigError::new(
                &missing.join(", "),
                "required production setting(s) missing; set them (see docs/configuration.md) \
                 or run `fido-connector sandbox` for a local sandbox with simulators",
            ));
        }
        let azure_tenant_id = azure_tenant_id.unwrap_or_default();
        let ye_api_base_url = parse_url("YE_API_BASE_URL", &ye_api_base_url.unwrap_or_default())?;
        let ye_jwks_sign_endpoint = parse_url(
            "YE_JWKS_SIGN_ENDPOINT",
            &ye_jwks_sign_endpoint.unwrap_or_default(),
        )?;
        let ye_jwks_transport_endpoint = parse_url(
            "YE_JWKS_TRANSPORT_ENDPOINT",
            &ye_jwks_transport_endpoint.unwrap_or_default(),
        )?;

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
        let data_dir = PathBuf::from(
            env.get("FIDO_CONNECTOR_DATA_DIR")
                .unwrap_or_else(|| "./data".to_string()),
        );

        let store = match env.get("FIDO_CONNECTOR_STORE").as_deref() {
            Some("embedded") => StoreBackend::Embedded {
                path: data_dir.join("shipments.sqlite3"),
            },
            Some("azure") | None if azure_tables_endpoint.is_some() => StoreBackend::AzureTables {
                endpoint: azure_tables_endpoint.clone().ok_or_else(|| {
                    ConfigError::new("AZURE_TABLES_ENDPOINT", "required for the azure store")
                })?,
                table: azure_tables_table_name.clone(),
                account: env.get("AZURE_STORAGE_ACCOUNT_NAME"),
                account_key: env.get("AZURE_STORAGE_ACCOUNT_KEY").map(SecretString::from),
            },
            Some("azure") => {
                return Err(ConfigError::new(
                    "AZURE_TABLES_ENDPOINT",
                    "required when FIDO_CONNECTOR_STORE=azure",
                ))
            }
            None => StoreBackend::Embedded {
                path: data_dir.join("shipments.sqlite3"),
            },
            Some(other) => {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_STORE",
                    format!("`{other}` must be `embedded` or `azure`"),
                ))
            }
        };

        let secrets = match env.get("FIDO_CONNECTOR_SECRETS").as_deref() {
            Some("file") => SecretBackend::File {
                dir: data_dir.join("secrets"),
            },
            Some("keyvault") | None if azure_key_vault_endpoint.is_some() => {
                SecretBackend::KeyVault {
                    endpoint: azure_key_vault_endpoint.clone().ok_or_else(|| {
                        ConfigError::new("AZURE_KEY_VAULT_ENDPOINT", "required for keyvault")
                    })?,
                }
            }
            Some("keyvault") => {
                return Err(ConfigError::new(
                    "AZURE_KEY_VAULT_ENDPOINT",
                    "required when FIDO_CONNECTOR_SECRETS=keyvault",
                ))
            }
            None => SecretBackend::File {
                dir: data_dir.join("secrets"),
            },
            Some(other) => {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_SECRETS",
                    format!("`{other}` must be `file` or `keyvault`"),
                ))
            }
        };

        let entra_login_endpoint = env.url("ENTRA_LOGIN_ENDPOINT")?.map_or_else(
            || parse_url("ENTRA_LOGIN_ENDPOINT", "https://login.microsoftonline.com"),
            Ok,
        )?;
        let graph_endpoint = env.url("GRAPH_API_ENDPOINT")?.map_or_else(
            || parse_url("GRAPH_API_ENDPOINT", "https://graph.microsoft.com"),
            Ok,
        )?;
        let entra_credential = match env.get("ENTRA_CREDENTIAL").as_deref() {
            Some("client_secret") => EntraCredentialKind::ClientSecret,
            Some("managed_identity") => EntraCredentialKind::ManagedIdentity,
            Some("workload_identity") => EntraCredentialKind::WorkloadIdentity,
            Some("auto") | None => {
                if env.get("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                    EntraCredentialKind::WorkloadIdentity
                } else if env.get("IDENTITY_ENDPOINT").is_some() {
                    EntraCredentialKind::ManagedIdentity
                } else {
                    EntraCredentialKind::ClientSecret
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "ENTRA_CREDENTIAL",
                    format!(
                    "`{other}` must be auto, client_secret, managed_identity or workload_identity"
                ),
                ))
            }
        };

        let azure_client_id = env.get("AZURE_CLIENT_ID");
        let azure_client_secret = env.get("AZURE_CLIENT_SECRET").map(SecretString::from);
        let azure_federated_token_file = env.get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from);
        if entra_credential == EntraCredentialKind::WorkloadIdentity
            && azure_federated_token_file.is_none()
        {
            return Err(ConfigError::new(
                "AZURE_FEDERATED_TOKEN_FILE",
                "is required by the workload identity credential",
            ));
        }
        let email_api_token_audience = env.get("EMAIL_API_TOKEN_AUDIENCE");
        // Logic Apps refuse a call that carries both a SAS signature and a bearer token.
        let signed = email_api_send_endpoint.as_ref().is_some_and(|e| {
            Url::parse(e.expose_secret()).is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "sig"))
        });
        if email_api_token_audience.is_some() && signed {
            return Err(ConfigError::new(
                "EMAIL_API_SEND_ENDPOINT",
                "carries a SAS signature (sig) while EMAIL_API_TOKEN_AUDIENCE is set; the trigger \
                 refuses a call with both: remove sp, sv and sig from the URL (infra/README.md)",
            ));
        }
        if let Some(a) = &email_api_token_audience {
            let ok = Url::parse(a).is_ok_and(|u| u.scheme() == "https") || a.starts_with("api://");
            if !ok {
                return Err(ConfigError::new(
                    "EMAIL_API_TOKEN_AUDIENCE",
                    "must be an https:// or api:// audience (e.g. https://management.azure.com/)",
                ));
            }
        }

        let allowed_audiences: Vec<String> = env
            .get("FIDO_CONNECTOR_ALLOWED_AUDIENCES")
            .map(|v| {
                v.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let auth_tenant_id = env
            .get("FIDO_CONNECTOR_AUTH_TENANT_ID")
            .unwrap_or_else(|| azure_tenant_id.clone());
        let auth_login_endpoint = env
            .url("FIDO_CONNECTOR_AUTH_LOGIN_ENDPOINT")?
            .unwrap_or_else(|| entra_login_endpoint.clone());
        let api_keys = match env.get("FIDO_CONNECTOR_API_KEYS") {
            None => Vec::new(),
            Some(v) => parse_api_keys(&v)?,
        };
        if allowed_audiences.is_empty() && api_keys.is_empty() {
            return Err(ConfigError::new(
                "FIDO_CONNECTOR_ALLOWED_AUDIENCES",
                "no way to authenticate callers: set the accepted token audiences \
                 (and/or FIDO_CONNECTOR_API_KEYS)",
            ));
        }

        let process_concurrency: usize =
            env.num_in("FIDO_CONNECTOR_PROCESS_CONCURRENCY", 16, 1..=1024)?;
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
        let cooldown_ms: u64 =
            env.num_in("FIDO_CONNECTOR_KEY_REFRESH_COOLDOWN_MS", 5000, 0..=600_000)?;
        let vendor_scope_grants_all =
            match env.get("FIDO_CONNECTOR_VENDOR_SCOPE_GRANTS_ALL").as_deref() {
                None | Some("false") | Some("0") => false,
                Some("true") | Some("1") => true,
                Some(other) => {
                    return Err(ConfigError::new(
                        "FIDO_CONNECTOR_VENDOR_SCOPE_GRANTS_ALL",
                        format!("`{other}` must be true or false"),
                    ))
                }
            };
        let allowed_mail_domains: Vec<String> = env
            .get("FIDO_CONNECTOR_ALLOWED_MAIL_DOMAINS")
            .map(|v| {
                v.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = allowed_mail_domains
            .iter()
            .find(|d| !d.contains('.') || d.contains('@'))
        {
            return Err(ConfigError::new(
                "FIDO_CONNECTOR_ALLOWED_MAIL_DOMAINS",
                format!("`{bad}` is not a domain"),
            ));
        }
        let resend_limit: u32 = env.num_in("FIDO_CONNECTOR_RESEND_LIMIT", 3, 1..=1000)?;
        let resend_window_s: u64 =
            env.num_in("FIDO_CONNECTOR_RESEND_WINDOW_SECONDS", 3600, 1..=86400 * 7)?;
        let request_timeout_s: u64 =
            env.num_in("FIDO_CONNECTOR_REQUEST_TIMEOUT_SECONDS", 60, 1..=3600)?;
        let attention_days: u64 = env.num_in("FIDO_CONNECTOR_ATTENTION_DAYS", 3, 0..=90)?;
        let header_read_timeout_s: u64 =
            env.num_in("FIDO_CONNECTOR_HEADER_READ_TIMEOUT_SECONDS", 10, 1..=300)?;
        let preflight = match env
            .get("FIDO_CONNECTOR_PREFLIGHT")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "warn" => PreflightMode::Warn,
            "strict" => PreflightMode::Strict,
            "off" => PreflightMode::Off,
            other => {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_PREFLIGHT",
                    format!("`{other}` is not one of warn, strict, off"),
                ))
            }
        };
        let alert_webhook_secret = env
            .get("FIDO_CONNECTOR_ALERT_WEBHOOK")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(name) = &alert_webhook_secret {
            if name.len() > 127 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_ALERT_WEBHOOK",
                    "names the secret that holds the webhook URL: letters, digits and dashes (a Key Vault secret name), not the URL itself",
                ));
            }
        }
        let otlp_endpoint = match env
            .get("FIDO_CONNECTOR_OTLP_ENDPOINT")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => {
                let u = Url::parse(&s)
                    .map_err(|_| ConfigError::new("FIDO_CONNECTOR_OTLP_ENDPOINT", "not a URL"))?;
                if !crate::upstream::http::allowed_outbound(&u) {
                    return Err(ConfigError::new(
                        "FIDO_CONNECTOR_OTLP_ENDPOINT",
                        "must be https (plain http only to a loopback collector)",
                    ));
                }
                Some(u)
            }
        };
        let policy_cache_s: u64 =
            env.num_in("FIDO_CONNECTOR_POLICY_CACHE_SECONDS", 300, 0..=86400)?;
        let product_aaguids = parse_product_aaguids(
            &env.get("FIDO_CONNECTOR_PRODUCT_AAGUIDS")
                .unwrap_or_default(),
        )
        .map_err(|m| ConfigError::new("FIDO_CONNECTOR_PRODUCT_AAGUIDS", m))?;
        let max_concurrent_requests: usize =
            env.num_in("FIDO_CONNECTOR_MAX_CONCURRENT_REQUESTS", 512, 1..=100_000)?;
        let timeout_s: u64 = env.num_in("FIDO_CONNECTOR_UPSTREAM_TIMEOUT_SECONDS", 30, 1..=600)?;
        let max_body_bytes: usize = env.num_in(
            "FIDO_CONNECTOR_MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES,
            1024..=10 * 1024 * 1024,
        )?;
        let extra_root_ca_pem = env.get("FIDO_CONNECTOR_EXTRA_ROOT_CA").map(PathBuf::from);

        // Outbound calls carry tokens, PINs and signed URLs: HTTPS only, except to this
        // machine (the sandbox and tests).
        let outbound: [(&str, Option<&Url>); 8] = [
            ("YE_API_BASE_URL", Some(&ye_api_base_url)),
            ("YE_JWKS_SIGN_ENDPOINT", Some(&ye_jwks_sign_endpoint)),
            (
                "YE_JWKS_TRANSPORT_ENDPOINT",
                Some(&ye_jwks_transport_endpoint),
            ),
            ("ENTRA_LOGIN_ENDPOINT", Some(&entra_login_endpoint)),
            ("GRAPH_API_ENDPOINT", Some(&graph_endpoint)),
            (
                "FIDO_CONNECTOR_AUTH_LOGIN_ENDPOINT",
                Some(&auth_login_endpoint),
            ),
            (
                "AZURE_KEY_VAULT_ENDPOINT",
                azure_key_vault_endpoint.as_ref(),
            ),
            ("AZURE_TABLES_ENDPOINT", azure_tables_endpoint.as_ref()),
        ];
        for (var, u) in outbound {
            if let Some(u) = u {
                require_https(var, u)?;
            }
        }
        if let Some(m) = &email_api_send_endpoint {
            require_https(
                "EMAIL_API_SEND_ENDPOINT",
                &parse_url("EMAIL_API_SEND_ENDPOINT", m.expose_secret())?,
            )?;
        }

        Ok(Config {
            azure_tables_endpoint,
            azure_tables_table_name,
            azure_key_vault_endpoint,
            azure_tenant_id,
            cron_process_shipment_schedule,
            cron_data_cleanup_schedule,
            cron_data_cleanup_completed_days,
            email_api_send_endpoint,
            entra_fido_api_client_id: entra_fido_api_client_id.unwrap_or_default(),
            entra_fido_api_version,
            entra_fido_api_challenge_timeout_minutes,
            logging_level,
            ye_api_base_url,
            ye_jwks_sign_endpoint,
            ye_jwks_transport_endpoint,
            listen,
            metrics_listen,
            store,
            secrets,
            data_dir,
            entra_login_endpoint,
            graph_endpoint,
            entra_credential,
            azure_client_id,
            azure_client_secret,
            azure_federated_token_file,
            email_api_token_audience,
            allowed_audiences,
            auth_tenant_id,
            auth_login_endpoint,
            api_keys,
            process_concurrency,
            retry_base: Duration::from_secs(retry_base_s),
            retry_max: Duration::from_secs(retry_max_s),
            claim_ttl: Duration::from_secs(claim_ttl_s),
            replica_name,
            boot_id: uuid::Uuid::new_v4().simple().to_string(),
            mail_deadline: Duration::from_secs(mail_deadline_h * 3600),
            key_refresh_cooldown: Duration::from_millis(cooldown_ms),
            vendor_scope_grants_all,
            allowed_mail_domains,
            resend_limit,
            resend_window: Duration::from_secs(resend_window_s),
            request_timeout: Duration::from_secs(request_timeout_s),
            header_read_timeout: Duration::from_secs(header_read_timeout_s),
            preflight,
            alert_webhook_secret,
            otlp_endpoint,
            policy_cache: Duration::from_secs(policy_cache_s),
            product_aaguids,
            attention_window: Duration::from_secs(attention_days * 86400),
            max_concurrent_requests,
            upstream_timeout: Duration::from_secs(timeout_s),
            max_body_bytes,
            extra_root_ca_pem,
            sandbox,
        })
    }

    /// The 16 keys of `GET /v1/status`, in the reference's order, secrets masked.
    pub fn status_entries(&self) -> Vec<(&'static str, String)> {
        let opt = |u: &Option<Url>| u.as_ref().map(mask_credentials).unwrap_or_default();
        vec![
            ("AZURE_TABLES_ENDPOINT", opt(&self.azure_tables_endpoint)),
            (
                "AZURE_TABLES_SHIPMENTS_TABLE_NAME",
                self.azure_tables_table_name.clone(),
            ),
            (
                "AZURE_KEY_VAULT_ENDPOINT",
                opt(&self.azure_key_vault_endpoint),
            ),
            ("AZURE_TENANT_ID", self.azure_tenant_id.clone()),
            (
                "CRON_PROCESS_SHIPMENT_SCHEDULE",
                self.cron_process_shipment_schedule.clone(),
            ),
            (
                "CRON_DATA_CLEANUP_SCHEDULE",
                self.cron_data_cleanup_schedule.clone(),
            ),
            (
                "CRON_DATA_CLEANUP_COMPLETED_DAYS",
                self.cron_data_cleanup_completed_days.to_string(),
            ),
            (
                "EMAIL_API_SEND_ENDPOINT",
                self.email_api_send_endpoint
                    .as_ref()
                    .map(|s| mask_url(s.expose_secret()))
                    .unwrap_or_default(),
            ),
            (
                "ENTRA_FIDO_API_CLIENT_ID",
                self.entra_fido_api_client_id.clone(),
            ),
            (
                "ENTRA_FIDO_API_VERSION",
                self.entra_fido_api_version.clone(),
            ),
            (
                "ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES",
                self.entra_fido_api_challenge_timeout_minutes.to_string(),
            ),
            (
                "FIDO_CONNECTOR_VERSION",
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            (
                "LOGGING_LEVEL_COM_YUBICO",
                self.logging_level.as_java().to_string(),
            ),
            ("YE_API_BASE_URL", mask_credentials(&self.ye_api_base_url)),
            (
                "YE_JWKS_SIGN_ENDPOINT",
                mask_credentials(&self.ye_jwks_sign_endpoint),
            ),
            (
                "YE_JWKS_TRANSPORT_ENDPOINT",
                mask_credentials(&self.ye_jwks_transport_endpoint),
            ),
        ]
    }
}

/// A URL with every credential masked: user-info, and the values of query parameters
/// that carry signatures, keys or tokens (SAS `sig`, `code`, `key`, `token`, ...).
pub fn mask_credentials(u: &Url) -> String {
    let mut u = u.clone();
    if !u.username().is_empty() {
        let _ = u.set_username("***");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let lk = k.to_ascii_lowercase();
                let secret = [
                    "sig",
                    "signature",
                    "code",
                    "key",
                    "apikey",
                    "api-key",
                    "api_key",
                    "token",
                    "access_token",
                    "secret",
                    "client_secret",
                    "password",
                    "pwd",
                    "sas",
                ]
                .contains(&lk.as_str())
                    || lk.contains("secret")
                    || lk.contains("token")
                    || lk.contains("password");
                (
                    k.into_owned(),
                    if secret {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Keeps scheme, host and port only: paths and query strings of trigger URLs carry
/// signatures.
pub fn mask_url(s: &str) -> String {
    match Url::parse(s) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{}:{}/***", u.scheme(), h, p),
            (Some(h), None) => format!("{}://{}/***", u.scheme(), h),
            _ => "***".to_string(),
        },
        Err(_) => "***".to_string(),
    }
}

fn validate_table_name(name: &str) -> Result<(), ConfigError> {
    // Azure: 3..63 alphanumeric characters, not starting with a digit.
    let ok = (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "AZURE_TABLES_SHIPMENTS_TABLE_NAME",
            format!("`{name}` must be 3..63 letters/digits starting with a letter"),
        ))
    }
}

/// `name:sha256hex:grant+grant;name2:...` — only hashes, never keys, are configured.
pub fn parse_api_keys(v: &str) -> Result<Vec<ApiKeyConfig>, ConfigError> {
    const VAR: &str = "FIDO_CONNECTOR_API_KEYS";
    let mut out = Vec::new();
    for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').collect();
        if parts.len() != 3 {
            return Err(ConfigError::new(
                VAR,
                "each entry must be name:sha256-hex:grant+grant (entries separated by ;)",
            ));
        }
        let (name, hash, grants) = (parts[0], parts[1].to_ascii_lowercase(), parts[2]);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(VAR, format!("bad key name `{name}`")));
        }
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                VAR,
                format!("key `{name}`: the hash must be 64 hex characters (SHA-256)"),
            ));
        }
        let grants: Vec<String> = grants
            .split('+')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        if grants.is_empty() {
            return Err(ConfigError::new(VAR, format!("key `{name}` has no grants")));
        }
        out.push(ApiKeyConfig {
            name: name.to_string(),
            sha256_hex: hash,
            grants,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("AZURE_TENANT_ID", "tenant-1"),
            ("ENTRA_FIDO_API_CLIENT_ID", "client-1"),
            ("YE_API_BASE_URL", "https://api.console.yubico.com/v1"),
            (
                "YE_JWKS_SIGN_ENDPOINT",
                "https://console.yubico.com/.well-known/yubico-sign.jwks",
            ),
            (
                "YE_JWKS_TRANSPORT_ENDPOINT",
                "https://console.yubico.com/.well-known/yubico-transport-keys.jwks",
            ),
            (
                "EMAIL_API_SEND_ENDPOINT",
                "https://prod-1.westus.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=SECRETSIG",
            ),
            ("FIDO_CONNECTOR_ALLOWED_AUDIENCES", "api://fido-connector"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn load(m: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Config::load(&Env::from_map(m))
    }

    #[test]
    fn defaults_are_the_vendors() {
        let c = load(&base()).unwrap();
        assert_eq!(c.azure_tables_table_name, "fprshipments");
        assert_eq!(c.cron_process_shipment_schedule, "0 0 * * * *");
        assert_eq!(c.cron_data_cleanup_schedule, "0 30 * * * *");
        assert_eq!(c.cron_data_cleanup_completed_days, 0);
        assert_eq!(c.entra_fido_api_version, "beta");
        assert_eq!(c.entra_fido_api_challenge_timeout_minutes, 20160);
        assert_eq!(c.logging_level, LogLevel::Info);
        assert!(matches!(c.store, StoreBackend::Embedded { .. }));
        assert!(matches!(c.secrets, SecretBackend::File { .. }));
    }

    #[test]
    fn missing_production_settings_name_every_variable() {
        let mut m = base();
        m.remove("YE_API_BASE_URL");
        m.remove("EMAIL_API_SEND_ENDPOINT");
        let e = load(&m).unwrap_err();
        assert!(e.var.contains("YE_API_BASE_URL"), "{e}");
        assert!(e.var.contains("EMAIL_API_SEND_ENDPOINT"), "{e}");
        assert!(e.problem.contains("sandbox"));
    }

    #[test]
    fn a_token_for_the_mail_trigger_excludes_a_signed_url() {
        let mut m = base();
        m.insert(
            "EMAIL_API_SEND_ENDPOINT".into(),
            "https://prod.logic.azure.com/workflows/x/triggers/manual/paths/invoke?api-version=2016-10-01&sp=%2Ftriggers&sv=1.0&sig=abc".into(),
        );
        m.insert(
            "EMAIL_API_TOKEN_AUDIENCE".into(),
            "https://management.azure.com/".into(),
        );
        let e = load(&m).unwrap_err();
        assert_eq!(e.var, "EMAIL_API_SEND_ENDPOINT");
        assert!(!e.to_string().contains("abc"), "{e}");
        m.insert(
            "EMAIL_API_SEND_ENDPOINT".into(),
            "https://prod.logic.azure.com/workflows/x/triggers/manual/paths/invoke?api-version=2016-10-01".into(),
        );
        let c = load(&m).unwrap();
        assert_eq!(
            c.email_api_token_audience.as_deref(),
            Some("https://management.azure.com/")
        );
        m.insert("EMAIL_API_TOKEN_AUDIENCE".into(), "http://x".into());
        assert_eq!(load(&m).unwrap_err().var, "EMAIL_API_TOKEN_AUDIENCE");
    }

    #[test]
    fn bad_cron_is_rejected_naming_the_variable() {
        let mut m = base();
        m.insert("CRON_PROCESS_SHIPMENT_SCHEDULE".into(), "0 0 * * *".into());
        assert_eq!(load(&m).unwrap_err().var, "CRON_PROCESS_SHIPMENT_SCHEDULE");
        m.insert(
            "CRON_PROCESS_SHIPMENT_SCHEDULE".into(),
            "0 61 * * * *".into(),
        );
        assert_eq!(load(&m).unwrap_err().var, "CRON_PROCESS_SHIPMENT_SCHEDULE");
        m.insert(
            "CRON_PROCESS_SHIPMENT_SCHEDULE".into(),
            "*/10 * * * * *".into(),
        );
        assert!(load(&m).is_ok());
    }

    #[test]
    fn challenge_timeout_range_is_enforced_at_the_boundaries() {
        let mut m = base();
        for (v, ok) in [("4", false), ("5", true), ("43200", true), ("43201", false)] {
            m.insert("ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES".into(), v.into());
            assert_eq!(load(&m).is_ok(), ok, "{v}");
        }
    }

    #[test]
    fn endpoints_must_be_urls() {
        let mut m = base();
        m.insert("YE_API_BASE_URL".into(), "not a url".into());
        assert_eq!(load(&m).unwrap_err().var, "YE_API_BASE_URL");
        m = base();
        m.insert("AZURE_TABLES_ENDPOINT".into(), "ftp://x".into());
        assert_eq!(load(&m).unwrap_err().var, "AZURE_TABLES_ENDPOINT");
    }

    #[test]
    fn status_has_sixteen_keys_in_order_and_masks_the_mail_signature() {
        let c = load(&base()).unwrap();
        let s = c.status_entries();
        let keys: Vec<_> = s.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "AZURE_TABLES_ENDPOINT",
                "AZURE_TABLES_SHIPMENTS_TABLE_NAME",
                "AZURE_KEY_VAULT_ENDPOINT",
                "AZURE_TENANT_ID",
                "CRON_PROCESS_SHIPMENT_SCHEDULE",
                "CRON_DATA_CLEANUP_SCHEDULE",
                "CRON_DATA_CLEANUP_COMPLETED_DAYS",
                "EMAIL_API_SEND_ENDPOINT",
                "ENTRA_FIDO_API_CLIENT_ID",
                "ENTRA_FIDO_API_VERSION",
                "ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES",
                "FIDO_CONNECTOR_VERSION",
                "LOGGING_LEVEL_COM_YUBICO",
                "YE_API_BASE_URL",
                "YE_JWKS_SIGN_ENDPOINT",
                "YE_JWKS_TRANSPORT_ENDPOINT",
            ]
        );
        let mail = &s[7].1;
        assert_eq!(mail, "https://prod-1.westus.logic.azure.com/***");
        assert!(!format!("{c:?}").contains("SECRETSIG"));
    }

    #[test]
    fn status_masks_credentials_in_every_url() {
        let mut m = base();
        m.insert(
            "AZURE_TABLES_ENDPOINT".into(),
            "https://user:hunter2@acct.table.core.windows.net/?sv=2022&sig=SASSIG&se=x".into(),
        );
        m.insert(
            "YE_JWKS_SIGN_ENDPOINT".into(),
            "https://console.yubico.com/sign.jwks?code=FUNCKEY".into(),
        );
        let c = load(&m).unwrap();
        let all: String = c.status_entries().iter().map(|(_, v)| v.clone()).collect();
        for secret in ["hunter2", "SASSIG", "FUNCKEY", "SECRETSIG", "user:"] {
            assert!(!all.contains(secret), "{secret} leaked: {all}");
        }
        assert!(all.contains("sv=2022"));
    }

    #[test]
    fn plain_http_upstreams_stop_the_start_except_on_loopback() {
        for var in [
            "YE_API_BASE_URL",
            "YE_JWKS_SIGN_ENDPOINT",
            "EMAIL_API_SEND_ENDPOINT",
            "GRAPH_API_ENDPOINT",
            "ENTRA_LOGIN_ENDPOINT",
            "AZURE_KEY_VAULT_ENDPOINT",
        ] {
            let mut m = base();
            m.insert(var.into(), "http://example.com/x".into());
            let e = load(&m).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(e.problem.contains("HTTPS"), "{e}");
            m.insert(var.into(), "http://127.0.0.1:9/x".into());
            assert!(load(&m).is_ok(), "{var} on loopback");
        }
    }

    #[test]
    fn the_attempt_limit_is_gone_and_says_so() {
        let mut m = base();
        m.insert("FIDO_CONNECTOR_MAX_ATTEMPTS".into(), "10".into());
        assert_eq!(load(&m).unwrap_err().var, "FIDO_CONNECTOR_MAX_ATTEMPTS");
    }

    #[test]
    fn java_level_names_are_accepted() {
        let mut m = base();
        m.insert("LOGGING_LEVEL_COM_YUBICO".into(), "debug".into());
        assert_eq!(load(&m).unwrap().logging_level, LogLevel::Debug);
        m.insert("LOGGING_LEVEL_COM_YUBICO".into(), "LOUD".into());
        assert_eq!(load(&m).unwrap_err().var, "LOGGING_LEVEL_COM_YUBICO");
    }

    #[test]
    fn api_keys_parse_hashes_and_grants() {
        let h = "a".repeat(64);
        let k = parse_api_keys(&format!("ops:{h}:Shipments.Read+Pin.Resend")).unwrap();
        assert_eq!(k[0].grants, ["Shipments.Read", "Pin.Resend"]);
        assert!(parse_api_keys("ops:short:x").is_err());
    }
}
