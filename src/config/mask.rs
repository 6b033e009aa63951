//! Masking credentials in URLs shown by `GET /v1/status` and in logs.

use url::Url;

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
