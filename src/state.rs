//! What the router remembers across runs (DESIGN §5): per-model health with time decay,
//! latency, cool-downs and capability misses; per-provider blocks and quota windows.
//!
//! The file side is behind `Store`: `snapshot()` reads once without a lock at the start of a
//! run; `update()` takes an exclusive lock only for a read-modify-write and writes through a
//! temporary file and a rename, so concurrent runs lose nothing and a crash never leaves a
//! torn file. A shared store (Redis, say) could take the file's place behind the same two calls.
//! The pure policy (decay, back-off, health) is in the `impl`s and tested without files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::outcome::{AttemptOutcome, AttemptRecord};
use crate::providers::Limits;
use crate::wire::openai::Message;

pub const VERSION: u32 = 1;
/// Outcome weights halve every six hours: a cron job that runs hourly still learns.
pub const HALF_LIFE_MS: f64 = 6.0 * 3_600_000.0;
/// The spread assumed for a model's first token until measured, as a share of its mean:
/// one quick answer does not make a model fast.
pub const DEV_PRIOR: f64 = 0.5;
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
const LOG_CAP_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
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
    pub updated_ms: u64,
    /// Smoothed time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Smoothed deviation of the time to first token, ms: how heavy its tail is.
    pub ttft_dev_ms: Option<f64>,
    /// Smoothed completion tokens per second.
    pub tps: Option<f64>,
    /// Smoothed time from the first token to the end of the answer, ms: with the first
    /// token, what a caller waits for an answer.
    pub gen_ms: Option<f64>,
    pub cooldown_until_ms: u64,
    pub consecutive_failures: u32,
    pub last_outcome: Option<AttemptOutcome>,
    pub last_error: Option<String>,
    /// Capabilities the provider said this model lacks (`vision`, `tools`, `schema`).
    pub misses: BTreeSet<String>,
    /// A request of about this many tokens was too long for it (the smallest seen).
    pub too_long_at: Option<u64>,
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
    /// Requests sent in the current minute window, which started at `minute_start_ms`.
    pub minute_start_ms: u64,
    pub minute_count: u32,
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

pub fn key(provider: &str, model: &str) -> String {
    format!("{provider}/{model}")
}

impl ModelStats {
    /// The first-token time to expect, tail included: mean plus two deviations.
    pub fn expected_ttft_ms(&self) -> Option<f64> {
        self.ttft_ms
            .map(|m| m + 2.0 * self.ttft_dev_ms.unwrap_or(DEV_PRIOR * m))
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
        let n = (self.ok + self.fail) * decay(self.updated_ms, now_ms);
        n / (n + 2.0)
    }

    fn record(&mut self, a: &AttemptRecord, now_ms: u64) {
        // Every request counts towards its limits, whatever became of it.
        let load = self.load(now_ms) + 1.0;
        self.load = load;
        self.load_ms = now_ms;
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
        self.updated_ms = now_ms;
        self.last_outcome = Some(a.outcome);
        match a.outcome {
            AttemptOutcome::Ok => {
                self.ok += 1.0;
                self.consecutive_failures = 0;
                self.cooldown_until_ms = 0;
                self.last_error = None;
                if let Some(t) = a.first_token_ms {
                    let t = t as f64;
                    if let Some(mean) = self.ttft_ms {
                        // Unlike the mean, the deviation sees slow answers (up to 10×).
                        let dev = (t.min(mean * 10.0) - mean).abs();
                        let d = self.ttft_dev_ms.unwrap_or(DEV_PRIOR * mean);
                        self.ttft_dev_ms = Some(d + 0.3 * (dev - d));
                    }
                    self.ttft_ms = Some(smooth(self.ttft_ms, t));
                    let gen_ms = a.elapsed_ms.saturating_sub(a.first_token_ms.unwrap_or(0));
                    self.gen_ms = Some(smooth(self.gen_ms, (gen_ms as f64).max(1.0)));
                }
                if let Some(t) = a.tokens_per_sec {
                    self.tps = Some(smooth(self.tps, t));
                }
            }
            // A loser of a race says nothing about the model.
            AttemptOutcome::Cancelled => {}
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
                    self.too_long_at = Some(self.too_long_at.map_or(n, |t| t.min(n)));
                }
                self.last_error = a.error.clone();
            }
            o => {
                self.fail += 1.0;
                self.consecutive_failures += 1;
                self.last_error = a.error.clone();
                if o == AttemptOutcome::CapabilityMissing
                    && let Some(cap) = a.error.as_deref().and_then(missing_capability)
                {
                    self.misses.insert(cap.into());
                }
                if let Some(until) = backoff(o, self.consecutive_failures, a.retry_at_ms, now_ms) {
                    self.cooldown_until_ms = self.cooldown_until_ms.max(until);
                }
            }
        }
    }
}

