//! The memory shared by many hosts (DESIGN §9): the health of §5 in Redis (or Valkey), so
//! that every host, `batch` and `serve` pointing there counts one quota per key and learns
//! what any of them learned. Faults never cost the answer: an unreachable, slow, refusing
//! or unreadable Redis makes the run use this host's file memory, with one note. It decides
//! nothing: the health model stays `health.rs`'s, the reservation rule the script's.
//!
//! Layout, under `{namespace}:v1:` (a newer layout uses another prefix, so versions never
//! misread each other), every key with an expiry:
//!
//! ```text
//! models             hash   "{provider}/{model}" → ModelStats (JSON)        a week after use
//! providers          hash   "{provider}#{key fp}" → ProviderStats, less its
//!                           windows and block (JSON)                       a week after use
//! block:{quota}      hash   until_ms, outcome, reason                       at its reset
//! minute:{quota}     zset   one member per request, scored by its time      after the window
//! day:{quota}:{day}  string requests on the provider's day                  after the day
//! ```
//!
//! `{quota}` is the provider and the fingerprint of its key (a truncated SHA-256, never the
//! key): two hosts with one key share a window, two keys never do. A keyless provider on
//! loopback is each host's own server: its entries carry the host's name instead.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError, Script, Value};
use serde::Serialize;

use super::{FileStore, Reservation, Reserved, Store, StoreError};
use crate::health::{self, Health, ModelStats, ProviderStats};
use crate::providers::{Provider, is_loopback_url};
use crate::secret::Secret;
use crate::settings::Memory;

/// The layout's version, in every key's prefix.
pub const LAYOUT: u32 = 1;
/// Health and limits not used for a week are forgotten.
const HEALTH_TTL_MS: u64 = 7 * 86_400_000;
/// A day counter outlives its day by an hour (clocks of hosts differ a little).
const DAY_SLACK_MS: u64 = 3_600_000;
/// Compare-and-set rounds of one record before its health is given up (its requests are
/// counted already, by their reservations). Dozens of runs that end together all write
/// the same model's entry: each round one of them wins, so the others retry, after a
/// random pause that grows to `RECORD_PAUSE_MAX_MS`, which spreads them out.
const RECORD_TRIES: usize = 200;
const RECORD_PAUSE_MAX_MS: u64 = 8;

/// Checks every window of the provider and takes one request in all of them, or in none;
/// a request taken counts in its model's load too (`ModelStats::count_request`), kept as
/// `load:load_ms` under the model's field of the `loads` hash, so that every host sees the
/// requests in flight. KEYS: block, minute, day, loads. ARGV: now, window, per-minute
/// limit, per-day limit (0: none), ms left in the day, the member, how long a day counter
/// outlives its day, the model's field, the load's time constant, how long the loads
/// outlive their last request. Every read comes before the first write, so a key of the
/// wrong type, or a window value that is not a number, fails the script before it changes
/// anything; a load that is not one counts from zero.
const RESERVE: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local per_minute = tonumber(ARGV[3])
local per_day = tonumber(ARGV[4])
local day_left = tonumber(ARGV[5])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'until_ms') or '0')
local used = redis.call('ZCOUNT', KEYS[2], now - window + 1, '+inf')
local today = tonumber(redis.call('GET', KEYS[3]) or '0')
local was = redis.call('HGET', KEYS[4], ARGV[8]) or ''
if blocked == nil or today == nil then return redis.error_reply('unreadable window data') end
if blocked > now then return {0, blocked} end
if per_minute > 0 and used >= per_minute then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[2], now - window + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {0, tonumber(oldest[2]) + window}
end
if per_day > 0 and today >= per_day then return {0, now + day_left} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('PEXPIRE', KEYS[2], window)
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], day_left + tonumber(ARGV[7]))
local load, since = string.match(was, '^([0-9.]+):([0-9]+)$')
load, since = tonumber(load) or 0, math.min(tonumber(since) or now, now)
load = load * math.exp((since - now) / tonumber(ARGV[9])) + 1
redis.call('HSET', KEYS[4], ARGV[8], string.format('%.3f:%d', load, now))
redis.call('PEXPIRE', KEYS[4], ARGV[10])
return {1, 0}
"#;
/// The loads outlive the last request by ten time constants (what is left is 0.005%).
const LOADS_TTL_MS: u64 = 10 * health::LOAD_TAU_MS as u64;

