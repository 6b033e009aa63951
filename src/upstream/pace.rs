//! The pace of each upstream: a 429, or a 503 with `Retry-After`, is the upstream stating
//! its rate, not one call's failure. It pauses every call this process makes to that
//! upstream until `Retry-After` has passed, halves the calls it lets be in flight at once
//! (between 1 and the processing concurrency), and from then on spaces the calls at a
//! little under the rate the upstream admitted before it said no. Each second without a
//! throttle lets one more call be in flight (additive increase of the limit,
//! multiplicative decrease), and the rate grows along a cubic curve that stays flat near
//! the rate last refused ([`Cubic`], as in the AWS SDKs' adaptive retry mode), so the lane
//! settles just under what the upstream allows.
//!
//! A lane is one upstream as it limits us: service, host and port, and the method (Graph
//! counts registrations apart from reads). Each replica paces itself; nothing of this is
//! shared through the store. Written here because the crates that limit a client's rate
//! (governor, tower's rate limit) take a fixed rate: none learns it from the upstream's
//! answers.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

tokio::task_local! {
    /// The call slots of the processing run this task belongs to: a call takes one once its
    /// lane lets it go, so calls waiting for their upstream's pace hold no slot that a call
    /// to another upstream could use.
    pub static CALL_SLOTS: Arc<tokio::sync::Semaphore>;
}

/// A call waits at most this long for its lane's pause; past it, it is not sent and the
/// caller is told when the upstream may be called again.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// A throttle without `Retry-After` pauses the lane this long.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// `host:port` of a URL, as lanes name upstreams.
pub fn authority(u: &url::Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(0)
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaneKey {
    pub service: &'static str,
    /// `host:port` of the upstream.
    pub authority: String,
    pub method: String,
}

struct LaneState {
    /// Calls allowed in flight (fractional: additive increase adds 1/limit per answer).
    limit: f64,
    /// The most it may grow to.
    max: f64,
    in_flight: usize,
    paused_until: Option<Instant>,
    /// When the limit was last halved: throttles of calls sent before it do not halve it
    /// again (one decrease per burst).
    decreased_at: Option<Instant>,
    throttled: u64,
    paused: Duration,
    /// The rate once a throttle taught the lane one; `None`: unspaced.
    rate: Option<Cubic>,
    /// When the next call may go, when spaced.
    next_slot: Option<Instant>,
    /// When the recent answers that were not throttles came (the rate admitted), over the
    /// last [`RATE_WINDOW`].
    recent: std::collections::VecDeque<Instant>,
    /// The admitted rate is measured from here: the lane's start, or the end of its last
    /// pause (a pause admits nothing and must not dilute the measure).
    measure_from: Instant,
    /// When the limit and rate last grew.
    grown_at: Instant,
}

/// How much of the rate admitted before a throttle the lane keeps to afterwards.
const RATE_BACKOFF: f64 = 0.9;
/// CUBIC's scale, relative to the rate at the last throttle: the rate is back at that rate
/// after `K = cbrt((1 - RATE_BACKOFF) / CUBIC_C)` (2.2 s), stays within 6% of it until 4 s,
/// then probes faster and faster (1.6x after 6 s, 3x after 8 s: a replica whose peers
/// finished takes their share within seconds).
const CUBIC_C: f64 = 0.01;

/// The lane's rate as a function of the time since its last throttle (the end of that
/// throttle's pause): CUBIC (RFC 8438), as the AWS SDKs' adaptive retry mode grows its
/// send rate. Near the rate the upstream last refused it grows slowly, so replicas that
/// share one limit each settle just under their share and rarely meet a throttle (each
/// costs the lane a whole `Retry-After`); far from it (another replica finished, the
/// limit was raised) it grows fast.
#[derive(Debug, Clone, Copy)]
struct Cubic {
    /// Calls per second admitted when the upstream last said no.
    w_max: f64,
    /// The span (seconds) `w_max` was measured over: a call of that window whose answer
    /// comes only after the throttle adds `1 / span` (the throttle often answers first, so
    /// the count at that moment is short).
    span: f64,
    /// Calls sent before this (the throttle) count toward `w_max` when they succeed late.
    measured_at: Instant,
    /// When growth starts: the end of that throttle's pause.
    epoch: Instant,
}

impl Cubic {
    fn at(&self, now: Instant) -> f64 {
        let k = ((1.0 - RATE_BACKOFF) / CUBIC_C).cbrt();
        let t = now.saturating_duration_since(self.epoch).as_secs_f64();
        // Past a minute the rate no longer spaces anything; keep the cube bounded.
        let d = (t - k).min(60.0);
        (self.w_max * (1.0 + CUBIC_C * d * d * d)).max(0.5)
    }
}
/// The answers the admitted rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// How often, without a throttle, the limit grows by one and the rate by a tenth.
const GROW_EVERY: Duration = Duration::from_secs(1);

struct Lane {
    state: Mutex<LaneState>,
    notify: Notify,
}

/// The lanes of this process.
pub struct Pacer {
    lanes: Mutex<HashMap<LaneKey, Arc<Lane>>>,
    /// The most calls in flight to each upstream (`host:port`) the configuration names.
    max: Mutex<HashMap<String, usize>>,
    default_max: usize,
}

/// The process's pacer.
pub static PACER: LazyLock<Pacer> = LazyLock::new(|| Pacer::new(16));

/// A call let through; dropping it frees its place in the lane.
pub struct Permit {
    lane: Arc<Lane>,
    sent_at: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = lock(&self.lane.state);
        s.in_flight = s.in_flight.saturating_sub(1);
        drop(s);
        self.lane.notify.notify_one();
    }
}

