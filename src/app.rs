//! Wiring: [`build`] turns a [`Config`] into a running [`App`] (router, jobs, clients).
//! Tests call it too, on port 0, with the simulators' addresses in the config.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::secrets::SecretStore;
use crate::store::ShipmentStore;
use crate::upstream::{IdentityProvider, Mailer, YubiEnterprise, YubicoKeys};

/// Everything the lifecycle and the handlers reach out to, as narrow traits.
pub struct Deps {
    pub config: Arc<Config>,
    pub store: Arc<dyn ShipmentStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub ye: Arc<dyn YubiEnterprise>,
    pub idp: Arc<dyn IdentityProvider>,
    pub mailer: Arc<dyn Mailer>,
    pub keys: Arc<dyn YubicoKeys>,
    pub clock: Arc<dyn Clock>,
    /// Identifies this replica in leases and claims.
    pub instance_id: String,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub deps: Arc<Deps>,
    pub auth: Arc<Authenticator>,
    pub jobs: Arc<crate::jobs::Jobs>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Dependency { what: &'static str, message: String },
}

pub struct App {
    pub addr: SocketAddr,
    pub state: AppState,
    listener: TcpListener,
    shutdown: watch::Sender<bool>,
}

impl App {
    /// Serves until SIGTERM/ctrl-c (or [`App::shutdown_handle`]), draining in-flight
    /// requests before returning.
    pub async fn run(self) -> std::io::Result<()> {
        let router = crate::api::router(self.state.clone());
        let jobs = self.state.jobs.clone();
        let scheduler = jobs.start(self.state.deps.clone()).await;
        let mut rx = self.shutdown.subscribe();
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = shutdown_signal() => {},
                    _ = rx.wait_for(|v| *v) => {},
                }
                tracing::info!("shutting down: draining in-flight requests");
            })
            .await;
        jobs.stop(scheduler).await;
        served
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Builds the production dependencies from the configuration.
pub async fn build_deps(config: Arc<Config>) -> Result<Deps, BuildError> {
    let _ = config;
    Err(BuildError::Dependency {
        what: "dependencies",
        message: "not wired yet".into(),
    })
}

/// Builds the app from a configuration: real clients, the configured store, bound listener.
pub async fn build(config: Config) -> Result<App, BuildError> {
    let config = Arc::new(config);
    let deps = Arc::new(build_deps(config.clone()).await?);
    build_with(deps).await
}

/// Builds the app around given dependencies (tests pass doubles or simulator-backed ones).
pub async fn build_with(deps: Arc<Deps>) -> Result<App, BuildError> {
    let addr = deps.config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BuildError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| BuildError::Bind { addr, source })?;
    let auth = Arc::new(
        Authenticator::new(&deps.config).map_err(|m| BuildError::Dependency {
            what: "authentication",
            message: m,
        })?,
    );
    let jobs = Arc::new(crate::jobs::Jobs::new(&deps.config));
    let (shutdown, _) = watch::channel(false);
    Ok(App {
        addr,
        state: AppState { deps, auth, jobs },
        listener,
        shutdown,
    })
}