/// Writes a run's health: each changed field only if it still holds what this run read
/// (else the fields that changed meanwhile are returned, and the run merges and retries),
/// then the blocks it learned. KEYS: models, providers, then one block key per block.
/// ARGV: ttl, n, n × (field, old, new) for models, m, m × (…) for providers, then per block
/// (until, outcome, reason, ttl).
const RECORD: &str = r#"
local i = 2
local conflicts = {}
for h = 1, 2 do
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    local cur = redis.call('HGET', KEYS[h], ARGV[i]) or ''
    if cur ~= ARGV[i + 1] then
      table.insert(conflicts, tostring(h)); table.insert(conflicts, ARGV[i]); table.insert(conflicts, cur)
    end
    i = i + 3
  end
end
-- Every block read before the first write: a key of the wrong type or an unreadable
-- block fails the script before it changes anything.
local blocks = i
local held = {}
for k = 3, #KEYS do
  held[k] = tonumber(redis.call('HGET', KEYS[k], 'until_ms') or '0')
  if held[k] == nil then return redis.error_reply('unreadable block at ' .. KEYS[k]) end
end
if #conflicts > 0 then return conflicts end
i = 2
for h = 1, 2 do
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('HSET', KEYS[h], ARGV[i], ARGV[i + 2])
    i = i + 3
  end
  if n > 0 then redis.call('PEXPIRE', KEYS[h], ARGV[1]) end
end
for k = 3, #KEYS do
  local j = blocks + (k - 3) * 4
  if tonumber(ARGV[j]) > held[k] then
    redis.call('HSET', KEYS[k], 'until_ms', ARGV[j], 'outcome', ARGV[j + 1], 'reason', ARGV[j + 2])
    redis.call('PEXPIRE', KEYS[k], ARGV[j + 3])
  end
end
return {}
"#;

/// Where one provider's entries live.
#[derive(Debug, Clone)]
struct Scope {
    /// Its quota's name: `name#fingerprint`, `name#-` for a keyless service, `name@host`
    /// for a keyless server on this host's loopback.
    quota: String,
    /// Its models' prefix: the provider's name (a model's health does not depend on the
    /// key), or `name@host` for this host's own server.
    models: String,
    day_offset_ms: i64,
}

impl Scope {
    /// Its model's field in the `models` and `loads` hashes.
    fn field(&self, model: &str) -> String {
        format!("{}/{model}", self.models)
    }

    fn of(p: &Provider, host: &str) -> Scope {
        let (quota, models) = match &p.key {
            Some(k) => (format!("{}#{}", p.name, k.fingerprint()), p.name.clone()),
            None if is_loopback_url(&p.base_url) => {
                let own = format!("{}@{host}", p.name);
                (own.clone(), own)
            }
            None => (format!("{}#-", p.name), p.name.clone()),
        };
        Scope {
            quota,
            models,
            day_offset_ms: p.day_offset_ms,
        }
    }
}

/// This host's name, for the entries of its own loopback servers.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The URL as it may be shown: the password (in the authority or a `pass`/`password`
/// query) replaced by `***`.
pub fn shown_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "(a URL that does not parse)".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let hidden = matches!(k.as_ref(), "pass" | "password");
            (
                k.into_owned(),
                if hidden { "***".into() } else { v.into_owned() },
            )
        })
        .collect();
    if !pairs.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The connection, driven by a runtime of its own: the store's calls are synchronous (a
/// session records from inside batch's async loop, and may be opened inside a server's),
/// and each is bounded by the round-trip budget, so a slow Redis costs at most that once.
struct Remote {
    rt: Option<tokio::runtime::Runtime>,
    conn: MultiplexedConnection,
    budget: Duration,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Never waits: a reply still on its way is simply dropped.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on `rt` within `budget`.
fn within<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    budget: Duration,
    fut: impl Future<Output = Result<T, RedisError>> + Send + 'static,
) -> Result<T, Fault> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(tokio::time::timeout(budget, fut).await);
    });
    let late = || {
        Fault(format!(
            "no reply within {} ms (`[state] timeout_ms`)",
            budget.as_millis()
        ))
    };
    match rx.recv_timeout(budget + Duration::from_millis(20)) {
        Ok(Ok(Err(e))) if e.is_timeout() => Err(late()),
        Ok(Ok(r)) => r.map_err(Fault::from),
        _ => Err(late()),
    }
}

/// Why the shared memory cannot be used for this run.
#[derive(Debug, Clone)]
struct Fault(String);

