//! Embedded backend: one SQLite file (WAL mode), the default outside Azure.
//!
//! One writer connection, owned by a writer thread that runs the writes queued at a moment
//! in one transaction (group commit: one fsync for many concurrent writes, each answered
//! only once committed), plus a few read-only connections (WAL lets readers run beside the
//! writer) used on the calling task for point reads and from `spawn_blocking` for scans.
//! Every conditional write is a single statement (`UPDATE … WHERE etag = ?`) and
//! checks the number of rows it changed, so two writers (tasks, or processes sharing the
//! file) can never both win. ETags are fresh random values per write.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{ETag, Page, Query, ShipmentStore, StoreError, Versioned};
use crate::domain::{ShipmentRecord, Step};

/// Indexes over the listing columns (`created_at`, `user_key`, `entra_key`, `upn_key`), created by
/// [`migrate`] once the columns exist (an older file gains and fills them first).
const LISTING_COLUMNS: &str = "
CREATE INDEX IF NOT EXISTS shipments_created ON shipments(created_at, request_id);
CREATE INDEX IF NOT EXISTS shipments_user ON shipments(user_key, created_at, request_id);
CREATE INDEX IF NOT EXISTS shipments_entra ON shipments(entra_key, created_at, request_id);
CREATE INDEX IF NOT EXISTS shipments_upn ON shipments(upn_key, created_at, request_id);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shipments (
    request_id     TEXT PRIMARY KEY,
    ye_shipment_id TEXT UNIQUE,
    step           TEXT NOT NULL,
    open           INTEGER NOT NULL,
    completed_at   TEXT,
    created_at     TEXT,
    user_key       TEXT,
    entra_key      TEXT,
    upn_key        TEXT,
    etag           TEXT NOT NULL,
    data           TEXT NOT NULL,
    view           TEXT
);
CREATE INDEX IF NOT EXISTS shipments_open ON shipments(open, request_id);
CREATE INDEX IF NOT EXISTS shipments_completed ON shipments(step, completed_at, request_id);
CREATE TABLE IF NOT EXISTS leases (
    name  TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until TEXT NOT NULL
);
";

/// Read-only connections opened beside the writer for file databases.
const READERS: usize = 4;
/// Memory-mapped window of each reader connection.
const READER_MMAP_BYTES: i64 = 256 * 1024 * 1024;

#[derive(Clone)]
pub struct SqliteStore {
    /// Writes go to the writer thread, which owns the writer connection.
    jobs: std::sync::mpsc::Sender<Job>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

fn ts(t: &DateTime<Utc>) -> String {
    // Fixed width so that text order is time order.
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl SqliteStore {
    /// One record by a unique column (`column` is one of ours, never input).
    async fn get_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<Versioned<ShipmentRecord>>, StoreError> {
        let value = value.to_string();
        self.read_point(move |c| {
            c.prepare_cached(&format!(
                "SELECT data, etag FROM shipments WHERE {column} = ?1"
            ))
            .map_err(other)?
            .query_row(params![value], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(other)?
            .map(|(d, e)| decode(&d, e))
            .transpose()
        })
        .await
    }

    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(other)?;
        // FULL: in WAL mode a committed step survives power loss too (NORMAL may lose the
        // last commits); each step is one small transaction, so the cost is one fsync.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(other)?;
        let mut store = Self::init(conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
            r.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(other)?;
            // Reads through a memory map (no read syscall per page) and a larger page
            // cache; both are address space and memory the OS may reclaim, not copies.
            r.pragma_update(None, "mmap_size", READER_MMAP_BYTES)
                .map_err(other)?;
            readers.push(Mutex::new(r));
        }
        store.readers = Arc::new(readers);
        Ok(store)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(other)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(other)?;
        conn.execute_batch(SCHEMA).map_err(other)?;
        migrate(&conn)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(conn, queue))
            .map_err(|e| StoreError::Other(format!("cannot start the store's writer: {e}")))?;
        Ok(Self {
            jobs,
            readers: Arc::new(Vec::new()),
            next_reader: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        })
    }

    /// Runs a read on a reader connection (the writer when there are none: in memory).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.readers.is_empty() {
            return self.with(f).await;
        }
        let readers = self.readers.clone();
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % readers.len();
        tokio::task::spawn_blocking(move || {
            let mut guard = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }

    /// A point read (one row by key): served on the calling task when a reader connection
    /// is free, without the hop to the blocking pool, which costs more than the read itself
    /// (two context switches against a few microseconds in SQLite's page cache). In WAL
    /// mode readers never wait for the writer, so this does not stall the runtime; when
    /// every reader is busy it falls back to the blocking pool.
    async fn read_point<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let n = self.readers.len();
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for k in 0..n {
            if let Ok(mut guard) = self.readers[(start + k) % n].try_lock() {
                return f(&mut guard);
            }
        }
        self.read(f).await
    }