/// Which capability a "No endpoints found that support …" message names.
pub fn missing_capability(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("image") {
        Some("vision")
    } else if m.contains("tool") {
        Some("tools")
    } else if m.contains("response_format") || m.contains("structured") || m.contains("json") {
        Some("schema")
    } else {
        None
    }
}

/// When a failed model may be tried again: the server's hint or an exponential back-off
/// from 30 s, whichever is later, for failures that a wait can cure. A 429 that says when
/// to come back escalates only to `HINTED_429_MAX_MS`: the server knows its limit, and
/// repeats mean that enough was sent again (the fleet simulation saw busy models shut out
/// for 13 minutes by a per-minute limit).
pub fn backoff(
    outcome: AttemptOutcome,
    failures: u32,
    hint_ms: Option<u64>,
    now_ms: u64,
) -> Option<u64> {
    use AttemptOutcome::*;
    let exp = |cap: u64| {
        crate::attempt::classify::MIN_COOLDOWN_MS
            .saturating_mul(1u64 << failures.saturating_sub(1).min(16))
            .min(cap)
    };
    match outcome {
        RateLimited if hint_ms.is_some() => {
            Some(hint_ms.unwrap_or(0).max(now_ms + exp(HINTED_429_MAX_MS)))
        }
        RateLimited | ServerError | Timeout | ConnectionFailed | EmptyAnswer
        | StreamInterrupted => Some(hint_ms.unwrap_or(0).max(now_ms + exp(MAX_BACKOFF_MS))),
        _ => None,
    }
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
        (now_ms as i64 + self.day_offset_ms).max(0) as u64 / 86_400_000
    }

    /// How full the fullest known window is, 0..1 (for spreading load).
    pub fn used_fraction(&self, now_ms: u64) -> f64 {
        let minute = match self.per_minute {
            Some(n) if n > 0 && now_ms < self.minute_start_ms + crate::minute_ms() => {
                self.minute_count as f64 / n as f64
            }
            _ => 0.0,
        };
        let day = match self.day_limit.or(self.per_day) {
            Some(n) if n > 0 && self.day == self.day_of(now_ms) => self.day_count as f64 / n as f64,
            _ => 0.0,
        };
        minute.max(day).min(1.0)
    }

    /// Requests left in the fullest known window, when a window is known.
    pub fn remaining(&self, now_ms: u64) -> Option<u32> {
        let minute = match self.per_minute {
            Some(n) if now_ms < self.minute_start_ms + crate::minute_ms() => {
                Some(n.saturating_sub(self.minute_count))
            }
            Some(n) => Some(n),
            None => None,
        };
        let day = match self.day_limit.or(self.per_day) {
            Some(n) if self.day == self.day_of(now_ms) => Some(n.saturating_sub(self.day_count)),
            Some(n) => Some(n),
            None => None,
        };
        match (minute, day) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the requests counted so far already fill a known window: until when, and why.
    pub fn quota_block(&self, now_ms: u64) -> Option<(u64, String)> {
        if let Some(n) = self.per_minute
            && self.minute_count >= n
            && now_ms < self.minute_start_ms + crate::minute_ms()
        {
            return Some((
                self.minute_start_ms + crate::minute_ms(),
                format!("{n} requests this minute"),
            ));
        }
        if let Some(n) = self.day_limit.or(self.per_day)
            && self.day == self.day_of(now_ms)
            && self.day_count >= n
        {
            return Some((
                ((self.day + 1) * 86_400_000).saturating_add_signed(-self.day_offset_ms),
                format!("{n} requests today (UTC)"),
            ));
        }
        None
    }

    fn count_request(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.minute_start_ms) >= crate::minute_ms() {
            self.minute_start_ms = now_ms;
            self.minute_count = 0;
        }
        self.minute_count += 1;
        let day = self.day_of(now_ms);
        if day != self.day {
            self.day = day;
            self.day_count = 0;
        }
        self.day_count += 1;
    }
}

