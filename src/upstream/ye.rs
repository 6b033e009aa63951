//! YubiEnterprise Delivery API client (FIDO pre-registration shipments).
//!
//! The bearer token lives in the secret store (`ye-api-token`) and is rotated in the
//! Customer Portal: it is cached for a few minutes and re-read at once on a 401 (then the
//! call is tried once more), so a rotation needs no restart. Creating a shipment is never
//! retried blindly (a second POST would be a second shipment); reads retry transient
//! failures with jittered back-off and honour `Retry-After`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::http::{read_text_capped, retry, retry_after, scrub, send_with_token, status_error};
use super::{ProductData, UpstreamError, YeShipment, YubiEnterprise};
use crate::secrets::{SecretStore, YE_API_TOKEN};

pub const SERVICE: &str = "YubiEnterprise";
/// How long a token read from the secret store is trusted before it is read again.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
const GET_ATTEMPTS: u32 = 3;
const GET_RETRY_BUDGET: Duration = Duration::from_secs(10);
const CREATE_ATTEMPTS: u32 = 4;
/// How long a create request waits in total on YubiEnterprise's 429/503 before answering.
const CREATE_RETRY_BUDGET: Duration = Duration::from_secs(5);

pub struct YeClient {
    base: Url,
    secrets: Arc<dyn SecretStore>,
    http: reqwest::Client,
    token: Mutex<Option<(SecretString, Instant)>>,
}

impl std::fmt::Debug for YeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YeClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl YeClient {
    pub fn new(base_url: Url, secrets: Arc<dyn SecretStore>, http: reqwest::Client) -> Self {
        Self {
            base: base_url,
            secrets,
            http,
            token: Mutex::new(None),
        }
    }

    fn url(&self, segments: &[&str]) -> Result<Url, UpstreamError> {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().map_err(|_| UpstreamError::Invalid {
                service: SERVICE,
                message: "YE_API_BASE_URL cannot be a base".into(),
            })?;
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        Ok(u)
    }

    async fn token(&self, force: bool) -> Result<SecretString, UpstreamError> {
        let mut guard = self.token.lock().await;
        if !force {
            if let Some((t, at)) = guard.as_ref() {
                if at.elapsed() < TOKEN_TTL {
                    return Ok(t.clone());
                }
            }
        }
        let t = self
            .secrets
            .get(YE_API_TOKEN)
            .await
            .map_err(|e| UpstreamError::Transient {
                service: SERVICE,
                message: format!("cannot read the API token: {e}"),
                retry_after: None,
            })?
            .ok_or(UpstreamError::Unauthorized { service: SERVICE })?;
        *guard = Some((t.clone(), Instant::now()));
        Ok(t)
    }

    /// Sends one request, re-reading the token once on a 401. With `creating`, every
    /// failure that does not prove YubiEnterprise did nothing (a timeout after sending, a
    /// connection lost mid-answer, 500/502/504) is [`UpstreamError::OutcomeUnknown`];
    /// 429, 503, 4xx and a refused connection stay what they are.
    async fn send(
        &self,
        creating: bool,
        build: impl Fn(&SecretString) -> reqwest::RequestBuilder,
    ) -> Result<Value, UpstreamError> {
        let unknown = |message: String| UpstreamError::OutcomeUnknown {
            service: SERVICE,
            message,
        };
        {
            let token = |fresh: bool| self.token(fresh);
            // A 401 may mean the token was rotated in the portal: the secret store is read
            // again, and the call sent once more.
            let resp = match send_with_token("yubienterprise", token, &build).await? {
                Ok(r) => r,
                Err(e) if creating && e.may_have_arrived() => {
                    return Err(unknown(format!(
                        "no answer ({})",
                        if e.is_timeout() {
                            "timed out"
                        } else {
                            "connection lost"
                        }
                    )))
                }
                Err(e) => return Err(e.into_upstream(SERVICE)),
            };
            let status = resp.status();
            let ra = retry_after(&resp);
            let text = match read_text_capped(SERVICE, resp).await {
                Ok(t) => t,
                Err(e) if creating && status.is_success() => {
                    return Err(unknown(format!("answer lost: {e}")))
                }
                Err(e) => return Err(e),
            };
            if status.is_success() {
                return serde_json::from_str(&text).map_err(|_| {
                    if creating {
                        unknown("the answer is not JSON".into())
                    } else {
                        UpstreamError::Invalid {
                            service: SERVICE,
                            message: "response is not JSON".into(),
                        }
                    }
                });
            }
            if creating && matches!(status.as_u16(), 408 | 500 | 502 | 504) {
                return Err(unknown(format!("HTTP {}", status.as_u16())));
            }
            let (code, message) = error_fields(&text);
            Err(status_error(SERVICE, status, code, message, ra))
        }
    }
}