/// What a lane says of a call that is not sent: the upstream may be called again after
/// this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused(pub Duration);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pacer {
    /// `default_max`: the most calls in flight to an upstream not named by [`Pacer::set_max`].
    pub fn new(default_max: usize) -> Self {
        Pacer {
            lanes: Mutex::new(HashMap::new()),
            max: Mutex::new(HashMap::new()),
            default_max: default_max.max(1),
        }
    }

    /// The most calls the lanes of the upstream at `authority` (`host:port`) let be in
    /// flight: the processing concurrency of the configuration that names it.
    pub fn set_max(&self, authority: &str, max: usize) {
        lock(&self.max).insert(authority.to_string(), max.max(1));
    }

    fn lane(&self, key: &LaneKey) -> Arc<Lane> {
        let max = lock(&self.max)
            .get(&key.authority)
            .copied()
            .unwrap_or(self.default_max) as f64;
        lock(&self.lanes)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Lane {
                    state: Mutex::new(LaneState {
                        limit: max,
                        max,
                        in_flight: 0,
                        paused_until: None,
                        decreased_at: None,
                        throttled: 0,
                        paused: Duration::ZERO,
                        rate: None,
                        next_slot: None,
                        recent: std::collections::VecDeque::new(),
                        measure_from: Instant::now(),
                        grown_at: Instant::now(),
                    }),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    /// Waits for a place in the lane: until its pause has passed (at most `max_wait`) and
    /// fewer calls than its limit are in flight.
    pub async fn acquire(&self, key: &LaneKey, max_wait: Duration) -> Result<Permit, Paused> {
        let lane = self.lane(key);
        loop {
            let notified = lane.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut s = lock(&lane.state);
                let now = Instant::now();
                match s.paused_until.filter(|t| *t > now) {
                    Some(t) if t - now > max_wait => return Err(Paused(t - now)),
                    Some(t) => Some(t - now),
                    None => match s.next_slot.filter(|t| *t > now) {
                        // Spaced: the next call's turn has not come.
                        Some(t) => Some(t - now),
                        None if (s.in_flight as f64) < s.limit.floor().max(1.0) => {
                            s.in_flight += 1;
                            if let Some(rate) = s.rate {
                                let gap = Duration::from_secs_f64(1.0 / rate.at(now));
                                s.next_slot = Some(s.next_slot.unwrap_or(now).max(now) + gap);
                            }
                            return Ok(Permit {
                                lane: lane.clone(),
                                sent_at: now,
                            });
                        }
                        None => None,
                    },
                }
            };
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => notified.await,
            }
        }
    }

    /// The answer to a call: `throttled` (429, or 503 with `Retry-After`) pauses the lane
    /// and halves its limit; anything else lets the limit grow. Returns the lane's limit.
    pub fn answered(&self, permit: &Permit, throttled: bool, retry_after: Option<Duration>) -> f64 {
        let mut s = lock(&permit.lane.state);
        let now = Instant::now();
        if throttled {
            s.throttled += 1;
            let until = now + retry_after.unwrap_or(DEFAULT_PAUSE);
            let from = s.paused_until.filter(|t| *t > now).unwrap_or(now);
            if until > from {
                s.paused += until - from;
                s.paused_until = Some(until);
            }
            if s.decreased_at.is_none_or(|d| permit.sent_at >= d) {
                s.limit = (s.limit / 2.0).max(1.0);
                s.decreased_at = Some(now);
                // The rate it admitted just before: over the last 2 s since its last pause
                // ended (over a second at least).
                let from = s
                    .measure_from
                    .max(now.checked_sub(RATE_WINDOW).unwrap_or(now));
                while s.recent.front().is_some_and(|t| *t < from) {
                    s.recent.pop_front();
                }
                let span = now.saturating_duration_since(from).as_secs_f64().max(1.0);
                let admitted = s.recent.len() as f64 / span;
                // From 0.9x what it admitted over the last 2 s (answers from before an
                // earlier throttle included), and never below 0.7x the rate kept so far:
                // two throttles close together must not measure a moment's trickle.
                let w_max = match s.rate {
                    Some(r) => admitted.max(r.at(now) * 0.7 / RATE_BACKOFF),
                    None => admitted,
                };
                s.rate = Some(Cubic {
                    w_max,
                    span,
                    measured_at: now,
                    epoch: until,
                });
                s.next_slot = None;
                s.grown_at = until;
                s.measure_from = until;
            }
        } else {
            // A call sent before the last throttle that succeeded after it: the upstream
            // admitted it in the window the rate was measured over.
            if let Some(c) = s.rate.as_mut() {
                if permit.sent_at < c.measured_at && now < c.epoch {
                    c.w_max += 1.0 / c.span;
                }
            }
            s.recent.push_back(now);
            if s.recent.len() > 10_000 {
                s.recent.pop_front();
            }
            if now.saturating_duration_since(s.grown_at) >= GROW_EVERY {
                s.grown_at = now;
                s.limit = (s.limit + 1.0).min(s.max);
            }
        }
        let limit = s.limit.floor().max(1.0);
        drop(s);
        permit.lane.notify.notify_waiters();
        limit
    }

    /// The upstream said its window has no call left for `wait` (Okta's
    /// `X-Rate-Limit-Remaining: 0` on a success): the lane holds its next calls until then,
    /// so that they do not go out only to meet a 429. Not a throttle: the limit and the
    /// rate stay as they are.
    pub fn hold(&self, permit: &Permit, wait: Duration) {
        let mut s = lock(&permit.lane.state);
        let until = Instant::now() + wait;
        if s.paused_until.is_none_or(|t| t < until) {
            s.paused_until = Some(until);
        }
    }

    /// Each lane's current limit, throttles seen and time paused (metrics, bench, tests).
    pub fn lanes(&self) -> Vec<(LaneKey, f64, u64, Duration)> {
        let lanes = lock(&self.lanes);
        lanes
            .iter()
            .map(|(k, l)| {
                let s = lock(&l.state);
                (k.clone(), s.limit, s.throttled, s.paused)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LaneKey {
        LaneKey {
            service: "test",
            authority: "127.0.0.1:1".into(),
            method: "POST".into(),
        }
    }

    #[tokio::test]
    async fn a_throttle_pauses_the_lane_and_halves_its_limit_once_per_burst() {
        let p = Pacer::new(16);
        let k = key();
        let permits: Vec<_> =
            futures::future::join_all((0..8).map(|_| p.acquire(&k, Duration::from_secs(1))))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        for permit in &permits {
            p.answered(permit, true, Some(Duration::from_millis(200)));
        }
        let (_, limit, throttled, paused) = p.lanes()[0].clone();
        assert_eq!(limit, 8.0, "one burst of throttles halves the limit once");
        assert_eq!(throttled, 8);
        assert!(paused >= Duration::from_millis(190));
        drop(permits);
        // Paused: a call waits for the pause (within max_wait) or is told how long.
        assert!(matches!(
            p.acquire(&k, Duration::from_millis(10)).await,
            Err(Paused(d)) if d > Duration::from_millis(100)
        ));
        let t = Instant::now();
        let permit = p.acquire(&k, Duration::from_secs(1)).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        // Answers that are not throttles let the limit grow back, one a second, never
        // past the max; the calls are spaced at the rate learnt from the throttle.
        for _ in 0..50 {
            p.answered(&permit, false, None);
        }
        assert_eq!(p.lanes()[0].1, 8.0, "no growth within a second");
        tokio::time::sleep(GROW_EVERY + Duration::from_millis(50)).await;
        p.answered(&permit, false, None);
        assert_eq!(p.lanes()[0].1, 9.0);
    }

    #[tokio::test]
    async fn after_a_throttle_calls_are_spaced_at_the_rate_admitted() {
        let p = Pacer::new(16);
        let k = key();
        // 20 answers within a second, then a throttle: the lane keeps to 0.9 x 20/s.
        for _ in 0..20 {
            let permit = p.acquire(&k, MAX_WAIT).await.unwrap();
            p.answered(&permit, false, None);
        }
        let permit = p.acquire(&k, MAX_WAIT).await.unwrap();
        p.answered(&permit, true, Some(Duration::from_millis(10)));
        drop(permit);
        let t = Instant::now();
        for _ in 0..10 {
            let permit = p.acquire(&k, MAX_WAIT).await.unwrap();
            p.answered(&permit, false, None);
        }
        // Ten calls at 18/s take about half a second (the pause, then nine gaps).
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[tokio::test]
    async fn successes_answered_after_the_throttle_count_toward_the_rate_learnt() {
        let p = Pacer::new(32);
        let k = key();
        // 20 calls go at once; the upstream's 429 to the 21st comes back before any of
        // the 20 successes.
        let permits: Vec<_> = futures::future::join_all((0..21).map(|_| p.acquire(&k, MAX_WAIT)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        p.answered(&permits[20], true, Some(Duration::from_millis(300)));
        for permit in &permits[..20] {
            p.answered(permit, false, None);
        }
        drop(permits);
        let lanes = lock(&p.lanes);
        let lane = lanes.values().next().unwrap();
        let rate = lock(&lane.state).rate.unwrap();
        // 20 admitted over the 1 s span the rate is measured over at least, not 0.
        assert!((rate.w_max - 20.0).abs() < 1e-9, "{}", rate.w_max);
    }

    #[test]
    fn the_rate_grows_back_slowly_near_the_refused_rate_then_fast() {
        let epoch = Instant::now();
        let c = Cubic {
            w_max: 10.0,
            span: 1.0,
            measured_at: epoch,
            epoch,
        };
        let at = |s: f64| c.at(epoch + Duration::from_secs_f64(s));
        assert!((at(0.0) - 9.0).abs() < 1e-9, "{}", at(0.0));
        let k = ((1.0 - RATE_BACKOFF) / CUBIC_C).cbrt();
        assert!((at(k) - 10.0).abs() < 1e-9);
        // Flat around the refused rate: within 4% from a second before it to a second
        // and a half after.
        assert!(
            at(k - 1.0) > 9.85 && at(k + 1.5) < 10.4,
            "{} {}",
            at(k - 1.0),
            at(k + 1.5)
        );
        // Then probing fast: well past it ten seconds on.
        assert!(at(10.0) > 25.0, "{}", at(10.0));
        // Monotone.
        let mut last = 0.0;
        for i in 0..200 {
            let r = at(i as f64 * 0.05);
            assert!(r >= last);
            last = r;
        }
    }

    #[tokio::test]
    async fn no_more_calls_are_in_flight_than_the_limit() {
        let p = Arc::new(Pacer::new(16));
        p.set_max("127.0.0.1:1", 2);
        let k = key();
        let a = p.acquire(&k, MAX_WAIT).await.unwrap();
        let _b = p.acquire(&k, MAX_WAIT).await.unwrap();
        let p2 = p.clone();
        let k2 = k.clone();
        let third = tokio::spawn(async move { p2.acquire(&k2, MAX_WAIT).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third call waits for a place");
        drop(a);
        assert!(third.await.unwrap().is_ok());
    }
}
