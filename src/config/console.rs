//! The helpdesk console (`/console`): off unless `FIDO_CONNECTOR_CONSOLE_REDIRECT_URI` is
//! set. It signs people in with Entra ID (the connector's own app registration, as a
//! confidential client), so it needs the registration's web redirect URI, the client
//! secret, and a key that encrypts the session cookie, the last two from the secret store.

use std::time::Duration;

use url::Url;

use super::env::{parse_url, Env};
use super::ConfigError;

/// The longest a console session lasts, however active.
pub const SESSION_MAX: Duration = Duration::from_secs(8 * 3600);
/// A console session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The app registration people sign in with: the one that holds the app roles
    /// (`FIDO_CONNECTOR_CONSOLE_CLIENT_ID`; `None`: `ENTRA_FIDO_API_CLIENT_ID`, when one
    /// app does both).
    pub client_id: Option<String>,
    /// Where Entra sends the browser back (`https://<host>/console/auth/callback`); the
    /// console's own origin is this URL's.
    pub redirect_uri: Url,
    /// Secret-store name of the app registration's client secret.
    pub client_secret_name: String,
    /// Secret-store name of the cookie key (at least 64 random bytes, base64): every
    /// replica must hold the same one.
    pub cookie_key_name: String,
    pub session_max: Duration,
    pub session_idle: Duration,
}

impl ConsoleConfig {
    pub fn load(env: &Env) -> Result<Option<Self>, ConfigError> {
        const VAR: &str = "FIDO_CONNECTOR_CONSOLE_REDIRECT_URI";
        let Some(v) = env.get(VAR) else {
            return Ok(None);
        };
        let redirect_uri = parse_url(VAR, &v)?;
        if !super::env::allowed_outbound(&redirect_uri) {
            return Err(ConfigError::new(
                VAR,
                "must be https:// (plain http only on this machine): the session cookie is Secure",
            ));
        }
        if redirect_uri.path() != "/console/auth/callback" {
            return Err(ConfigError::new(
                VAR,
                "must end in /console/auth/callback (the console's sign-in return path)",
            ));
        }
        let secs = |k: &str, max: Duration| -> Result<Duration, ConfigError> {
            env.num_in(k, max.as_secs(), 1..=max.as_secs())
                .map(Duration::from_secs)
        };
        Ok(Some(Self {
            client_id: env.get("FIDO_CONNECTOR_CONSOLE_CLIENT_ID"),
            redirect_uri,
            client_secret_name: env
                .get("FIDO_CONNECTOR_CONSOLE_CLIENT_SECRET_NAME")
                .unwrap_or_else(|| "console-client-secret".into()),
            cookie_key_name: env
                .get("FIDO_CONNECTOR_CONSOLE_COOKIE_KEY_NAME")
                .unwrap_or_else(|| "console-cookie-key".into()),
            session_max: secs("FIDO_CONNECTOR_CONSOLE_SESSION_MAX_SECONDS", SESSION_MAX)?,
            session_idle: secs("FIDO_CONNECTOR_CONSOLE_SESSION_IDLE_SECONDS", SESSION_IDLE)?,
        }))
    }

    /// The console's origin (`scheme://host[:port]`), which every changing form's `Origin`
    /// must equal.
    pub fn origin(&self) -> String {
        self.redirect_uri.origin().ascii_serialization()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Option<ConsoleConfig>, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = ConsoleConfig::load(&Env::from_map(&m));
        r
    }

    #[test]
    fn the_console_is_off_unless_its_redirect_uri_is_set() {
        assert!(load(&[]).unwrap().is_none());
        let c = load(&[(
            "FIDO_CONNECTOR_CONSOLE_REDIRECT_URI",
            "https://fpr.contoso.com/console/auth/callback",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(c.origin(), "https://fpr.contoso.com");
        assert_eq!(c.session_max, SESSION_MAX);
        assert_eq!(c.session_idle, SESSION_IDLE);
    }

    #[test]
    fn a_bad_redirect_uri_or_a_session_past_the_bounds_stops_the_start() {
        for bad in [
            "http://fpr.contoso.com/console/auth/callback",
            "https://fpr.contoso.com/callback",
            "not a url",
        ] {
            let e = load(&[("FIDO_CONNECTOR_CONSOLE_REDIRECT_URI", bad)]).unwrap_err();
            assert_eq!(e.var, "FIDO_CONNECTOR_CONSOLE_REDIRECT_URI", "{bad}");
        }
        let e = load(&[
            (
                "FIDO_CONNECTOR_CONSOLE_REDIRECT_URI",
                "https://fpr.contoso.com/console/auth/callback",
            ),
            ("FIDO_CONNECTOR_CONSOLE_SESSION_IDLE_SECONDS", "3600"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "FIDO_CONNECTOR_CONSOLE_SESSION_IDLE_SECONDS");
    }
}
