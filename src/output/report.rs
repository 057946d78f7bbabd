//! The listings: `--dry-run`'s plan, `models`, `stats` and `config show`. Each is built as
//! serializable rows, then rendered as a table or as JSON (DESIGN §4); nothing is
//! decided here.

use std::time::Duration;

use serde::Serialize;

use super::Printer;
use crate::catalog::Capabilities;
use crate::config::Keyless;
use crate::health::{Health, ModelStats, ProviderStats};
use crate::outcome::AttemptOutcome;
use crate::plan::filter::format_wait;
use crate::plan::{Dropped, Plan, Score};
use crate::providers::{self, Provider, Tier};
use crate::request::{Hedge, Request};
use crate::session::Providers;
use crate::store::file::LogCounts;

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A table cell from text a server chose (an error message, a model id): one line
/// whatever it holds (runs of whitespace, newlines and tabs included, become one space;
/// other control characters and the bidirectional overrides are dropped), at most `max`
/// characters, so that a row stays one line.
fn cell(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = super::for_terminal(&one_line).chars().take(max).collect();
    if one_line.chars().count() > max {
        out.push('…');
    }
    out
}

/// A candidate of `--dry-run --json`.
#[derive(Serialize)]
struct PlanRow<'a> {
    provider: &'a str,
    model: &'a str,
    score: f64,
    why: String,
    /// The score's parts, each to two decimals.
    parts: Score,
    /// Worst-case first-token timeout; absent past the attempt limit.
    first_token_timeout_ms: Option<u64>,
    /// How long its first token is waited for before the next candidate is started beside
    /// it (`Candidate::patience`).
    patience_ms: u64,
}

#[derive(Serialize)]
struct PlanReport<'a> {
    /// A batch item's id (`batch --dry-run --json`: one line per item).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    candidates: Vec<PlanRow<'a>>,
    dropped: &'a [Dropped],
}

fn plan_report<'a>(
    plan: &'a Plan,
    timeouts: &[Duration],
    id: Option<&'a serde_json::Value>,
) -> PlanReport<'a> {
    let candidates = plan
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| PlanRow {
            provider: &c.model.provider,
            model: &c.model.id,
            score: round(c.score.total),
            why: c.score.explain(),
            parts: c.score.rounded(),
            first_token_timeout_ms: timeouts.get(i).map(|d| d.as_millis() as u64),
            patience_ms: c.patience.as_millis() as u64,
        })
        .collect();
    PlanReport {
        id,
        candidates,
        dropped: &plan.dropped,
    }
}

/// `batch --dry-run --json`: one line per item, the `--dry-run --json` object plus its `id`.
pub fn item_plan(id: &serde_json::Value, plan: &Plan, timeouts: &[Duration], printer: &Printer) {
    printer.json(&plan_report(plan, timeouts, Some(id)));
}

/// `batch --dry-run`: the items that share the plan printed below it.
pub fn items_heading(ids: &[serde_json::Value], count: usize, printer: &Printer) {
    const SHOWN: usize = 5;
    let mut shown: Vec<String> = ids.iter().take(SHOWN).map(|v| v.to_string()).collect();
    if count > SHOWN {
        shown.push("…".into());
    }
    let items = if count == 1 { "item" } else { "items" };
    let order = if count > 1 {
        "; each item draws its own order among these, as the ranking's jitter does when it runs"
    } else {
        ""
    };
    printer.stdout(&format!(
        "{count} {items} (id {}){order}:\n",
        shown.join(", ")
    ));
}

