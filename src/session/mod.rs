//! The one ask path (DESIGN §7). A session is opened once (providers, catalogs, the
//! health snapshot, one limiter, one HTTP client); then every front end, a single run,
//! each batch item and each server request, builds a `Request` and calls the same three
//! steps: `plan` (pure: filter and rank), `ask` (the attempts, tokens into a sink) and
//! `record` (what was learned, into the store under its lock).

mod open;

pub use crate::attempt::{Stop, Success, TokenSink};
pub use open::{Providers, gather, local_models};

use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::attempt::{self, Ledger};
use crate::catalog::{self, Capability, Model};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::health::Health;
use crate::limiter::Limiter;
use crate::outcome::{AttemptOutcome, AttemptRecord};
use crate::output::Printer;
use crate::plan::{self, DropReason, Plan};
use crate::providers::Provider;
use crate::request::{self, Needs, Request, Route};
use crate::settings::Sources;
use crate::store::{FileStore, Store};
use crate::wire::client::{Client, ClientError, Trust};
use crate::wire::openai::Message;

/// One request with its plan: a run asks one job, or the pieces of a split translation.
#[derive(Debug, Clone)]
pub struct Job {
    pub request: Request,
    pub plan: Plan,
}

/// What `ask` came back with: the answers (or why not), and every attempt made, an
/// interrupted run's included.
pub struct RunOutcome {
    /// `None`: interrupted (Ctrl-C, a client that went away).
    pub result: Option<std::result::Result<Vec<Success>, Stop>>,
    pub attempts: Vec<AttemptRecord>,
}

/// When a job could be sent, as far as the providers' windows say.
pub enum Room {
    Now,
    /// Every provider it could use is full until then.
    At(Instant),
}

/// Everything the routing stages need, gathered once.
/// The runtime a session's I/O runs on: one thread (every front end is I/O-bound).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("Cannot start the async runtime").with_source(e))
}

pub struct Session {
    pub providers: Vec<Provider>,
    /// Every provider's models; replaced per provider by `refresh_catalogs`.
    models: RefCell<Vec<Model>>,
    /// The health the plan reads: the snapshot, refreshed by each `record`.
    health: RefCell<Health>,
    store: Box<dyn Store>,
    /// Conversations stay on this host whatever the store.
    host: FileStore,
    limiter: RefCell<Limiter>,
    client: OnceCell<Client>,
    trust: Trust,
    /// Providers whose catalog was not fetched before asking (`answer_first`).
    later: Vec<Provider>,
    rng: RefCell<fastrand::Rng>,
}

