//! The YubiEnterprise, mail, alerts and outbound-HTTP sections.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::env::{parse_url, require_https, required, Env};
use super::ConfigError;

/// `YE_API_BASE_URL`, `YE_JWKS_*`, `FIDO_CONNECTOR_KEY_REFRESH_COOLDOWN_MS`.
#[derive(Debug, Clone)]
pub struct YeConfig {
    pub api_base_url: Url,
    pub jwks_sign_endpoint: Url,
    pub jwks_transport_endpoint: Url,
    /// Minimum time between two key-set fetches caused by an unknown `kid`.
    pub key_refresh_cooldown: Duration,
    /// How long a response signed by a key the published set lacks is taken for a key
    /// published late before the shipment fails (`FIDO_CONNECTOR_SIGNING_KEY_GRACE_MINUTES`).
    pub signing_key_grace: Duration,
}

impl YeConfig {
    /// `missing` collects required production settings that are absent.
    pub fn load(env: &Env, missing: &mut Vec<String>) -> Result<Self, ConfigError> {
        let url = |var: &str, missing: &mut Vec<String>| -> Result<Url, ConfigError> {
            match required(env, var, missing) {
                // A placeholder while the start fails anyway, naming what is missing.
                None => parse_url(var, "https://missing.invalid"),
                Some(v) => {
                    let u = parse_url(var, &v)?;
                    require_https(var, &u)?;
                    Ok(u)
                }
            }
        };
        let api_base_url = url("YE_API_BASE_URL", missing)?;
        let jwks_sign_endpoint = url("YE_JWKS_SIGN_ENDPOINT", missing)?;
        let jwks_transport_endpoint = url("YE_JWKS_TRANSPORT_ENDPOINT", missing)?;
        let cooldown_ms: u64 =
            env.num_in("FIDO_CONNECTOR_KEY_REFRESH_COOLDOWN_MS", 5000, 0..=600_000)?;
        let grace_min: u64 = env.num_in("FIDO_CONNECTOR_SIGNING_KEY_GRACE_MINUTES", 15, 0..=60)?;
        Ok(Self {
            api_base_url,
            jwks_sign_endpoint,
            jwks_transport_endpoint,
            key_refresh_cooldown: Duration::from_millis(cooldown_ms),
            signing_key_grace: Duration::from_secs(grace_min * 60),
        })
    }
}

/// The PIN mail: `EMAIL_API_*`, `FIDO_CONNECTOR_ALLOWED_MAIL_DOMAINS`, the resend limit.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// The PIN mail trigger. Its query string is a signature: a secret.
    pub send_endpoint: SecretString,
    /// Audience of the token presented to the mail trigger (`EMAIL_API_TOKEN_AUDIENCE`);
    /// `None` sends no token (the trigger URL's signature alone authorizes the call).
    pub token_audience: Option<String>,
    /// When non-empty, `emails_to` addresses must be in one of these domains.
    pub allowed_domains: Vec<String>,
    /// PIN resends per shipment within `resend_window`.
    pub resend_limit: u32,
    pub resend_window: Duration,
}

impl MailConfig {
    /// `missing` collects required production settings that are absent.
    pub fn load(env: &Env, missing: &mut Vec<String>) -> Result<Self, ConfigError> {
        const VAR: &str = "EMAIL_API_SEND_ENDPOINT";
        let send_endpoint = match required(env, VAR, missing) {
            None => SecretString::from(String::new()),
            Some(v) => {
                require_https(VAR, &parse_url(VAR, &v)?)?;
                SecretString::from(v)
            }
        };
        let token_audience = env.get("EMAIL_API_TOKEN_AUDIENCE");
        // Logic Apps refuse a call that carries both a SAS signature and a bearer token.
        let signed = Url::parse(send_endpoint.expose_secret())
            .is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "sig"));
        if token_audience.is_some() && signed {
            return Err(ConfigError::new(
                VAR,
                "carries a SAS signature (sig) while EMAIL_API_TOKEN_AUDIENCE is set; the trigger \
                 refuses a call with both: remove sp, sv and sig from the URL (infra/README.md)",
            ));
        }
        if let Some(a) = &token_audience {
            let ok = Url::parse(a).is_ok_and(|u| u.scheme() == "https") || a.starts_with("api://");
            if !ok {
                return Err(ConfigError::new(
                    "EMAIL_API_TOKEN_AUDIENCE",
                    "must be an https:// or api:// audience (e.g. https://management.azure.com/)",
                ));
            }
        }
        let allowed_domains: Vec<String> = env
            .get("FIDO_CONNECTOR_ALLOWED_MAIL_DOMAINS")
            .map(|v| {
                v.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = allowed_domains
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
        Ok(Self {
            send_endpoint,
            token_audience,
            allowed_domains,
            resend_limit,
            resend_window: Duration::from_secs(resend_window_s),
        })
    }
}

/// `FIDO_CONNECTOR_ALERT_WEBHOOK`.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Name of the secret holding the alert webhook's URL; `None`: alerts are only logged
    /// and recorded.
    pub webhook_secret: Option<String>,
}

impl AlertsConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let webhook_secret = env
            .get("FIDO_CONNECTOR_ALERT_WEBHOOK")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(name) = &webhook_secret {
            if name.len() > 127 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_ALERT_WEBHOOK",
                    "names the secret that holds the webhook URL: letters, digits and dashes (a Key Vault secret name), not the URL itself",
                ));
            }
        }
        Ok(Self { webhook_secret })
    }
}

/// How outbound HTTP is made: `FIDO_CONNECTOR_UPSTREAM_TIMEOUT_SECONDS`,
/// `FIDO_CONNECTOR_EXTRA_ROOT_CA`.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    pub timeout: Duration,
    /// Extra root certificate (PEM) trusted by outbound HTTPS clients (tests, private CAs).
    pub extra_root_ca_pem: Option<PathBuf>,
}

impl OutboundConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let timeout_s: u64 = env.num_in("FIDO_CONNECTOR_UPSTREAM_TIMEOUT_SECONDS", 30, 1..=600)?;
        Ok(Self {
            timeout: Duration::from_secs(timeout_s),
            extra_root_ca_pem: env.get("FIDO_CONNECTOR_EXTRA_ROOT_CA").map(PathBuf::from),
        })
    }
}
