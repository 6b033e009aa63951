//! Shared plumbing for outbound HTTP: one client builder (timeouts, extra trusted roots),
//! mapping of HTTP answers to [`UpstreamError`], `Retry-After`, and in-line retries (with
//! [`crate::backoff`]).
//! Only idempotent calls (GET, token requests) are retried in-line; POSTs that create
//! something are never retried blindly.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Response, StatusCode};

use super::UpstreamError;

/// Builds the outbound client: rustls, a per-request timeout, and optionally one extra
/// trusted root certificate (PEM) for private CAs and the test doubles.
pub fn build_client(
    timeout: Duration,
    extra_root_ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, String> {
    client_builder(timeout, extra_root_ca_pem)?
        .build()
        .map_err(|e| e.to_string())
}

/// The builder behind [`build_client`], for a client that adds to it (the import and
/// export commands add their credential as a default header).
pub fn client_builder(
    timeout: Duration,
    extra_root_ca_pem: Option<&[u8]>,
) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        // A redirect could carry a PIN or a token to another host: never follow one.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fido-connector/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_root_ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| e.to_string())?;
        b = b.add_root_certificate(cert);
    }
    Ok(b)
}

/// Largest upstream answer read; anything longer is refused unread past this point.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Reads a response body up to [`MAX_RESPONSE_BYTES`].
pub async fn read_capped(
    service: &'static str,
    mut resp: Response,
) -> Result<Vec<u8>, UpstreamError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large(service));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(service, &e))?
    {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large(service));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_large(service: &'static str) -> UpstreamError {
    UpstreamError::Invalid {
        service,
        message: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
    }
}

/// Reads a body as text, capped.
pub async fn read_text_capped(
    service: &'static str,
    resp: Response,
) -> Result<String, UpstreamError> {
    let b = read_capped(service, resp).await?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Reads a body as JSON, capped. A body that is not JSON is `Transient` (a proxy's error
/// page in front of the real service, usually).
pub async fn read_json_capped<T: serde::de::DeserializeOwned>(
    service: &'static str,
    resp: Response,
) -> Result<T, UpstreamError> {
    let b = read_capped(service, resp).await?;
    serde_json::from_slice(&b).map_err(|_| UpstreamError::Transient {
        service,
        message: "answer is not JSON".into(),
        retry_after: None,
    })
}

/// In-line retries of an idempotent upstream call ([`crate::backoff::retry`] with the
/// upstream policy): transient failures are tried again, at least `Retry-After` apart.
pub async fn retry<T, F, Fut>(attempts: u32, budget: Duration, call: F) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, UpstreamError>>,
{
    crate::backoff::retry(crate::backoff::Policy::upstream(attempts, budget), call).await
}

impl crate::backoff::Retryable for UpstreamError {
    fn retry_hint(&self) -> Option<Option<Duration>> {
        match self {
            UpstreamError::Transient { retry_after, .. } => Some(*retry_after),
            UpstreamError::Throttled { retry_after, .. } => Some(Some(*retry_after)),
            _ => None,
        }
    }
}

/// Why a call got no answer: the transport failed, or the call was not sent because its
/// upstream's lane is paused for longer than a call may wait ([`super::pace`]).
#[derive(Debug)]
pub enum CallError {
    Transport(reqwest::Error),
    Paused(Duration),
}

impl CallError {
    /// As an upstream error: a transport failure is transient, a pause the upstream's pace.
    pub fn into_upstream(self, service: &'static str) -> UpstreamError {
        match self {
            CallError::Transport(e) => transport_error(service, &e),
            CallError::Paused(retry_after) => UpstreamError::Throttled {
                service,
                retry_after,
            },
        }
    }

    /// Whether the request may have reached the upstream (a paused call never left).
    pub fn may_have_arrived(&self) -> bool {
        match self {
            CallError::Transport(e) => !e.is_connect(),
            CallError::Paused(_) => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::Transport(e) if e.is_timeout())
    }
}

/// Sends a request to an upstream at its pace: waits for a place in the upstream's lane
/// ([`super::pace`]), records the call's metrics, and tells the lane what the upstream
/// answered (a 429, or a 503 with `Retry-After`, pauses every call to it).
pub async fn send(
    service: &'static str,
    req: reqwest::RequestBuilder,
) -> Result<Response, CallError> {
    let (client, request) = req.build_split();
    let request = request.map_err(CallError::Transport)?;
    let url = request.url();
    let key = super::pace::LaneKey {
        service,
        authority: super::pace::authority(url),
        method: request.method().as_str().to_string(),
    };
    let pacer = &*super::pace::PACER;
    let permit = pacer
        .acquire(&key, super::pace::MAX_WAIT)
        .await
        .map_err(|p| CallError::Paused(p.0))?;
    // Within a processing run, one of its call slots (never closed), taken only now.
    let slots = super::pace::CALL_SLOTS.try_with(Arc::clone).ok();
    let _slot = match slots {
        Some(s) => s.acquire_owned().await.ok(),
        None => None,
    };
    let r = crate::metrics::execute(service, &client, request).await;
    if let Ok(resp) = &r {
        if resp.status().is_redirection() {
            // The target's host only: a path or query could carry a signature.
            let target = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url::Url::parse(l).ok())
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "(relative or none)".into());
            tracing::warn!(service, status = resp.status().as_u16(), target_host = %target,
                "an upstream answered with a redirect; not followed");
        }
        let ra = retry_after(resp);
        let status = resp.status().as_u16();
        let throttled = status == 429 || (status == 503 && ra.is_some());
        let limit = pacer.answered(&permit, throttled, ra);
        if let Some(wait) = window_spent(resp) {
            pacer.hold(&permit, wait);
        }
        if throttled {
            crate::metrics::throttled(service, ra.unwrap_or(super::pace::DEFAULT_PAUSE));
        }
        crate::metrics::call_limit(service, &key.method, limit);
    }
    r.map_err(CallError::Transport)
}

