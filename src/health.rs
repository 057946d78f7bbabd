//! What the router knows about models and providers (DESIGN §5): per-model health with
//! time decay, latency, cool-downs, learned limits and capability misses; per-provider
//! blocks and quota windows. Pure: values and `now_ms` in, values out; no files, no clock.
//! Where it is kept (a file, Redis) is `store`'s business; the plan reads a `&Health`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::attempt::classify::TokenCount;
use crate::catalog::Capability;
use crate::outcome::{AttemptOutcome, AttemptRecord};
use crate::providers::Limits;

pub const VERSION: u32 = 1;
/// Outcome weights halve every six hours: a cron job that runs hourly still learns.
pub const HALF_LIFE_MS: f64 = 6.0 * 3_600_000.0;
/// The spread assumed for a model's first token until measured, as a share of its mean:
/// one quick answer does not make a model fast.
pub const DEV_PRIOR: f64 = 0.5;
/// First-token times kept per model (`ModelStats::ttft_recent`).
pub const TTFT_SAMPLES: usize = 16;
/// Fewer samples than this are no distribution: the model is planned as unmeasured.
pub const TTFT_MIN_SAMPLES: usize = 4;
/// How long a learned request limit (`ModelStats::busy_at`) is kept after the last 429
/// that taught it.
pub const BUSY_MEMORY_MS: u64 = 3_600_000;
/// How fast a model's recent load fades: about the requests of the last minute, the window
/// most per-model limits (Groq, Gemini, a busy upstream) count in.
pub const LOAD_TAU_MS: f64 = 60_000.0;
/// The longest exponential back-off for a model that keeps failing.
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// The longest for a model that keeps answering 429 with a Retry-After.
pub const HINTED_429_MAX_MS: u64 = 120_000;
/// The longest any server-given wait is believed, beyond a provider's next daily reset: a
/// `Retry-After` of 31 years is a broken or hostile server, not a plan.
pub const SERVER_WAIT_MAX_MS: u64 = 3 * 3_600_000;
/// The largest latency taken from memory (a day): anything beyond is damage.
const LATENCY_MAX_MS: f64 = 86_400_000.0;
/// The most sends one minute window keeps (far beyond any free tier's limit).
const MAX_WINDOW_SENDS: usize = 10_000;
/// The largest count, rate or load taken from memory.
const COUNT_MAX: f64 = 1e9;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    pub version: u32,
    /// Keyed by `provider/model-id` (see `key`).
    #[serde(default)]
    pub models: BTreeMap<String, ModelStats>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelStats {
    /// Decayed count of successes and failures.
    pub ok: f64,
    pub fail: f64,
    /// Decayed count of races it lost after its patience ran out or while explored: it was
    /// slower than another model. Not its health; what makes it known (`confidence`), so
    /// that it is not explored again and again.
    pub lost: f64,
    pub updated_ms: u64,
    /// Smoothed time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Smoothed deviation of the time to first token, ms: how heavy its tail is.
    pub ttft_dev_ms: Option<f64>,
    /// The last `TTFT_SAMPLES` first-token times, ms, oldest first: its own distribution,
    /// from which its patience is planned (`first_token_quantiles`). An attempt given up on
    /// before its first token adds how long it waited (the first token takes at least that).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ttft_recent: Vec<u32>,
    /// Smoothed completion tokens per second.
    pub tps: Option<f64>,
    /// Smoothed time from the first token to the end of the answer, ms: with the first
    /// token, what a caller waits for an answer.
    pub gen_ms: Option<f64>,
    pub cooldown_until_ms: u64,
    pub consecutive_failures: u32,
    pub last_outcome: Option<AttemptOutcome>,
    pub last_error: Option<String>,
    /// Capabilities the provider said this model lacks (`vision`, `tools`, `schema`),
    /// believed until `misses_until_ms` (DESIGN §5: what is learned expires).
    pub misses: BTreeSet<Capability>,
    pub misses_until_ms: u64,
    /// A request of about this many (estimated) tokens is too long for it: learned from a
    /// refusal, corrected by the server's own count, believed until `too_long_until_ms`.
    pub too_long_at: Option<u64>,
    pub too_long_until_ms: u64,
    /// The catalog entry (`Model::entry`) the misses and the context limit were learned
    /// on: when the catalog says something else about the model, they are forgotten.
    pub learned_entry: Option<String>,
    /// The largest request (estimated tokens) it answered: a learned context limit never
    /// goes below it.
    pub answered_tokens: Option<u64>,
    /// Requests sent to it lately, by every run: a count that fades with `LOAD_TAU_MS`, as
    /// of `load_ms`.
    pub load: f64,
    pub load_ms: u64,
    /// The load at which it answered 429, smoothed (and raised when it answers above it):
    /// its own request limit, learned, so parallel runs spread before they meet it.
    /// Forgotten `BUSY_MEMORY_MS` after the last such 429 (`busy_ms`).
    pub busy_at: Option<f64>,
    pub busy_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderStats {
    /// Every model of the provider is skipped until then (quota, key, balance, policy).
    pub blocked_until_ms: u64,
    pub blocked_outcome: Option<AttemptOutcome>,
    pub blocked_reason: Option<String>,
    /// When the requests of the last minute window were reserved (a sliding window, as
    /// the limiter's: no stretch of a minute ever holds more than the limit), oldest first.
    pub minute_sent_ms: Vec<u64>,
    /// Requests sent on the UTC day `day` (days since the epoch).
    pub day: u64,
    pub day_count: u32,
    /// The daily limit the provider stated in its last quota reply.
    pub day_limit: Option<u32>,
    /// The documented per-minute and per-day limits, as known when last used.
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
    /// Added to Unix ms so that `day` turns over when the provider's daily quota resets.
    pub day_offset_ms: i64,
}

/// How long a belief about a cloud model (a capability miss, a context limit) holds: a
/// model may be upgraded, a provider may add an endpoint (DESIGN §5).
pub const CLOUD_BELIEF_MS: u64 = 86_400_000;
/// The same for a server on this machine, which its user may restart with other options
/// (a vision projector, a larger context) at any time.
pub const LOCAL_BELIEF_MS: u64 = 3_600_000;

/// Until when what attempt `a` taught about its model is believed.
fn belief_until(a: &AttemptRecord, now_ms: u64) -> u64 {
    now_ms.saturating_add(if a.local {
        LOCAL_BELIEF_MS
    } else {
        CLOUD_BELIEF_MS
    })
}

/// The size, in the router's estimated tokens, from which requests are too long for a
/// model that refused a request estimated at `estimate`: with the server's own count of
/// that request and its limit, the estimate is corrected by their ratio (18,899 characters
/// of lorem ipsum are 7,001 tokens to llama.cpp, 4,736 to the estimate); without them, the
/// refused size itself. Never above the refused size, and at least an eighth of it.
pub fn learned_context(estimate: u64, counted: TokenCount) -> u64 {
    match (counted.limit, counted.requested) {
        (Some(limit), Some(requested)) if requested > limit => {
            let scaled = estimate as f64 * limit as f64 / requested as f64;
            (scaled.floor() as u64).clamp((estimate / 8).max(1), estimate)
        }
        _ => estimate,
    }
}

pub fn key(provider: &str, model: &str) -> String {
    format!("{provider}/{model}")
}

impl ModelStats {
    /// The first-token time to expect, tail included: mean plus two deviations.
    pub fn expected_ttft_ms(&self) -> Option<f64> {
        self.ttft_ms
            .map(|m| m + 2.0 * self.ttft_dev_ms.unwrap_or(DEV_PRIOR * m))
    }

    /// The quantiles `qs` (each 0..=1, nearest rank) of its recent first-token times, from
    /// one sort, once at least `TTFT_MIN_SAMPLES` are known.
    pub fn first_token_quantiles<const N: usize>(&self, qs: [f64; N]) -> Option<[f64; N]> {
        if self.ttft_recent.len() < TTFT_MIN_SAMPLES {
            return None;
        }
        let mut v = self.ttft_recent.clone();
        v.sort_unstable();
        Some(qs.map(|q| {
            let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
            f64::from(v[rank.clamp(1, v.len()) - 1])
        }))
    }

    /// One more first-token time (or, for an attempt given up on, a time it was not yet
    /// there by), the oldest forgotten beyond `TTFT_SAMPLES`.
    fn sample_first_token(&mut self, ms: u64) {
        self.ttft_recent.push(u32::try_from(ms).unwrap_or(u32::MAX));
        self.keep_last_samples();
    }

    /// The time to a whole answer to expect: the first token, tail included, then the rest.
    pub fn expected_answer_ms(&self) -> Option<f64> {
        // Both parts or nothing: a state written before `gen_ms` was kept must not make its
        // models look faster than those measured since.
        Some(self.expected_ttft_ms()? + self.gen_ms?)
    }

    /// Requests sent to it lately (see `load`), faded to `now_ms`.
    pub fn load(&self, now_ms: u64) -> f64 {
        let dt = now_ms.saturating_sub(self.load_ms) as f64;
        self.load * (-dt / LOAD_TAU_MS).exp()
    }

    /// Its recent load over the load at which it answered 429: 1 means at its limit.
    pub fn busy(&self, now_ms: u64) -> f64 {
        self.busy_limit(now_ms)
            .map_or(0.0, |b| self.load(now_ms) / b.max(1.0))
    }

    /// The load at which it last answered 429, unless that was long ago: limits change,
    /// and one 429 at a low load must not shut a model out for ever.
    pub fn busy_limit(&self, now_ms: u64) -> Option<f64> {
        self.busy_at
            .filter(|_| now_ms.saturating_sub(self.busy_ms) < BUSY_MEMORY_MS)
    }

    /// When its load falls back below the load at which it answered 429, if it is above it
    /// now: until then another request is likely to meet the same limit.
    pub fn busy_until(&self, now_ms: u64) -> Option<u64> {
        let b = self.busy(now_ms);
        (b >= 1.0).then(|| now_ms + (LOAD_TAU_MS * b.ln()).ceil() as u64 + 1)
    }

    /// Success ratio with a neutral prior: 0.5 for a model never measured.
    pub fn health(&self, now_ms: u64) -> f64 {
        let f = decay(self.updated_ms, now_ms);
        (self.ok * f + 1.0) / ((self.ok + self.fail) * f + 2.0)
    }

    /// How much is known: near 0 for unmeasured or long-ago models.
    pub fn confidence(&self, now_ms: u64) -> f64 {
        let n = (self.ok + self.fail + self.lost) * decay(self.updated_ms, now_ms);
        n / (n + 2.0)
    }

    /// Whether the provider's word that this model lacks `cap` still holds for the model
    /// as the catalog now describes it (`entry`, see `Model::entry`).
    pub fn known_miss(&self, cap: Capability, entry: &str, now_ms: u64) -> bool {
        self.misses.contains(&cap) && self.believed(self.misses_until_ms, entry, now_ms)
    }

    /// The learned size from which requests are too long for it, while believed.
    pub fn too_long_from(&self, entry: &str, now_ms: u64) -> Option<u64> {
        self.too_long_at
            .filter(|_| self.believed(self.too_long_until_ms, entry, now_ms))
    }

    fn believed(&self, until_ms: u64, entry: &str, now_ms: u64) -> bool {
        now_ms < until_ms && self.learned_entry.as_deref().is_none_or(|e| e == entry)
    }

    /// Forgets the capability misses and the learned context limit (`--refresh`, a changed
    /// catalog entry).
    pub fn forget_beliefs(&mut self) {
        self.misses.clear();
        self.misses_until_ms = 0;
        self.too_long_at = None;
        self.too_long_until_ms = 0;
        self.learned_entry = None;
    }

    /// Keeps what is still believed before `a` teaches more: expired beliefs, and those
    /// learned on another catalog entry than `a`'s, go.
    fn expire_beliefs(&mut self, a: &AttemptRecord, now_ms: u64) {
        if let (Some(entry), Some(old)) = (&a.catalog_entry, &self.learned_entry)
            && entry != old
        {
            self.forget_beliefs();
        }
        if now_ms >= self.misses_until_ms {
            self.misses.clear();
        }
        if now_ms >= self.too_long_until_ms {
            self.too_long_at = None;
        }
    }

    /// Counts a request sent to it, when it is sent (the store's reservation, or in memory
    /// when the store is unavailable), whatever becomes of it: parallel runs see each
    /// other's requests in flight, not only those done.
    pub fn count_request(&mut self, now_ms: u64) {
        self.load = self.load(now_ms) + 1.0;
        self.load_ms = self.load_ms.max(now_ms);
    }

    #[cfg(test)]
    fn record(&mut self, a: &AttemptRecord, now_ms: u64) {
        self.record_sent(a, now_ms, 0);
    }

    /// Learns from `a`, whose run sent this model `sent_after` more requests after it.
    fn record_sent(&mut self, a: &AttemptRecord, now_ms: u64, sent_after: usize) {
        self.expire_beliefs(a, now_ms);
        // The request itself was counted when it was sent (`count_request`), and so were
        // the run's later ones: the load it met is the load without those.
        let load = (self.load(now_ms) - sent_after as f64).max(0.0);
        match a.outcome {
            // Only a limit on our own request rate (classify decides which 429s are).
            AttemptOutcome::RateLimited if a.own_rate_limit => {
                self.busy_at = Some(
                    self.busy_limit(now_ms)
                        .map_or(load, |b| b + 0.3 * (load - b)),
                );
                self.busy_ms = now_ms;
            }
            AttemptOutcome::Ok => {
                if let Some(b) = self.busy_at.filter(|b| load > *b) {
                    self.busy_at = Some(b + 0.3 * (load - b));
                }
            }
            _ => {}
        }
        let f = decay(self.updated_ms, now_ms);
        self.ok *= f;
        self.fail *= f;
        self.lost *= f;
        self.updated_ms = now_ms;
        self.last_outcome = Some(a.outcome);
        match a.outcome {
            AttemptOutcome::Ok => {
                if let Some(n) = a.context_tokens {
                    let answered = self.answered_tokens.map_or(n, |t| t.max(n));
                    self.answered_tokens = Some(answered);
                    if let Some(at) = self.too_long_at.filter(|&at| at <= answered) {
                        self.too_long_at = Some(at.max(answered + 1));
                    }
                }
                self.ok += 1.0;
                self.consecutive_failures = 0;
                self.cooldown_until_ms = 0;
                self.last_error = None;
                if let Some(t) = a.first_token_ms {
                    self.see_deviation(t as f64, false);
                    self.ttft_ms = Some(smooth(self.ttft_ms, t as f64));
                    self.sample_first_token(t);
                    let gen_ms = a.elapsed_ms.saturating_sub(t);
                    self.gen_ms = Some(smooth(self.gen_ms, (gen_ms as f64).max(1.0)));
                }
                if let Some(t) = a.tokens_per_sec {
                    self.tps = Some(smooth(self.tps, t));
                }
            }
            // A loser of a race says nothing about the model, unless it had no first token
            // by its own patience: then it is slower than its samples said.
            AttemptOutcome::Cancelled => {
                if a.overtaken {
                    self.slower_than(a.elapsed_ms);
                    self.lost += 1.0;
                }
            }
            // The provider's fault, not this model's: the provider record carries it.
            // Not the model's health: the provider's (provider-wide), the input's (moderated,
            // too long for this model, which fallback to a larger context handles).
            o if a.provider_wide
                || o == AttemptOutcome::Moderated
                || o == AttemptOutcome::ContextTooLong =>
            {
                if let Some(n) = a
                    .context_tokens
                    .filter(|_| o == AttemptOutcome::ContextTooLong)
                {
                    let learned = learned_context(n, a.counted);
                    let floor = self.answered_tokens.map_or(0, |t| t + 1);
                    let at = self.too_long_at.map_or(learned, |t| t.min(learned));
                    self.too_long_at = Some(at.max(floor));
                    self.too_long_until_ms = belief_until(a, now_ms);
                    self.learned_entry = a.catalog_entry.clone().or(self.learned_entry.take());
                }
                self.last_error = a.error.clone();
            }
            o => {
                self.fail += 1.0;
                // The back-off escalates once per cool-down that ran out, not per failure:
                // one that arrives while the model is cooling down is the same event seen
                // by another run (parallel runs meet a model's limit together; counting each
                // shut the fleet's fastest models out for four times their quota window).
                if self.cooldown_until_ms <= now_ms {
                    self.consecutive_failures += 1;
                }
                self.last_error = a.error.clone();
                if o == AttemptOutcome::Timeout && a.first_token_ms.is_none() {
                    self.slower_than(a.elapsed_ms);
                }
                if o == AttemptOutcome::CapabilityMissing
                    && let Some(cap) = a.missing
                {
                    self.misses.insert(cap);
                    self.misses_until_ms = belief_until(a, now_ms);
                    self.learned_entry = a.catalog_entry.clone().or(self.learned_entry.take());
                }
                if let Some(until) = backoff(o, self.consecutive_failures, a.retry_at_ms, now_ms) {
                    self.cooldown_until_ms = self.cooldown_until_ms.max(until);
                }
            }
        }
    }
}

/// When a failed model may be tried again, for failures that a wait can cure: the server's
/// hint or an exponential back-off from 30 s, whichever is later; a 429 that says when to
/// come back is believed as it is the first time (`failures` 1), and its repeats escalate
/// from 30 s only to `HINTED_429_MAX_MS`: the server knows its limit, and repeats mean that
/// enough was sent again (the fleet simulation saw busy models shut out for 13 minutes by a
/// per-minute limit).
pub fn backoff(
    outcome: AttemptOutcome,
    failures: u32,
    hint_ms: Option<u64>,
    now_ms: u64,
) -> Option<u64> {
    use AttemptOutcome::*;
    // 30 s for the first of `n` failures in a row, doubling, at most `cap`.
    let exp = |n: u32, cap: u64| {
        crate::attempt::classify::MIN_COOLDOWN_MS
            .saturating_mul(1u64 << n.saturating_sub(1).min(16))
            .min(cap)
    };
    // A server's hint is believed for a few hours at most (a provider-wide block, which
    // may last until a daily reset, is the provider's record, not this).
    let hint_ms = hint_ms.map(|h| h.min(now_ms.saturating_add(SERVER_WAIT_MAX_MS)));
    match outcome {
        // The server's word the first time; a repeat once it ran out means that enough was
        // sent again: from then on at least 30 s, doubling.
        RateLimited if hint_ms.is_some() => {
            let repeat = if failures > 1 {
                exp(failures - 1, HINTED_429_MAX_MS)
            } else {
                0
            };
            Some(hint_ms.unwrap_or(0).max(now_ms + repeat))
        }
        RateLimited | ServerError | Timeout | ConnectionFailed | EmptyAnswer
        | StreamInterrupted => Some(
            hint_ms
                .unwrap_or(0)
                .max(now_ms + exp(failures, MAX_BACKOFF_MS)),
        ),
        _ => None,
    }
}

pub const DAY_MS: u64 = 86_400_000;
/// Added to a minute window, so that the delay between a reservation and the request's
/// arrival cannot squeeze one more request into the provider's own window.
pub const WINDOW_SLACK_MS: u64 = 50;

/// The sliding window a per-minute limit is counted in, slack included.
pub fn window_ms() -> u64 {
    crate::minute_ms() + WINDOW_SLACK_MS
}
/// The most request times a provider's minute window keeps.
const MAX_MINUTE_SENT: usize = 10_000;

/// The provider's day number at `now_ms`: days since the epoch, shifted by the offset at
/// which its daily quota resets (Gemini's at midnight Pacific time, say).
pub fn provider_day(now_ms: u64, offset_ms: i64) -> u64 {
    (now_ms as i64).saturating_add(offset_ms).max(0) as u64 / DAY_MS
}

/// When the provider's day `day` ends, Unix ms.
pub fn day_end_ms(day: u64, offset_ms: i64) -> u64 {
    day.saturating_add(1)
        .saturating_mul(DAY_MS)
        .saturating_add_signed(-offset_ms)
}

fn decay(then_ms: u64, now_ms: u64) -> f64 {
    let dt = now_ms.saturating_sub(then_ms) as f64;
    0.5f64.powf(dt / HALF_LIFE_MS)
}

/// A moving average that clips outliers to a quarter or four times the current estimate.
fn smooth(old: Option<f64>, sample: f64) -> f64 {
    match old {
        None => sample,
        Some(o) => o + 0.3 * (sample.clamp(o / 4.0, o * 4.0) - o),
    }
}

impl ProviderStats {
    fn day_of(&self, now_ms: u64) -> u64 {
        provider_day(now_ms, self.day_offset_ms)
    }

    /// The requests reserved within the minute window that ends at `now_ms`.
    fn in_window(&self, now_ms: u64) -> impl Iterator<Item = &u64> {
        let window = window_ms();
        self.minute_sent_ms
            .iter()
            .filter(move |&&t| t.saturating_add(window) > now_ms)
    }

    /// When the oldest request of the current minute window leaves it.
    pub fn minute_frees_at(&self, now_ms: u64) -> Option<u64> {
        self.in_window(now_ms)
            .next()
            .map(|t| t.saturating_add(window_ms()))
    }

    /// The counted day is the provider's current day (its quota's day, not always UTC's).
    fn is_today(&self, now_ms: u64) -> bool {
        self.day == self.day_of(now_ms)
    }

    /// Requests counted in the current minute window.
    pub fn requests_this_minute(&self, now_ms: u64) -> u32 {
        self.in_window(now_ms).count() as u32
    }

    /// Requests counted on the provider's current day.
    pub fn requests_today(&self, now_ms: u64) -> u32 {
        if self.is_today(now_ms) {
            self.day_count
        } else {
            0
        }
    }

    /// How full the fullest known window is, 0..1 (for spreading load).
    pub fn used_fraction(&self, now_ms: u64) -> f64 {
        let share = |used: u32, limit: Option<u32>| match limit {
            Some(n) if n > 0 => used as f64 / n as f64,
            _ => 0.0,
        };
        let minute = share(self.requests_this_minute(now_ms), self.per_minute);
        let day = share(self.requests_today(now_ms), self.day_limit.or(self.per_day));
        minute.max(day).min(1.0)
    }

    /// Requests left in the fullest known window, when a window is known.
    pub fn remaining(&self, now_ms: u64) -> Option<u32> {
        let minute = self
            .per_minute
            .map(|n| n.saturating_sub(self.requests_this_minute(now_ms)));
        let day = self
            .day_limit
            .or(self.per_day)
            .map(|n| n.saturating_sub(self.requests_today(now_ms)));
        match (minute, day) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the requests counted so far already fill a known window: until when, and why.
    pub fn quota_block(&self, now_ms: u64) -> Option<(u64, String)> {
        if let Some(n) = self.per_minute
            && self.requests_this_minute(now_ms) >= n
            && let Some(at) = self.minute_frees_at(now_ms)
        {
            return Some((at, format!("{n} requests this minute")));
        }
        if let Some(n) = self.day_limit.or(self.per_day)
            && self.is_today(now_ms)
            && self.day_count >= n
        {
            return Some((
                day_end_ms(self.day, self.day_offset_ms),
                format!("{n} requests today (UTC)"),
            ));
        }
        None
    }

    /// Reserves one request before it is sent (DESIGN §9 "reserve, then send"): counted in
    /// the minute and the day when every known window has room, else `Err` with when the
    /// first of them has room again (a block included).
    pub fn reserve(&mut self, limits: Limits, offset_ms: i64, now_ms: u64) -> Result<(), u64> {
        (self.per_minute, self.per_day, self.day_offset_ms) =
            (limits.per_minute, limits.per_day, offset_ms);
        if self.blocked_until_ms > now_ms {
            return Err(self.blocked_until_ms);
        }
        if let Some((until, _)) = self.quota_block(now_ms) {
            return Err(until);
        }
        self.count_request(now_ms);
        Ok(())
    }

    /// Counts a request sent (by `reserve`, or in memory when the store is unavailable).
    pub fn count_request(&mut self, now_ms: u64) {
        let window = window_ms();
        self.minute_sent_ms
            .retain(|&t| t.saturating_add(window) > now_ms);
        // Bounded whatever the limit: a provider without one keeps the last few only.
        let excess = self
            .minute_sent_ms
            .len()
            .saturating_sub(MAX_MINUTE_SENT - 1);
        self.minute_sent_ms.drain(..excess);
        self.minute_sent_ms.push(now_ms);
        let day = self.day_of(now_ms);
        if day != self.day {
            self.day = day;
            self.day_count = 0;
        }
        self.day_count += 1;
    }
}

/// A number from memory, kept when it is finite and within `lo..=hi`.
fn within(x: f64, lo: f64, hi: f64) -> Option<f64> {
    (x.is_finite() && (lo..=hi).contains(&x)).then_some(x)
}

impl ModelStats {
    /// An attempt waited `ms` without a first token: a sample of at least that, and a
    /// deviation that sees it (the mean stays what answers measured).
    fn slower_than(&mut self, ms: u64) {
        self.sample_first_token(ms);
        self.see_deviation(ms as f64, true);
    }

    /// The deviation sees a first-token time `t`: unlike the mean, slow ones too (up to
    /// 10× the mean). `widen_only`, for a wait that ended without a first token: it can only
    /// show that the spread is wider, never narrower.
    fn see_deviation(&mut self, t: f64, widen_only: bool) {
        let Some(mean) = self.ttft_ms else {
            return;
        };
        let dev = (t.min(mean * 10.0) - mean).abs();
        let d = self.ttft_dev_ms.unwrap_or(DEV_PRIOR * mean);
        if !widen_only || (t > mean && dev > d) {
            self.ttft_dev_ms = Some(d + 0.3 * (dev - d));
        }
    }

    /// The last `TTFT_SAMPLES` first-token samples, values bounded.
    fn keep_last_samples(&mut self) {
        let excess = self.ttft_recent.len().saturating_sub(TTFT_SAMPLES);
        self.ttft_recent.drain(..excess);
        for t in &mut self.ttft_recent {
            *t = (*t).min(LATENCY_MAX_MS as u32);
        }
    }

    /// Every number bounded (see `Health::bounded`).
    fn bound(&mut self, now_ms: u64) {
        self.keep_last_samples();
        let count = |x: f64| within(x, 0.0, COUNT_MAX).unwrap_or(0.0);
        let latency = |x: Option<f64>| x.and_then(|x| within(x, 0.0, LATENCY_MAX_MS));
        self.ok = count(self.ok);
        self.fail = count(self.fail);
        self.lost = count(self.lost);
        self.load = count(self.load);
        self.ttft_ms = latency(self.ttft_ms);
        self.ttft_dev_ms = latency(self.ttft_dev_ms);
        self.gen_ms = latency(self.gen_ms);
        self.tps = self
            .tps
            .and_then(|x| within(x, f64::MIN_POSITIVE, COUNT_MAX));
        self.busy_at = self.busy_at.and_then(|x| within(x, 0.0, COUNT_MAX));
        // A time in the future was written by a clock that ran ahead, or by hand.
        for t in [&mut self.updated_ms, &mut self.load_ms, &mut self.busy_ms] {
            *t = (*t).min(now_ms);
        }
        self.cooldown_until_ms = self
            .cooldown_until_ms
            .min(now_ms.saturating_add(MAX_BACKOFF_MS.max(SERVER_WAIT_MAX_MS)));
        self.consecutive_failures = self.consecutive_failures.min(64);
    }
}

impl ProviderStats {
    /// The latest a server may block this provider from `now_ms`: its next daily reset,
    /// or `SERVER_WAIT_MAX_MS`, whichever is later (DESIGN §5: a day's quota lasts until
    /// the reset, anything else a few hours at most).
    pub fn block_limit_ms(&self, now_ms: u64) -> u64 {
        let reset = day_end_ms(self.day_of(now_ms), self.day_offset_ms);
        reset.max(now_ms.saturating_add(SERVER_WAIT_MAX_MS))
    }

    /// Every number bounded (see `Health::bounded`).
    fn bound(&mut self, now_ms: u64) {
        self.day_offset_ms = self.day_offset_ms.clamp(-(DAY_MS as i64), DAY_MS as i64);
        self.blocked_until_ms = self.blocked_until_ms.min(self.block_limit_ms(now_ms));
        // Sends in the future cannot be, and a window holds what a minute can.
        self.minute_sent_ms.retain(|&t| t <= now_ms);
        let excess = self.minute_sent_ms.len().saturating_sub(MAX_WINDOW_SENDS);
        self.minute_sent_ms.drain(..excess);
        if self.day > self.day_of(now_ms) {
            (self.day, self.day_count) = (0, 0);
        }
    }
}

impl Health {
    /// The health with every number bounded, as read from a store: a file that was
    /// edited, damaged or written by a clock that ran ahead must not make a run panic or
    /// shut a provider out for centuries. Latencies, counts and rates that are not finite,
    /// negative or absurd are forgotten; times in the future are brought back to now;
    /// cool-downs and blocks are cut to what a server could have asked for.
    pub fn bounded(mut self, now_ms: u64) -> Health {
        for m in self.models.values_mut() {
            m.bound(now_ms);
        }
        for p in self.providers.values_mut() {
            p.bound(now_ms);
        }
        self
    }

    /// Nothing known yet, in this version's layout.
    pub fn fresh() -> Health {
        Health {
            version: VERSION,
            ..Default::default()
        }
    }

    pub fn model(&self, provider: &str, model: &str) -> Option<&ModelStats> {
        self.models.get(&key(provider, model))
    }

    /// The model's entry, made when it has none.
    pub fn model_mut(&mut self, provider: &str, model: &str) -> &mut ModelStats {
        self.models.entry(key(provider, model)).or_default()
    }

    /// `--refresh` refetched this provider's catalog: what was learned about its models'
    /// capabilities and contexts is forgotten at once (DESIGN §5).
    pub fn forget_beliefs_of(&mut self, provider: &str) {
        let prefix = format!("{provider}/");
        for (_, m) in self
            .models
            .iter_mut()
            .filter(|(k, _)| k.starts_with(&prefix))
        {
            m.forget_beliefs();
        }
    }

    /// Folds one run's attempts into the state; `limits` gives each provider's documented
    /// free-tier limits.
    pub fn record_attempts(
        &mut self,
        attempts: &[AttemptRecord],
        now_ms: u64,
        limits: &dyn Fn(&str) -> (Limits, i64),
    ) {
        for (k, a) in attempts.iter().enumerate() {
            let p = self.providers.entry(a.provider.clone()).or_default();
            let (l, offset) = limits(&a.provider);
            // The request itself was counted when it was reserved (`ProviderStats::reserve`).
            (p.per_minute, p.per_day, p.day_offset_ms) = (l.per_minute, l.per_day, offset);
            if a.day_limit.is_some() {
                p.day_limit = a.day_limit;
            }
            if a.provider_wide {
                let until = a.retry_at_ms.unwrap_or(0).min(p.block_limit_ms(now_ms));
                p.blocked_until_ms = p.blocked_until_ms.max(until);
                p.blocked_outcome = Some(a.outcome);
                p.blocked_reason = a.error.clone();
            }
            let sent_after = attempts[k + 1..]
                .iter()
                .filter(|b| (&b.provider, &b.model) == (&a.provider, &a.model))
                .count();
            self.model_mut(&a.provider, &a.model)
                .record_sent(a, now_ms, sent_after);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An attempt at `or/m` that took 10 ms, its first token at 100 ms.
    pub(crate) fn attempt(outcome: AttemptOutcome) -> AttemptRecord {
        AttemptRecord {
            error: Some("e".into()),
            first_token_ms: Some(100),
            tokens_per_sec: Some(50.0),
            ..AttemptRecord::new("or", "m", outcome, 10)
        }
    }

    #[test]
    fn an_answer_teaches_its_whole_time() {
        let mut s = ModelStats::default();
        let mut a = attempt(AttemptOutcome::Ok);
        a.first_token_ms = Some(100);
        a.elapsed_ms = 400;
        s.record(&a, 0);
        assert_eq!((s.ttft_ms, s.gen_ms), (Some(100.0), Some(300.0)));
        // One answer: a spread of half the mean is assumed, two of them counted.
        assert_eq!(s.expected_answer_ms(), Some(100.0 + 2.0 * 50.0 + 300.0));
        a.first_token_ms = Some(100);
        a.elapsed_ms = 400;
        s.record(&a, 0);
        // The same again: the assumed spread shrinks.
        assert!(s.expected_answer_ms().unwrap() < 500.0, "{s:?}");
        a.first_token_ms = Some(400);
        a.elapsed_ms = 400;
        s.record(&a, 0);
        // A slow first token widens the tail; an answer in one chunk still counts 1 ms.
        assert!(s.expected_answer_ms().unwrap() > 500.0, "{s:?}");
        assert!(s.gen_ms.unwrap() < 300.0, "{s:?}");
    }

    #[test]
    fn the_load_at_a_429_is_learned_as_the_model_limit() {
        let mut s = ModelStats::default();
        // Each request counts when it is sent, not again when its outcome is recorded.
        let sent = |s: &mut ModelStats, a: &AttemptRecord| {
            s.count_request(0);
            s.record(a, 0);
        };
        for _ in 0..3 {
            sent(&mut s, &attempt(AttemptOutcome::Ok));
        }
        assert_eq!((s.load(0), s.busy_at), (3.0, None));
        // A 429 that is not our rate limit (a shared pool's, a daily or token limit; see
        // classify) teaches nothing.
        sent(&mut s, &attempt(AttemptOutcome::RateLimited));
        assert_eq!(s.busy_at, None);
        let mut own = attempt(AttemptOutcome::RateLimited);
        own.own_rate_limit = true;
        sent(&mut s, &own);
        assert_eq!(s.busy_at, Some(5.0));
        assert!((s.busy(0) - 1.0).abs() < 1e-9);
        assert!(s.busy_until(0).is_some());
        // The load fades in about a minute; answers above the learned limit raise it.
        assert!(s.busy(60_000) < 0.4, "{s:?}");
        assert_eq!(s.busy_until(60_000), None);
        for _ in 0..5 {
            sent(&mut s, &attempt(AttemptOutcome::Ok));
        }
        assert!(s.busy_at.unwrap() > 5.5, "{s:?}");
        assert!(s.busy(0) > 0.5, "{s:?}");
        // An hour after the 429 that taught it, the limit is forgotten.
        assert_eq!(s.busy_limit(BUSY_MEMORY_MS), None);
        assert_eq!(s.busy(BUSY_MEMORY_MS), 0.0);

        // A run's requests are all counted before its outcomes are recorded: a 429 met
        // its first request's load, not that of the run's retry after it.
        let mut h = Health::fresh();
        let m = h.model_mut("or", "m");
        m.count_request(0);
        m.count_request(0);
        h.record_attempts(&[own, attempt(AttemptOutcome::Ok)], 0, &|_| {
            (Limits::default(), 0)
        });
        let m = h.model("or", "m").unwrap();
        assert_eq!((m.load(0), m.busy_at), (2.0, Some(1.3)));
    }

    #[test]
    fn health_decays_with_time_not_requests() {
        let mut s = ModelStats::default();
        s.record(&attempt(AttemptOutcome::ServerError), 0);
        s.record(&attempt(AttemptOutcome::ServerError), 0);
        assert!(s.health(0) < 0.3);
        let later = (HALF_LIFE_MS * 10.0) as u64;
        assert!(
            (s.health(later) - 0.5).abs() < 0.01,
            "old failures fade back to the prior"
        );
    }

    #[test]
    fn failures_during_a_cool_down_do_not_escalate_it() {
        let mut s = ModelStats::default();
        let limited = AttemptRecord {
            own_rate_limit: true,
            ..attempt(AttemptOutcome::RateLimited)
        };
        // Eight parallel runs meet the model's limit at once: one cool-down of 30 s.
        for i in 0..8 {
            s.record(&limited, 1_000 + i);
        }
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.cooldown_until_ms, 1_007 + 30_000);
        // Failing again once it ran out doubles it.
        s.record(&limited, 40_000);
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.cooldown_until_ms, 40_000 + 60_000);
        // An answer ends it.
        s.record(&attempt(AttemptOutcome::Ok), 50_000);
        assert_eq!((s.consecutive_failures, s.cooldown_until_ms), (0, 0));
    }

    #[test]
    fn backoff_grows_and_respects_hints() {
        let now = 1_000_000;
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 1, None, now),
            Some(now + 30_000)
        );
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 3, None, now),
            Some(now + 120_000)
        );
        assert_eq!(
            backoff(AttemptOutcome::ServerError, 30, None, now),
            Some(now + MAX_BACKOFF_MS)
        );
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 1, Some(now + 90_000), now),
            Some(now + 90_000)
        );
        // A 429 with a hint: the hint the first time (DESIGN §3); a repeat once it ran out
        // at least 30 s, doubling to two minutes at most.
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 1, Some(now + 2_000), now),
            Some(now + 2_000)
        );
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 2, Some(now + 2_000), now),
            Some(now + 30_000)
        );
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 3, Some(now + 2_000), now),
            Some(now + 60_000)
        );
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 6, Some(now + 2_000), now),
            Some(now + HINTED_429_MAX_MS)
        );
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 6, None, now),
            Some(now + 960_000)
        );
        assert_eq!(
            backoff(AttemptOutcome::ServerError, 3, Some(now + 2_000), now),
            Some(now + 120_000)
        );
        assert_eq!(backoff(AttemptOutcome::BadRequest, 1, None, now), None);
    }

    #[test]
    fn first_token_samples_are_a_bounded_ring_and_waits_count_as_at_least() {
        let mut s = ModelStats::default();
        assert_eq!(s.first_token_quantiles([0.9]), None, "no distribution yet");
        for ms in [10, 20, 30] {
            let mut a = attempt(AttemptOutcome::Ok);
            a.first_token_ms = Some(ms);
            a.elapsed_ms = ms + 5;
            s.record(&a, 0);
        }
        assert_eq!(
            s.first_token_quantiles([0.9]),
            None,
            "three samples are too few"
        );
        // Overtaken: cancelled after 400 ms without a first token, a sample of at least that.
        let mut late = AttemptRecord::cancelled("or", "m", std::time::Duration::from_millis(400));
        late.overtaken = true;
        s.record(&late, 1);
        assert_eq!(s.first_token_quantiles([0.9, 0.5]), Some([400.0, 20.0]));
        assert!(s.ttft_dev_ms.unwrap() > 10.0, "the spread sees it");
        assert!(
            s.ok > 2.9 && s.fail == 0.0 && s.lost == 1.0,
            "known, not failed: {s:?}"
        );
        // A plain race loser says nothing.
        s.record(
            &AttemptRecord::cancelled("or", "m", std::time::Duration::from_millis(9)),
            2,
        );
        assert_eq!(s.ttft_recent.len(), 4);
        for _ in 0..40 {
            s.record(&attempt(AttemptOutcome::Ok), 3);
        }
        assert_eq!(
            s.ttft_recent.len(),
            TTFT_SAMPLES,
            "the oldest are forgotten"
        );
        // From a damaged file: too many, too large.
        s.ttft_recent = vec![u32::MAX; 100];
        s.bound(4);
        assert_eq!(s.ttft_recent.len(), TTFT_SAMPLES);
        assert!(
            s.ttft_recent
                .iter()
                .all(|&t| f64::from(t) <= LATENCY_MAX_MS)
        );
    }

    #[test]
    fn latency_smoothing_clips_outliers() {
        let mut s = ModelStats::default();
        s.record(&attempt(AttemptOutcome::Ok), 0);
        let mut slow = attempt(AttemptOutcome::Ok);
        slow.first_token_ms = Some(100_000);
        s.record(&slow, 1);
        assert!(s.ttft_ms.unwrap() < 300.0, "{:?}", s.ttft_ms);
    }

    #[test]
    fn provider_wide_failures_block_the_provider() {
        let mut st = Health::default();
        let mut a = attempt(AttemptOutcome::QuotaExhausted);
        a.provider_wide = true;
        a.retry_at_ms = Some(5_000_000);
        st.record_attempts(&[a], 1_000, &|_| (Limits::default(), 0));
        let p = &st.providers["or"];
        assert_eq!(p.blocked_until_ms, 5_000_000);
        let mut p = p.clone();
        assert_eq!(
            p.reserve(Limits::default(), 0, 1_000),
            Err(5_000_000),
            "a blocked provider takes no reservation"
        );
        assert_eq!(
            st.model("or", "m").unwrap().fail,
            0.0,
            "the model is not blamed"
        );
    }

    #[test]
    fn reservations_fill_a_sliding_minute_and_the_day() {
        let limits = Limits {
            per_minute: Some(2),
            per_day: Some(3),
        };
        let w = window_ms();
        let mut p = ProviderStats::default();
        let t0 = 10 * 86_400_000;
        assert_eq!(p.reserve(limits, 0, t0), Ok(()));
        assert_eq!(p.reserve(limits, 0, t0 + 30_000), Ok(()));
        assert_eq!(
            p.reserve(limits, 0, t0 + 31_000),
            Err(t0 + w),
            "full until the oldest leaves the window"
        );
        assert_eq!(
            p.quota_block(t0 + 31_000),
            Some((t0 + w, "2 requests this minute".into()))
        );
        // Sliding: once the first has left the window one slot is free, not two.
        assert_eq!(p.requests_this_minute(t0 + w), 1);
        assert_eq!(p.reserve(limits, 0, t0 + w), Ok(()));
        assert_eq!(p.reserve(limits, 0, t0 + w + 1), Err(t0 + 30_000 + w));
        assert_eq!(
            p.reserve(limits, 0, t0 + 200_000),
            Err(11 * 86_400_000),
            "the day is full until UTC midnight"
        );
        assert_eq!(p.requests_today(t0 + 200_000), 3);
        assert_eq!(p.reserve(limits, 0, 11 * 86_400_000), Ok(()));
    }

    #[test]
    fn capability_miss_is_remembered_for_a_while() {
        let mut s = ModelStats::default();
        let mut a = attempt(AttemptOutcome::CapabilityMissing);
        a.missing = Some(Capability::Vision);
        a.catalog_entry = Some("context=4096,vision".into());
        s.record(&a, 0);
        let entry = "context=4096,vision";
        assert!(s.known_miss(Capability::Vision, entry, 0));
        assert!(s.known_miss(Capability::Vision, entry, CLOUD_BELIEF_MS - 1));
        assert!(!s.known_miss(Capability::Vision, entry, CLOUD_BELIEF_MS));
        assert!(
            !s.known_miss(Capability::Vision, "context=8192,vision", 0),
            "a changed catalog entry is a new model"
        );
        a.local = true;
        let mut local = ModelStats::default();
        local.record(&a, 0);
        assert!(!local.known_miss(Capability::Vision, entry, LOCAL_BELIEF_MS));
        // A miss learned after the old ones expired does not revive them.
        let mut tools = attempt(AttemptOutcome::CapabilityMissing);
        tools.missing = Some(Capability::Tools);
        tools.catalog_entry = a.catalog_entry.clone();
        s.record(&tools, CLOUD_BELIEF_MS + 1);
        assert!(!s.known_miss(Capability::Vision, entry, CLOUD_BELIEF_MS + 2));
        assert!(s.known_miss(Capability::Tools, entry, CLOUD_BELIEF_MS + 2));
    }

    #[test]
    fn a_context_limit_is_corrected_by_the_server_count_and_floored_by_answers() {
        let counted = |limit, requested| TokenCount {
            limit: Some(limit),
            requested: Some(requested),
        };
        // The estimate said 4,736 (+256); llama.cpp counted 7,001 against its 4,096.
        assert_eq!(learned_context(4992, counted(4096, 7001)), 2920);
        assert_eq!(learned_context(4992, TokenCount::default()), 4992);
        assert_eq!(learned_context(4992, counted(4096, 4000)), 4992);
        assert_eq!(learned_context(800, counted(1, 1_000_000)), 100, "bounded");
        let mut s = ModelStats::default();
        let mut ok = attempt(AttemptOutcome::Ok);
        ok.context_tokens = Some(3000);
        s.record(&ok, 0);
        let mut refused = attempt(AttemptOutcome::ContextTooLong);
        refused.context_tokens = Some(4992);
        refused.counted = counted(4096, 7001);
        s.record(&refused, 1);
        assert_eq!(
            s.too_long_from("context=8192", 2),
            Some(3001),
            "never below what it answered"
        );
        assert_eq!(s.too_long_from("context=8192", CLOUD_BELIEF_MS + 1), None);
    }
}

#[cfg(test)]
mod day_tests {
    use super::*;

    #[test]
    fn a_provider_day_counts_from_its_own_reset() {
        // Gemini's quota resets at midnight Pacific (08:00 UTC): at 03:00 UTC it is still
        // the previous day there, and the requests of that day are today's.
        let offset = -8 * 3_600_000;
        let day = 20_000;
        let three_am = day * DAY_MS + 3 * 3_600_000;
        let p = ProviderStats {
            day: provider_day(three_am, offset),
            day_count: 7,
            day_offset_ms: offset,
            ..Default::default()
        };
        assert_eq!(p.day, day - 1);
        assert_eq!(p.requests_today(three_am), 7);
        assert_eq!(p.requests_today(day * DAY_MS + 8 * 3_600_000), 0);
        assert_eq!(day_end_ms(p.day, offset), day * DAY_MS + 8 * 3_600_000);
    }
}