/// `--dry-run`: the candidates in order, each with its worst-case first-token timeout, and
/// every dropped model with its reason.
pub fn plan(plan: &Plan, req: &Request, timeouts: &[Duration], now_ms: u64, printer: &Printer) {
    let timeout_of = |i: usize| timeouts.get(i).map(|d| d.as_millis() as u64);
    if req.json {
        printer.json(&plan_report(plan, timeouts, None));
        return;
    }
    let mut s = String::new();
    s.push_str(&format!(
        "{}, in the order they would be tried (deadline {:.0}s, at most {} attempts, race {}{}):\n",
        super::explain::count(plan.candidates.len(), "candidate"),
        req.timeout.as_secs_f64(),
        req.attempts,
        req.race,
        match req.hedge {
            Some(Hedge::After(d)) => format!(", hedge after {} ms", d.as_millis()),
            Some(Hedge::Auto) => ", hedge auto".into(),
            None => String::new(),
        }
    ));
    for (i, c) in plan.candidates.iter().enumerate() {
        let mut t = timeout_of(i).map_or("not reached".to_string(), |ms| {
            format!(
                "first token within {:.1}s, the next beside it after {:.2}s",
                ms as f64 / 1000.0,
                c.patience.as_secs_f64()
            )
        });
        if let Some(until) = c.cooling_until_ms {
            let wait = format_wait(until, now_ms);
            t.push_str(&format!(", cooling down for {wait}: tried last"));
        }
        s.push_str(&format!(
            "{:>3}. {}/{}  score {:.2}  {t}  ({})\n",
            i + 1,
            c.model.provider,
            c.model.id,
            c.score.total,
            c.score.explain()
        ));
    }
    if !plan.dropped.is_empty() {
        s.push_str(&format!("{} dropped:\n", plan.dropped.len()));
        for d in &plan.dropped {
            s.push_str(&format!("     {}/{}: {}\n", d.provider, d.model, d.why));
        }
    }
    printer.stdout(&s);
}

/// The `-v` trace of a plan: each candidate's score parts, each drop's reason.
pub fn trace_plan(plan: &Plan, printer: &Printer) {
    for c in &plan.candidates {
        printer.trace(&format!(
            "candidate {}/{}: {:.2} = {}",
            c.model.provider,
            c.model.id,
            c.score.total,
            c.score.explain()
        ));
    }
    for d in &plan.dropped {
        printer.trace(&format!("dropped {}/{}: {}", d.provider, d.model, d.why));
    }
}

/// A capability as the `models` table and `config show` name it.
fn short_name(c: crate::catalog::Capability) -> &'static str {
    match c {
        crate::catalog::Capability::Vision => "vision",
        crate::catalog::Capability::Tools => "tools",
        crate::catalog::Capability::Schema => "schema",
    }
}

/// A row of `models --json`.
#[derive(Serialize)]
struct ModelRow<'a> {
    provider: &'a str,
    model: &'a str,
    context: Option<u64>,
    capabilities: Capabilities,
    free: bool,
    /// `cloud` (a keyed or configured provider), `local` (a server found on a loopback
    /// port) or `keyless` (the last resort: no key, and they may log prompts).
    tier: Tier,
    score: f64,
    why: String,
}

/// The `models` table's TIER cell: the later tiers are tried only after every keyed or
/// configured model (unless `-m` names them), so they are marked on every row.
fn tier_cell(tier: Tier) -> &'static str {
    match tier {
        Tier::Cloud => "",
        Tier::Local => "found on this machine",
        Tier::Keyless => "last resort: keyless, may log prompts",
    }
}

