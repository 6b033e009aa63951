//! The shipment lifecycle: create, process, resend PIN, operator retry, clean up. Plain
//! async functions over [`Deps`]; the handlers, the cron jobs and the tests all call them.
//! Nothing here knows HTTP: failures are [`LifecycleError`]s, which `api/error.rs` maps.
//! The state machine itself lives in `domain::shipment`; docs/lifecycle.md tells it whole.
//!
//! Module order (no cycles): `api` → `lifecycle` → `store` / `secrets` / `upstream` →
//! `domain`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::config::Config;
use crate::secrets::SecretStore;
use crate::store::ShipmentStore;
use crate::upstream::{IdentityProvider, Mailer, UpstreamError, YubiEnterprise, YubicoKeys};

pub mod alerts;
mod cleanup;
mod create;
mod error;
pub mod idps;
pub mod list;
mod okta;
mod operator;
pub mod preflight;
mod process;
mod resend;

pub use cleanup::cleanup;
pub use create::{create_shipment, dry_run, DryRun, Idempotency};
pub use error::LifecycleError;
pub use operator::retry_shipment;
pub use process::{process_shipments, RunSummary};
pub use resend::resend_pin;

/// Everything the lifecycle reaches out to, as narrow traits. Cloning is cheap (shared
/// handles); tests clone it to act as another replica or with another clock.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<Config>,
    /// The process's one outbound HTTP client (the upstream clients hold clones of it).
    pub http: reqwest::Client,
    pub store: Arc<dyn ShipmentStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub ye: Arc<dyn YubiEnterprise>,
    /// The Entra instance (the `ENTRA_*` tenant).
    pub idp: Arc<dyn IdentityProvider>,
    /// Every instance of the deployment, and which one serves a create or a record.
    pub idps: Arc<idps::Idps>,
    pub mailer: Arc<dyn Mailer>,
    pub keys: Arc<dyn YubicoKeys<Error = UpstreamError>>,
    /// Where alerts go; `None` when no webhook is configured (alerts are then only
    /// logged and recorded).
    pub alerter: Option<Arc<dyn crate::upstream::alert::Alerter>>,
    pub clock: Arc<dyn Clock>,
    /// Identifies this process in leases and claims: `<replica name>/<boot id>`.
    pub instance_id: String,
}

impl Deps {
    /// The claim owner for this process.
    pub fn owner(&self) -> &str {
        &self.instance_id
    }

    fn claim_ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.processing.claim_ttl)
            .unwrap_or(chrono::Duration::seconds(30))
    }
}

pub use crate::store::replica_of;

/// Whether `me` may take a record claimed by `owner` until `until`: the claim has expired,
/// or it belongs to a former incarnation of the same replica (a restart takes its own work
/// back at once). A live claim of this very process means hands off (another run of ours).
pub fn claim_free(
    owner: Option<&str>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    me: &str,
) -> bool {
    match (owner, until) {
        (Some(o), Some(t)) if t > now => o != me && replica_of(o) == replica_of(me),
        _ => true,
    }
}

pub(crate) fn service_of(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Unauthorized { service }
        | UpstreamError::NotFound { service, .. }
        | UpstreamError::Rejected { service, .. }
        | UpstreamError::Transient { service, .. }
        | UpstreamError::Throttled { service, .. }
        | UpstreamError::OutcomeUnknown { service, .. }
        | UpstreamError::Invalid { service, .. } => service,
    }
}

pub(crate) use crate::hex::hex;

/// A shipment's record by YubiEnterprise's id or the request id (the console's view).
pub async fn find_record(
    deps: &Deps,
    id: &str,
) -> Result<crate::domain::ShipmentRecord, LifecycleError> {
    Ok(find_by_any_id(deps, id).await?.value)
}

/// A record by YubiEnterprise's shipment id or, for a create that never got one, by the
/// request id.
pub(crate) async fn find_by_any_id(
    deps: &Deps,
    id: &str,
) -> Result<crate::store::Versioned<crate::domain::ShipmentRecord>, LifecycleError> {
    let found = match deps.store.get_by_shipment_id(id).await? {
        Some(v) => Some(v),
        None => deps.store.get(id).await?,
    };
    found.ok_or_else(|| LifecycleError::NotFound(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_takes_its_former_claims_at_once_but_not_its_own_live_ones() {
        let now = Utc::now();
        let later = Some(now + chrono::Duration::seconds(30));
        assert!(claim_free(Some("r1/old"), later, now, "r1/new"));
        assert!(!claim_free(Some("r1/new"), later, now, "r1/new"));
        assert!(!claim_free(Some("r2/x"), later, now, "r1/new"));
        assert!(claim_free(Some("r2/x"), Some(now), now, "r1/new"));
        assert!(claim_free(None, None, now, "r1/new"));
    }
}
