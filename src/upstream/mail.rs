//! The PIN mail relay: an HTTPS trigger (in Azure the Logic App `Send_shipment_pin`) that
//! takes the PIN mail as JSON. Any 2xx is success. `message_id` is the relay's
//! de-duplication key, which is what makes "one PIN mail per shipment" hold across retries
//! and crashes. The trigger URL carries a signature in its query string and the body
//! carries the PIN: neither is ever logged or put into an error.
//!
//! With `EMAIL_API_TOKEN_AUDIENCE` set, every call also carries a bearer token of the
//! connector's identity for that audience, so a trigger whose authorization policy admits
//! only the connector (infra/main.bicep) refuses anyone else who learns its URL.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::http::{retry_after, status_error};
use super::{Mailer, PinMail, UpstreamError};

pub const SERVICE: &str = "mail relay";

pub struct HttpMailer {
    endpoint: SecretString,
    http: reqwest::Client,
    auth: Option<TriggerAuth>,
}

/// The connector's identity presented to the trigger.
pub struct TriggerAuth {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl TriggerAuth {
    pub fn new(credential: Arc<dyn TokenCredential>, audience: &str) -> Self {
        Self {
            credential,
            // `<audience>/.default`, trailing slash kept: `https://management.azure.com/`
            // becomes `https://management.azure.com//.default`, Entra's form for a token
            // whose `aud` is the audience exactly as the trigger policy names it.
            scope: format!("{audience}/.default"),
        }
    }

    async fn bearer(&self) -> Result<zeroize::Zeroizing<String>, UpstreamError> {
        let t = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| UpstreamError::Transient {
                service: SERVICE,
                message: match crate::azure_auth::http_status(&e) {
                    Some(s) => {
                        format!("no token for the mail trigger: token endpoint answered {s}")
                    }
                    None => format!("no token for the mail trigger: {}", e.kind()),
                },
                retry_after: None,
            })?;
        Ok(zeroize::Zeroizing::new(format!(
            "Bearer {}",
            t.token.secret()
        )))
    }
}

/// A request body that is wiped when the HTTP client drops it (it holds the PIN).
struct WipedOnDrop(Vec<u8>);

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for HttpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMailer")
            .field(
                "endpoint",
                &crate::config::mask_url(self.endpoint.expose_secret()),
            )
            .finish()
    }
}

#[derive(Serialize)]
struct MailBody<'a> {
    shipment_id: &'a str,
    user_id: &'a str,
    emails_to: &'a [String],
    serial_number: u64,
    yubikey_name: &'a str,
    pin: &'a str,
    message_id: &'a str,
}

impl HttpMailer {
    pub fn new(endpoint: SecretString, http: reqwest::Client, auth: Option<TriggerAuth>) -> Self {
        Self {
            endpoint,
            http,
            auth,
        }
    }
}

#[async_trait]
impl Mailer for HttpMailer {
    async fn send_pin(&self, mail: &PinMail) -> Result<(), UpstreamError> {
        // Serialized straight from the PIN's own buffer (no intermediate JSON value holding
        // a copy) into a buffer that is wiped when reqwest is done with it.
        let body = serde_json::to_vec(&MailBody {
            shipment_id: &mail.shipment_id,
            user_id: &mail.user_id,
            emails_to: &mail.emails_to,
            serial_number: mail.serial_number,
            yubikey_name: mail.yubikey_name.as_deref().unwrap_or_default(),
            pin: mail.pin.expose(),
            message_id: &mail.message_id,
        })
        .map_err(|e| UpstreamError::Invalid {
            service: SERVICE,
            message: e.to_string(),
        })?;
        let body = reqwest::Body::from(bytes::Bytes::from_owner(WipedOnDrop(body)));
        let mut req = self
            .http
            .post(self.endpoint.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            let bearer = auth.bearer().await?;
            let mut value = reqwest::header::HeaderValue::from_str(&bearer).map_err(|_| {
                UpstreamError::Invalid {
                    service: SERVICE,
                    message: "the token is not a valid header value".into(),
                }
            })?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let resp = super::http::send("mail", req.body(body))
            .await
            // Only the kind of failure is passed on: reqwest errors can include the URL.
            .map_err(|e| e.into_upstream(SERVICE))?;
        let status = resp.status();
        if status.is_success() {
            tracing::info!(shipment_id = %mail.shipment_id, message_id = %mail.message_id,
                relay = %crate::config::mask_url(self.endpoint.expose_secret()), "PIN mail accepted");
            return Ok(());
        }
        let ra = retry_after(&resp);
        Err(status_error(
            SERVICE,
            status,
            format!("http_{}", status.as_u16()),
            "the mail relay refused the PIN mail".into(),
            ra,
        ))
    }
}