impl Session {
    /// Providers, catalogs and the remembered health; errors when there is nothing to ask.
    /// With `answer_first` (the needs of the one request a single run asks), a stale
    /// catalog is used as it is and `-m` may be asked before a cold catalog is learned;
    /// `learn_catalogs` then fetches them once the answer is out.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        config: &Config,
        config_path: Option<&Path>,
        sources: &Sources,
        route: &Route,
        answer_first: Option<&Needs>,
        timeout: Duration,
        rng: fastrand::Rng,
        rt: &tokio::runtime::Runtime,
        printer: &Printer,
    ) -> Result<Session> {
        let found = gather(config, sources, rt, printer);
        let (mut enabled, keyless_waiting) =
            open::select(found, route, config_path, sources.keyless)?;
        let trust = Trust::load(sources.ca_file.as_deref(), sources.preconnect)?;
        let client = OnceCell::new();
        let loaded = open::load_catalogs(
            &mut enabled,
            keyless_waiting,
            route,
            timeout,
            config_path,
            sources.keyless,
            &client,
            &trust,
            answer_first.map(|needs| catalog::Defer {
                route,
                text_only: needs.caps == Default::default()
                    && needs.context_tokens <= catalog::FITS_ANY_CONTEXT,
            }),
            rt,
            printer,
        )?;
        let dir = crate::store::file::state_dir();
        let host = FileStore::new(dir.clone());
        let (store, fault) = crate::store::open(&sources.memory, &enabled, dir);
        if let Some(note) = fault {
            printer.note(&note);
        }
        // Every number from the store is bounded where it enters (`Health::bounded`).
        let mut health = store.snapshot().bounded(crate::now_ms());
        if route.catalog == request::CatalogMode::Refresh {
            // DESIGN §5: a refetched catalog replaces what was learned about its models.
            let refetched: Vec<&str> = enabled
                .iter()
                .filter(|p| p.models.is_none() && !loaded.failed.iter().any(|(f, _)| f == &p.name))
                .map(|p| p.name.as_str())
                .collect();
            let mut forget = |h: &mut Health| {
                for p in &refetched {
                    h.forget_beliefs_of(p);
                }
            };
            match store.update(&mut forget, None) {
                Ok((_, written)) => health = written.bounded(crate::now_ms()),
                Err(_) => forget(&mut health),
            }
        }
        let limiter = Limiter::new(&enabled, &health, crate::now_ms());
        let later = enabled
            .iter()
            .filter(|p| loaded.later.contains(&p.name))
            .cloned()
            .collect();
        Ok(Session {
            later,
            providers: enabled,
            models: RefCell::new(loaded.models),
            health: RefCell::new(health),
            store,
            host,
            limiter: RefCell::new(limiter),
            client,
            trust,
            rng: RefCell::new(rng),
        })
    }

    fn http(&self) -> std::result::Result<&Client, ClientError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = Client::new(&self.trust)?;
        Ok(self.client.get_or_init(|| c))
    }

    /// Every provider's models, as last loaded.
    pub fn models(&self) -> std::cell::Ref<'_, Vec<Model>> {
        self.models.borrow()
    }

    /// Fetches the model lists again (the server does, every `catalog_ttl`): the models of
    /// each provider whose list arrived replace its old ones; one whose fetch failed keeps
    /// what it had. Returns notes for the log.
    pub async fn refresh_catalogs(&self, fetch_timeout: Duration) -> Vec<String> {
        let listed: Vec<Provider> = self
            .providers
            .iter()
            .filter(|p| p.models.is_none())
            .cloned()
            .collect();
        if listed.is_empty() {
            return Vec::new();
        }
        let client = match self.client() {
            Ok(c) => c.clone(),
            Err(e) => return vec![e.full_message()],
        };
        let make = || Ok(client.clone());
        let loaded = crate::catalog::load(
            &listed,
            request::CatalogMode::Refresh,
            0,
            &make,
            crate::now_ms(),
            fetch_timeout,
            None,
        )
        .await;
        let failed: Vec<&str> = loaded.failed.iter().map(|(p, _)| p.as_str()).collect();
        let fresh = |name: &str| listed.iter().any(|p| p.name == name) && !failed.contains(&name);
        let mut models = self.models.borrow_mut();
        models.retain(|m| !fresh(&m.provider));
        models.extend(loaded.models.into_iter().filter(|m| fresh(&m.provider)));
        loaded
            .failed
            .iter()
            .map(|(p, why)| format!("No model list from {p}: {why} (its models are kept)"))
            .collect()
    }

    fn client(&self) -> Result<&Client> {
        Ok(self.http()?)
    }

    /// Whether catalogs wait to be fetched after the answer (`answer_first`).
    pub fn catalogs_pending(&self) -> bool {
        !self.later.is_empty()
    }

    /// Fetches and caches the catalogs the run answered without, within `within` (a
    /// share of what is left of the run's deadline); notes for the user.
    pub fn learn_catalogs(&self, within: Duration, rt: &tokio::runtime::Runtime) -> Vec<String> {
        if self.later.is_empty() || within.is_zero() {
            return Vec::new();
        }
        let make_client = || self.http().cloned();
        let loaded = rt.block_on(catalog::load(
            &self.later,
            request::CatalogMode::Refresh,
            0,
            &make_client,
            crate::now_ms(),
            within.min(Duration::from_secs(15)),
            None,
        ));
        let mut notes = loaded.notes;
        for (p, why) in loaded.failed {
            notes.push(format!(
                "Could not learn the {p} model list after answering: {why}"
            ));
        }
        notes
    }

    /// The plan of one request: pure, on the session's health as of now.
    pub fn plan_of(&self, route: &Route, needs: &Needs) -> Plan {
        plan::plan(
            &self.models.borrow(),
            route,
            needs,
            &self.health.borrow(),
            crate::now_ms(),
            &mut self.rng.borrow_mut(),
        )
    }

    /// The jobs of a request: itself with its plan, or, for a translation too long for every
    /// model, its pieces split at paragraphs, each with its plan (DESIGN §4).
    pub fn plan(&self, req: &Request) -> Vec<Job> {
        let plan = self.plan_of(&req.route, &req.needs);
        self.split_translation(req, &plan).unwrap_or_else(|| {
            vec![Job {
                request: req.clone(),
                plan,
            }]
        })
    }

    fn split_translation(&self, req: &Request, plan: &Plan) -> Option<Vec<Job>> {
        let t = req.translation.as_ref()?;
        if !plan.candidates.is_empty() {
            return None;
        }
        let any_size = Needs {
            context_tokens: 0,
            ..req.needs
        };
        let health = self.health.borrow();
        let rng = &mut *self.rng.borrow_mut();
        let now = crate::now_ms();
        let models = self.models.borrow();
        let open = plan::plan(&models, &req.route, &any_size, &health, now, rng);
        let largest = open
            .candidates
            .iter()
            .filter_map(|c| c.model.context)
            .max()?;
        let system = request::estimate_tokens(&[Message::text("system", t.system.clone())]);
        // Half for the source, half for its translation, with room for framing.
        let budget = largest.saturating_sub(system + 64) / 2;
        if budget < 64 {
            return None;
        }
        let pieces = request::split_paragraphs(&t.text, budget);
        if pieces.len() < 2 {
            return None;
        }
        Some(
            pieces
                .iter()
                .map(|piece| {
                    let r = req.for_piece(piece);
                    let p = plan::plan(&models, &r.route, &r.needs, &health, now, rng);
                    Job {
                        request: r,
                        plan: p,
                    }
                })
                .collect(),
        )
    }

    /// The error for jobs of which one has no candidate, if any.
    pub fn unanswerable(jobs: &[Job]) -> Option<Error> {
        jobs.iter().find(|j| j.plan.candidates.is_empty()).map(|j| {
            unknown_model(&j.request.route.models, &j.plan)
                .unwrap_or_else(|| no_eligible(&j.plan, &j.request.needs))
        })
    }

    /// Whether the jobs' candidates have room in their providers' windows now, else when
    /// the first of them will (counting providers dropped only for their quota).
    pub fn room(&self, jobs: &[Job]) -> Room {
        if self.any_room(jobs) {
            return Room::Now;
        }
        let now_ms = crate::now_ms();
        let l = self.limiter.borrow();
        let cands = jobs.iter().flat_map(|j| &j.plan.candidates);
        let waiting = jobs
            .iter()
            .flat_map(|j| &j.plan.dropped)
            .filter(|d| d.reason.for_now())
            .map(|d| d.provider.as_str());
        let providers: Vec<&str> = cands
            .map(|c| c.model.provider.as_str())
            .chain(waiting)
            .collect();
        if providers.is_empty() {
            return Room::Now;
        }
        // `None` from a provider: only requests in flight fill it; look again shortly.
        let at = providers
            .iter()
            .filter_map(|p| l.room_at(p, now_ms))
            .filter(|&t| t > now_ms)
            .min();
        Room::At(Instant::now() + Duration::from_millis(at.map_or(100, |t| t - now_ms).max(20)))
    }

    /// Tries the jobs in order, sharing the deadline; attempts of a split run carry their
    /// piece index. `cancel` ends the run at once (its attempts in flight are `cancelled`).
    pub async fn ask(
        &self,
        jobs: &[Job],
        deadline: Instant,
        sink: &mut dyn TokenSink,
        cancel: impl Future<Output = ()>,
    ) -> RunOutcome {
        let ledger = Ledger::new(&self.limiter, &*self.store);
        let result = match self.client() {
            Err(e) => Some(Err(Stop::Error(e))),
            Ok(client) => {
                tokio::select! {
                    r = self.run_jobs(client, jobs, deadline, sink, &ledger) => Some(r),
                    () = cancel => None,
                }
            }
        };
        RunOutcome {
            result,
            attempts: ledger.into_attempts(),
        }
    }

    async fn run_jobs(
        &self,
        client: &Client,
        jobs: &[Job],
        deadline: Instant,
        sink: &mut dyn TokenSink,
        ledger: &Ledger<'_>,
    ) -> std::result::Result<Vec<Success>, Stop> {
        let mut out = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            if i > 0 && job.request.stream {
                sink.token("\n\n");
            }
            let before = ledger.log.borrow().len();
            let result = attempt::run(
                client,
                &self.providers,
                &job.plan,
                &job.request,
                deadline,
                sink,
                ledger,
            )
            .await;
            if jobs.len() > 1 {
                for a in ledger.log.borrow_mut()[before..].iter_mut() {
                    a.piece = Some(i);
                }
            }
            out.push(result?);
        }
        Ok(out)
    }

    /// Whether some candidate's provider has room now. A run that sent nothing while none
    /// had was starved by another run of the same process taking the last slot.
    pub fn any_room(&self, jobs: &[Job]) -> bool {
        let now = crate::now_ms();
        let l = self.limiter.borrow();
        jobs.iter()
            .flat_map(|j| &j.plan.candidates)
            .any(|c| l.has_room(&c.model.provider, now))
    }

    /// Folds a run's attempts into the store and the request log, and refreshes this
    /// session's health and limiter from what was written (other processes' runs included).
    /// Returns notes for the user; a store that cannot be written costs only the memory.
    pub fn record(&self, attempts: &[AttemptRecord], line: &LogLine) -> Vec<String> {
        if attempts.is_empty() {
            return Vec::new();
        }
        let now = crate::now_ms();
        let limits = |name: &str| {
            let p = self.providers.iter().find(|p| p.name == name);
            p.map(|p| (p.limits, p.day_offset_ms)).unwrap_or_default()
        };
        let text = serde_json::to_string(line).expect("log line serializes");
        let written = self.store.update(
            &mut |h| {
                *h = std::mem::take(h).bounded(now);
                h.record_attempts(attempts, now, &limits)
            },
            Some(&text),
        );
        let mut limiter = self.limiter.borrow_mut();
        for p in &self.providers {
            let n = attempts.iter().filter(|a| a.provider == p.name).count();
            limiter.recorded(&p.name, n as u32);
        }
        match written {
            Ok((notes, health)) => {
                let health = health.bounded(now);
                limiter.sync(&health, now);
                *self.health.borrow_mut() = health;
                notes
            }
            Err(e) => {
                // Without the store, keep counting in memory so limits still hold.
                let mut h = self.health.borrow_mut();
                for a in attempts {
                    h.providers
                        .entry(a.provider.clone())
                        .or_default()
                        .count_request(now);
                    h.model_mut(&a.provider, &a.model).count_request(now);
                }
                h.record_attempts(attempts, now, &limits);
                limiter.sync(&h, now);
                vec![format!("Running without memory: {e}")]
            }
        }
    }

    /// What the user should know about an answer: a paid model, a service that may log
    /// prompts, an answer cut by the token limit, a provider whose data policy blocks its
    /// free models, a provider that refused its key (and which variable to fix).
    pub fn answer_notes(&self, successes: &[Success], attempts: &[AttemptRecord]) -> Vec<String> {
        let provider = |name: &str| self.providers.iter().find(|p| p.name == name);
        let mut notes = Vec::new();
        for s in successes.iter().filter(|s| s.paid) {
            notes.push(format!(
                "{}/{} is a paid model (--allow-paid)",
                s.provider, s.model
            ));
        }
        for s in successes {
            if let Some(note) = provider(&s.provider).and_then(|p| p.data_note) {
                let name = &s.provider;
                notes.push(format!("Answered by {name} ({note}); it may log prompts"));
            }
        }
        for s in successes
            .iter()
            .filter(|s| s.finish_reason.as_deref() == Some("length"))
        {
            let at = s
                .usage
                .as_ref()
                .map(|u| u.completion_tokens)
                .filter(|&n| n > 0)
                .map(|n| format!(" at {} tokens", crate::output::explain::thousands(n)))
                .unwrap_or_default();
            notes.push(format!(
                "The answer was cut{at} by the token limit; raise --max-tokens for a longer one"
            ));
        }
        let mut policy: Vec<&str> = Vec::new();
        for a in attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::PolicyBlocked)
        {
            if !policy.contains(&a.provider.as_str()) {
                policy.push(&a.provider);
                notes.push(format!(
                    "{} refuses every free model under your account's data policy; it is skipped for an hour. Allow free models at https://openrouter.ai/settings/privacy",
                    a.provider
                ));
            }
        }
        let mut named: Vec<&str> = Vec::new();
        for a in attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::AuthFailed)
        {
            if named.contains(&a.provider.as_str()) {
                continue;
            }
            named.push(&a.provider);
            let var = provider(&a.provider).and_then(|p| p.key_env.clone());
            notes.push(format!(
                "{} refused its key{}; it is skipped for this run",
                a.provider,
                var.map(|v| format!(": check {v}")).unwrap_or_default()
            ));
        }
        notes
    }

    /// The health the plans read now (for a server's `/metrics` quota gauge).
    pub fn health(&self) -> std::cell::Ref<'_, Health> {
        self.health.borrow()
    }

    /// Keeps an answered conversation for `--continue` (this host's state dir).
    pub fn save_conversation(
        &self,
        req: &Request,
        content: &str,
        tool_calls: &[Value],
    ) -> std::result::Result<(), crate::store::StoreError> {
        // A model's answer may carry a key (a hostile server echoing the request): none is
        // kept in the file.
        let calls: Vec<Value> = tool_calls
            .iter()
            .map(|c| serde_json::from_str(&self.redact(&c.to_string())).unwrap_or(Value::Null))
            .collect();
        let mut messages = req.messages.clone();
        messages.push(Message::assistant(&self.redact(content), &calls));
        // Images are kept as their files, never as their bytes (five screenshots would
        // make a file that slows every later run); one from standard input is not kept.
        for m in &mut messages {
            m.map_image_urls(&mut |url| {
                if !url.starts_with("data:") {
                    return Ok(url.to_string());
                }
                let key = crate::request::url_key(url);
                match req.image_files.iter().find(|(k, _)| *k == key) {
                    Some((_, file)) => Ok(file.clone()),
                    None => Err("[an image that was not read from a file: not kept]".into()),
                }
            });
        }
        self.host.save_conversation(&messages)
    }

    /// `text` with every provider's key (and any piece of one) scrubbed out.
    fn redact(&self, text: &str) -> String {
        self.providers
            .iter()
            .filter_map(|p| p.key.as_ref())
            .fold(text.to_string(), |t, k| k.redact(&t))
    }
}