impl State {
    pub fn model(&self, provider: &str, model: &str) -> Option<&ModelStats> {
        self.models.get(&key(provider, model))
    }

    /// Folds one run's attempts into the state; `limits` gives each provider's documented
    /// free-tier limits.
    pub fn record_attempts(
        &mut self,
        attempts: &[AttemptRecord],
        now_ms: u64,
        limits: &dyn Fn(&str) -> (Limits, i64),
    ) {
        for a in attempts {
            let p = self.providers.entry(a.provider.clone()).or_default();
            let (l, offset) = limits(&a.provider);
            (p.per_minute, p.per_day, p.day_offset_ms) = (l.per_minute, l.per_day, offset);
            p.count_request(now_ms);
            if a.day_limit.is_some() {
                p.day_limit = a.day_limit;
            }
            if a.provider_wide {
                p.blocked_until_ms = p.blocked_until_ms.max(a.retry_at_ms.unwrap_or(0));
                p.blocked_outcome = Some(a.outcome);
                p.blocked_reason = a.error.clone();
            }
            self.models
                .entry(key(&a.provider, &a.model))
                .or_default()
                .record(a, now_ms);
        }
    }
}

/// Where the state lives; `None` runs without memory.
pub fn state_dir() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("freeroute"))
}

/// The file-backed store.
pub struct Store {
    dir: Option<PathBuf>,
}

impl Store {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Store { dir }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn file(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("state.json"))
    }

    pub fn log_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("requests.jsonl"))
    }

    /// Forgets everything: a fresh state and an empty request log, under the lock.
    pub fn reset(&self) -> Result<(), String> {
        self.update(|s| *s = fresh(), None)?;
        if let Some(c) = self.conversations_path()
            && c.exists()
        {
            std::fs::remove_file(&c).map_err(|e| format!("cannot remove {}: {e}", c.display()))?;
        }
        if let Some(log) = self.log_path()
            && log.exists()
        {
            write_atomic(&log, b"").map_err(|e| format!("cannot clear {}: {e}", log.display()))?;
        }
        Ok(())
    }

    fn conversations_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("conversations.json"))
    }

    /// The messages of the last answered conversation (`--continue`).
    pub fn last_conversation(&self) -> Option<Vec<Message>> {
        let bytes = std::fs::read(self.conversations_path()?).ok()?;
        let file: Conversations = serde_json::from_slice(&bytes).ok()?;
        file.conversations.into_iter().last().map(|c| c.messages)
    }

    /// Keeps a conversation, dropping all but the last `KEPT_CONVERSATIONS`.
    pub fn save_conversation(&self, messages: &[Message]) -> Result<(), String> {
        let Some(path) = self.conversations_path() else {
            return Ok(());
        };
        let dir = self.dir.as_ref().expect("a path implies a dir");
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let lock = self.lock(dir)?;
        let mut file: Conversations = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        file.conversations.push(Conversation {
            time_ms: crate::now_ms(),
            messages: messages.to_vec(),
        });
        let excess = file.conversations.len().saturating_sub(KEPT_CONVERSATIONS);
        file.conversations.drain(..excess);
        let result = write_atomic(&path, &serde_json::to_vec(&file).expect("serializes"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
        drop(lock);
        result
    }

    fn lock(&self, dir: &Path) -> Result<File, String> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("state.lock"))
            .map_err(|e| format!("cannot open the lock file in {}: {e}", dir.display()))?;
        lock.lock()
            .map_err(|e| format!("cannot lock the state: {e}"))?;
        Ok(lock)
    }

    /// Reads the state once, without a lock (writers rename whole files into place). An
    /// unreadable file is only read past here; it is set aside under the lock by the next
    /// `update`, so a reader never moves a file another process just rebuilt.
    pub fn snapshot(&self, _notes: &mut Vec<String>) -> State {
        let Some(path) = self.file() else {
            return fresh();
        };
        match std::fs::read(&path)
            .ok()
            .map(|b| serde_json::from_slice::<State>(&b))
        {
            Some(Ok(s)) if s.version == VERSION => s,
            _ => fresh(),
        }
    }

    /// Read-modify-write under an exclusive lock, written atomically. The lock is held only
    /// for this call, never across network I/O.
    pub fn update(
        &self,
        f: impl FnOnce(&mut State),
        log_line: Option<&str>,
    ) -> Result<Vec<String>, String> {
        self.update_and_read(f, log_line).map(|(notes, _)| notes)
    }

    /// `update`, returning the state as written (others' updates included).
    pub fn update_and_read(
        &self,
        f: impl FnOnce(&mut State),
        log_line: Option<&str>,
    ) -> Result<(Vec<String>, State), String> {
        let Some(dir) = &self.dir else {
            let mut state = fresh();
            f(&mut state);
            return Ok((Vec::new(), state));
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let lock = self.lock(dir)?;
        let mut notes = Vec::new();
        let path = dir.join("state.json");
        let mut state = read_or_set_aside(&path, &mut notes);
        f(&mut state);
        let result = write_atomic(
            &path,
            &serde_json::to_vec(&state).expect("state serializes"),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()));
        if let (Ok(()), Some(line)) = (&result, log_line) {
            append_log(&dir.join("requests.jsonl"), line)
                .map_err(|e| format!("cannot write the request log: {e}"))?;
        }
        drop(lock);
        result.map(|()| (notes, state))
    }
}