/// Sends a request with a bearer token; on a 401 gets a fresh token (`token(true)`: the
/// cached one may have been rotated or revoked) and sends once more. The one "401, new
/// token, try once more" of every client that holds a token; the caller classifies the
/// answer (a second 401 included) or the transport error.
pub async fn send_with_token<TF>(
    metric: &'static str,
    token: impl Fn(bool) -> TF,
    build: impl Fn(&secrecy::SecretString) -> reqwest::RequestBuilder,
) -> Result<Result<Response, CallError>, UpstreamError>
where
    TF: std::future::Future<Output = Result<secrecy::SecretString, UpstreamError>>,
{
    let first = token(false).await?;
    let resp = send(metric, build(&first)).await;
    match resp {
        Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
            let fresh = token(true).await?;
            Ok(send(metric, build(&fresh)).await)
        }
        other => Ok(other),
    }
}

/// Whether a URL may be used for outbound calls (the rule lives with the configuration,
/// which checks every configured URL by it at start).
pub use crate::config::allowed_outbound;

/// How long the upstream asks us to wait: `Retry-After` in seconds (the HTTP-date form is
/// not used by Graph or YE), or on a 429 without it, Okta's `X-Rate-Limit-Reset` (the Unix
/// time its window resets).
pub fn retry_after(resp: &Response) -> Option<Duration> {
    let stated = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    if stated.is_some() || resp.status() != StatusCode::TOO_MANY_REQUESTS {
        return stated;
    }
    until_reset(resp)
}

/// An integer header (Okta's `X-Rate-Limit-*`).
fn int_header(resp: &Response, name: &str) -> Option<i64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The time until `X-Rate-Limit-Reset` (a Unix time), 1 s to an hour.
fn until_reset(resp: &Response) -> Option<Duration> {
    let reset = int_header(resp, "x-rate-limit-reset")?;
    Some(Duration::from_secs(
        (reset - chrono::Utc::now().timestamp()).clamp(1, 3600) as u64,
    ))
}

/// A success that says the upstream's window has no call left (`X-Rate-Limit-Remaining:
/// 0`, as Okta sends on every answer): how long until `X-Rate-Limit-Reset`.
fn window_spent(resp: &Response) -> Option<Duration> {
    if !resp.status().is_success() {
        return None;
    }
    if int_header(resp, "x-rate-limit-remaining")? != 0 {
        return None;
    }
    until_reset(resp)
}

/// Classifies a transport error (no HTTP answer).
pub fn transport_error(service: &'static str, e: &reqwest::Error) -> UpstreamError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    UpstreamError::Transient {
        service,
        message: what.to_string(),
        retry_after: None,
    }
}

/// Classifies a non-success status. `code`/`message` come from the body when the caller
/// could parse them. Bodies are never echoed whole (they may carry tokens).
pub fn status_error(
    service: &'static str,
    status: StatusCode,
    code: String,
    message: String,
    retry_after: Option<Duration>,
) -> UpstreamError {
    match status.as_u16() {
        401 => UpstreamError::Unauthorized { service },
        404 => UpstreamError::NotFound {
            service,
            code,
            message,
        },
        429 => UpstreamError::Throttled {
            service,
            retry_after: retry_after.unwrap_or(super::pace::DEFAULT_PAUSE),
        },
        503 if retry_after.is_some() => UpstreamError::Throttled {
            service,
            retry_after: retry_after.unwrap_or(super::pace::DEFAULT_PAUSE),
        },
        // Never followed (it could carry a PIN or a token elsewhere), and not a refusal
        // either: an unexpected answer, tried again until the step's deadline.
        300..=399 => UpstreamError::Transient {
            service,
            message: format!(
                "HTTP {}: an unexpected redirect (not followed)",
                status.as_u16()
            ),
            retry_after,
        },
        408 | 500..=599 => UpstreamError::Transient {
            service,
            message: format!("HTTP {}", status.as_u16()),
            retry_after,
        },
        s => UpstreamError::Rejected {
            service,
            status: s,
            code,
            message,
        },
    }
}

/// Removes anything that looks like a bearer token or a URL signature from text that may
/// be shown to callers or logged.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == ',') {
        let core = word.trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == ',');
        let looks_secret = core.starts_with("eyJ")
            || core.contains("sig=")
            || core.contains("access_token")
            || (core.len() >= 32
                && core
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.=+/".contains(c)));
        if looks_secret {
            out.push_str("[redacted]");
            out.push_str(&word[core.len()..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let s = |c: u16| {
            status_error(
                "x",
                StatusCode::from_u16(c).unwrap(),
                "c".into(),
                "m".into(),
                None,
            )
        };
        assert!(matches!(s(401), UpstreamError::Unauthorized { .. }));
        assert!(matches!(s(404), UpstreamError::NotFound { .. }));
        assert!(s(429).is_transient());
        assert!(s(503).is_transient());
        assert!(matches!(
            s(400),
            UpstreamError::Rejected { status: 400, .. }
        ));
    }

    #[test]
    fn scrub_removes_tokens() {
        let t = "Bearer eyJhbGciOiJSUzI1NiJ9.abc.def rejected";
        assert!(!scrub(t).contains("eyJ"));
        assert!(scrub("Input for Last Name exceeded limit of 20 characters")
            .contains("Last Name exceeded"));
    }
}
