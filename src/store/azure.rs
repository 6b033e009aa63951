//! Azure Table Storage backend, on the `azure_data_tables` crate (0.21).
//!
//! Layout (one table, default `fprshipments`):
//!
//! | PartitionKey | RowKey | properties |
//! |---|---|---|
//! | `shipment-<x>` (`x`: the first hex digit of the request id's SHA-256; `shipment` in tables an earlier version made) | request id (ours: a UUID or `idem-<sha256 hex>`) | `Step`, `Open`, `CompletedAt`, `YeShipmentId`, `Data` (the record as JSON) |
//! | `ye-<x>` (`x` from the SHA-256 of the id; `ye` in tables an earlier version made) | hex of YubiEnterprise's shipment id | `RequestId` |
//! | `lease` | lease name | `Owner`, `Until` |
//! | `open` | request id of a record that may still have work | (none) |
//! | `created` | `<inverted creation µs, 19 digits>_<request id>` | `RequestId` |
//! | `u-<sha256 hex of the lower-cased UPN or object id>` | as `created` | `RequestId` |
//! | `meta` | `layout` | `Version`: 3 (records in 16 partitions), 2 (records in one) |
//!
//! The index partitions let the processing scan read only open shipments and a listing
//! read only the rows of its user and time range; see docs/storage.md for the rules that
//! keep them consistent without transactions across partitions.
//!
//! Keys never hold raw outside input: YubiEnterprise's id is hex-encoded, so `/ \ # ?`,
//! quotes and control characters cannot reach a key; the only filter values are ours and
//! are quoted with `'` doubled anyway. Every write that coordinates replicas is
//! conditional (`If-Match: <etag>`; 412 → [`StoreError::Conflict`]) or an insert (409).
//! Timestamps are fixed-width RFC 3339 strings, so string order is time order.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core_legacy::error::ErrorKind;
use azure_core_legacy::{Continuable, Etag};
use azure_data_tables::prelude::*;
use azure_storage::prelude::StorageCredentials;
use azure_storage::CloudLocation;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::{ETag, Page, Query, ShipmentStore, StoreError, Versioned};
use crate::domain::{ShipmentRecord, Step};

const PK_SHIPMENT: &str = "shipment";
const PK_INDEX: &str = "ye";
const PK_LEASE: &str = "lease";
const PK_OPEN: &str = "open";
const PK_CREATED: &str = "created";
const PK_META: &str = "meta";
/// Layout 2: the index partitions, records in the one `shipment` partition (a table an
/// earlier version made, indexed at connect). Layout 3: the same, records spread over 16
/// partitions `shipment-0` … `shipment-f` by a hash of the request id (new tables).
const LAYOUT_INDEXED: i64 = 2;
const LAYOUT_SHARDED: i64 = 3;
/// An `open` entry whose record does not exist is removed only once it is this old: a
/// create writes the entry just before its record.
const ORPHAN_GRACE_MINUTES: i64 = 60;
/// Point reads in flight while resolving index entries.
const INDEX_READS: usize = 16;

/// How the service authenticates to the storage account.
pub enum AzureTablesAuth {
    /// Shared key (Azurite, or accounts that allow shared-key access).
    SharedKey { account: String, key: SecretString },
    /// An Entra token credential (managed identity in production).
    Token(Arc<dyn azure_core::credentials::TokenCredential>),
}

pub struct AzureTableStore {
    table: TableClient,
    /// Records spread over 16 partitions (layout 3) or in one (layout 2).
    sharded: bool,
    /// Index entries this process knows exist and agree with their record.
    known: KnownIndex,
}

/// How many YubiEnterprise ids [`KnownIndex`] remembers (about 100 bytes each).
const KNOWN_INDEX_LIMIT: usize = 10_000;

