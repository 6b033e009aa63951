//! Where shipment records live. The lifecycle needs: insert-if-absent, read with an ETag,
//! conditional replace (a stale ETag is a [`StoreError::Conflict`], like HTTP 412), delete,
//! paged queries (open records; completed before a time), and named leases for the jobs.
//!
//! Two backends implement it: [`sqlite::SqliteStore`] (embedded, single machine) and
//! [`azure::AzureTableStore`] (Azure Table Storage, N replicas). Coordination between
//! replicas goes only through these conditional writes, never through memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::ShipmentRecord;

pub mod azure;
pub mod sqlite;
pub mod transport;

/// An opaque version tag; a write with a stale one fails with [`StoreError::Conflict`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub etag: ETag,
}

/// A page of results and the token for the next one (`None` at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Records the processing scan must read ([`ShipmentRecord::needs_scan`]): those whose
    /// step still has work (accepted, ongoing, registered), and ended ones whose alert is
    /// not settled yet.
    Open,
    /// Ended records (complete or failed) that ended strictly before the time.
    EndedBefore(DateTime<Utc>),
    /// Every shipment record (listings and exports filter and order them).
    All,
    /// Shipments by creation time, newest first (ties by request id), optionally only one
    /// user's (UPN or object id, case-insensitive), created in `[after, before]` at
    /// microsecond precision (callers re-check exact bounds). Served from an index, never
    /// a scan of every record. The continuation is a [`position`].
    Created {
        user: Option<String>,
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    },
}

/// A continuation for [`Query::Created`]: continue after the record created at `t` with
/// this request id.
pub fn position(t: &DateTime<Utc>, request_id: &str) -> String {
    format!(
        "{}\n{request_id}",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

pub fn parse_position(s: &str) -> Option<(DateTime<Utc>, String)> {
    let (t, id) = s.split_once('\n')?;
    let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
    Some((t, id.to_string()))
}

/// A claim or lease owner is `<replica>/<boot id>`; this is its replica part.
pub fn replica_of(owner: &str) -> &str {
    owner.split('/').next().unwrap_or(owner)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record already exists")]
    AlreadyExists,
    /// The ETag did not match (someone else wrote first), or the row is gone.
    #[error("conditional write lost: the record changed or was removed")]
    Conflict,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

#[async_trait]
pub trait ShipmentStore: Send + Sync {
    /// Creates the record; [`StoreError::AlreadyExists`] if `request_id` is taken.
    async fn insert(&self, rec: &ShipmentRecord) -> Result<ETag, StoreError>;
    async fn get(&self, request_id: &str) -> Result<Option<Versioned<ShipmentRecord>>, StoreError>;
    /// Looks a record up by YubiEnterprise's shipment id.
    async fn get_by_shipment_id(
        &self,
        ye_shipment_id: &str,
    ) -> Result<Option<Versioned<ShipmentRecord>>, StoreError>;
    /// The API's view of the record with this YubiEnterprise shipment id, as JSON
    /// ([`crate::domain::shipment::public_view_json`]). Stores that keep the view beside
    /// the record serve it without decoding the record.
    async fn public_view(&self, ye_shipment_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_by_shipment_id(ye_shipment_id)
            .await?
            .and_then(|v| crate::domain::shipment::public_view_json(&v.value)))
    }
    /// Replaces the record if its ETag still is `etag`.
    async fn replace(&self, rec: &ShipmentRecord, etag: &ETag) -> Result<ETag, StoreError>;
    /// Deletes the record (if `etag` is given, only if it still matches). Deleting a
    /// missing record is not an error.
    async fn delete(&self, request_id: &str, etag: Option<&ETag>) -> Result<(), StoreError>;
    /// At most `limit` (<= 1000) records per page; pass `next` back to continue.
    async fn query(
        &self,
        q: &Query,
        continuation: Option<String>,
        limit: usize,
    ) -> Result<Page<Versioned<ShipmentRecord>>, StoreError>;
    /// Takes the named lease for `owner` until `until` if it is free, expired (before
    /// `now`), already `owner`'s, or held by a former incarnation of the same replica
    /// (owners are `<replica>/<boot id>`: a restarted process takes its leases back at
    /// once). Returns whether `owner` holds it now.
    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Gives the lease up if `owner` holds it.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;
    /// Who holds the named lease, and until when (an expired one is still returned).
    async fn lease_holder(&self, name: &str)
        -> Result<Option<(String, DateTime<Utc>)>, StoreError>;
    /// The names of the leases (and marks) that start with `prefix` (at most 1,000).
    async fn leases_named(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Replaces a record that was not open (failed, or a create of unknown outcome) with
    /// one that is: an operator's retry. Stores that index open records make sure the
    /// record is found by the next processing scan.
    async fn reopen(&self, rec: &ShipmentRecord, etag: &ETag) -> Result<ETag, StoreError> {
        self.replace(rec, etag).await
    }
    /// Repairs index entries a crash may have left out (run now and then by the cleanup
    /// job); returns how many were added.
    async fn repair_indexes(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// Bounds every call of a remote store: an answer that does not come within `limit` is
/// [`StoreError::Unavailable`] (transient; the caller retries or re-reads), never a hang
/// that holds a claim, a lease or an inbound request. A write that timed out may still have
/// been applied: callers treat it like any lost answer and read before acting again.
pub struct Timed<S> {
    inner: S,
    limit: std::time::Duration,
    what: &'static str,
}

impl<S> Timed<S> {
    pub fn new(inner: S, limit: std::time::Duration, what: &'static str) -> Self {
        Self { inner, limit, what }
    }

    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.limit, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "{} did not answer within {} ms",
                self.what,
                self.limit.as_millis()
            ))),
        }
    }
}

