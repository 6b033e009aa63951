//! The PIN mail relay: an HTTPS trigger (in Azure the Logic App `Send_shipment_pin`) that
//! takes the PIN mail as JSON. Any 2xx is success. `message_id` is the relay's
//! de-duplication key, which is what makes "one PIN mail per shipment" hold across retries
//! and crashes. The trigger URL carries a signature in its query string and the body
//! carries the PIN: neither is ever logged or put into an error.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::http::{retry_after, status_error, transport_error};
use super::{Mailer, PinMail, UpstreamError};

pub const SERVICE: &str = "mail relay";

pub struct HttpMailer {
    endpoint: SecretString,
    http: reqwest::Client,
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

impl HttpMailer {
    pub fn new(endpoint: SecretString, http: reqwest::Client) -> Self {
        Self { endpoint, http }
    }
}

#[async_trait]
impl Mailer for HttpMailer {
    async fn send_pin(&self, mail: &PinMail) -> Result<(), UpstreamError> {
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(&json!({
                "shipment_id": mail.shipment_id,
                "user_id": mail.user_id,
                "emails_to": mail.emails_to,
                "serial_number": mail.serial_number,
                "yubikey_name": mail.yubikey_name.clone().unwrap_or_default(),
                "pin": mail.pin.expose(),
                "message_id": mail.message_id,
            }))
            .map_err(|e| UpstreamError::Invalid {
                service: SERVICE,
                message: e.to_string(),
            })?,
        );
        let resp = self
            .http
            .post(self.endpoint.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            // reqwest errors can include the URL: never pass them on.
            .map_err(|e| transport_error(SERVICE, &e.without_url()))?;
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
