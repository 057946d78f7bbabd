//! The memory's clock (DESIGN §5): Unix milliseconds for cool-downs, fading counts and
//! quota windows. With no variables set it is the wall clock. Tests and simulations pin it:
//! `FREEROUTE_NOW_MS` sets it at start-up, `FREEROUTE_CLOCK_RATE=R` then runs it R times
//! as fast as the wall clock (bench/fleet.sh), and `FREEROUTE_WINDOW_MS` scales the
//! "minute" of per-minute quotas down. These variables are read here and nowhere else,
//! once per process; pure code (the plan, the health model) takes `now_ms` as a value.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The clock's settings, read once from the environment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `FREEROUTE_NOW_MS`: the memory's time at start-up.
    pinned_ms: Option<u64>,
    /// `FREEROUTE_CLOCK_RATE`: how fast a pinned clock runs (0: it stands still).
    rate: f64,
    /// `FREEROUTE_WINDOW_MS`: the length of a "minute" quota window.
    minute_ms: u64,
    started: Instant,
}

impl Clock {
    fn from_env() -> Clock {
        let var = |name: &str| std::env::var(name).ok();
        Clock {
            pinned_ms: var("FREEROUTE_NOW_MS").and_then(|v| v.parse().ok()),
            rate: var("FREEROUTE_CLOCK_RATE")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|r| r.is_finite() && *r > 0.0)
                .unwrap_or(0.0),
            minute_ms: var("FREEROUTE_WINDOW_MS")
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .unwrap_or(60_000),
            started: Instant::now(),
        }
    }

    /// Unix ms on the memory's clock.
    pub fn now_ms(&self) -> u64 {
        match self.pinned_ms {
            Some(ms) => {
                let ran = self.started.elapsed().as_secs_f64() * 1000.0;
                ms.saturating_add((ran * self.rate) as u64)
            }
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// How long `ms` of the memory's clock last on the wall clock: the time to sleep until
    /// a moment of that clock.
    pub fn wall_time(&self, ms: u64) -> Duration {
        let rate = if self.pinned_ms.is_some() && self.rate > 0.0 {
            self.rate
        } else {
            1.0
        };
        Duration::try_from_secs_f64(ms as f64 / 1000.0 / rate).unwrap_or(Duration::MAX)
    }
}

/// The longest span an `Instant` is moved by: beyond any deadline (`--timeout` is at most
/// a day), so far enough to mean "never" and near enough never to overflow.
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `t + d` that cannot panic: a span from a server or from memory may be absurd.
pub fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(NEVER))
        .or_else(|| t.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(t)
}

/// A span of `ms` milliseconds that cannot panic: negative or NaN is zero, too large is
/// `Duration::MAX`.
pub fn from_ms_f64(ms: f64) -> Duration {
    if ms.is_nan() || ms <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
}

/// The process's clock, read from the environment on first use.
pub fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(Clock::from_env)
}

/// Unix ms on the memory's clock (see `Clock::now_ms`).
pub fn now_ms() -> u64 {
    clock().now_ms()
}

/// The length of a "minute" quota window in ms: 60,000 unless `FREEROUTE_WINDOW_MS` scales it.
pub fn minute_ms() -> u64 {
    clock().minute_ms
}

/// See `Clock::wall_time`.
pub fn wall_time(ms: u64) -> Duration {
    clock().wall_time(ms)
}

/// Sleeps until `at`, or for ever when there is nothing to wait for (a `select!` arm).
pub async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
