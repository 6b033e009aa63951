//! The identity-provider instances of the deployment, as the lifecycle uses them: which one
//! serves a create, and which one a stored record belongs to.
//!
//! The Entra instance is `Deps::idp` (configured by the environment); Okta instances are
//! clients built from the multi-IdP file. A record keeps its instance's name in `idp`,
//! except for the Entra instance, whose records leave it absent (as every record written
//! before there were instances), so renaming the Entra instance in the file strands none.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::LifecycleError;
use crate::config::IdpsConfig;
use crate::domain::ShipmentRecord;
use crate::upstream::okta::SharedOkta;

/// An Okta org the deployment serves.
pub struct OktaInstance {
    pub name: String,
    pub client: SharedOkta,
    pub rp_ids: Vec<String>,
    /// How long Yubico has to program the key (Okta's enroll answer does not say).
    pub challenge_timeout: chrono::Duration,
}

impl std::fmt::Debug for OktaInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OktaInstance")
            .field("name", &self.name)
            .field("rp_ids", &self.rp_ids)
            .finish_non_exhaustive()
    }
}

/// Which provider serves a shipment.
#[derive(Clone, Copy, Debug)]
pub enum Provider<'a> {
    Entra,
    Okta(&'a OktaInstance),
}

#[derive(Debug)]
pub struct Idps {
    config: IdpsConfig,
    okta: BTreeMap<String, Arc<OktaInstance>>,
    /// The instances this process has marked in use in the store (see [`IN_USE`]).
    marked: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The store marks naming the instances (other than the Entra one) shipments were created
/// for: `idp-in-use/<name>`. A start finds an instance removed from the file by its mark,
/// and reads the open shipments only then (app::check_instances_in_use).
pub const IN_USE: &str = "idp-in-use/";

impl Idps {
    pub fn new(config: IdpsConfig, okta: Vec<OktaInstance>) -> Self {
        Idps {
            config,
            okta: okta
                .into_iter()
                .map(|o| (o.name.clone(), Arc::new(o)))
                .collect(),
            marked: Default::default(),
        }
    }

    /// Marks instance `name` in use in the store before its first shipment of this process
    /// is recorded (one write per instance and process).
    pub async fn mark_in_use(
        &self,
        store: &dyn crate::store::ShipmentStore,
        name: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), crate::store::StoreError> {
        let marked = || self.marked.lock().unwrap_or_else(|p| p.into_inner());
        if marked().contains(name) {
            return Ok(());
        }
        let until = now + chrono::Duration::days(36_500);
        store
            .try_acquire_lease(&format!("{IN_USE}{name}"), "in-use", now, until)
            .await?;
        marked().insert(name.to_string());
        Ok(())
    }

    pub fn config(&self) -> &IdpsConfig {
        &self.config
    }

    /// Whether the deployment serves several instances (the file was given).
    pub fn multi(&self) -> bool {
        self.config.from_file
    }

    /// The instance a create names, or the default: its name and provider. An unknown
    /// name is the caller's error, before any upstream call.
    pub fn for_create(
        &self,
        requested: Option<&str>,
    ) -> Result<(String, Provider<'_>), LifecycleError> {
        let name = requested.unwrap_or(&self.config.default);
        match self.provider(name) {
            Some(p) => Ok((name.to_string(), p)),
            None => Err(LifecycleError::Invalid(format!(
                "`idp_instance` names no instance of this deployment: `{name}` (instances: {})",
                self.names().join(", ")
            ))),
        }
    }

    fn provider(&self, name: &str) -> Option<Provider<'_>> {
        if let Some(o) = self.okta.get(name) {
            return Some(Provider::Okta(o));
        }
        (self.config.entra_name() == Some(name)).then_some(Provider::Entra)
    }

    /// The provider of a stored record; `None` when the deployment no longer has its
    /// instance (the start refuses that; a record written meanwhile by another replica's
    /// newer file is left alone).
    pub fn of_record(&self, rec: &ShipmentRecord) -> Option<Provider<'_>> {
        match rec.idp.as_deref() {
            Some(name) => self.provider(name),
            None => self.config.entra_name().map(|_| Provider::Entra),
        }
    }

    /// The name of a record's instance, as shown (the Entra instance's when absent).
    pub fn name_of(&self, rec: &ShipmentRecord) -> String {
        match rec.idp.as_deref() {
            Some(n) => n.to_string(),
            None => self
                .config
                .entra_name()
                .unwrap_or(crate::config::DEFAULT_INSTANCE)
                .to_string(),
        }
    }

    /// What a record of instance `name` stores in `idp`.
    pub fn stored_name(&self, name: &str) -> Option<String> {
        (self.config.entra_name() != Some(name)).then(|| name.to_string())
    }

    pub fn names(&self) -> Vec<String> {
        self.config
            .instances
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }

    /// The Okta instance of that name.
    pub fn okta(&self, name: &str) -> Option<&OktaInstance> {
        self.okta.get(name).map(|o| o.as_ref())
    }
}