/// YubiEnterprise shipment id → request id, for index entries this process wrote or read
/// and found agreeing with their record. The pair never changes once a record has its
/// YubiEnterprise id, and only deleting the record removes the entry, after the record.
/// So a read by shipment id whose pair is known reads the record alone (one point read,
/// not two; a record that is gone or disagrees sends it back to the index), and a write of
/// a record whose pair is known does not upsert the entry again. Bounded: a full map drops
/// an arbitrary pair for each new one. Holding no record data, it is never stale in a way
/// that changes an answer, whatever other replicas do.
#[derive(Default)]
struct KnownIndex(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl KnownIndex {
    fn request_id(&self, ye: &str) -> Option<String> {
        self.lock().get(ye).cloned()
    }

    fn knows(&self, ye: &str, request_id: &str) -> bool {
        self.lock().get(ye).is_some_and(|r| r == request_id)
    }

    fn learn(&self, ye: &str, request_id: &str) {
        let mut m = self.lock();
        if m.len() >= KNOWN_INDEX_LIMIT && !m.contains_key(ye) {
            if let Some(k) = m.keys().next().cloned() {
                m.remove(&k);
            }
        }
        m.insert(ye.to_string(), request_id.to_string());
    }

    fn forget(&self, ye: &str) {
        self.lock().remove(ye);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        // The map holds no invariant a panicking holder could break.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The row key of the time-ordered indexes: newest first, ties by request id.
fn created_key(t: &DateTime<Utc>, request_id: &str) -> String {
    format!("{}_{request_id}", inverted(t))
}

fn inverted(t: &DateTime<Utc>) -> String {
    format!("{:019}", i64::MAX - t.timestamp_micros())
}

fn user_partition(key: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.to_lowercase().as_bytes());
    format!(
        "u-{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The index entities a record is listed by (its creation time and user never change).
fn listing_entries(rec: &ShipmentRecord) -> Vec<Value> {
    let rk = created_key(&rec.created_at, &rec.request_id);
    std::iter::once(PK_CREATED.to_string())
        .chain(rec.user_keys().iter().map(|k| user_partition(k)))
        .map(|pk| json!({"PartitionKey": pk, "RowKey": rk, "RequestId": rec.request_id}))
        .collect()
}

fn open_entry(request_id: &str) -> Value {
    json!({"PartitionKey": PK_OPEN, "RowKey": request_id})
}

/// Adapts an azure_core 1.x credential (azure_identity 1.x) to the 0.21 trait the tables
/// crate takes.
#[derive(Debug)]
struct LegacyCredential(Arc<dyn azure_core::credentials::TokenCredential>);

#[async_trait]
impl azure_core_legacy::auth::TokenCredential for LegacyCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
    ) -> azure_core_legacy::Result<azure_core_legacy::auth::AccessToken> {
        let t =
            self.0.get_token(scopes, None).await.map_err(|e| {
                azure_core_legacy::Error::message(ErrorKind::Credential, e.to_string())
            })?;
        Ok(azure_core_legacy::auth::AccessToken {
            token: azure_core_legacy::auth::Secret::new(t.token.secret().to_string()),
            expires_on: t.expires_on,
        })
    }
    async fn clear_cache(&self) -> azure_core_legacy::Result<()> {
        Ok(())
    }
}

fn status_of(e: &azure_core_legacy::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}

fn unavailable(e: azure_core_legacy::Error) -> StoreError {
    match status_of(&e) {
        Some(s) => StoreError::Other(format!("Azure Tables answered {s}")),
        None => StoreError::Unavailable(format!("Azure Tables: {e}")),
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// OData string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The name a lease's row key ([`hex`]) holds.
fn unhex(rk: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..rk.len())
        .step_by(2)
        .map(|i| {
            rk.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

fn etag_of(e: &Etag) -> ETag {
    ETag(e.to_string())
}

fn entity(pk: &str, rec: &ShipmentRecord) -> Result<Value, StoreError> {
    Ok(json!({
        "PartitionKey": pk,
        "RowKey": rec.request_id,
        "Step": rec.step.as_str(),
        "Open": rec.needs_scan(),
        "CompletedAt": rec.ended_at().as_ref().map(ts).unwrap_or_default(),
        "YeShipmentId": rec.ye_shipment_id.clone().unwrap_or_default(),
        "Data": serde_json::to_string(rec).map_err(|e| StoreError::Other(e.to_string()))?,
    }))
}

fn record_of(v: &Value) -> Result<ShipmentRecord, StoreError> {
    let data = v["Data"]
        .as_str()
        .ok_or_else(|| StoreError::Other("entity without Data".into()))?;
    serde_json::from_str(data).map_err(|e| StoreError::Other(e.to_string()))
}

impl AzureTableStore {
    /// Connects and creates the table if it does not exist yet. Every call, this one
    /// included, is bounded by `timeout` ([`super::Timed`]).
    pub async fn connect(
        endpoint: &url::Url,
        table: &str,
        auth: AzureTablesAuth,
        timeout: std::time::Duration,
        http: reqwest::Client,
    ) -> Result<Arc<dyn ShipmentStore>, StoreError> {
        // The account is the host's first label (`<account>.table.core.windows.net`) or, for
        // path-style endpoints such as Azurite's, the first path segment.
        let path_account = endpoint
            .path_segments()
            .and_then(|mut s| s.next())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let host_account = endpoint
            .host_str()
            .and_then(|h| h.split('.').next())
            .map(str::to_string);
        let (credentials, account) = match auth {
            AzureTablesAuth::SharedKey { account, key } => (
                StorageCredentials::access_key(account.clone(), key.expose_secret().to_string()),
                account,
            ),
            AzureTablesAuth::Token(c) => (
                StorageCredentials::token_credential(Arc::new(LegacyCredential(c))),
                path_account
                    .clone()
                    .or(host_account)
                    .ok_or_else(|| StoreError::Other("cannot tell the storage account".into()))?,
            ),
        };
        let uri = endpoint.as_str().trim_end_matches('/').to_string();
        let service = azure_data_tables::clients::TableServiceClientBuilder::with_location(
            CloudLocation::Custom { account, uri },
            credentials,
        )
        .retry(azure_core_legacy::RetryOptions::none())
        // Through the process's client: no redirect followed, its CAs and timeouts.
        .transport(azure_core_legacy::TransportOptions::new(Arc::new(
            super::transport::ProjectTransport(http),
        )))
        .build();
        let table = service.table_client(table);
        let created = tokio::time::timeout(timeout, table.create())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "Azure Tables did not answer within {} ms",
                    timeout.as_millis()
                ))
            })?;
        match created {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(409) => {}
            // A role scoped to the one table (least privilege) may not create tables: the
            // infrastructure created it; the first read or write says if it is missing.
            Err(e) if status_of(&e) == Some(403) => {
                tracing::info!(
                    "not allowed to create the table; assuming the deployment created it"
                );
            }
            Err(e) => return Err(unavailable(e)),
        }
        let mut store = AzureTableStore {
            table,
            sharded: false,
            known: KnownIndex::default(),
        };
        // The layout (a table written by an earlier version gets its index entries once;
        // each call is bounded like every other).
        store.sharded = tokio::time::timeout(timeout * 20, store.layout())
            .await
            .map_err(|_| {
                StoreError::Unavailable("building the table's indexes took too long".into())
            })??;
        Ok(Arc::new(super::Timed::new(store, timeout, "Azure Tables")))
    }

    async fn get_entity(&self, pk: &str, rk: &str) -> Result<Option<(Value, Etag)>, StoreError> {
        match self
            .table
            .partition_key_client(pk)
            .entity_client(rk)
            .get::<Value>()
            .await
        {
            Ok(r) => Ok(Some((r.entity, r.etag))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn insert_entity(&self, v: &Value) -> Result<Etag, StoreError> {
        match self.table.insert::<_, Value>(v) {
            Ok(b) => match b.return_entity(false).await {
                Ok(r) => Ok(r.etag),
                Err(e) if status_of(&e) == Some(409) => Err(StoreError::AlreadyExists),
                Err(e) => Err(unavailable(e)),
            },
            Err(e) => Err(StoreError::Other(e.to_string())),
        }
    }

    async fn update_entity(
        &self,
        pk: &str,
        rk: &str,
        v: &Value,
        etag: &str,
    ) -> Result<Etag, StoreError> {
        let client = self.table.partition_key_client(pk).entity_client(rk);
        let cond = IfMatchCondition::Etag(Etag::from(etag.to_string()));
        match client.update(v, cond) {
            Ok(b) => match b.await {
                Ok(r) => Ok(r.etag),
                Err(e) if matches!(status_of(&e), Some(412) | Some(404)) => {
                    Err(StoreError::Conflict)
                }
                Err(e) => Err(unavailable(e)),
            },
            Err(e) => Err(StoreError::Other(e.to_string())),
        }
    }

    async fn delete_entity(
        &self,
        pk: &str,
        rk: &str,
        etag: Option<&str>,
    ) -> Result<(), StoreError> {
        let cond = match etag {
            Some(e) => IfMatchCondition::Etag(Etag::from(e.to_string())),
            None => IfMatchCondition::Any,
        };
        match self
            .table
            .partition_key_client(pk)
            .entity_client(rk)
            .delete()
            .if_match(cond)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) if status_of(&e) == Some(412) => Err(StoreError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl ShipmentStore for AzureTableStore {
    async fn insert(&self, rec: &ShipmentRecord) -> Result<ETag, StoreError> {
        // Index entries first: one that points at no record is skipped by its readers; a
        // record without its entries would be invisible to them.
        let mut entries = listing_entries(rec);
        if rec.needs_scan() {
            entries.push(open_entry(&rec.request_id));
        }
        futures::future::try_join_all(entries.iter().map(|v| self.upsert(v))).await?;
        if let Some(ye) = &rec.ye_shipment_id {
            self.index(ye, &rec.request_id).await?;
        }
        self.insert_entity(&entity(&self.record_pk(&rec.request_id), rec)?)
            .await
            .map(|e| etag_of(&e))
    }

    async fn reopen(&self, rec: &ShipmentRecord, etag: &ETag) -> Result<ETag, StoreError> {
        // The entry before the record (a crash in between leaves an entry the scan
        // removes) and again after it: the scan may have removed the first one after
        // reading the record still closed.
        let entry = open_entry(&rec.request_id);
        self.upsert(&entry).await?;
        let e = self.replace(rec, etag).await?;
        self.upsert(&entry).await?;
        Ok(e)
    }

    async fn repair_indexes(&self) -> Result<usize, StoreError> {
        self.backfill(true).await
    }

    async fn get(&self, request_id: &str) -> Result<Option<Versioned<ShipmentRecord>>, StoreError> {
        match self
            .get_entity(&self.record_pk(request_id), request_id)
            .await?
        {
            Some((v, e)) => Ok(Some(Versioned {
                value: record_of(&v)?,
                etag: etag_of(&e),
            })),
            None => Ok(None),
        }
    }

    async fn get_by_shipment_id(
        &self,
        ye_shipment_id: &str,
    ) -> Result<Option<Versioned<ShipmentRecord>>, StoreError> {
        let agrees = |v: &Versioned<ShipmentRecord>| {
            v.value.ye_shipment_id.as_deref() == Some(ye_shipment_id)
        };
        if let Some(request_id) = self.known.request_id(ye_shipment_id) {
            match self.get(&request_id).await? {
                Some(v) if agrees(&v) => return Ok(Some(v)),
                // Deleted (or replaced by another record under the same request id):
                // the index says what is there now.
                _ => self.known.forget(ye_shipment_id),
            }
        }
        let Some((idx, _)) = self
            .get_entity(&self.ye_pk(ye_shipment_id), &hex(ye_shipment_id))
            .await?
        else {
            return Ok(None);
        };
        let Some(request_id) = idx["RequestId"].as_str() else {
            return Ok(None);
        };
        // The index is written before the record: trust only a record that agrees.
        let found = self.get(request_id).await?.filter(agrees);
        if found.is_some() {
            self.known.learn(ye_shipment_id, request_id);
        }
        Ok(found)
    }

    async fn replace(&self, rec: &ShipmentRecord, etag: &ETag) -> Result<ETag, StoreError> {
        // The entry before the record, unless this process knows it is there (written or
        // read, and agreeing): it stays while the record does.
        let unknown = rec
            .ye_shipment_id
            .as_deref()
            .filter(|ye| !self.known.knows(ye, &rec.request_id));
        if let Some(ye) = unknown {
            self.index(ye, &rec.request_id).await?;
        }
        let pk = self.record_pk(&rec.request_id);
        let written = self
            .update_entity(&pk, &rec.request_id, &entity(&pk, rec)?, &etag.0)
            .await
            .map(|e| etag_of(&e))?;
        if let Some(ye) = unknown {
            self.known.learn(ye, &rec.request_id);
        }
        Ok(written)
    }

    async fn delete(&self, request_id: &str, etag: Option<&ETag>) -> Result<(), StoreError> {
        let Some(cur) = self.get(request_id).await? else {
            return Ok(());
        };
        self.delete_entity(
            &self.record_pk(request_id),
            request_id,
            etag.map(|e| e.0.as_str()),
        )
        .await?;
        // The record is gone: its index entries point at nothing (a crash here leaves
        // entries that readers skip). Their keys hold the creation time, so a later
        // record reusing the request id never shares them.
        if let Some(ye) = &cur.value.ye_shipment_id {
            self.known.forget(ye);
            self.delete_entity(&self.ye_pk(ye), &hex(ye), None).await?;
        }
        for v in listing_entries(&cur.value) {
            let (pk, rk) = (v["PartitionKey"].as_str(), v["RowKey"].as_str());
            if let (Some(pk), Some(rk)) = (pk, rk) {
                self.delete_entity(pk, rk, None).await?;
            }
        }
        Ok(())
    }

    async fn query(
        &self,
        q: &Query,
        continuation: Option<String>,
        limit: usize,
    ) -> Result<Page<Versioned<ShipmentRecord>>, StoreError> {
        let filter = match q {
            Query::Open => return self.open_page(continuation, limit).await,
            Query::Created {
                user,
                after,
                before,
            } => {
                return self
                    .created_page(user.as_deref(), *after, *before, continuation, limit)
                    .await
            }
            Query::All => self.records_filter(),
            Query::EndedBefore(t) => format!(
                "{} and (Step eq {} or Step eq {}) and CompletedAt lt {} and CompletedAt ne ''",
                self.records_filter(),
                lit(Step::Complete.as_str()),
                lit(Step::Failed.as_str()),
                lit(&ts(t))
            ),
        };
        let (entities, next) = self.entities(filter, continuation, limit).await?;
        let items = entities
            .iter()
            .map(|v| {
                Ok(Versioned {
                    value: record_of(v)?,
                    etag: ETag(
                        v["odata.etag"]
                            .as_str()
                            .ok_or_else(|| StoreError::Other("entity without etag".into()))?
                            .to_string(),
                    ),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page { items, next })
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let rk = hex(name);
        let v =
            json!({"PartitionKey": PK_LEASE, "RowKey": rk, "Owner": owner, "Until": ts(&until)});
        match self.get_entity(PK_LEASE, &rk).await? {
            None => match self.insert_entity(&v).await {
                Ok(_) => Ok(true),
                Err(StoreError::AlreadyExists) => Ok(false),
                Err(e) => Err(e),
            },
            Some((cur, etag)) => {
                let same_replica =
                    |o: &str| o.contains('/') && super::replica_of(o) == super::replica_of(owner);
                let free = cur["Owner"].as_str() == Some(owner)
                    || cur["Owner"].as_str().is_some_and(same_replica)
                    || cur["Until"].as_str().is_none_or(|u| u < ts(&now).as_str());
                if !free {
                    return Ok(false);
                }
                match self.update_entity(PK_LEASE, &rk, &v, etag.as_ref()).await {
                    Ok(_) => Ok(true),
                    Err(StoreError::Conflict) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let rk = hex(name);
        if let Some((cur, etag)) = self.get_entity(PK_LEASE, &rk).await? {
            if cur["Owner"].as_str() == Some(owner) {
                match self.delete_entity(PK_LEASE, &rk, Some(etag.as_ref())).await {
                    Ok(()) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn lease_holder(
        &self,
        name: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let Some((cur, _)) = self.get_entity(PK_LEASE, &hex(name)).await? else {
            return Ok(None);
        };
        let owner = cur["Owner"].as_str().unwrap_or_default().to_string();
        let until = cur["Until"]
            .as_str()
            .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
            .ok_or_else(|| StoreError::Other("lease without a valid `Until`".into()))?;
        Ok(Some((owner, until.with_timezone(&Utc))))
    }

    async fn leases_named(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Row keys are the names in hex: the prefix's hex, then any hex digits.
        let from = hex(prefix);
        let filter = format!(
            "PartitionKey eq {} and RowKey ge {} and RowKey lt {}",
            lit(PK_LEASE),
            lit(&from),
            lit(&format!("{from}g"))
        );
        let (entries, _) = self.entities(filter, None, 1000).await?;
        Ok(entries
            .iter()
            .filter_map(|e| e["RowKey"].as_str())
            .filter_map(unhex)
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut s = self
            .table
            .query()
            .filter(Filter::new(format!("PartitionKey eq {}", lit(PK_LEASE))))
            .top(Top::new(1))
            .into_stream::<Value>();
        match s.next().await {
            Some(Err(e)) => Err(unavailable(e)),
            _ => Ok(()),
        }
    }
}

impl AzureTableStore {
    async fn upsert(&self, v: &Value) -> Result<(), StoreError> {
        let (Some(pk), Some(rk)) = (v["PartitionKey"].as_str(), v["RowKey"].as_str()) else {
            return Err(StoreError::Other("entity without keys".into()));
        };
        let client = self.table.partition_key_client(pk).entity_client(rk);
        match client.insert_or_replace(v) {
            Ok(b) => b.await.map(|_| ()).map_err(unavailable),
            Err(e) => Err(StoreError::Other(e.to_string())),
        }
    }

    /// One page of entities of a query (`filter` is built from our own literals).
    async fn entities(
        &self,
        filter: String,
        continuation: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<String>), StoreError> {
        let mut builder = self
            .table
            .query()
            .filter(Filter::new(filter))
            .top(Top::new(limit.clamp(1, 1000) as u32));
        if let Some(c) = continuation {
            let (pk, rk) = c.split_once('\n').unwrap_or((c.as_str(), ""));
            builder = builder.initial_partition_key(pk.to_string());
            if !rk.is_empty() {
                builder = builder.initial_row_key(rk.to_string());
            }
        }
        let mut stream = builder.into_stream::<Value>();
        let Some(page) = stream.next().await else {
            return Ok((vec![], None));
        };
        let page = page.map_err(unavailable)?;
        let next = page
            .continuation()
            .map(|(pk, rk)| format!("{pk}\n{}", rk.unwrap_or_default()));
        Ok((page.entities, next))
    }

    /// The records the index entries name, in their order; `None` where a record is
    /// missing.
    async fn resolve(
        &self,
        entries: &[Value],
    ) -> Result<Vec<Option<Versioned<ShipmentRecord>>>, StoreError> {
        let ids: Vec<&str> = entries
            .iter()
            .map(|v| {
                v["RequestId"]
                    .as_str()
                    .or(v["RowKey"].as_str())
                    .unwrap_or_default()
            })
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INDEX_READS) {
            for r in futures::future::join_all(chunk.iter().map(|id| self.get(id))).await {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// A page of the processing scan: the `open` entries, resolved to open records. An
    /// entry whose record has ended (or, after a grace period, never appeared) is removed,
    /// conditionally on the ETag read with the page, so that a reopen that rewrote it in
    /// the meantime wins.
    async fn open_page(
        &self,
        continuation: Option<String>,
        limit: usize,
    ) -> Result<Page<Versioned<ShipmentRecord>>, StoreError> {
        let (entries, next) = self
            .entities(
                format!("PartitionKey eq {}", lit(PK_OPEN)),
                continuation,
                limit,
            )
            .await?;
        let records = self.resolve(&entries).await?;
        let grace = Utc::now() - chrono::Duration::minutes(ORPHAN_GRACE_MINUTES);
        let mut items = Vec::with_capacity(records.len());
        for (entry, rec) in entries.iter().zip(records) {
            let stale = match &rec {
                Some(v) => !v.value.needs_scan(),
                None => entry["Timestamp"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t < grace),
            };
            match rec {
                Some(v) if v.value.needs_scan() => items.push(v),
                _ if stale => {
                    let (Some(rk), Some(etag)) =
                        (entry["RowKey"].as_str(), entry["odata.etag"].as_str())
                    else {
                        continue;
                    };
                    match self.delete_entity(PK_OPEN, rk, Some(etag)).await {
                        Ok(()) | Err(StoreError::Conflict) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        Ok(Page { items, next })
    }

    /// A page of a listing from the `created` or a user's index, newest first.
    async fn created_page(
        &self,
        user: Option<&str>,
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
        continuation: Option<String>,
        limit: usize,
    ) -> Result<Page<Versioned<ShipmentRecord>>, StoreError> {
        let pk = match user {
            Some(u) => user_partition(u),
            None => PK_CREATED.to_string(),
        };
        let mut filter = format!("PartitionKey eq {}", lit(&pk));
        // Row keys start with the inverted time: `before` is a lower bound on the key,
        // `after` an upper one (both inclusive at the microsecond).
        if let Some(b) = before {
            filter += &format!(" and RowKey ge {}", lit(&inverted(&b)));
        }
        if let Some(a) = after {
            filter += &format!(" and RowKey lt {}", lit(&format!("{}`", inverted(&a))));
        }
        if let Some(c) = continuation {
            let (t, id) = super::parse_position(&c)
                .ok_or_else(|| StoreError::Other("bad continuation".into()))?;
            filter += &format!(" and RowKey gt {}", lit(&created_key(&t, &id)));
        }
        let (entries, _) = self.entities(filter, None, limit).await?;
        let full = entries.len() == limit.clamp(1, 1000);
        let last_key = entries
            .last()
            .and_then(|v| v["RowKey"].as_str())
            .map(str::to_string);
        let records = self.resolve(&entries).await?;
        // Trust only a record that agrees with its entry: a create that lost an insert race
        // (the same Idempotency-Key at once) wrote entries at its own time for a record it
        // did not write; those name the record at a time it was not created.
        let items: Vec<_> = entries
            .iter()
            .zip(records)
            .filter_map(|(e, r)| {
                r.filter(|v| {
                    e["RowKey"].as_str()
                        == Some(created_key(&v.value.created_at, &v.value.request_id).as_str())
                })
            })
            .collect();
        // Continue after the last entry read, even if its record is gone.
        let next = match (full, last_key) {
            (true, Some(rk)) => {
                let (inv, id) = rk.split_once('_').unwrap_or((rk.as_str(), ""));
                let micros = i64::MAX - inv.parse::<i64>().unwrap_or(i64::MAX);
                DateTime::from_timestamp_micros(micros).map(|t| super::position(&t, id))
            }
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// The partition of a record.
    fn record_pk(&self, request_id: &str) -> String {
        self.partition(PK_SHIPMENT, request_id)
    }

    /// `<base>-<x>` (`x`: the first hex digit of SHA-256(key)) in layout 3, else `base`.
    fn partition(&self, base: &str, key: &str) -> String {
        if self.sharded {
            use sha2::Digest;
            let d = sha2::Sha256::digest(key.as_bytes());
            format!("{base}-{:x}", d[0] >> 4)
        } else {
            base.to_string()
        }
    }

    /// The partition of a YubiEnterprise id's index entry (every read by shipment id reads
    /// one, so it is spread like the records).
    fn ye_pk(&self, ye_shipment_id: &str) -> String {
        self.partition(PK_INDEX, ye_shipment_id)
    }

    /// A filter for every record (one partition, or the range of the 16).
    fn records_filter(&self) -> String {
        if self.sharded {
            // '-' < '.': every `shipment-<x>` and nothing else.
            format!(
                "PartitionKey ge {} and PartitionKey lt {}",
                lit(&format!("{PK_SHIPMENT}-")),
                lit(&format!("{PK_SHIPMENT}."))
            )
        } else {
            format!("PartitionKey eq {}", lit(PK_SHIPMENT))
        }
    }

    /// Reads (or settles) the table's layout: whether records are sharded. A new table
    /// gets layout 3; a table of an earlier version (records in `shipment`, no marker) gets
    /// its index entries written, then layout 2.
    async fn layout(&self) -> Result<bool, StoreError> {
        if let Some((m, _)) = self.get_entity(PK_META, "layout").await? {
            return Ok(m["Version"].as_i64().unwrap_or(LAYOUT_INDEXED) >= LAYOUT_SHARDED);
        }
        // Any record in the one-partition layout? (An empty page may still carry a
        // continuation: follow it rather than take a legacy table for a new one.)
        let mut legacy = false;
        let mut c = None;
        loop {
            let (page, next) = self
                .entities(format!("PartitionKey eq {}", lit(PK_SHIPMENT)), c, 1)
                .await?;
            if !page.is_empty() {
                legacy = true;
                break;
            }
            match next {
                Some(n) => c = Some(n),
                None => break,
            }
        }
        if !legacy {
            self.upsert(
                &json!({"PartitionKey": PK_META, "RowKey": "layout", "Version": LAYOUT_SHARDED}),
            )
            .await?;
            return Ok(true);
        }
        let built = self.backfill(false).await?;
        tracing::info!(
            built,
            "index entries written for an earlier version's table"
        );
        Ok(false)
    }

    /// Writes the index entries of every record (upserts: idempotent), then the layout
    /// marker (layout 2). Run at connect for a table an earlier version made (`force`:
    /// from the cleanup job, which repairs `open` entries lost to a crash).
    async fn backfill(&self, force: bool) -> Result<usize, StoreError> {
        let open: std::collections::HashSet<String> = {
            let mut set = std::collections::HashSet::new();
            let mut c = None;
            loop {
                let (page, next) = self
                    .entities(format!("PartitionKey eq {}", lit(PK_OPEN)), c, 1000)
                    .await?;
                set.extend(
                    page.iter()
                        .filter_map(|v| v["RowKey"].as_str().map(str::to_string)),
                );
                c = next;
                if c.is_none() {
                    break set;
                }
            }
        };
        let mut repaired = 0;
        let mut c = None;
        loop {
            // `force` (the periodic repair) only needs open records: the listing entries
            // of every record were written before it.
            let filter = if force {
                format!("{} and Open eq true", self.records_filter())
            } else {
                self.records_filter()
            };
            let (page, next) = self.entities(filter, c, 1000).await?;
            for v in &page {
                let rec = record_of(v)?;
                let mut entries = if force { vec![] } else { listing_entries(&rec) };
                if rec.needs_scan() && !open.contains(&rec.request_id) {
                    entries.push(open_entry(&rec.request_id));
                    repaired += 1;
                }
                futures::future::try_join_all(entries.iter().map(|e| self.upsert(e))).await?;
            }
            c = next;
            if c.is_none() {
                break;
            }
        }
        if !force {
            self.upsert(
                &json!({"PartitionKey": PK_META, "RowKey": "layout", "Version": LAYOUT_INDEXED}),
            )
            .await?;
        }
        if repaired > 0 {
            tracing::warn!(
                repaired,
                "open shipments were missing from the open index; added"
            );
        }
        Ok(repaired)
    }

    /// Upserts the index entity YE id → request id (idempotent; written before the record).
    async fn index(&self, ye: &str, request_id: &str) -> Result<(), StoreError> {
        self.upsert(
            &json!({"PartitionKey": self.ye_pk(ye), "RowKey": hex(ye), "RequestId": request_id}),
        )
        .await
    }
}
