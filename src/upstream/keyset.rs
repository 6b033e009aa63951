//! One cache for every published key set the connector trusts: Yubico's transport and sign
//! keys, and the signing keys of callers' Entra tokens.
//!
//! * Lookups of a known `kid` read an immutable snapshot: they never wait on a fetch or a
//!   lock held across I/O.
//! * One refresh runs at a time (single flight); callers that raced for it see its result.
//! * An unknown `kid` triggers a refresh once the last fetch is older than the cooldown.
//!   Inside the cooldown the answer is [`KeyError::NotYet`] with the time left: the
//!   cooldown rate-limits fetches (a flood of bogus kids costs at most one fetch per
//!   cooldown), it never turns a rotation into a permanent "unknown key".
//! * Keys have a maximum age: past it the set is fetched again before any key is trusted,
//!   so a withdrawn key stops being trusted without a restart. When that fetch fails the
//!   answer is [`KeyError::Unavailable`] (transient), not a stale key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// Fetches the whole set: `(kid, key)` pairs, already filtered to the usable ones.
pub type Fetcher<K> =
    Box<dyn Fn() -> BoxFuture<'static, Result<Vec<(String, K)>, String>> + Send + Sync>;

/// After a failed fetch the set is tried again this soon (an outage heals quickly).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The set was fetched (recently) and does not hold this kid.
    #[error("no key `{kid}` in the published set")]
    Unknown { kid: String },
    /// The kid is not in the set and the cooldown forbids fetching again for `retry_after`.
    #[error("key `{kid}` not published yet (next refresh in {}s)", retry_after.as_secs().max(1))]
    NotYet { kid: String, retry_after: Duration },
    /// The set could not be fetched (and no fresh copy is held).
    #[error("key set unavailable: {0}")]
    Unavailable(String),
}

impl KeyError {
    /// How long until asking again can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KeyError::NotYet { retry_after, .. } => Some(*retry_after),
            KeyError::Unavailable(_) => Some(RETRY_AFTER_FAILURE),
            KeyError::Unknown { .. } => None,
        }
    }
}

struct Snapshot<K> {
    keys: Vec<(String, Arc<K>)>,
    /// When the keys were fetched successfully.
    fetched: Option<Instant>,
    /// When a fetch was last tried (successful or not).
    attempted: Option<Instant>,
    failed: bool,
}

impl<K> Snapshot<K> {
    fn find(&self, kid: &str) -> Option<Arc<K>> {
        self.keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, v)| v.clone())
    }
}

pub struct KeySetCache<K> {
    fetch: Fetcher<K>,
    snapshot: RwLock<Arc<Snapshot<K>>>,
    refresh: tokio::sync::Mutex<()>,
    cooldown: Duration,
    max_age: Duration,
    fetches: AtomicU64,
}

