//! One typed configuration, loaded once from the environment at start, in sections: store,
//! secrets, Entra, caller auth, YubiEnterprise, mail, alerts, processing, server,
//! observability and outbound HTTP. Each section is loaded and checked by its own
//! function, and each component is given its section.
//!
//! Every variable is documented in `docs/configuration.md`. A bad value stops the start with
//! one line naming the variable and what is wrong ([`ConfigError`]). Secrets are held as
//! `secrecy::SecretString` so they never show in `Debug` output.

use std::path::PathBuf;

use secrecy::ExposeSecret;

mod cli;
mod console;
mod entra;
mod env;
mod idp;
mod mask;
mod service;
mod storage;
mod upstreams;

pub use cli::{ClientSettings, SandboxSettings};
pub use console::ConsoleConfig;
pub use entra::{
    parse_api_keys, parse_product_aaguids, ApiKeyConfig, CallerAuthConfig, EntraConfig,
    EntraCredentialKind, PreflightMode, YUBIKEY_5_AAGUIDS,
};
pub use env::{allowed_outbound, parse_url, require_https, validate_cron, Env};
pub use idp::{
    valid_instance_name, IdpInstanceConfig, IdpKind, IdpsConfig, OktaInstanceConfig,
    DEFAULT_INSTANCE, IDP_CONFIG_VAR,
};
pub use mask::{mask_credentials, mask_url};
pub use service::{LogFormat, LogLevel, ObservabilityConfig, ProcessingConfig, ServerConfig};
pub use storage::{SecretBackend, SecretsConfig, StoreBackend, StoreConfig};
pub use upstreams::{AlertsConfig, MailConfig, OutboundConfig, YeConfig};

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