/// The worst-case first-token timeouts of a sequential run: each candidate's if every one
/// before it used all of its own (DESIGN §3; `attempt::first_token_by`), for `--dry-run`.
pub fn first_token_timeouts(plan: &Plan, req: &Request) -> Vec<Duration> {
    let start = Instant::now();
    let deadline = start + req.timeout;
    let n = plan.candidates.len().min(req.attempts);
    let mut now = start;
    let mut out = Vec::new();
    for (i, c) in plan.candidates.iter().take(n).enumerate() {
        let by = attempt::first_token_by(now, deadline, i + 1 < n, c.ttft_tail_ms);
        out.push(by.duration_since(now));
        now = by;
    }
    out
}

/// One line of the request log (DESIGN §5): no prompt text unless the config opts in.
#[derive(Debug, Serialize)]
pub struct LogLine<'a> {
    pub time_ms: u64,
    pub ok: bool,
    pub attempts: &'a [AttemptRecord],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub batch: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Option<String>>,
}

impl<'a> LogLine<'a> {
    pub fn of(req: &Request, attempts: &'a [AttemptRecord], batch: bool) -> LogLine<'a> {
        LogLine {
            time_ms: crate::now_ms(),
            ok: attempts.iter().any(|a| a.outcome == AttemptOutcome::Ok),
            attempts,
            timeout_ms: (!batch).then_some(req.timeout.as_millis() as u64),
            batch,
            // Only when the config opts in, and (as before the one ask path) not for a
            // batch item: the last user message's text.
            prompt: (req.log_prompts && !batch).then(|| {
                req.messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map(Message::plain_text)
            }),
        }
    }
}

/// A `-m` that names no model at any enabled provider: a usage slip, answered with the
/// closest ids (exit 3, as any filter that leaves nothing).
pub fn unknown_model(picks: &[String], plan: &Plan) -> Option<Error> {
    let known: Vec<(&str, &str)> = plan
        .candidates
        .iter()
        .map(|c| (c.model.provider.as_str(), c.model.id.as_str()))
        .chain(
            plan.dropped
                .iter()
                .map(|d| (d.provider.as_str(), d.model.as_str())),
        )
        .collect();
    let unknown = picks.iter().find(|e| {
        !known.iter().any(|(provider, id)| {
            e.as_str() == *id
                || e.strip_prefix(provider).and_then(|r| r.strip_prefix('/')) == Some(id)
        })
    })?;
    let ids: Vec<String> = known.iter().map(|(p, id)| format!("{p}/{id}")).collect();
    let closest = crate::output::explain::closest(unknown, &ids, 3);
    let hint = if closest.is_empty() {
        "See `freeroute models` for the ids".to_string()
    } else {
        format!(
            "The closest: {} (`freeroute models` lists them all)",
            closest.join(", ")
        )
    };
    Some(
        Error::new(
            ErrorKind::NoEligibleModel,
            format!("No enabled provider has a model `{unknown}` (-m)"),
        )
        .with_hint(hint),
    )
}

/// Why no job could be asked: no model has what the request needs and passes its filters
/// (exit 3), or the models that would do are out of quota or blocked for now (exit 4).
pub fn no_eligible(plan: &Plan, needs: &Needs) -> Error {
    let detail = crate::output::explain::no_eligible(plan, needs.context_tokens);
    let need: Vec<&str> = needs.caps.iter().map(Capability::describe).collect();
    let what = if need.is_empty() {
        String::new()
    } else {
        format!(" with {}", need.join(" and "))
    };
    if plan.dropped.iter().any(|d| d.reason.for_now()) {
        return Error::new(
            ErrorKind::AllFailed,
            format!("No model{what} can be asked now: {detail}"),
        )
        .with_hint("See `freeroute stats` for when each provider's quota resets");
    }
    // A model of the user's own (or a found local server) that nobody said has the
    // capability: the user can vouch for it in the config.
    let claim = plan.dropped.iter().find_map(|d| match d.reason {
        DropReason::Lacks(cap) if !crate::providers::is_builtin(&d.provider) => Some(
            crate::output::explain::claim_hint(&d.provider, &d.model, cap),
        ),
        _ => None,
    });
    Error::new(
        ErrorKind::NoEligibleModel,
        format!("No eligible model{what}: {detail}"),
    )
    .with_hint(claim.unwrap_or_else(|| {
        "See `freeroute --dry-run -v \"…\"` for each model's reason".to_string()
    }))
}