    /// Runs `f` on the writer connection, in the writer thread's next transaction. Its
    /// result is delivered only once that transaction committed (so a write the caller sees
    /// succeed is on disk), or the commit's error instead.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c: &mut Connection| {
            let r = f(c);
            Box::new(move |commit: Option<&StoreError>| {
                let _ = tx.send(match commit {
                    Some(e) => Err(StoreError::Unavailable(e.to_string())),
                    None => r,
                });
            }) as Deliver
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Unavailable("the store's writer could not run this write".into())
        })?
    }
}

/// Completes one write once its transaction's fate is known (`Some`: the commit failed).
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// One write, run inside the writer's transaction.
type Job = Box<dyn FnOnce(&mut Connection) -> Deliver + Send>;

/// Writes that arrive together share one transaction, so one fsync (group commit).
const MAX_BATCH: usize = 64;

/// The writer thread: owns the writer connection; takes every write queued at the moment,
/// runs them in one `BEGIN IMMEDIATE … COMMIT` (each conditional statement still checks its
/// own ETag and row count, exactly as if run alone, in queue order), then answers them
/// all. Under concurrency this turns N fsyncs into one; alone, a write costs what it did.
fn writer(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut st| st.execute([]))
        {
            // Another process held the file's write lock past the busy timeout: these
            // writes were not run; dropping them answers their callers `Unavailable`.
            tracing::warn!(error = %e, writes = batch.len(), "store busy; writes refused");
            drop(batch);
            continue;
        }
        let delivers: Vec<Deliver> = batch
            .into_iter()
            .map(|job| run_guarded(job, &mut conn))
            .collect();
        match conn
            .prepare_cached("COMMIT")
            .and_then(|mut st| st.execute([]))
        {
            Ok(_) => delivers.into_iter().for_each(|d| d(None)),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                let err = StoreError::Unavailable(format!("commit failed: {e}"));
                delivers.into_iter().for_each(|d| d(Some(&err)));
            }
        }
    }
}

/// Runs one job; a panic fails that write only (its caller gets `Unavailable`).
fn run_guarded(job: Job, conn: &mut Connection) -> Deliver {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))) {
        Ok(d) => d,
        Err(_) => Box::new(|_| {}),
    }
}

