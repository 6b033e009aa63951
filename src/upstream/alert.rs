//! Alerts: one notification per shipment and cause, posted to a webhook whose URL is a
//! secret in the secret store (Slack incoming webhooks and Microsoft Teams workflow
//! webhooks carry their credential in the URL). The URL is read at each send, so a
//! rotated one is used at once; it is never logged (only its scheme, host and port).
//!
//! The body works for both: Slack reads `text` (and the legacy attachment's `fallback`),
//! a Teams "post to a channel when a webhook request is received" workflow reads the
//! Adaptive Card in `attachments`; `alert` carries the structured fields for anything
//! else. It holds ids, the user, the cause and a sentence: never a PIN, a token or a link.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::http::{allowed_outbound, retry, retry_after, status_error};
use super::UpstreamError;
use crate::secrets::SecretStore;

pub const SERVICE: &str = "alert webhook";

/// What an alert says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// One of [`crate::lifecycle::alerts::CAUSES`].
    pub cause: &'static str,
    pub sentence: String,
    pub shipment_id: Option<String>,
    pub request_id: String,
    pub user_id: String,
    /// The identity-provider instance serving the shipment.
    pub idp: String,
    pub since: DateTime<Utc>,
}

#[async_trait]
pub trait Alerter: Send + Sync {
    async fn send(&self, alert: &Alert) -> Result<(), UpstreamError>;
}

/// The webhook body (see the module documentation).
pub fn body(a: &Alert) -> Value {
    let since = a.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut facts = vec![json!({"title": "Cause", "value": a.cause})];
    if let Some(s) = &a.shipment_id {
        facts.push(json!({"title": "Shipment", "value": s}));
    }
    facts.push(json!({"title": "Request", "value": a.request_id}));
    facts.push(json!({"title": "User", "value": a.user_id}));
    facts.push(json!({"title": "Identity provider", "value": a.idp}));
    facts.push(json!({"title": "Since", "value": since}));
    json!({
        "text": format!("fido-connector: {}", a.sentence),
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "fallback": a.sentence,
            "content": {
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": "fido-connector: a shipment needs attention", "weight": "Bolder", "wrap": true},
                    {"type": "TextBlock", "text": a.sentence, "wrap": true},
                    {"type": "FactSet", "facts": facts}
                ]
            }
        }],
        "alert": {
            "source": "fido-connector",
            "cause": a.cause,
            "shipment_id": a.shipment_id,
            "request_id": a.request_id,
            "user_id": a.user_id,
            "idp_instance": a.idp,
            "since": since,
            "message": a.sentence,
        }
    })
}

pub struct WebhookAlerter {
    secrets: Arc<dyn SecretStore>,
    secret_name: String,
    http: reqwest::Client,
}

impl WebhookAlerter {
    pub fn new(secrets: Arc<dyn SecretStore>, secret_name: &str, http: reqwest::Client) -> Self {
        Self {
            secrets,
            secret_name: secret_name.to_string(),
            http,
        }
    }

    async fn post_once(&self, url: &url::Url, body: &Value) -> Result<(), UpstreamError> {
        let resp = super::http::send("alert_webhook", self.http.post(url.clone()).json(body))
            .await
            // Only the kind of failure is passed on: reqwest errors can include the URL
            // (and with it the webhook's credential).
            .map_err(|e| e.into_upstream(SERVICE))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let ra = retry_after(&resp);
        Err(status_error(
            SERVICE,
            status,
            String::new(),
            String::new(),
            ra,
        ))
    }
}

#[async_trait]
impl Alerter for WebhookAlerter {
    async fn send(&self, alert: &Alert) -> Result<(), UpstreamError> {
        let unavailable = |message: String| UpstreamError::Transient {
            service: SERVICE,
            message,
            retry_after: None,
        };
        let secret = self
            .secrets
            .get(&self.secret_name)
            .await
            .map_err(|e| unavailable(format!("cannot read the webhook secret: {e}")))?
            .ok_or_else(|| UpstreamError::Invalid {
                service: SERVICE,
                message: format!("the secret store has no secret `{}`", self.secret_name),
            })?;
        let url =
            url::Url::parse(secret.expose_secret().trim()).map_err(|_| UpstreamError::Invalid {
                service: SERVICE,
                message: format!("secret `{}` is not a URL", self.secret_name),
            })?;
        if !allowed_outbound(&url) {
            return Err(UpstreamError::Invalid {
                service: SERVICE,
                message: "the webhook must be https (plain http only on loopback)".into(),
            });
        }
        let body = body(alert);
        retry(3, Duration::from_secs(10), || self.post_once(&url, &body)).await
    }
}