/// YE error bodies look like `{"code":"validation_error","message":"..."}` (sometimes
/// nested under `error`). Scrubbed: they are shown to callers.
fn error_fields(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let obj = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let code = obj
        .get("code")
        .map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "error".into());
    let message = obj
        .get("message")
        .or_else(|| obj.get("detail"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (scrub(&code), scrub(&message))
}

fn parse_shipment(v: &Value) -> Result<YeShipment, UpstreamError> {
    let invalid = |m: &str| UpstreamError::Invalid {
        service: SERVICE,
        message: m.to_string(),
    };
    let shipment_id = match v.get("shipment_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(invalid("no shipment_id")),
    };
    let state = v
        .get("shipment_state")
        .and_then(|s| s.get("shipment_state_id").or(Some(s)))
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("no shipment_state_id"))?;
    let pd = v
        .get("shipment_items")
        .and_then(|i| i.get(0))
        .and_then(|i| i.get("product_data"))
        .and_then(|p| p.get(0));
    let product_data = match pd {
        None | Some(Value::Null) => None,
        Some(p) => Some(ProductData {
            serial_number: p
                .get("serial_number")
                .and_then(|s| {
                    s.as_u64()
                        .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
                })
                .ok_or_else(|| invalid("product_data without serial_number"))?,
            firmware_version: p
                .get("firmware_version")
                .and_then(Value::as_str)
                .map(str::to_string),
            fido_pin_response: p
                .get("fido_pin_response")
                .and_then(Value::as_str)
                .map(str::to_string),
            fido_credential_responses: p
                .get("fido_credential_responses")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }),
    };
    Ok(YeShipment {
        shipment_id,
        shipment_state_id: state,
        product_data,
    })
}

#[async_trait]
impl YubiEnterprise for YeClient {
    async fn create_shipment(&self, body: &Value) -> Result<YeShipment, UpstreamError> {
        let url = self.url(&["fpr", "shipments"])?;
        // Only answers that prove nothing was created (429, 503, a refused connection) are
        // tried again, for a few seconds, honouring Retry-After.
        let v = retry(CREATE_ATTEMPTS, CREATE_RETRY_BUDGET, || {
            self.send(true, |t| {
                self.http
                    .post(url.clone())
                    .bearer_auth(t.expose_secret())
                    .json(body)
            })
        })
        .await?;
        parse_shipment(&v).map_err(|e| UpstreamError::OutcomeUnknown {
            service: SERVICE,
            message: e.to_string(),
        })
    }

    async fn get_shipment(&self, shipment_id: &str) -> Result<YeShipment, UpstreamError> {
        let url = self.url(&["fpr", "shipments", shipment_id])?;
        let v = retry(GET_ATTEMPTS, GET_RETRY_BUDGET, || {
            self.send(false, |t| {
                self.http.get(url.clone()).bearer_auth(t.expose_secret())
            })
        })
        .await?;
        parse_shipment(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipments_parse_tolerantly() {
        let v = serde_json::json!({"shipment_id": "abc", "shipment_state": {"shipment_state_id": 103, "name": "shipped"},
            "shipment_items": [{"product_data": [{"serial_number": "12345678", "fido_pin_response": "a.b.c.d.e",
            "fido_credential_responses": ["x"], "extra": 1}]}], "other": true});
        let s = parse_shipment(&v).unwrap();
        assert_eq!(s.shipment_state_id, 103);
        let pd = s.product_data.unwrap();
        assert_eq!(pd.serial_number, 12345678);
        assert_eq!(pd.fido_credential_responses, ["x"]);
        let v = serde_json::json!({"shipment_id": 42, "shipment_state": {"shipment_state_id": 0}});
        assert!(parse_shipment(&v).unwrap().product_data.is_none());
    }

    #[test]
    fn error_bodies_yield_code_and_message() {
        let (c, m) = error_fields(
            r#"{"code":"validation_error","message":"Input for Last Name exceeded limit of 20 characters"}"#,
        );
        assert_eq!(c, "validation_error");
        assert_eq!(m, "Input for Last Name exceeded limit of 20 characters");
        let (c, _) = error_fields("<html>oops</html>");
        assert_eq!(c, "error");
    }
}