impl From<RedisError> for Fault {
    fn from(e: RedisError) -> Fault {
        let text = e.to_string();
        let code = e.code().unwrap_or_default().to_string();
        let said = |word: &str| code == word || text.contains(word);
        Fault(
            if e.kind() == redis::ErrorKind::AuthenticationFailed
                || said("WRONGPASS")
                || said("NOAUTH")
            {
                format!("the password was refused ({text})")
            } else if said("WRONGTYPE") {
                format!("a key under the namespace is not of the type it should be ({text})")
            } else {
                text
            },
        )
    }
}

impl Remote {
    fn connect(url: &str, budget: Duration) -> Result<Remote, Fault> {
        let client = Client::open(url).map_err(Fault::from)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("freeroute-redis")
            .enable_all()
            .build()
            .map_err(|e| Fault(format!("cannot start its runtime: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(budget))
            .set_response_timeout(Some(budget));
        // Connecting may take a few round trips (TLS, AUTH, SELECT): twice the budget.
        let conn = within(&rt, budget * 2, async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        })?;
        Ok(Remote {
            rt: Some(rt),
            conn,
            budget,
        })
    }

    fn query<T: FromRedisValue + Send + 'static>(&self, pipe: redis::Pipeline) -> Result<T, Fault> {
        let mut conn = self.conn.clone();
        let rt = self.rt.as_ref().expect("a runtime until dropped");
        within(
            rt,
            self.budget,
            async move { pipe.query_async(&mut conn).await },
        )
    }

    /// EVALSHA, loading the script once when this Redis does not know it yet.
    fn eval<T: FromRedisValue + Send + 'static>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, Fault> {
        let mut conn = self.conn.clone();
        let script = script.clone();
        let rt = self.rt.as_ref().expect("a runtime until dropped");
        within(rt, self.budget, async move {
            let mut call = script.prepare_invoke();
            for k in &keys {
                call.key(k);
            }
            for a in &args {
                call.arg(a);
            }
            call.invoke_async(&mut conn).await
        })
    }
}

/// What the shared memory held when this run read it: the raw values, so that a record
/// writes a field only if nobody changed it meanwhile.
#[derive(Debug, Default)]
struct Read {
    health: Health,
    models: HashMap<String, String>,
    providers: HashMap<String, String>,
}

/// The shared store, with this host's file memory to fall back on.
pub struct RedisStore {
    remote: Remote,
    prefix: String,
    shown: String,
    scopes: HashMap<String, Scope>,
    read: RefCell<Read>,
    /// This host's memory: the request log always, everything once the shared one failed.
    host: FileStore,
    /// Why the shared memory was given up for this run.
    down: RefCell<Option<String>>,
    told: Cell<bool>,
    password: Option<Secret>,
}

/// The note for a run that cannot use the shared memory.
fn unavailable(why: &str) -> String {
    format!("Shared memory unavailable: {why}; using this host's memory")
}

/// The store a session uses: the shared one when `[state]`'s variable holds a URL and it
/// answers, else this host's files; with a note when the shared one was wanted but failed.
pub fn open(
    memory: &Memory,
    providers: &[Provider],
    dir: Option<std::path::PathBuf>,
) -> (Box<dyn Store>, Option<String>) {
    let host = FileStore::new(dir);
    let Some(url) = &memory.redis_url else {
        return (Box::new(host), None);
    };
    match RedisStore::connect(memory, url, providers, host) {
        Ok(store) => (Box::new(store), None),
        Err((why, host)) => (Box::new(host), Some(unavailable(&why))),
    }
}