/// Adds the listing columns to a file made by an earlier version and fills them from the
/// records, in one transaction (idempotent: only rows without `created_at`).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let mut cols = Vec::new();
    {
        let mut st = conn
            .prepare("SELECT name FROM pragma_table_info('shipments')")
            .map_err(other)?;
        let names = st.query_map([], |r| r.get::<_, String>(0)).map_err(other)?;
        for n in names {
            cols.push(n.map_err(other)?);
        }
    }
    let tx = conn.unchecked_transaction().map_err(other)?;
    // `view` (the API's JSON view, written with the record) needs no filling in: a row
    // without one is read from `data`.
    // `upn_key` stays empty on rows written before the UPN was kept: their records hold
    // none (found by the user as ordered and by object id).
    for col in ["created_at", "user_key", "entra_key", "upn_key", "view"] {
        if !cols.iter().any(|c| c == col) {
            tx.execute_batch(&format!("ALTER TABLE shipments ADD COLUMN {col} TEXT"))
                .map_err(other)?;
        }
    }
    let missing: Vec<(String, String)> = {
        let mut st = tx
            .prepare("SELECT request_id, data FROM shipments WHERE created_at IS NULL")
            .map_err(other)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(other)?;
        rows.collect::<Result<_, _>>().map_err(other)?
    };
    for (id, data) in &missing {
        let rec: ShipmentRecord = serde_json::from_str(data).map_err(other)?;
        tx.execute(
            "UPDATE shipments SET created_at = ?2, user_key = ?3, entra_key = ?4 WHERE request_id = ?1",
            params![
                id,
                ts(&rec.created_at),
                rec.user_id.to_lowercase(),
                rec.entra_user_id.to_lowercase()
            ],
        )
        .map_err(other)?;
    }
    tx.execute_batch(LISTING_COLUMNS).map_err(other)?;
    tx.commit().map_err(other)?;
    if !missing.is_empty() {
        tracing::info!(records = missing.len(), "listing columns filled in");
    }
    Ok(())
}

fn encode(rec: &ShipmentRecord) -> Result<String, StoreError> {
    serde_json::to_string(rec).map_err(other)
}