/// `models`: the eligible models in the order they would be tried.
pub fn models(plan: &Plan, json: bool, printer: &Printer) {
    let rows: Vec<ModelRow> = plan
        .candidates
        .iter()
        .map(|c| ModelRow {
            provider: &c.model.provider,
            model: &c.model.id,
            context: c.model.context,
            capabilities: c.model.caps,
            free: c.model.free,
            tier: c.model.tier,
            score: round(c.score.total),
            why: c.score.explain(),
        })
        .collect();
    if json {
        printer.json(&rows);
        return;
    }
    let mut s = format!(
        "{:<4}{:<12}{:<56}{:>9}  {:<18}{:<7}{}\n",
        "#", "PROVIDER", "MODEL", "CONTEXT", "CAPABILITIES", "SCORE", "TIER"
    );
    for (i, r) in rows.iter().enumerate() {
        let caps: Vec<&str> = r.capabilities.iter().map(short_name).collect();
        let ctx = r.context.map_or("?".to_string(), |c| c.to_string());
        let caps = if caps.is_empty() {
            "text".to_string()
        } else {
            caps.join(",")
        };
        let line = format!(
            "{:<4}{:<12}{:<56}{:>9}  {:<18}{:<7.2}{}",
            i + 1,
            r.provider,
            cell(r.model, 200),
            ctx,
            caps,
            r.score,
            tier_cell(r.tier)
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    printer.stdout(&s);
}

/// A model of `stats --json`.
#[derive(Serialize)]
struct StatsModel<'a> {
    provider: &'a str,
    model: &'a str,
    /// The ranking's health: the success share pulled towards 50% while little is known,
    /// `(ok + 1) / (ok + failed + 2)` (DESIGN §3).
    success_ratio: f64,
    /// The plain share of its recent attempts that succeeded, `ok / (ok + failed)`: what
    /// the table's SUCCESS column shows. Absent when nothing is known.
    success_share: Option<f64>,
    ok: f64,
    failed: f64,
    first_token_ms: Option<f64>,
    first_token_dev_ms: Option<f64>,
    rest_of_answer_ms: Option<f64>,
    expected_answer_ms: Option<f64>,
    recent_requests: f64,
    busy_at_requests: Option<f64>,
    tokens_per_sec: Option<f64>,
    cooldown_until_ms: Option<u64>,
    last_outcome: Option<AttemptOutcome>,
    last_error: Option<&'a str>,
    /// Capability misses and the learned context limit, while still believed.
    missing: Vec<crate::catalog::Capability>,
    too_long_at_tokens: Option<u64>,
    updated_ms: u64,
}

impl<'a> StatsModel<'a> {
    fn of(key: &'a str, m: &'a ModelStats, now: u64) -> Self {
        let (provider, model) = key.split_once('/').unwrap_or((key, ""));
        StatsModel {
            provider,
            model,
            success_ratio: round(m.health(now)),
            success_share: (m.ok + m.fail > 0.0).then(|| round(m.ok / (m.ok + m.fail))),
            ok: round(m.ok),
            failed: round(m.fail),
            first_token_ms: m.ttft_ms.map(f64::round),
            first_token_dev_ms: m.ttft_dev_ms.map(f64::round),
            rest_of_answer_ms: m.gen_ms.map(f64::round),
            expected_answer_ms: m.expected_answer_ms().map(f64::round),
            recent_requests: round(m.load(now)),
            busy_at_requests: m.busy_at.map(round),
            tokens_per_sec: m.tps.map(round),
            cooldown_until_ms: (m.cooldown_until_ms > now).then_some(m.cooldown_until_ms),
            last_outcome: m.last_outcome,
            last_error: m.last_error.as_deref(),
            missing: match m.misses_until_ms > now {
                true => m.misses.iter().copied().collect(),
                false => Vec::new(),
            },
            too_long_at_tokens: m.too_long_at.filter(|_| m.too_long_until_ms > now),
            updated_ms: m.updated_ms,
        }
    }
}

/// A provider of `stats --json`.
#[derive(Serialize)]
struct StatsProvider<'a> {
    provider: &'a str,
    requests_this_minute: u32,
    requests_today: u32,
    per_minute_limit: Option<u32>,
    per_day_limit: Option<u32>,
    skipped_until_ms: Option<u64>,
    skipped_because: Option<String>,
}

impl<'a> StatsProvider<'a> {
    fn of(name: &'a str, p: &'a ProviderStats, now: u64) -> Self {
        let block = (p.blocked_until_ms > now)
            .then(|| {
                (
                    p.blocked_until_ms,
                    p.blocked_outcome
                        .map_or("blocked", |o| o.as_str())
                        .to_string(),
                )
            })
            .or_else(|| p.quota_block(now));
        StatsProvider {
            provider: name,
            requests_this_minute: p.requests_this_minute(now),
            requests_today: p.requests_today(now),
            per_minute_limit: p.per_minute,
            per_day_limit: p.day_limit.or(p.per_day),
            skipped_until_ms: block.as_ref().map(|b| b.0),
            skipped_because: block.map(|b| b.1),
        }
    }
}

#[derive(Serialize)]
struct StatsReport<'a> {
    state_dir: Option<&'a str>,
    /// Where the health shown comes from: the shared memory (DESIGN §9), or this host's.
    memory: Memory<'a>,
    models: Vec<StatsModel<'a>>,
    providers: Vec<StatsProvider<'a>>,
    runs_logged: usize,
    runs_answered: usize,
}

#[derive(Serialize)]
struct Memory<'a> {
    shared: bool,
    from: Option<&'a str>,
}