impl RedisStore {
    /// Connects and reads the shared health (one round trip after the connection).
    #[allow(clippy::result_large_err)]
    pub fn connect(
        memory: &Memory,
        url: &Secret,
        providers: &[Provider],
        host: FileStore,
    ) -> Result<RedisStore, (String, FileStore)> {
        let shown = shown_url(url.expose());
        let password = url::Url::parse(url.expose())
            .ok()
            .and_then(|u| {
                u.password().map(str::to_string).or_else(|| {
                    u.query_pairs()
                        .find(|(k, _)| k == "pass" || k == "password")
                        .map(|(_, v)| v.into_owned())
                })
            })
            .map(Secret::new);
        let hidden = password.clone();
        let scrub = move |why: String| match &hidden {
            Some(p) => p.redact(&why),
            None => why,
        };
        let remote = match Remote::connect(url.expose(), memory.timeout) {
            Ok(r) => r,
            Err(Fault(why)) => return Err((scrub(format!("{shown}: {why}")), host)),
        };
        let me = host_name();
        let store = RedisStore {
            remote,
            prefix: format!("{}:v{LAYOUT}:", memory.namespace),
            shown,
            scopes: providers
                .iter()
                .map(|p| (p.name.clone(), Scope::of(p, &me)))
                .collect(),
            read: RefCell::new(Read::default()),
            host,
            down: RefCell::new(None),
            told: Cell::new(false),
            password,
        };
        match store.fetch(crate::now_ms()) {
            Ok(read) => {
                *store.read.borrow_mut() = read;
                Ok(store)
            }
            Err(Fault(why)) => {
                let why = scrub(format!("{}: {why}", store.shown));
                Err((why, store.into_host()))
            }
        }
    }