fn decode(data: &str, etag: String) -> Result<Versioned<ShipmentRecord>, StoreError> {
    Ok(Versioned {
        value: serde_json::from_str(data).map_err(other)?,
        etag: ETag(etag),
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

#[async_trait]
impl ShipmentStore for SqliteStore {
    async fn insert(&self, rec: &ShipmentRecord) -> Result<ETag, StoreError> {
        let data = encode(rec)?;
        let view = crate::domain::shipment::public_view_json(rec);
        let rec = rec.clone();
        self.with(move |c| {
            let etag = new_etag();
            // Cached: the writer runs these statements for every record, parsing them once.
            let r = c.prepare_cached(
                "INSERT INTO shipments (request_id, ye_shipment_id, step, open, completed_at, etag, data,
                                        created_at, user_key, entra_key, upn_key, view)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            ).and_then(|mut st| st.execute(
                params![
                    rec.request_id,
                    rec.ye_shipment_id,
                    rec.step.as_str(),
                    rec.needs_scan(),
                    rec.ended_at().as_ref().map(ts),
                    etag,
                    data,
                    ts(&rec.created_at),
                    rec.user_id.to_lowercase(),
                    rec.entra_user_id.to_lowercase(),
                    rec.user_upn.as_ref().map(|u| u.to_lowercase()),
                    view
                ],
            ));
            match r {
                Ok(_) => Ok(ETag(etag)),
                Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists),
                Err(e) => Err(other(e)),
            }
        })
        .await
    }

    async fn get(&self, request_id: &str) -> Result<Option<Versioned<ShipmentRecord>>, StoreError> {
        self.get_where("request_id", request_id).await
    }

    async fn get_by_shipment_id(
        &self,
        ye_shipment_id: &str,
    ) -> Result<Option<Versioned<ShipmentRecord>>, StoreError> {
        self.get_where("ye_shipment_id", ye_shipment_id).await
    }

    async fn public_view(&self, ye_shipment_id: &str) -> Result<Option<String>, StoreError> {
        let value = ye_shipment_id.to_string();
        self.read_point(move |c| {
            // The view alone (the record is not read, nor copied out): a row written by an
            // earlier version has none, and is then read from the record itself.
            let row = c
                .prepare_cached("SELECT view FROM shipments WHERE ye_shipment_id = ?1")
                .map_err(other)?
                .query_row(params![value], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map_err(other)?;
            Ok(match row {
                None => None,
                Some(Some(view)) => Some(view),
                Some(None) => {
                    let data: String = c
                        .prepare_cached("SELECT data FROM shipments WHERE ye_shipment_id = ?1")
                        .map_err(other)?
                        .query_row(params![value], |r| r.get(0))
                        .map_err(other)?;
                    crate::domain::shipment::public_view_json(&decode(&data, String::new())?.value)
                }
            })
        })
        .await
    }

    async fn replace(&self, rec: &ShipmentRecord, etag: &ETag) -> Result<ETag, StoreError> {
        let data = encode(rec)?;
        let view = crate::domain::shipment::public_view_json(rec);
        let rec = rec.clone();
        let old = etag.0.clone();
        self.with(move |c| {
            let new = new_etag();
            let n = c
                .prepare_cached(
                    "UPDATE shipments SET ye_shipment_id = ?2, step = ?3, open = ?4,
                            completed_at = ?5, etag = ?6, data = ?7, view = ?9
                     WHERE request_id = ?1 AND etag = ?8",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        rec.request_id,
                        rec.ye_shipment_id,
                        rec.step.as_str(),
                        rec.needs_scan(),
                        rec.ended_at().as_ref().map(ts),
                        new,
                        data,
                        old,
                        view
                    ])
                })
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Other("ye_shipment_id already used by another record".into())
                    } else {
                        other(e)
                    }
                })?;
            if n == 1 {
                Ok(ETag(new))
            } else {
                Err(StoreError::Conflict)
            }
        })
        .await
    }

    async fn delete(&self, request_id: &str, etag: Option<&ETag>) -> Result<(), StoreError> {
        let id = request_id.to_string();
        let etag = etag.map(|e| e.0.clone());
        self.with(move |c| {
            match etag {
                None => {
                    c.execute("DELETE FROM shipments WHERE request_id = ?1", params![id])
                        .map_err(other)?;
                }
                Some(e) => {
                    let n = c
                        .execute(
                            "DELETE FROM shipments WHERE request_id = ?1 AND etag = ?2",
                            params![id, e],
                        )
                        .map_err(other)?;
                    if n == 0 {
                        let exists: bool = c
                            .query_row(
                                "SELECT 1 FROM shipments WHERE request_id = ?1",
                                params![id],
                                |_| Ok(true),
                            )
                            .optional()
                            .map_err(other)?
                            .unwrap_or(false);
                        if exists {
                            return Err(StoreError::Conflict);
                        }
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn query(
        &self,
        q: &Query,
        continuation: Option<String>,
        limit: usize,
    ) -> Result<Page<Versioned<ShipmentRecord>>, StoreError> {
        let q = q.clone();
        let limit = limit.clamp(1, 1000);
        let after = continuation.unwrap_or_default();
        self.read(move |c| {
            // (request_id, data, etag) rows of one statement.
            fn rows(
                c: &Connection,
                sql: &str,
                args: &[&dyn rusqlite::ToSql],
            ) -> Result<Vec<(String, String, String)>, StoreError> {
                let mut st = c.prepare_cached(sql).map_err(other)?;
                let it = st
                    .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(other)?;
                it.collect::<Result<_, _>>().map_err(other)
            }
            let lim = limit as i64;
            let rows = match &q {
                Query::All => rows(
                    c,
                    "SELECT request_id, data, etag FROM shipments
                     WHERE request_id > ?1 ORDER BY request_id LIMIT ?2",
                    params![after, lim],
                )?,
                Query::Open => rows(
                    c,
                    "SELECT request_id, data, etag FROM shipments
                     WHERE open = 1 AND request_id > ?1 ORDER BY request_id LIMIT ?2",
                    params![after, lim],
                )?,
                Query::Created {
                    user,
                    after: lower,
                    before: upper,
                } => {
                    // Newest first: (created_at desc, request_id asc); the continuation is
                    // the position of the last row returned.
                    let (pos_t, pos_id) = match super::parse_position(&after) {
                        Some((t, id)) => (ts(&t), id),
                        None if after.is_empty() => ("9999".to_string(), String::new()),
                        None => return Err(StoreError::Other("bad continuation".into())),
                    };
                    let lower = lower.as_ref().map(ts).unwrap_or_default();
                    // Inclusive at the microsecond: callers re-check the exact bound.
                    let upper = upper.as_ref().map(ts).unwrap_or_else(|| "9999".into());
                    let user = user.as_ref().map(|u| u.to_lowercase());
                    // Two statements so that each uses its own index: a user's rows
                    // through the user indexes (an OR of three index lookups, then a sort
                    // of that user's few rows), all rows through the time index.
                    let sql = if user.is_some() {
                        "SELECT request_id, data, etag, created_at FROM shipments
                         WHERE (user_key = ?1 OR entra_key = ?1 OR upn_key = ?1)
                           AND created_at >= ?2 AND created_at <= ?3
                           AND (created_at < ?4 OR (created_at = ?4 AND request_id > ?5))
                         ORDER BY created_at DESC, request_id ASC LIMIT ?6"
                    } else {
                        "SELECT request_id, data, etag, created_at FROM shipments
                         WHERE ?1 IS NULL
                           AND created_at >= ?2 AND created_at <= ?3
                           AND (created_at < ?4 OR (created_at = ?4 AND request_id > ?5))
                         ORDER BY created_at DESC, request_id ASC LIMIT ?6"
                    };
                    let mut st = c.prepare_cached(sql).map_err(other)?;
                    let found = st
                        .query_map(params![user, lower, upper, pos_t, pos_id, lim], |r| {
                            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
                        })
                        .map_err(other)?
                        .collect::<Result<Vec<(String, String, String)>, _>>()
                        .map_err(other)?;
                    let items = found
                        .iter()
                        .map(|(_, d, e)| decode(d, e.clone()))
                        .collect::<Result<Vec<_>, _>>()?;
                    let next = (items.len() == limit).then(|| {
                        let last: &Versioned<ShipmentRecord> = &items[items.len() - 1];
                        super::position(&last.value.created_at, &last.value.request_id)
                    });
                    return Ok(Page { items, next });
                }
                Query::EndedBefore(t) => rows(
                    c,
                    "SELECT request_id, data, etag FROM shipments
                     WHERE step IN (?1, ?2) AND completed_at < ?3 AND request_id > ?4
                     ORDER BY request_id LIMIT ?5",
                    params![
                        Step::Complete.as_str(),
                        Step::Failed.as_str(),
                        ts(t),
                        after,
                        lim
                    ],
                )?,
            };
            let next = if rows.len() == limit {
                rows.last().map(|r| r.0.clone())
            } else {
                None
            };
            let items = rows
                .into_iter()
                .map(|(_, d, e)| decode(&d, e))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page { items, next })
        })
        .await
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.with(move |c| {
            // One statement: insert, or take over if expired, already ours, or held by a
            // former incarnation of this replica (same `<replica>/` prefix).
            let replica = format!("{}/", super::replica_of(&owner));
            let n = c
                .execute(
                    "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, until = excluded.until
                     WHERE leases.owner = excluded.owner OR leases.until < ?4
                        OR (?5 <> '/' AND substr(leases.owner, 1, length(?5)) = ?5)",
                    params![name, owner, ts(&until), ts(&now), replica],
                )
                .map_err(other)?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.with(move |c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
                params![name, owner],
            )
            .map_err(other)?;
            Ok(())
        })
        .await
    }

    async fn lease_holder(
        &self,
        name: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            let row: Option<(String, String)> = c
                .query_row(
                    "SELECT owner, until FROM leases WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(other)?;
            row.map(|(owner, until)| {
                DateTime::parse_from_rfc3339(&until)
                    .map(|t| (owner, t.with_timezone(&Utc)))
                    .map_err(|e| StoreError::Other(format!("lease time: {e}")))
            })
            .transpose()
        })
        .await
    }

    async fn leases_named(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_string();
        self.with(move |c| {
            let mut st = c
                .prepare(
                    "SELECT name FROM leases WHERE substr(name, 1, length(?1)) = ?1
                     ORDER BY name LIMIT 1000",
                )
                .map_err(other)?;
            let names = st
                .query_map(params![prefix], |r| r.get::<_, String>(0))
                .map_err(other)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(other)?;
            Ok(names)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
        .await
    }
}
