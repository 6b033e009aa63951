//! Shared test world: the connector (built with the production `app::build`) wired to the
//! simulators over real HTTP on loopback, with the embedded store or Azure Tables on
//! Azurite.

#![allow(dead_code)]

pub mod azurite;
pub mod browser;
pub mod process;

use std::collections::HashMap;
use std::time::Duration;

use fido_connector::config::{Config, Env};
use fido_connector::sandbox::run::{prepare, Sandbox, DEMO_USERS};
use serde_json::{json, Value};

pub enum Backend {
    Embedded,
    Azurite,
}

/// A connector started in this process from a sandbox configuration.
pub struct World {
    pub sb: Sandbox,
    pub base: String,
    /// `http://<addr>` of the metrics listener, when the configuration enables it.
    pub metrics: Option<String>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub state: fido_connector::app::AppState,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Points an environment at Azurite with a fresh table.
pub async fn use_azurite(env: &mut HashMap<String, String>) {
    let endpoint = azurite::azurite_endpoint().await;
    env.insert("FIDO_CONNECTOR_STORE".into(), "azure".into());
    env.insert("AZURE_TABLES_ENDPOINT".into(), endpoint);
    env.insert(
        "AZURE_TABLES_SHIPMENTS_TABLE_NAME".into(),
        format!("t{}", uuid::Uuid::new_v4().simple()),
    );
    env.insert("AZURE_STORAGE_ACCOUNT_NAME".into(), azurite::ACCOUNT.into());
    env.insert("AZURE_STORAGE_ACCOUNT_KEY".into(), azurite::KEY.into());
}

impl World {
    pub async fn start(backend: Backend) -> World {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with extra environment tweaks (applied before the config is loaded).
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut HashMap<String, String>),
    ) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut sb = prepare(dir.path(), "127.0.0.1:0", None).await.unwrap();
        // Tests drive processing explicitly: the cron ticks stay out of the way.
        sb.env.insert(
            "CRON_PROCESS_SHIPMENT_SCHEDULE".into(),
            "0 0 0 1 1 *".into(),
        );
        sb.env
            .insert("CRON_DATA_CLEANUP_SCHEDULE".into(), "0 0 0 1 1 *".into());
        sb.env
            .insert("LOGGING_LEVEL_COM_YUBICO".into(), "WARN".into());
        if let Backend::Azurite = backend {
            use_azurite(&mut sb.env).await;
        }
        tweak(&mut sb.env);
        sb.config = Config::load(&Env::from_map(&sb.env)).unwrap();
        let app = fido_connector::app::build(sb.config.clone()).await.unwrap();
        let base = format!("http://{}", app.addr);
        let metrics = app.metrics_addr.map(|a| format!("http://{a}"));
        let state = app.state.clone();
        let shutdown = app.shutdown_handle();
        let task = tokio::spawn(async move {
            let _ = app.run().await;
        });
        World {
            sb,
            base,
            metrics,
            http: reqwest::Client::new(),
            dir,
            state,
            shutdown,
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    pub fn deps(&self) -> &fido_connector::app::Deps {
        &self.state.deps
    }

    pub fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("authorization", format!("Bearer {}", self.sb.api_key))
    }

    pub async fn create(&self, body: &Value) -> (u16, Value) {
        let r = self
            .auth(self.http.post(format!("{}/v1/fpr/shipments", self.base)))
            .json(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_ok(&self, user: &str) -> String {
        let (s, b) = self.create(&shipment_body(user)).await;
        assert_eq!(s, 201, "{b}");
        b["data"]["shipment_id"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.http.get(format!("{}{}", self.base, path)))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// The stored record of a shipment (read only).
    pub async fn record(&self, id: &str) -> fido_connector::domain::ShipmentRecord {
        self.deps()
            .store
            .get_by_shipment_id(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no record for {id}"))
            .value
    }

    pub async fn status_of(&self, id: &str) -> Value {
        self.get(&format!("/v1/fpr/shipments/{id}")).await.1
    }

    pub async fn process(&self) -> u16 {
        self.get("/v1/operations/process-shipments").await.0
    }
}

pub fn alice() -> &'static str {
    DEMO_USERS[0].0
}

pub fn shipment_body(user: &str) -> Value {
    let mut v: Value =
        serde_json::from_str(include_str!("../../../examples/shipment.json")).unwrap();
    v["user_id"] = json!(user);
    v
}
