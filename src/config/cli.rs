//! Settings of the commands other than `serve`: the sandbox, and the `import` / `export`
//! clients.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, Env};

/// Where `fido-connector sandbox` puts things and how it logs (`FIDO_CONNECTOR_DATA_DIR`,
/// `FIDO_CONNECTOR_LISTEN`, `FIDO_CONNECTOR_SANDBOX_SIM_PORT`, `FIDO_CONNECTOR_LOG_FORMAT`).
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub data_dir: PathBuf,
    pub listen: String,
    /// The simulators listen on this port and the next three.
    pub sim_base_port: u16,
    /// `FIDO_CONNECTOR_LOG_FORMAT`; readable text when unset.
    pub log_format: super::LogFormat,
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
            log_format: super::LogFormat::load(env)?.unwrap_or(super::LogFormat::Text),
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
