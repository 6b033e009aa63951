//! Scheduled work: the processing and cleanup jobs on their cron schedules (6 fields, with
//! seconds), a per-replica guard so a job never overlaps itself, leases in the store so
//! one tick runs once across replicas, and the on-demand trigger that starts a processing
//! run or joins the one already running and returns when it finishes.
//!
//! Job leases are short (the claim TTL) and renewed every third of it while the job runs,
//! so a replica that dies holding one loses it within one TTL; a restarted replica takes
//! its former incarnation's lease back at once.

use std::sync::Arc;

use chrono::Duration;
use tokio::sync::{watch, Mutex};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::ProcessingConfig;
use crate::lifecycle::{Deps, LifecycleError};

/// Lease names in the store.
pub const PROCESS_LEASE: &str = "job-process";
pub const CLEANUP_LEASE: &str = "job-cleanup";

type RunResult = Option<Result<(), String>>;

struct Inner {
    process_cron: String,
    cleanup_cron: String,
    /// The processing run under way in this replica, if any (its result channel).
    running: Mutex<Option<watch::Receiver<RunResult>>>,
    cleanup_running: Mutex<()>,
}

pub struct Jobs {
    inner: Arc<Inner>,
}

/// Handle to the running scheduler, given back to [`Jobs::stop`].
pub struct SchedulerHandle {
    scheduler: Option<JobScheduler>,
}

impl Jobs {
    pub fn new(config: &ProcessingConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                process_cron: config.process_schedule.clone(),
                cleanup_cron: config.cleanup_schedule.clone(),
                running: Mutex::new(None),
                cleanup_running: Mutex::new(()),
            }),
        }
    }

    /// Starts the cron jobs (processing, cleanup).
    pub async fn start(&self, deps: Arc<Deps>) -> SchedulerHandle {
        match self.try_start(deps).await {
            Ok(s) => SchedulerHandle { scheduler: Some(s) },
            Err(e) => {
                tracing::error!(error = %e, "scheduler did not start; jobs run only on demand");
                SchedulerHandle { scheduler: None }
            }
        }
    }

    async fn try_start(&self, deps: Arc<Deps>) -> Result<JobScheduler, String> {
        let sched = JobScheduler::new().await.map_err(|e| format!("{e:?}"))?;
        let (inner, d) = (self.inner.clone(), deps.clone());
        let process = Job::new_async(self.inner.process_cron.as_str(), move |_, _| {
            let (inner, deps) = (inner.clone(), d.clone());
            Box::pin(async move { scheduled_process(&inner, deps).await })
        })
        .map_err(|e| format!("{e:?}"))?;
        let (inner, d) = (self.inner.clone(), deps);
        let cleanup = Job::new_async(self.inner.cleanup_cron.as_str(), move |_, _| {
            let (inner, deps) = (inner.clone(), d.clone());
            Box::pin(async move { scheduled_cleanup(&inner, deps).await })
        })
        .map_err(|e| format!("{e:?}"))?;
        sched.add(process).await.map_err(|e| format!("{e:?}"))?;
        sched.add(cleanup).await.map_err(|e| format!("{e:?}"))?;
        sched.start().await.map_err(|e| format!("{e:?}"))?;
        Ok(sched)
    }

    pub async fn stop(&self, handle: SchedulerHandle) {
        if let Some(mut s) = handle.scheduler {
            let _ = s.shutdown().await;
        }
    }

    /// `GET /v1/operations/process-shipments`: starts a processing run, or joins the one
    /// already running in this replica, and returns when it finishes.
    pub async fn run_processing_now(&self, deps: Arc<Deps>) -> Result<(), LifecycleError> {
        run_or_join(&self.inner, deps).await.map_err(|e| {
            tracing::warn!(error = %e, "on-demand processing run failed");
            LifecycleError::Unavailable {
                service: "processing run",
                retry_after: Some(std::time::Duration::from_secs(5)),
            }
        })
    }
}

async fn run_or_join(inner: &Inner, deps: Arc<Deps>) -> Result<(), String> {
    let mut rx = {
        let mut slot = inner.running.lock().await;
        match slot.as_ref() {
            Some(rx) if rx.borrow().is_none() => rx.clone(),
            _ => {
                let (tx, rx) = watch::channel(None);
                // A task of its own: the run finishes even if the caller goes away.
                tokio::spawn(async move {
                    let r = crate::lifecycle::process_shipments(&deps)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = tx.send(Some(r));
                });
                *slot = Some(rx.clone());
                rx
            }
        }
    };
    let r = rx
        .wait_for(Option::is_some)
        .await
        .map_err(|_| "processing task ended unexpectedly".to_string())?
        .clone();
    r.unwrap_or(Ok(()))
}

/// Takes the named job lease and keeps renewing it while `work` runs.
async fn with_lease<F: std::future::Future<Output = ()>>(deps: &Deps, name: &str, work: F) {
    let ttl = Duration::from_std(deps.config.processing.claim_ttl).unwrap_or(Duration::seconds(30));
    let now = deps.clock.now();
    match deps
        .store
        .try_acquire_lease(name, deps.owner(), now, now + ttl)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(lease = name, "another replica runs this tick");
            return;
        }
        Err(e) => {
            tracing::warn!(lease = name, error = %e, "cannot take the job lease; skipping tick");
            return;
        }
    }
    let renew = async {
        let mut every = tokio::time::interval(deps.config.processing.claim_ttl / 3);
        every.tick().await;
        loop {
            every.tick().await;
            let now = deps.clock.now();
            if !matches!(
                deps.store
                    .try_acquire_lease(name, deps.owner(), now, now + ttl)
                    .await,
                Ok(true)
            ) {
                tracing::warn!(
                    lease = name,
                    "job lease lost; records stay protected by their own claims"
                );
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = renew => {}
    }
    let _ = deps.store.release_lease(name, deps.owner()).await;
}

async fn scheduled_process(inner: &Inner, deps: Arc<Deps>) {
    with_lease(&deps, PROCESS_LEASE, async {
        if let Err(e) = run_or_join(inner, deps.clone()).await {
            tracing::warn!(error = %e, "scheduled processing failed");
        }
    })
    .await;
}

async fn scheduled_cleanup(inner: &Inner, deps: Arc<Deps>) {
    let Ok(_guard) = inner.cleanup_running.try_lock() else {
        return;
    };
    with_lease(&deps, CLEANUP_LEASE, async {
        if let Err(e) = crate::lifecycle::cleanup(&deps).await {
            tracing::warn!(error = %e, "cleanup failed");
        }
    })
    .await;
}