/// `stats`: what the router remembers, as a table or one JSON object. `shared`: the
/// shared memory the health was read from, when it was.
pub fn stats(
    health: &Health,
    location: Option<&str>,
    shared: Option<&str>,
    log: LogCounts,
    now: u64,
    json: bool,
    printer: &Printer,
) {
    let models: Vec<_> = health
        .models
        .iter()
        .map(|(k, m)| StatsModel::of(k, m, now))
        .collect();
    let providers: Vec<_> = health
        .providers
        .iter()
        .map(|(n, p)| StatsProvider::of(n, p, now))
        .collect();
    if json {
        printer.json(&StatsReport {
            state_dir: location,
            memory: Memory {
                shared: shared.is_some(),
                from: shared.or(location),
            },
            models,
            providers,
            runs_logged: log.runs,
            runs_answered: log.answered,
        });
        return;
    }
    let mut s = String::new();
    if let Some(from) = shared {
        s.push_str(&format!("# shared memory: {from}\n"));
    }
    if let Some(d) = location {
        s.push_str(&format!(
            "# {d}: {} runs logged, {} answered\n",
            log.runs, log.answered
        ));
    }
    if models.is_empty() && providers.is_empty() {
        s.push_str("Nothing remembered yet.\n");
        printer.stdout(&s);
        return;
    }
    s.push_str(&format!(
        "{:<60} {:>7} {:>9} {:>8} {:>10}  {}\n",
        "MODEL", "SUCCESS", "1ST TOKEN", "TOK/S", "COOL-DOWN", "LAST"
    ));
    for m in &models {
        let cool = m
            .cooldown_until_ms
            .map_or("-".to_string(), |t| format_wait(t, now));
        let last = match (m.last_outcome, m.last_error) {
            (Some(o), Some(e)) => format!("{}: {}", o.as_str(), cell(e, 60)),
            (Some(o), None) => o.as_str().to_string(),
            _ => "-".into(),
        };
        let share = m
            .success_share
            .map_or("-".into(), |r| format!("{:.0}%", r * 100.0));
        s.push_str(&format!(
            "{:<60} {:>7} {:>9} {:>8} {:>10}  {}\n",
            cell(&format!("{}/{}", m.provider, m.model), 120),
            share,
            m.first_token_ms
                .map_or("-".into(), |t| format!("{t:.0} ms")),
            m.tokens_per_sec.map_or("-".into(), |t| format!("{t:.0}")),
            cool,
            last
        ));
    }
    s.push_str(&format!(
        "\n{:<20} {:>12} {:>12}  {}\n",
        "PROVIDER", "THIS MINUTE", "TODAY", "SKIPPED"
    ));
    for p in &providers {
        let limit = |v: Option<u32>| v.map_or(String::new(), |n| format!("/{n}"));
        let skipped = match (p.skipped_until_ms, &p.skipped_because) {
            (Some(t), Some(why)) => format!("for {} ({})", format_wait(t, now), cell(why, 80)),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "{:<20} {:>12} {:>12}  {}\n",
            cell(p.provider, 60),
            format!("{}{}", p.requests_this_minute, limit(p.per_minute_limit)),
            format!("{}{}", p.requests_today, limit(p.per_day_limit)),
            skipped
        ));
    }
    printer.stdout(&s);
}

/// The `[defaults]` that `config show` prints, as resolved.
pub struct ShownDefaults<'a> {
    pub timeout: f64,
    pub attempts: u32,
    pub catalog_ttl: u64,
    pub translate_to: &'a str,
    pub prefer: &'a [String],
    pub exclude: &'a [String],
    pub keyless: Keyless,
    pub discover: bool,
    pub discover_ports: &'a [u16],
    pub memory: &'a crate::settings::Memory,
}

impl<'a> ShownDefaults<'a> {
    /// The config's defaults as they apply (the built-in ones where it sets none).
    pub fn of(config: &'a crate::config::Config, sources: &'a crate::settings::Sources) -> Self {
        use crate::settings as s;
        let d = &config.defaults;
        ShownDefaults {
            timeout: d.timeout.unwrap_or(s::DEFAULT_TIMEOUT_SECS),
            attempts: d.attempts.unwrap_or(s::DEFAULT_ATTEMPTS),
            catalog_ttl: d.catalog_ttl.unwrap_or(s::DEFAULT_CATALOG_TTL),
            translate_to: d.translate_to.as_deref().unwrap_or(s::DEFAULT_TRANSLATE_TO),
            prefer: &d.prefer,
            exclude: &d.exclude,
            keyless: sources.keyless,
            discover: sources.discover,
            discover_ports: &sources.discover_ports,
            memory: &sources.memory,
        }
    }
}

/// A run's jobs before they are asked: the `-v` plan trace, and a note when a translation
/// goes in pieces.
pub fn jobs(jobs: &[crate::session::Job], printer: &Printer) {
    trace_plan(&jobs[0].plan, printer);
    if jobs.len() > 1 {
        printer.note(&format!(
            "The text is too long for one model: translating it in {} pieces",
            jobs.len()
        ));
    }
}