/// How many answered conversations are kept for `--continue`.
pub const KEPT_CONVERSATIONS: usize = 5;

/// `conversations.json`: kept apart from the state and never written to the request log.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Conversations {
    #[serde(default)]
    conversations: Vec<Conversation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Conversation {
    time_ms: u64,
    messages: Vec<Message>,
}

fn fresh() -> State {
    State {
        version: VERSION,
        ..Default::default()
    }
}

fn read_or_set_aside(path: &Path, notes: &mut Vec<String>) -> State {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(_) => return fresh(),
    };
    match serde_json::from_slice::<State>(&bytes) {
        Ok(s) if s.version == VERSION => s,
        Ok(s) => set_aside(
            path,
            &format!("version {} is not {VERSION}", s.version),
            notes,
        ),
        Err(e) => set_aside(path, &e.to_string(), notes),
    }
}

fn set_aside(path: &Path, why: &str, notes: &mut Vec<String>) -> State {
    let aside = path.with_extension(format!("json.bad-{}", std::process::id()));
    if std::fs::rename(path, &aside).is_ok() {
        notes.push(format!(
            "The state file {} was unreadable ({why}); set it aside as {} and started fresh",
            path.display(),
            aside.display()
        ));
    }
    fresh()
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    // No fsync: the rename alone keeps every reader from seeing half a file when a process
    // dies; after a power loss an empty file is set aside like any unreadable one. A sync
    // would cost every run milliseconds on a real disk.
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Appends one line; past the cap, the older half of the log is dropped (atomically).
fn append_log(path: &Path, line: &str) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_CAP_BYTES) {
        // Bytes, not text: the middle may fall inside a multi-byte character.
        let bytes = std::fs::read(path).unwrap_or_default();
        let cut = bytes.len() / 2;
        let start = bytes[cut..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| cut + i + 1);
        write_atomic(path, &bytes[start..])?;
    }
    let mut f: File = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: AttemptOutcome) -> AttemptRecord {
        AttemptRecord {
            provider: "or".into(),
            model: "m".into(),
            outcome,
            status: None,
            error: Some("e".into()),
            elapsed_ms: 10,
            first_token_ms: Some(100),
            tokens_per_sec: Some(50.0),
            retry_at_ms: None,
            provider_wide: false,
            day_limit: None,
            piece: None,
            context_tokens: None,
            own_rate_limit: false,
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
        for _ in 0..3 {
            s.record(&attempt(AttemptOutcome::Ok), 0);
        }
        assert_eq!((s.load(0), s.busy_at), (3.0, None));
        // A 429 that is not our rate limit (a shared pool's, a daily or token limit; see
        // classify) teaches nothing.
        s.record(&attempt(AttemptOutcome::RateLimited), 0);
        assert_eq!(s.busy_at, None);
        let mut own = attempt(AttemptOutcome::RateLimited);
        own.own_rate_limit = true;
        s.record(&own, 0);
        assert_eq!(s.busy_at, Some(5.0));
        assert!((s.busy(0) - 1.0).abs() < 1e-9);
        assert!(s.busy_until(0).is_some());
        // The load fades in about a minute; answers above the learned limit raise it.
        assert!(s.busy(60_000) < 0.4, "{s:?}");
        assert_eq!(s.busy_until(60_000), None);
        for _ in 0..5 {
            s.record(&attempt(AttemptOutcome::Ok), 0);
        }
        assert!(s.busy_at.unwrap() > 5.5, "{s:?}");
        assert!(s.busy(0) > 0.5, "{s:?}");
        // An hour after the 429 that taught it, the limit is forgotten.
        assert_eq!(s.busy_limit(BUSY_MEMORY_MS), None);
        assert_eq!(s.busy(BUSY_MEMORY_MS), 0.0);
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
        // A 429 with a hint escalates to two minutes at most, and never below 30 s.
        assert_eq!(
            backoff(AttemptOutcome::RateLimited, 1, Some(now + 2_000), now),
            Some(now + 30_000)
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
        let mut st = fresh();
        let mut a = attempt(AttemptOutcome::QuotaExhausted);
        a.provider_wide = true;
        a.retry_at_ms = Some(5_000_000);
        st.record_attempts(&[a], 1_000, &|_| (Limits::default(), 0));
        let p = &st.providers["or"];
        assert_eq!(p.blocked_until_ms, 5_000_000);
        assert_eq!(p.day_count, 1);
        assert_eq!(
            st.model("or", "m").unwrap().fail,
            0.0,
            "the model is not blamed"
        );
    }

    #[test]
    fn counted_requests_fill_the_minute_and_the_day() {
        let mut st = fresh();
        let limits = |_: &str| {
            (
                Limits {
                    per_minute: Some(2),
                    per_day: Some(3),
                },
                0,
            )
        };
        let t0 = 10 * 86_400_000;
        st.record_attempts(
            &[attempt(AttemptOutcome::Ok), attempt(AttemptOutcome::Ok)],
            t0,
            &limits,
        );
        let p = &st.providers["or"];
        assert_eq!(
            p.quota_block(t0 + 1),
            Some((t0 + 60_000, "2 requests this minute".into()))
        );
        assert_eq!(p.quota_block(t0 + 60_000), None);
        st.record_attempts(&[attempt(AttemptOutcome::Ok)], t0 + 61_000, &limits);
        let p = &st.providers["or"];
        assert_eq!(
            p.quota_block(t0 + 62_000).unwrap().0,
            11 * 86_400_000,
            "the day is full until UTC midnight"
        );
        assert_eq!(p.quota_block(11 * 86_400_000), None);
    }

    #[test]
    fn capability_miss_is_remembered() {
        let mut s = ModelStats::default();
        let mut a = attempt(AttemptOutcome::CapabilityMissing);
        a.error = Some("No endpoints found that support image input".into());
        s.record(&a, 0);
        assert!(s.misses.contains("vision"));
    }

    #[test]
    fn capping_the_log_never_splits_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let line = "é…".repeat(200);
        let mut text = String::new();
        while text.len() <= LOG_CAP_BYTES as usize {
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        append_log(&path, "{\"last\":true}").unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert!(kept.len() < text.len() / 2 + line.len() * 2);
        assert!(kept.ends_with("{\"last\":true}\n"));
    }

    #[test]
    fn store_round_trip_and_garbage_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Some(dir.path().to_path_buf()));
        let ok = |s: &mut State| {
            s.record_attempts(&[attempt(AttemptOutcome::Ok)], 0, &|_| {
                (Limits::default(), 0)
            })
        };
        store.update(ok, Some("{\"x\":1}")).unwrap();
        let mut notes = Vec::new();
        assert!(store.snapshot(&mut notes).model("or", "m").is_some());
        std::fs::write(dir.path().join("state.json"), b"{garbage").unwrap();
        assert!(
            store.snapshot(&mut notes).models.is_empty(),
            "garbage reads as fresh"
        );
        assert!(
            dir.path().join("state.json").exists(),
            "a reader never moves the file"
        );
        let notes = store.update(ok, None).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("set it aside"));
        assert!(
            store.snapshot(&mut Vec::new()).model("or", "m").is_some(),
            "rebuilt under the lock"
        );
        let log = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
        assert_eq!(log, "{\"x\":1}\n");
    }
}