    fn into_host(self) -> FileStore {
        let RedisStore { host, .. } = self;
        host
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn day_key(&self, scope: &Scope, now_ms: u64) -> String {
        let day = health::provider_day(now_ms, scope.day_offset_ms);
        self.key(&format!("day:{}:{day}", scope.quota))
    }

    /// The shared memory gave out: this run goes on with this host's.
    fn give_up(&self, fault: Fault) {
        let why = match &self.password {
            Some(p) => p.redact(&fault.0),
            None => fault.0,
        };
        self.down
            .borrow_mut()
            .get_or_insert(format!("{}: {why}", self.shown));
    }

    fn is_down(&self) -> bool {
        self.down.borrow().is_some()
    }

    /// The note about the fault, once.
    fn fault_note(&self) -> Option<String> {
        let down = self.down.borrow();
        let why = down.as_ref()?;
        (!self.told.replace(true)).then(|| unavailable(why))
    }

    /// Everything a plan needs, in one round trip.
    fn fetch(&self, now_ms: u64) -> Result<Read, Fault> {
        let window = health::window_ms();
        let scopes: Vec<(&String, &Scope)> = self.scopes.iter().collect();
        let mut pipe = redis::pipe();
        pipe.hgetall(self.key("models"))
            .hgetall(self.key("providers"))
            .hgetall(self.key("loads"));
        for (_, s) in &scopes {
            pipe.hgetall(self.key(&format!("block:{}", s.quota)))
                .zrangebyscore_withscores(
                    self.key(&format!("minute:{}", s.quota)),
                    (now_ms.saturating_sub(window) + 1) as f64,
                    "+inf",
                )
                .get(self.day_key(s, now_ms));
        }
        let mut values: Vec<Value> = self.remote.query(pipe)?;
        if values.len() != 3 + 3 * scopes.len() {
            return Err(Fault("an unexpected reply".into()));
        }
        let mut rest = values.split_off(3).into_iter();
        let mut three = values.into_iter();
        let models: HashMap<String, String> = parse(three.next())?;
        let providers: HashMap<String, String> = parse(three.next())?;
        let loads: HashMap<String, String> = parse(three.next())?;
        let mut read = Read {
            health: Health::fresh(),
            ..Read::default()
        };
        for (field, json) in &models {
            let Some(k) = self.health_key(field) else {
                continue;
            };
            let stats: ModelStats = unreadable(field, serde_json::from_str(json))?;
            read.health.models.insert(k, stats);
            read.models.insert(field.clone(), json.clone());
        }
        // The loads live apart from the entries (every reservation writes them); what is
        // not a load counts as none (`Health::bounded` bounds the rest).
        for (field, value) in &loads {
            let (Some(k), Some((load, at))) = (self.health_key(field), value.split_once(':'))
            else {
                continue;
            };
            let stats = read.health.models.entry(k).or_default();
            stats.load = load.parse().unwrap_or(0.0);
            stats.load_ms = at.parse().unwrap_or(0);
        }
        for (name, s) in &scopes {
            let known = providers.contains_key(&s.quota);
            let mut p = match providers.get(&s.quota) {
                Some(json) => {
                    read.providers.insert(s.quota.clone(), json.clone());
                    unreadable::<ProviderStats>(&s.quota, serde_json::from_str(json))?
                }
                None => ProviderStats::default(),
            };
            let block: HashMap<String, String> = parse(rest.next())?;
            let minute: Vec<(String, f64)> = parse(rest.next())?;
            let day: Option<u64> = parse(rest.next())?;
            if !known && block.is_empty() && minute.is_empty() && day.is_none() {
                continue;
            }
            if let Some(until) = block.get("until_ms") {
                p.blocked_until_ms = until
                    .parse()
                    .map_err(|_| Fault(format!("an unreadable block of {}", s.quota)))?;
                p.blocked_outcome = block
                    .get("outcome")
                    .and_then(|o| serde_json::from_value(o.as_str().into()).ok());
                p.blocked_reason = block.get("reason").cloned().filter(|r| !r.is_empty());
            }
            p.minute_sent_ms = minute.iter().map(|(_, t)| *t as u64).collect();
            p.day = health::provider_day(now_ms, s.day_offset_ms);
            p.day_count = day.unwrap_or(0).min(u32::MAX as u64) as u32;
            p.day_offset_ms = s.day_offset_ms;
            read.health.providers.insert((*name).clone(), p);
        }
        Ok(read)
    }

    /// The provider's entry as the `providers` hash keeps it: without what lives in keys
    /// of its own (its windows, its block).
    fn lasting(p: &ProviderStats) -> String {
        let kept = ProviderStats {
            minute_sent_ms: Vec::new(),
            day: 0,
            day_count: 0,
            blocked_until_ms: 0,
            blocked_outcome: None,
            blocked_reason: None,
            ..p.clone()
        };
        json(&kept)
    }

    /// One record: compare-and-set of what the run changed, merged and retried when
    /// another host changed the same entries meanwhile.
    fn record(&self, change: &mut dyn FnMut(&mut Health)) -> Result<Health, Fault> {
        let now = crate::now_ms();
        for round in 0..RECORD_TRIES as u64 {
            if round > 0 {
                let pause = fastrand::u64(0..=round.min(RECORD_PAUSE_MAX_MS));
                std::thread::sleep(Duration::from_millis(pause));
            }
            let read = self.read.borrow();
            let mut h = read.health.clone();
            change(&mut h);
            let mut keys = vec![self.key("models"), self.key("providers")];
            let mut models = Vec::new();
            for (k, stats) in &h.models {
                let new = json(stats);
                if read.health.models.get(k).map(json).as_ref() == Some(&new) {
                    continue;
                }
                let Some((field, _)) = self.model_field(k) else {
                    continue;
                };
                let old = read.models.get(&field).cloned().unwrap_or_default();
                models.push((field, old, new));
            }
            let mut providers = Vec::new();
            let mut blocks = Vec::new();
            for (name, p) in &h.providers {
                let Some(scope) = self.scopes.get(name) else {
                    continue;
                };
                let before = read.health.providers.get(name);
                let new = Self::lasting(p);
                if before.map(Self::lasting).as_ref() != Some(&new) {
                    let old = read
                        .providers
                        .get(&scope.quota)
                        .cloned()
                        .unwrap_or_default();
                    providers.push((scope.quota.clone(), old, new));
                }
                if p.blocked_until_ms > now
                    && p.blocked_until_ms > before.map_or(0, |b| b.blocked_until_ms)
                {
                    keys.push(self.key(&format!("block:{}", scope.quota)));
                    blocks.push([
                        p.blocked_until_ms.to_string(),
                        p.blocked_outcome
                            .map(|o| o.as_str())
                            .unwrap_or("")
                            .to_string(),
                        p.blocked_reason.clone().unwrap_or_default(),
                        (p.blocked_until_ms - now).to_string(),
                    ]);
                }
            }
            drop(read);
            if models.is_empty() && providers.is_empty() && blocks.is_empty() {
                return Ok(h);
            }
            let mut args = vec![HEALTH_TTL_MS.to_string(), models.len().to_string()];
            for (f, o, n) in &models {
                args.extend([f.clone(), o.clone(), n.clone()]);
            }
            args.push(providers.len().to_string());
            for (f, o, n) in &providers {
                args.extend([f.clone(), o.clone(), n.clone()]);
            }
            args.extend(blocks.into_iter().flatten());
            let conflicts: Vec<String> = self.remote.eval(&Script::new(RECORD), keys, args)?;
            let mut read = self.read.borrow_mut();
            if conflicts.is_empty() {
                for (f, _, n) in models {
                    read.models.insert(f, n);
                }
                for (f, _, n) in providers {
                    read.providers.insert(f, n);
                }
                read.health = h.clone();
                return Ok(h);
            }
            for c in conflicts.chunks(3) {
                let [which, field, current] = c else {
                    return Err(Fault("an unexpected reply".into()));
                };
                self.merge(&mut read, which == "1", field, current)?;
            }
        }
        Err(Fault(format!(
            "{RECORD_TRIES} hosts' records in a row touched the same entries"
        )))
    }

    /// Takes another host's newer value of a field into what this run read (a model's load
    /// stays as read: it lives apart, in `loads`).
    fn merge(&self, read: &mut Read, model: bool, field: &str, current: &str) -> Result<(), Fault> {
        if model {
            let Some(k) = self.health_key(field) else {
                return Ok(());
            };
            let mut stats = ModelStats::default();
            if current.is_empty() {
                read.models.remove(field);
            } else {
                stats = unreadable(field, serde_json::from_str(current))?;
                read.models.insert(field.to_string(), current.to_string());
            }
            let ours = read.health.models.remove(&k).unwrap_or_default();
            (stats.load, stats.load_ms) = (ours.load, ours.load_ms);
            read.health.models.insert(k, stats);
            return Ok(());
        }
        let Some(name) = self
            .scopes
            .iter()
            .find(|(_, s)| s.quota == field)
            .map(|(n, _)| n.clone())
        else {
            return Ok(());
        };
        let theirs: ProviderStats = match current {
            "" => ProviderStats::default(),
            json => unreadable(field, serde_json::from_str(json))?,
        };
        let ours = read.health.providers.entry(name).or_default();
        *ours = ProviderStats {
            minute_sent_ms: std::mem::take(&mut ours.minute_sent_ms),
            day: ours.day,
            day_count: ours.day_count,
            blocked_until_ms: ours.blocked_until_ms,
            blocked_outcome: ours.blocked_outcome,
            blocked_reason: ours.blocked_reason.take(),
            ..theirs
        };
        read.providers
            .insert(field.to_string(), current.to_string());
        Ok(())
    }

    /// The health key (`provider/model`) of a `models` (or `loads`) field.
    fn health_key(&self, field: &str) -> Option<String> {
        self.scopes.iter().find_map(|(name, s)| {
            field
                .strip_prefix(s.models.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .map(|m| health::key(name, m))
        })
    }

    /// The `models` field of a health key (`provider/model`), with its provider.
    fn model_field(&self, key: &str) -> Option<(String, &str)> {
        self.scopes.iter().find_map(|(name, s)| {
            key.strip_prefix(name.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .map(|model| (s.field(model), name.as_str()))
        })
    }

    fn reserve_shared(&self, r: &Reservation) -> Result<Reserved, Fault> {
        let Some(scope) = self.scopes.get(r.provider) else {
            return Ok(Reserved::Taken);
        };
        let learned = self
            .read
            .borrow()
            .health
            .providers
            .get(r.provider)
            .and_then(|p| p.day_limit);
        let day = health::provider_day(r.now_ms, scope.day_offset_ms);
        let day_left = health::day_end_ms(day, scope.day_offset_ms).saturating_sub(r.now_ms);
        let keys = vec![
            self.key(&format!("block:{}", scope.quota)),
            self.key(&format!("minute:{}", scope.quota)),
            self.day_key(scope, r.now_ms),
            self.key("loads"),
        ];
        let args = vec![
            r.now_ms.to_string(),
            health::window_ms().to_string(),
            r.limits.per_minute.unwrap_or(0).to_string(),
            learned.or(r.limits.per_day).unwrap_or(0).to_string(),
            day_left.max(1).to_string(),
            format!(
                "{}:{}:{:x}",
                r.now_ms,
                std::process::id(),
                fastrand::u64(..)
            ),
            DAY_SLACK_MS.to_string(),
            scope.field(r.model),
            health::LOAD_TAU_MS.to_string(),
            LOADS_TTL_MS.to_string(),
        ];
        let (taken, until): (u8, u64) = self.remote.eval(&Script::new(RESERVE), keys, args)?;
        if taken != 1 {
            return Ok(Reserved::Full { until_ms: until });
        }
        // This run's view counts it too, as the file store's state would.
        let mut read = self.read.borrow_mut();
        let p = read
            .health
            .providers
            .entry(r.provider.to_string())
            .or_default();
        p.day_offset_ms = scope.day_offset_ms;
        p.count_request(r.now_ms);
        read.health
            .model_mut(r.provider, r.model)
            .count_request(r.now_ms);
        Ok(Reserved::Taken)
    }

    /// Every key of this layout under the namespace, deleted (`stats --reset --shared`).
    fn clear(&self) -> Result<usize, Fault> {
        let pattern = self.key("*");
        let mut cursor = 0u64;
        let mut gone = 0;
        // Bounded: a namespace of a million keys takes a thousand rounds.
        for _ in 0..100_000 {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let ((next, keys),): ((u64, Vec<String>),) = self.remote.query(pipe)?;
            if !keys.is_empty() {
                let mut del = redis::pipe();
                del.cmd("UNLINK").arg(&keys);
                let _: (u64,) = self.remote.query(del)?;
                gone += keys.len();
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(gone)
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("health serializes")
}

fn parse<T: FromRedisValue>(v: Option<Value>) -> Result<T, Fault> {
    let v = v.ok_or_else(|| Fault("an unexpected reply".into()))?;
    redis::from_redis_value(v).map_err(|e| Fault(format!("an unreadable reply ({e})")))
}

fn unreadable<T>(field: &str, r: serde_json::Result<T>) -> Result<T, Fault> {
    r.map_err(|e| Fault(format!("unreadable data under `{field}` ({e})")))
}

impl Store for RedisStore {
    fn snapshot(&self) -> Health {
        if self.is_down() {
            return self.host.snapshot();
        }
        self.read.borrow().health.clone()
    }

    fn update(
        &self,
        change: &mut dyn FnMut(&mut Health),
        log_line: Option<&str>,
    ) -> Result<(Vec<String>, Health), StoreError> {
        let mut notes = Vec::new();
        let mut written = None;
        if !self.is_down() {
            match self.record(change) {
                Ok(h) => written = Some(h),
                Err(f) => self.give_up(f),
            }
        }
        notes.extend(self.fault_note());
        let health = match written {
            Some(h) => {
                if let Some(line) = log_line
                    && let Err(e) = self.host.log(line)
                {
                    notes.push(format!("Running without a request log: {e}"));
                }
                h
            }
            None => {
                let (more, h) = self.host.update(change, log_line)?;
                notes.extend(more);
                h
            }
        };
        Ok((notes, health))
    }

    fn reserve(&self, r: &Reservation) -> Reserved {
        if !self.is_down() {
            match self.reserve_shared(r) {
                Ok(done) => return done,
                Err(f) => self.give_up(f),
            }
        }
        self.host.reserve(r)
    }

    fn reset(&self) -> Result<(), StoreError> {
        self.clear()
            .map(|_| ())
            .map_err(|f| StoreError(format!("{}: {}", self.shown, f.0)))
    }

    fn location(&self) -> Option<String> {
        Some(match &*self.down.borrow() {
            None => format!(
                "{} (shared; namespace {}, layout v{LAYOUT})",
                self.shown,
                self.prefix.trim_end_matches(&format!(":v{LAYOUT}:"))
            ),
            Some(_) => self.host.location()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_never_carry_the_password() {
        assert_eq!(
            shown_url("redis://:s3cret-pw@10.0.0.5:6379/2"),
            "redis://:***@10.0.0.5:6379/2"
        );
        assert_eq!(
            shown_url("rediss://user:s3cret-pw@h:6380"),
            "rediss://user:***@h:6380"
        );
        assert_eq!(
            shown_url("unix:///run/redis.sock?db=1&pass=s3cret-pw"),
            "unix:///run/redis.sock?db=1&pass=***"
        );
        assert!(!shown_url("not a url s3cret-pw").contains("s3cret"));
    }

    #[test]
    fn a_keyed_provider_shares_by_fingerprint_and_a_local_server_stays_per_host() {
        use crate::providers::Tier;
        let mut p = Provider::custom("or", "https://openrouter.ai/api/v1", Tier::Cloud);
        p.key = Some(Secret::new("sk-or-v1-0123456789".into()));
        let s = Scope::of(&p, "h1");
        assert!(s.quota.starts_with("or#") && !s.quota.contains("0123456789"));
        assert_eq!(s.models, "or");
        let local = Provider::custom("ollama", "http://127.0.0.1:11434/v1", Tier::Local);
        assert_eq!(Scope::of(&local, "h1").quota, "ollama@h1");
        let keyless = Provider::custom("llm7", "https://api.llm7.io/v1", Tier::Keyless);
        assert_eq!(Scope::of(&keyless, "h1").quota, "llm7#-");
    }
}