impl<K: Send + Sync + 'static> KeySetCache<K> {
    pub fn new(fetch: Fetcher<K>, cooldown: Duration, max_age: Duration) -> Self {
        Self {
            fetch,
            snapshot: RwLock::new(Arc::new(Snapshot {
                keys: Vec::new(),
                fetched: None,
                attempted: None,
                failed: false,
            })),
            refresh: tokio::sync::Mutex::new(()),
            cooldown,
            max_age,
            fetches: AtomicU64::new(0),
        }
    }

    /// How many fetches were made (tests, metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<Snapshot<K>> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fresh(&self, s: &Snapshot<K>) -> bool {
        s.fetched.is_some_and(|t| t.elapsed() <= self.max_age)
    }

    /// Time left before another fetch may be made for an unknown kid.
    fn wait_left(&self, s: &Snapshot<K>) -> Duration {
        let wait = if s.failed {
            self.cooldown.min(RETRY_AFTER_FAILURE)
        } else {
            self.cooldown
        };
        match s.attempted {
            None => Duration::ZERO,
            Some(t) => wait.saturating_sub(t.elapsed()),
        }
    }

    /// Fetches the set if `needed` still holds once this caller has the refresh slot (a
    /// refresh that finished meanwhile usually makes it false).
    async fn refresh_if(&self, needed: impl Fn(&Snapshot<K>) -> bool) -> Arc<Snapshot<K>> {
        let _slot = self.refresh.lock().await;
        let cur = self.current();
        if !needed(&cur) {
            return cur;
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        crate::metrics::METRICS.key_set_fetches.inc();
        let now = Instant::now();
        let next = match (self.fetch)().await {
            Ok(keys) => Snapshot {
                keys: keys.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
                fetched: Some(now),
                attempted: Some(now),
                failed: false,
            },
            Err(e) => {
                tracing::warn!(error = %e, "key set refresh failed");
                Snapshot {
                    keys: cur.keys.clone(),
                    fetched: cur.fetched,
                    attempted: Some(now),
                    failed: true,
                }
            }
        };
        let next = Arc::new(next);
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        next
    }

    /// A snapshot whose keys may be trusted (fetched within the maximum age).
    async fn trusted(&self) -> Result<Arc<Snapshot<K>>, KeyError> {
        let cur = self.current();
        if self.fresh(&cur) {
            return Ok(cur);
        }
        let blocked = |s: &Snapshot<K>| s.failed && !self.wait_left(s).is_zero();
        let s = if blocked(&cur) {
            cur
        } else {
            self.refresh_if(|s| !self.fresh(s) && !blocked(s)).await
        };
        if self.fresh(&s) {
            Ok(s)
        } else {
            Err(KeyError::Unavailable(
                "the published key set could not be fetched".into(),
            ))
        }
    }

    /// The key named `kid`.
    pub async fn get(&self, kid: &str) -> Result<Arc<K>, KeyError> {
        let cur = self.trusted().await?;
        if let Some(k) = cur.find(kid) {
            return Ok(k);
        }
        let left = self.wait_left(&cur);
        if !left.is_zero() {
            return Err(KeyError::NotYet {
                kid: kid.to_string(),
                retry_after: left,
            });
        }
        let s = self
            .refresh_if(|s| s.find(kid).is_none() && self.wait_left(s).is_zero())
            .await;
        if let Some(k) = s.find(kid).filter(|_| self.fresh(&s)) {
            return Ok(k);
        }
        if !self.fresh(&s) || s.failed {
            return Err(KeyError::Unavailable(
                "the published key set could not be fetched".into(),
            ));
        }
        Err(KeyError::Unknown {
            kid: kid.to_string(),
        })
    }

    /// Every trusted key (e.g. to pick a transport key).
    pub async fn all(&self) -> Result<Vec<Arc<K>>, KeyError> {
        Ok(self
            .trusted()
            .await?
            .keys
            .iter()
            .map(|(_, v)| v.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn cache(
        gen: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        cooldown: Duration,
        max_age: Duration,
    ) -> KeySetCache<String> {
        KeySetCache::new(
            Box::new(move || {
                let (g, f) = (gen.load(Ordering::SeqCst), fail.load(Ordering::SeqCst));
                Box::pin(async move {
                    if f {
                        return Err("down".to_string());
                    }
                    Ok(vec![(format!("k{g}"), format!("key{g}"))])
                })
            }),
            cooldown,
            max_age,
        )
    }

    #[tokio::test]
    async fn a_rotation_inside_the_cooldown_is_not_yet_then_found() {
        let gen = Arc::new(AtomicUsize::new(1));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cache(
            gen.clone(),
            fail,
            Duration::from_millis(300),
            Duration::from_secs(3600),
        );
        assert_eq!(*c.get("k1").await.unwrap(), "key1");
        gen.store(2, Ordering::SeqCst);
        for _ in 0..1000 {
            assert!(matches!(c.get("k2").await, Err(KeyError::NotYet { .. })));
        }
        assert_eq!(
            c.fetches(),
            1,
            "a flood inside the cooldown fetches nothing"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(*c.get("k2").await.unwrap(), "key2");
        assert_eq!(c.fetches(), 2);
        assert!(matches!(c.get("k9").await, Err(KeyError::NotYet { .. })));
    }

    #[tokio::test]
    async fn keys_past_their_maximum_age_are_not_trusted_when_the_set_is_down() {
        let gen = Arc::new(AtomicUsize::new(1));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cache(
            gen.clone(),
            fail.clone(),
            Duration::ZERO,
            Duration::from_millis(100),
        );
        assert!(c.get("k1").await.is_ok());
        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(matches!(c.get("k1").await, Err(KeyError::Unavailable(_))));
        fail.store(false, Ordering::SeqCst);
        gen.store(2, Ordering::SeqCst); // k1 withdrawn
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(matches!(c.get("k1").await, Err(KeyError::Unknown { .. })));
        assert!(c.get("k2").await.is_ok());
    }
}