#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    pub secrets: SecretsConfig,
    pub entra: EntraConfig,
    pub caller_auth: CallerAuthConfig,
    pub ye: YeConfig,
    pub mail: MailConfig,
    pub alerts: AlertsConfig,
    pub processing: ProcessingConfig,
    pub server: ServerConfig,
    pub observability: ObservabilityConfig,
    pub outbound: OutboundConfig,
    /// The helpdesk console, when configured.
    pub console: Option<ConsoleConfig>,
    /// The identity providers served (one Entra instance unless a file names more).
    pub idps: IdpsConfig,
    /// Where the embedded store and file secrets live (`FIDO_CONNECTOR_DATA_DIR`).
    pub data_dir: PathBuf,
    /// True only when started by the sandbox command: simulators on loopback.
    pub sandbox: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env::process())
    }

    /// Loads and validates. Outside the sandbox every production setting must be present:
    /// a deployment never falls back to simulators silently. Missing production settings
    /// are named together, in one message.
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let sandbox = matches!(
            env.get("FIDO_CONNECTOR_SANDBOX").as_deref(),
            Some("1") | Some("true")
        );
        let data_dir = PathBuf::from(
            env.get("FIDO_CONNECTOR_DATA_DIR")
                .unwrap_or_else(|| "./data".to_string()),
        );
        let mut missing = Vec::new();
        let store = StoreConfig::load(env, &data_dir)?;
        let secrets = SecretsConfig::load(env, &data_dir)?;
        let processing = ProcessingConfig::load(env)?;
        let entra = EntraConfig::load(env, &mut missing)?;
        let ye = YeConfig::load(env, &mut missing)?;
        let mail = MailConfig::load(env, &mut missing)?;
        if !missing.is_empty() {
            return Err(ConfigError::new(
                &missing.join(", "),
                "required production setting(s) missing; set them (see docs/configuration.md) \
                 or run `fido-connector sandbox` for a local sandbox with simulators",
            ));
        }
        let observability = ObservabilityConfig::load(env)?;
        let server = ServerConfig::load(env)?;
        let caller_auth = CallerAuthConfig::load(env, &entra)?;
        let alerts = AlertsConfig::load(env)?;
        let outbound = OutboundConfig::load(env)?;
        let console = ConsoleConfig::load(env)?;
        let idps = IdpsConfig::load(env.get(IDP_CONFIG_VAR).as_deref())?;
        Ok(Config {
            store,
            secrets,
            entra,
            caller_auth,
            ye,
            mail,
            alerts,
            processing,
            server,
            observability,
            outbound,
            console,
            idps,
            data_dir,
            sandbox,
        })
    }

    /// The 16 keys of `GET /v1/status`, in the reference's order, secrets masked.
    pub fn status_entries(&self) -> Vec<(&'static str, String)> {
        let opt = |u: &Option<url::Url>| u.as_ref().map(mask_credentials).unwrap_or_default();
        let (p, e, y) = (&self.processing, &self.entra, &self.ye);
        vec![
            (
                "AZURE_TABLES_ENDPOINT",
                opt(&self.store.azure_tables_endpoint),
            ),
            (
                "AZURE_TABLES_SHIPMENTS_TABLE_NAME",
                self.store.table_name.clone(),
            ),
            (
                "AZURE_KEY_VAULT_ENDPOINT",
                opt(&self.secrets.key_vault_endpoint),
            ),
            ("AZURE_TENANT_ID", e.tenant_id.clone()),
            ("CRON_PROCESS_SHIPMENT_SCHEDULE", p.process_schedule.clone()),
            ("CRON_DATA_CLEANUP_SCHEDULE", p.cleanup_schedule.clone()),
            (
                "CRON_DATA_CLEANUP_COMPLETED_DAYS",
                p.cleanup_completed_days.to_string(),
            ),
            (
                "EMAIL_API_SEND_ENDPOINT",
                mask_url(self.mail.send_endpoint.expose_secret()),
            ),
            ("ENTRA_FIDO_API_CLIENT_ID", e.client_id.clone()),
            ("ENTRA_FIDO_API_VERSION", e.api_version.clone()),
            (
                "ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES",
                e.challenge_timeout_minutes.to_string(),
            ),
            (
                "FIDO_CONNECTOR_VERSION",
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            (
                "LOGGING_LEVEL_COM_YUBICO",
                self.observability.logging_level.as_java().to_string(),
            ),
            ("YE_API_BASE_URL", mask_credentials(&y.api_base_url)),
            (
                "YE_JWKS_SIGN_ENDPOINT",
                mask_credentials(&y.jwks_sign_endpoint),
            ),
            (
                "YE_JWKS_TRANSPORT_ENDPOINT",
                mask_credentials(&y.jwks_transport_endpoint),
            ),
        ]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        assert_eq!(c.store.table_name, "fprshipments");
        assert_eq!(c.processing.process_schedule, "0 0 * * * *");
        assert_eq!(c.processing.cleanup_schedule, "0 30 * * * *");
        assert_eq!(c.processing.cleanup_completed_days, 0);
        assert_eq!(c.entra.api_version, "beta");
        assert_eq!(c.entra.challenge_timeout_minutes, 20160);
        assert_eq!(c.observability.logging_level, LogLevel::Info);
        assert!(matches!(c.store.backend, StoreBackend::Embedded { .. }));
        assert!(matches!(c.secrets.backend, SecretBackend::File { .. }));
    }

    #[test]
    fn the_response_key_vault_is_a_second_https_vault() {
        let mut m = base();
        m.insert(
            "AZURE_KEY_VAULT_ENDPOINT".into(),
            "https://contoso-fpr-kv.vault.azure.net/".into(),
        );
        m.insert(
            "FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT".into(),
            "https://contoso-fpr-keys.vault.azure.net/".into(),
        );
        let c = load(&m).unwrap();
        match &c.secrets.backend {
            SecretBackend::KeyVault { response_keys, .. } => assert_eq!(
                response_keys.as_ref().map(|u| u.as_str()),
                Some("https://contoso-fpr-keys.vault.azure.net/")
            ),
            other => panic!("{other:?}"),
        }
        for (bad, why) in [
            ("https://contoso-fpr-kv.vault.azure.net/", "same vault"),
            ("http://contoso-fpr-keys.vault.azure.net/", "https"),
        ] {
            m.insert(
                "FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT".into(),
                bad.into(),
            );
            let e = load(&m).unwrap_err();
            assert!(
                e.var.contains("FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT"),
                "{why}: {e}"
            );
        }
        m.remove("AZURE_KEY_VAULT_ENDPOINT");
        m.insert(
            "FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT".into(),
            "https://contoso-fpr-keys.vault.azure.net/".into(),
        );
        assert!(load(&m).is_err(), "a response-key vault alone");
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
            c.mail.token_audience.as_deref(),
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
    fn a_login_endpoint_over_http_stops_the_start_naming_it() {
        let mut m = base();
        for url in ["http://example.com/", "http://127.0.0.1:9/"] {
            m.insert("ENTRA_LOGIN_ENDPOINT".into(), url.into());
            let e = load(&m).unwrap_err();
            assert_eq!(e.var, "ENTRA_LOGIN_ENDPOINT", "{url}: {e}");
        }
        // A managed identity does not go through the login endpoint.
        m.insert("ENTRA_CREDENTIAL".into(), "managed_identity".into());
        m.insert("ENTRA_LOGIN_ENDPOINT".into(), "http://127.0.0.1:9/".into());
        assert!(load(&m).is_ok());
    }

    #[test]
    fn duplicate_api_key_names_stop_the_start() {
        let h = "a".repeat(64);
        let e = parse_api_keys(&format!("ops:{h}:Shipments.Read;ops:{h}:Pin.Resend")).unwrap_err();
        assert!(e.problem.contains("used twice"), "{e}");
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
        assert_eq!(
            load(&m).unwrap().observability.logging_level,
            LogLevel::Debug
        );
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