#[async_trait]
impl<S: ShipmentStore> ShipmentStore for Timed<S> {
    async fn insert(&self, rec: &ShipmentRecord) -> Result<ETag, StoreError> {
        self.run(self.inner.insert(rec)).await
    }
    async fn get(&self, request_id: &str) -> Result<Option<Versioned<ShipmentRecord>>, StoreError> {
        self.run(self.inner.get(request_id)).await
    }
    async fn get_by_shipment_id(
        &self,
        ye_shipment_id: &str,
    ) -> Result<Option<Versioned<ShipmentRecord>>, StoreError> {
        self.run(self.inner.get_by_shipment_id(ye_shipment_id))
            .await
    }
    async fn public_view(&self, ye_shipment_id: &str) -> Result<Option<String>, StoreError> {
        self.run(self.inner.public_view(ye_shipment_id)).await
    }
    async fn replace(&self, rec: &ShipmentRecord, etag: &ETag) -> Result<ETag, StoreError> {
        self.run(self.inner.replace(rec, etag)).await
    }
    async fn delete(&self, request_id: &str, etag: Option<&ETag>) -> Result<(), StoreError> {
        self.run(self.inner.delete(request_id, etag)).await
    }
    async fn query(
        &self,
        q: &Query,
        continuation: Option<String>,
        limit: usize,
    ) -> Result<Page<Versioned<ShipmentRecord>>, StoreError> {
        self.run(self.inner.query(q, continuation, limit)).await
    }
    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run(self.inner.try_acquire_lease(name, owner, now, until))
            .await
    }
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.run(self.inner.release_lease(name, owner)).await
    }
    async fn lease_holder(
        &self,
        name: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        self.run(self.inner.lease_holder(name)).await
    }
    async fn leases_named(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.run(self.inner.leases_named(prefix)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.run(self.inner.ping()).await
    }
    async fn reopen(&self, rec: &ShipmentRecord, etag: &ETag) -> Result<ETag, StoreError> {
        self.run(self.inner.reopen(rec, etag)).await
    }
    async fn repair_indexes(&self) -> Result<usize, StoreError> {
        // A scan of the open records: bounded per page by the store's own calls.
        self.inner.repair_indexes().await
    }
}