/// `--dry-run`: the plan of the (first) job, with each candidate's worst-case first-token
/// timeout.
pub fn dry_run(job: &crate::session::Job, printer: &Printer) {
    let timeouts = crate::session::first_token_timeouts(&job.plan, &job.request);
    plan(&job.plan, &job.request, &timeouts, crate::now_ms(), printer);
}

/// `config show`: the merged configuration; keys are never shown, only whether set.
/// `local` holds the model lists of the servers found on loopback ports.
pub fn config(
    file: &str,
    d: &ShownDefaults,
    found: &Providers,
    local: &crate::catalog::Loaded,
    printer: &Printer,
) {
    let mut s = format!("# config file: {file}\n[defaults]\n");
    s.push_str(&format!("timeout = {}\n", d.timeout));
    s.push_str(&format!("attempts = {}\n", d.attempts));
    s.push_str(&format!("catalog_ttl = {}\n", d.catalog_ttl));
    s.push_str(&format!("translate_to = {:?}\n", d.translate_to));
    s.push_str(&format!(
        "prefer = {:?}\nexclude = {:?}\n",
        d.prefer, d.exclude
    ));
    let keyless = match d.keyless {
        Keyless::Auto => "\"auto\"  # only when no other provider has a model",
        Keyless::Always => "true",
        Keyless::Never => "false",
    };
    s.push_str(&format!("keyless = {keyless}\n"));
    s.push_str(&format!(
        "discover = {}\ndiscover_ports = {:?}\n",
        d.discover, d.discover_ports
    ));
    let m = d.memory;
    s.push_str("\n[state]\n");
    match &m.redis_url {
        Some(url) => s.push_str(&format!(
            "redis_url_env = {:?}  # set: {}\n",
            m.url_env,
            crate::store::redis::shown_url(url.expose())
        )),
        None => s.push_str(&format!(
            "redis_url_env = {:?}  # not set: this host's memory only\n",
            m.url_env
        )),
    }
    s.push_str(&format!(
        "namespace = {:?}\ntimeout_ms = {}\n",
        m.namespace,
        m.timeout.as_millis()
    ));
    let describe = |p: &Provider, status: &str, s: &mut String| {
        s.push_str(&format!("\n[providers.{}]  # {status}\n", p.name));
        s.push_str(&format!(
            "base_url = {:?}\n",
            crate::secret::public_url(&p.base_url)
        ));
        match (&p.key_env, &p.key) {
            (Some(var), Some(_)) => s.push_str(&format!("api_key_env = {var:?}  # set\n")),
            (Some(var), None) => s.push_str(&format!(
                "api_key_env = {var:?}  # not set; optional for this keyless service\n"
            )),
            (None, _) => s.push_str("# no key\n"),
        }
        if let Some(preset) = providers::preset(&p.name) {
            s.push_str(&format!("# free allowance: {}\n", preset.allowance));
        }
        if let Some(m) = &p.models {
            s.push_str(&format!("# {} models listed\n", m.len()));
        }
        if p.tier == Tier::Local {
            for m in local.models.iter().filter(|m| m.provider == p.name) {
                let caps: Vec<&str> = m.caps.iter().map(short_name).collect();
                s.push_str(&format!(
                    "# model {} (context {}; {})\n",
                    cell(&m.id, 200),
                    m.context.map_or("unknown".into(), |c| c.to_string()),
                    if caps.is_empty() {
                        "text".into()
                    } else {
                        caps.join(", ")
                    }
                ));
            }
            for (_, e) in local.failed.iter().filter(|(n, _)| *n == p.name) {
                s.push_str(&format!(
                    "# its model list could not be read: {}\n",
                    cell(&e.to_string(), 120)
                ));
            }
        }
    };
    for p in &found.list {
        let status = match p.tier {
            Tier::Cloud if p.configured => "on: added in the config",
            Tier::Cloud => "on: its key variable is set",
            Tier::Local => "on: found on a loopback port",
            Tier::Keyless => "on: keyless = true",
        };
        describe(p, status, &mut s);
    }
    for p in &found.keyless_waiting {
        describe(
            p,
            "standby: keyless, used only when no other provider has a model",
            &mut s,
        );
    }
    for d in &found.disabled {
        s.push_str(&format!("\n[providers.{}]  # OFF: {}\n", d.name, d.reason));
    }
    printer.stdout(&s);
}
