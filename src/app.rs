//! Wiring: [`build`] turns a [`Config`] into a running [`App`] (router, jobs, clients).
//! Tests call it too, on port 0, with the simulators' addresses in the config.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::config::{Config, SecretBackend, StoreBackend};
use crate::secrets::SecretStore;
use crate::store::ShipmentStore;

pub use crate::api::AppState;
pub use crate::lifecycle::Deps;

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
    /// Where `GET /metrics` is served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    /// The helpdesk console, when configured.
    pub console: Option<Arc<crate::console::Console>>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: watch::Sender<bool>,
}

impl App {
    /// Serves until SIGTERM/ctrl-c (or [`App::shutdown_handle`]), draining in-flight
    /// requests before returning.
    pub async fn run(self) -> std::io::Result<()> {
        let router = crate::api::router(self.state.clone());
        let router = match &self.console {
            Some(c) => router.merge(crate::console::router(c.clone())),
            None => router,
        };
        let metrics = self.metrics_listener.map(|l| {
            let router = crate::api::metrics::router(self.state.deps.clone());
            // The same connection loop as the API (header-read timeout); stopped by abort.
            let options = crate::server::ServeOptions {
                header_read_timeout: self.state.deps.config.server.header_read_timeout,
                drain: std::time::Duration::ZERO,
            };
            tokio::spawn(async move {
                let _ = crate::server::serve(l, router, options, std::future::pending()).await;
            })
        });
        let jobs = self.state.jobs.clone();
        let scheduler = jobs.start(self.state.deps.clone()).await;
        let mut rx = self.shutdown.subscribe();
        let options = crate::server::ServeOptions {
            header_read_timeout: self.state.deps.config.server.header_read_timeout,
            drain: self.state.deps.config.server.request_timeout,
        };
        let served = crate::server::serve(self.listener, router, options, async move {
            tokio::select! {
                _ = shutdown_signal() => {},
                _ = rx.wait_for(|v| *v) => {},
            }
            tracing::info!("shutting down: draining in-flight requests");
        })
        .await;
        jobs.stop(scheduler).await;
        if let Some(m) = metrics {
            m.abort();
        }
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

/// The process's one outbound HTTP client (timeouts, no redirects, the extra trusted root
/// when configured), shared by every upstream client, the caller-token key set and the
/// trace exporter.
pub fn outbound_client(config: &Config) -> Result<reqwest::Client, BuildError> {
    let extra_ca = match &config.outbound.extra_root_ca_pem {
        Some(p) => Some(std::fs::read(p).map_err(|e| BuildError::Dependency {
            what: "FIDO_CONNECTOR_EXTRA_ROOT_CA",
            message: format!("{}: {e}", p.display()),
        })?),
        None => None,
    };
    crate::upstream::http::build_client(config.outbound.timeout, extra_ca.as_deref()).map_err(
        |message| BuildError::Dependency {
            what: "HTTP client",
            message,
        },
    )
}

/// Builds the production dependencies from the configuration, with their own client.
pub async fn build_deps(config: Arc<Config>) -> Result<Deps, BuildError> {
    let http = outbound_client(&config)?;
    build_deps_with(config, http).await
}

/// Builds the production dependencies around the process's outbound client.
pub async fn build_deps_with(
    config: Arc<Config>,
    http: reqwest::Client,
) -> Result<Deps, BuildError> {
    let dep = |what: &'static str| move |e: String| BuildError::Dependency { what, message: e };
    // Calls to one upstream in flight at once: at most what processing allows.
    for u in [
        &config.ye.api_base_url,
        &config.ye.jwks_sign_endpoint,
        &config.ye.jwks_transport_endpoint,
        &config.entra.graph_endpoint,
        &config.entra.login_endpoint,
    ] {
        crate::upstream::pace::PACER.set_max(
            &crate::upstream::pace::authority(u),
            config.processing.concurrency,
        );
    }
    if let Ok(u) = url::Url::parse(secrecy::ExposeSecret::expose_secret(
        &config.mail.send_endpoint,
    )) {
        crate::upstream::pace::PACER.set_max(
            &crate::upstream::pace::authority(&u),
            config.processing.concurrency,
        );
    }

    let credentials = crate::azure_auth::Credentials::from_config(&config.entra, http.clone());
    let azure_credential = || credentials.azure_resources();
    let secrets: Arc<dyn SecretStore> = match &config.secrets.backend {
        SecretBackend::File { dir } => Arc::new(
            crate::secrets::file::FileSecretStore::new(dir.clone())
                .map_err(|e| dep("secret store")(e.to_string()))?,
        ),
        SecretBackend::KeyVault {
            endpoint,
            response_keys,
        } => {
            let vault = |endpoint: &url::Url| -> Result<Arc<dyn SecretStore>, BuildError> {
                crate::secrets::keyvault::KeyVaultSecretStore::connect(
                    endpoint,
                    azure_credential().map_err(dep("Azure credential"))?,
                    http.clone(),
                )
                .map_err(|e| dep("Key Vault")(e.to_string()))
            };
            match response_keys {
                None => vault(endpoint)?,
                Some(keys) => Arc::new(crate::secrets::split::SplitSecrets {
                    statics: vault(endpoint)?,
                    keys: vault(keys)?,
                }),
            }
        }
    };
    let store: Arc<dyn ShipmentStore> = match &config.store.backend {
        StoreBackend::Embedded { path } => Arc::new(
            crate::store::sqlite::SqliteStore::open(path)
                .map_err(|e| dep("embedded store")(e.to_string()))?,
        ),
        StoreBackend::AzureTables {
            endpoint,
            table,
            account,
            account_key,
        } => {
            let auth = match (account, account_key) {
                (Some(account), Some(key)) => crate::store::azure::AzureTablesAuth::SharedKey {
                    account: account.clone(),
                    key: key.clone(),
                },
                _ => crate::store::azure::AzureTablesAuth::Token(
                    azure_credential().map_err(dep("Azure credential"))?,
                ),
            };
            crate::store::azure::AzureTableStore::connect(
                endpoint,
                table,
                auth,
                config.outbound.timeout,
                http.clone(),
            )
            .await
            .map_err(|e| dep("Azure Tables")(e.to_string()))?
        }
    };
    let ye = Arc::new(crate::upstream::ye::YeClient::new(
        config.ye.api_base_url.clone(),
        secrets.clone(),
        http.clone(),
    ));
    let keys = Arc::new(crate::upstream::jwks::JwksCache::with_cooldown(
        config.ye.jwks_transport_endpoint.clone(),
        config.ye.jwks_sign_endpoint.clone(),
        http.clone(),
        config.ye.key_refresh_cooldown,
    ));
    let tokens = Arc::new(
        crate::upstream::entra::CredentialTokens::from_config(
            &config.entra,
            credentials.clone(),
            secrets.clone(),
        )
        .map_err(dep("Entra credential"))?,
    );
    let idp = Arc::new(crate::upstream::entra::GraphClient::new(
        crate::upstream::entra::GraphClientConfig {
            graph_endpoint: config.entra.graph_endpoint.clone(),
            api_version: config.entra.api_version.clone(),
            challenge_timeout_minutes: config.entra.challenge_timeout_minutes,
            policy_cache: config.entra.policy_cache,
        },
        tokens,
        http.clone(),
    ));
    let mail_endpoint = config.mail.send_endpoint.clone();
    let mail_auth = match &config.mail.token_audience {
        Some(audience) => Some(crate::upstream::mail::TriggerAuth::new(
            azure_credential().map_err(dep("Azure credential (mail trigger)"))?,
            audience,
        )),
        None => None,
    };
    let mailer = Arc::new(crate::upstream::mail::HttpMailer::new(
        mail_endpoint,
        http.clone(),
        mail_auth,
    ));
    let alerter = config.alerts.webhook_secret.as_deref().map(|name| {
        Arc::new(crate::upstream::alert::WebhookAlerter::new(
            secrets.clone(),
            name,
            http.clone(),
        )) as Arc<dyn crate::upstream::alert::Alerter>
    });
    let idps = Arc::new(build_idps(&config, secrets.as_ref(), &http).await?);
    check_instances_in_use(&idps, store.as_ref()).await?;
    let instance_id = format!(
        "{}/{}",
        config.processing.replica_name, config.processing.boot_id
    );
    Ok(Deps {
        idps,
        http,
        alerter,
        config,
        store,
        secrets,
        ye,
        idp,
        mailer,
        keys,
        clock: Arc::new(crate::clock::SystemClock),
        instance_id,
    })
}

/// The Okta clients of the multi-IdP file: each service app's key must be in the secret
/// store (a missing one stops the start, naming the instance and the field).
async fn build_idps(
    config: &Config,
    secrets: &dyn SecretStore,
    http: &reqwest::Client,
) -> Result<crate::lifecycle::idps::Idps, BuildError> {
    use crate::config::{ConfigError, IdpKind, IDP_CONFIG_VAR};
    let mut okta = Vec::new();
    for i in &config.idps.instances {
        let IdpKind::Okta(o) = &i.kind else { continue };
        let field = |f: &str| format!("{IDP_CONFIG_VAR}: instance `{}`: {f}", i.name);
        let key = secrets
            .get(&o.private_key_secret)
            .await
            .map_err(|e| BuildError::Dependency {
                what: "secret store",
                message: format!("{}: {e}", field("private_key_secret")),
            })?
            .ok_or_else(|| {
                ConfigError::new(
                    &field("private_key_secret"),
                    format!(
                        "the secret `{}` is not in the secret store (the Okta service app's                          private JWK; see docs/okta.md)",
                        o.private_key_secret
                    ),
                )
            })?;
        let client = crate::upstream::okta::OktaClient::new(
            o.org_url.clone(),
            o.client_id.clone(),
            &key,
            http.clone(),
        )
        .map_err(|m| ConfigError::new(&field("private_key_secret"), m))?;
        crate::upstream::pace::PACER.set_max(
            &crate::upstream::pace::authority(&o.org_url),
            config.processing.concurrency,
        );
        okta.push(crate::lifecycle::idps::OktaInstance {
            name: i.name.clone(),
            client: Arc::new(client),
            rp_ids: o.rp_ids.clone(),
            challenge_timeout: chrono::Duration::minutes(i64::from(o.challenge_timeout_minutes)),
        });
    }
    Ok(crate::lifecycle::idps::Idps::new(config.idps.clone(), okta))
}

/// Open shipments must keep their instance: a file that removed (or renamed) one that
/// open shipments still use stops the start, naming it.
///
/// Reading every open record takes seconds on a large Azure table, so it is done only
/// when it can find something: when a store mark names an instance the file lacks (a
/// create marks its instance in use, `lifecycle::idps::IN_USE`), or when the file has no
/// Entra instance (records of the Entra tenant carry no name). A removed instance whose
/// shipments all ended has its mark removed, and later starts read nothing.
async fn check_instances_in_use(
    idps: &crate::lifecycle::idps::Idps,
    store: &dyn ShipmentStore,
) -> Result<(), BuildError> {
    use crate::config::{ConfigError, IDP_CONFIG_VAR};
    use crate::lifecycle::idps::IN_USE;
    let unavailable = |e: crate::store::StoreError| BuildError::Dependency {
        what: "shipment store",
        message: format!("checking the instances of open shipments: {e}"),
    };
    let names = idps.names();
    let removed: Vec<String> = store
        .leases_named(IN_USE)
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|m| !names.iter().any(|n| m[IN_USE.len()..] == **n))
        .collect();
    if removed.is_empty() && idps.config().entra_name().is_some() {
        return Ok(());
    }
    let mut stranded: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    let mut next = None;
    loop {
        let page = store
            .query(&crate::store::Query::Open, next, 500)
            .await
            .map_err(unavailable)?;
        // Ended shipments (complete, failed) need their instance only for a resend, which
        // then says it is gone; the others cannot go on without it.
        for v in page.items.iter().filter(|v| !v.value.step.is_ended()) {
            if idps.of_record(&v.value).is_none() {
                let e = stranded
                    .entry(idps.name_of(&v.value))
                    .or_insert((0, v.value.request_id.clone()));
                e.0 += 1;
            }
        }
        next = page.next;
        if next.is_none() {
            break;
        }
    }
    if let Some((name, (n, example))) = stranded.into_iter().next() {
        return Err(ConfigError::new(
            &format!("{IDP_CONFIG_VAR}: instance `{name}`"),
            format!(
                "removed while {n} open shipment(s) still use it (request {example}); put it \
                 back until they end"
            ),
        )
        .into());
    }
    for mark in removed {
        store
            .release_lease(&mark, "in-use")
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Builds the app from a configuration: real clients, the configured store, bound listener.
pub async fn build(config: Config) -> Result<App, BuildError> {
    let http = outbound_client(&config)?;
    build_with_client(config, http).await
}

/// As [`build`], around the process's outbound client (`main` builds it once, for the
/// trace exporter too).
pub async fn build_with_client(config: Config, http: reqwest::Client) -> Result<App, BuildError> {
    let config = Arc::new(config);
    let deps = Arc::new(build_deps_with(config, http).await?);
    build_with(deps).await
}

/// Builds the app around given dependencies (tests pass doubles or simulator-backed ones).
pub async fn build_with(deps: Arc<Deps>) -> Result<App, BuildError> {
    let addr = deps.config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BuildError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| BuildError::Bind { addr, source })?;
    let auth = Arc::new(
        Authenticator::new(
            &deps.config.caller_auth,
            deps.clock.clone(),
            deps.http.clone(),
            // The documented cooldown for every key set (FIDO_CONNECTOR_KEY_REFRESH_COOLDOWN_MS).
            deps.config.ye.key_refresh_cooldown,
        )
        .map_err(|m| BuildError::Dependency {
            what: "authentication",
            message: m,
        })?,
    );
    let (metrics_addr, metrics_listener) = match deps.config.server.metrics_listen {
        None => (None, None),
        Some(maddr) => {
            let l = TcpListener::bind(maddr)
                .await
                .map_err(|source| BuildError::Bind {
                    addr: maddr,
                    source,
                })?;
            let bound = l.local_addr().map_err(|source| BuildError::Bind {
                addr: maddr,
                source,
            })?;
            (Some(bound), Some(l))
        }
    };
    let jobs = Arc::new(crate::jobs::Jobs::new(&deps.config.processing));
    let (shutdown, _) = watch::channel(false);
    let exports = Arc::new(tokio::sync::Semaphore::new(
        deps.config.server.exports_at_once,
    ));
    let console_config = deps.config.console.clone();
    let state = AppState::new(crate::api::Shared {
        deps,
        auth,
        jobs,
        readiness: Arc::default(),
        exports,
    });
    let console = match console_config {
        Some(cfg) => Some(
            crate::console::Console::build(state.clone(), cfg)
                .await
                .map_err(|e| BuildError::Dependency {
                    what: "console",
                    message: e.0,
                })?,
        ),
        None => None,
    };
    Ok(App {
        addr,
        metrics_addr,
        metrics_listener,
        state,
        console,
        listener,
        shutdown,
    })
}
