//! Webhook sink: stands in for a Slack incoming webhook or a Microsoft Teams workflow
//! ("when a webhook request is received"), where the connector posts its alerts. The URL
//! carries a random token, as theirs do (`POST /hooks/<token>`); a wrong token is 404. It
//! checks the body has what both read (`text`; an Adaptive Card attachment) and keeps
//! every body it accepted (`GET /_sim/hooks` lists them).

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::faults::Faults;
use super::{serve, Served};

#[derive(Clone)]
struct St {
    received: Arc<Mutex<Vec<Value>>>,
    token: String,
}

pub struct WebhookSink {
    served: Served,
    received: Arc<Mutex<Vec<Value>>>,
    token: String,
    pub faults: Faults,
}

impl WebhookSink {
    pub async fn start_on(port: u16) -> std::io::Result<WebhookSink> {
        use rand::Rng;
        let token: String = (0..32)
            .map(|_| char::from(b'a' + rand::rng().random_range(0..26u8)))
            .collect();
        let received = Arc::new(Mutex::new(Vec::new()));
        let faults = Faults::default();
        let st = St {
            received: received.clone(),
            token: token.clone(),
        };
        let control = Router::new()
            .route("/_sim/hooks", get(list))
            .with_state(st.clone());
        let router = faults
            .wrap(
                Router::new()
                    .route("/hooks/{token}", post(hook))
                    .with_state(st),
            )
            .merge(control);
        let served = serve(router, port).await?;
        Ok(WebhookSink {
            served,
            received,
            token,
            faults,
        })
    }

    /// The webhook URL (a secret: the token in its path is the credential).
    pub fn url(&self) -> String {
        format!("{}/hooks/{}", self.served.url(), self.token)
    }

    /// The bodies accepted so far.
    pub fn received(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn list(State(st): State<St>) -> Json<Value> {
    Json(Value::Array(
        st.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    ))
}

async fn hook(
    State(st): State<St>,
    Path(token): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, &'static str) {
    if token != st.token {
        return (StatusCode::NOT_FOUND, "no_service");
    }
    let card = &body["attachments"][0];
    let ok = body["text"].as_str().is_some_and(|t| !t.is_empty())
        && card["contentType"] == "application/vnd.microsoft.card.adaptive"
        && card["content"]["type"] == "AdaptiveCard";
    if !ok {
        return (StatusCode::BAD_REQUEST, "invalid_payload");
    }
    st.received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(body);
    (StatusCode::OK, "ok")
}
