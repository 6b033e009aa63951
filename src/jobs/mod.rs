//! Scheduled work: the processing and cleanup jobs on their cron schedules, leases so one
//! tick runs once across replicas, and the on-demand trigger that starts or joins a run.

use std::sync::Arc;

use crate::api::ApiError;
use crate::app::Deps;
use crate::config::Config;

pub struct Jobs {}

/// Handle to the running scheduler, given back to [`Jobs::stop`].
pub struct SchedulerHandle {}

impl Jobs {
    pub fn new(config: &Config) -> Self {
        let _ = config;
        Self {}
    }
    /// Starts the cron jobs (processing, cleanup).
    pub async fn start(&self, deps: Arc<Deps>) -> SchedulerHandle {
        let _ = deps;
        SchedulerHandle {}
    }
    pub async fn stop(&self, handle: SchedulerHandle) {
        let _ = handle;
    }
    /// `GET /v1/operations/process-shipments`: starts a processing run, or joins the one
    /// already running in this replica, and returns when it finishes.
    pub async fn run_processing_now(&self, deps: Arc<Deps>) -> Result<(), ApiError> {
        crate::lifecycle::process_shipments(&deps).await.map(|_| ())
    }
}
