//! Tries the plan's candidates (DESIGN §3 step 4): in order, each bounded by its share of
//! the deadline; with `--race N`, N at once; with a hedge, the next one beside a slow one.
//! The first to produce a token wins and the others are dropped (`cancelled`). Every
//! failure is classified and recorded as data. Tokens go into the `TokenSink` it is
//! handed; it prints nothing itself.

pub mod classify;
mod stream;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::Value;
use tokio::time::timeout;

use crate::error::{Error, ErrorKind};
use crate::limiter::Limiter;
use crate::outcome::{AttemptOutcome, AttemptRecord};
use crate::output::explain;
use crate::plan::{Candidate, Plan};
use crate::providers::Provider;
use crate::request::{Hedge, Request};
use crate::store::{Reservation, Reserved, Store};
use crate::wire::client::Client;
use crate::wire::openai::Usage;
use classify::Failure;
use stream::{AttemptError, Live};

/// Longest wait between two chunks of a stream that has started, whatever time is left.
pub const IDLE_CAP: Duration = Duration::from_secs(30);
/// Longest an attempt waits for the connection being opened ahead to its host.
const PRECONNECT_WAIT: Duration = Duration::from_millis(500);
/// Most candidates started beside the race because the running ones outlived their
/// patience (`Candidate::patience`).
pub const MAX_OVERTAKING: usize = 2;
/// Less time than this left is not worth starting another attempt.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(200);
/// Most bytes of an error body that are read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// A model whose first token is expected within T ms (mean plus two deviations, as
/// measured) gets at most `FIRST_TOKEN_MULT`·T (and at least `FIRST_TOKEN_FLOOR`) before
/// the next candidate is tried: a fast model that hangs is given up on early, leaving the
/// deadline to the others.
pub const FIRST_TOKEN_MULT: f64 = 3.0;
pub const FIRST_TOKEN_FLOOR: Duration = Duration::from_secs(2);
/// `hedge = "auto"`: the model's expected first-token time, tail included (about the
/// slowest one in twenty), within these bounds, or `HEDGE_UNMEASURED` for a model never
/// measured.
pub const HEDGE_MIN: Duration = Duration::from_millis(300);
pub const HEDGE_MAX: Duration = Duration::from_secs(8);
pub const HEDGE_UNMEASURED: Duration = Duration::from_secs(3);

/// Where an attempt's visible progress goes: the spinner and, when streaming, the tokens.
pub trait TokenSink {
    /// An attempt at this model starts.
    fn attempt_started(&mut self, provider: &str, model: &str);
    /// Text to print now. Returns false when the reader went away (broken pipe).
    fn token(&mut self, text: &str) -> bool;
    /// A line of the routing trace (`-v`).
    fn trace(&mut self, msg: String);
    /// Something the user should know while waiting (a note on stderr); a trace line
    /// unless the sink shows notes.
    fn note(&mut self, msg: String) {
        self.trace(msg);
    }
    /// The attempt whose tokens follow won (produced the first token): a server names it
    /// in every chunk it forwards (DESIGN §8).
    fn answering(&mut self, _provider: &str, _model: &str) {}
}

/// A finished answer from one attempt.
#[derive(Debug, Clone)]
pub struct Success {
    pub content: String,
    pub model: String,
    pub provider: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub first_token_ms: Option<u64>,
    pub paid: bool,
    /// Assembled tool calls: `{"id", "name", "arguments"}`.
    pub tool_calls: Vec<Value>,
    /// The provider's rate-limit headers showed its window spent, until then.
    pub quota_until_ms: Option<u64>,
}

/// How the run ended without an answer being printed by us.
pub enum Stop {
    /// The reader of our output went away while streaming: not an error.
    OutputClosed,
    Error(Error),
}

/// The first-token deadline of an attempt launched `now` (DESIGN §3, planned from the
/// model's expected first-token time, tail included).
pub fn first_token_by(
    now: Instant,
    deadline: Instant,
    has_next: bool,
    ttft_tail_ms: Option<f64>,
) -> Instant {
    let by = share(now, deadline, has_next);
    match ttft_tail_ms {
        Some(ms) if has_next => {
            let cap = crate::from_ms_f64(ms * FIRST_TOKEN_MULT).max(FIRST_TOKEN_FLOOR);
            by.min(crate::later(now, cap))
        }
        _ => by,
    }
}

/// How long to wait for a first token before hedging with the next candidate.
pub fn hedge_delay(hedge: Hedge, ttft_tail_ms: Option<f64>) -> Duration {
    match hedge {
        Hedge::After(d) => d,
        Hedge::Auto => ttft_tail_ms
            .map(|ms| crate::from_ms_f64(ms).clamp(HEDGE_MIN, HEDGE_MAX))
            .unwrap_or(HEDGE_UNMEASURED),
    }
}

/// An attempt in flight, until its first token.
struct Flight {
    i: usize,
    at: Instant,
    patience: Duration,
    /// Its patience (or the hedge delay) ran out and the next candidate was started
    /// beside it.
    beside: bool,
}

impl Flight {
    fn patient_until(&self) -> Instant {
        crate::later(self.at, self.patience)
    }
}

type Opening<'a> = Pin<Box<dyn Future<Output = (usize, Result<Live, AttemptError>)> + 'a>>;

/// What the run has learned so far about which candidates are still worth a request.
struct Progress<'a> {
    cands: &'a [Candidate],
    attempts: usize,
    launched: usize,
    next: usize,
    /// Providers out for the rest of the run: what stopped them and, for a quota a 429
    /// said is spent, when it resets (`u64::MAX` for the rest).
    blocked: HashMap<String, (AttemptOutcome, u64)>,
    too_small: Option<u64>,
    /// Requests each provider may still take in its windows (DESIGN §5 quotas).
    limiter: &'a RefCell<Limiter>,
    /// Where each request is reserved before it is sent (DESIGN §9).
    store: &'a dyn Store,
    /// A reservation was refused: another process filled a provider's window.
    refused: bool,
    /// The request's estimated size (learned as a model's limit when it is too long).
    context_tokens: u64,
    /// Candidates that answered 429 with a time to come back (`Retry-After`, a quota's
    /// reset), or whose provider had no room, with that time: once every candidate is
    /// spent, the run waits for the soonest and tries it again, if the deadline and
    /// attempts allow.
    comeback: Vec<Comeback>,
    /// A candidate to try again before any other (the one waited for).
    again: Option<usize>,
}

impl Progress<'_> {
    fn usable(&self, i: usize) -> bool {
        !self.blocked.contains_key(&self.cands[i].model.provider) && self.fits(i, crate::now_ms())
    }

    /// Whether candidate `i` could be tried at `at_ms`: as `usable`, but a provider whose
    /// quota a 429 of this run said is spent is open again once that quota has reset.
    fn usable_at(&self, i: usize, at_ms: u64) -> bool {
        self.blocked
            .get(&self.cands[i].model.provider)
            .is_none_or(|&(o, until)| o == AttemptOutcome::QuotaExhausted && until <= at_ms)
            && self.fits(i, at_ms)
    }

    /// The request fits the model's context and its provider has room at `at_ms`.
    fn fits(&self, i: usize, at_ms: u64) -> bool {
        let c = &self.cands[i].model;
        !matches!((self.too_small, c.context), (Some(s), Some(x)) if x <= s)
            && self.limiter.borrow().has_room(&c.provider, at_ms)
    }

    /// Launches candidate `i` if it is usable and its provider's windows take the request:
    /// this process's (the limiter) and those of every process sharing the store.
    fn claim(&mut self, i: usize, provider: &Provider) -> bool {
        let c = &self.cands[i].model;
        let now_ms = crate::now_ms();
        if !self.usable(i) {
            // No room in this process's view of the windows: as good as a refusal.
            let l = self.limiter.borrow();
            if !self.blocked.contains_key(&c.provider) && !l.has_room(&c.provider, now_ms) {
                self.refused = true;
                if let Some(at_ms) = l.room_at(&c.provider, now_ms) {
                    self.comeback.push(Comeback {
                        i,
                        at_ms,
                        full: true,
                    });
                }
            }
            return false;
        }
        let reservation = Reservation {
            provider: &c.provider,
            model: &c.id,
            limits: provider.limits,
            day_offset_ms: provider.day_offset_ms,
            now_ms,
        };
        if let Reserved::Full { until_ms } = self.store.reserve(&reservation) {
            self.limiter.borrow_mut().refused(&c.provider, until_ms);
            self.refused = true;
            self.comeback.push(Comeback {
                i,
                at_ms: until_ms,
                full: true,
            });
            return false;
        }
        let taken = self.limiter.borrow_mut().try_take(&c.provider, now_ms);
        if taken {
            self.launched += 1;
        }
        taken
    }

    /// The next candidate worth a request, if the attempt limit allows one. Quota is taken
    /// only for a candidate whose provider is known, so every slot taken is a request sent.
    fn take<'p>(&mut self, provider_of: &dyn Fn(usize) -> Option<&'p Provider>) -> Option<usize> {
        if self.launched >= self.attempts {
            return None;
        }
        // The one waited for was launched before, so its provider is known.
        if let Some(i) = self.again.take()
            && let Some(p) = provider_of(i)
            && self.claim(i, p)
        {
            return Some(i);
        }
        while self.next < self.cands.len() {
            let i = self.next;
            self.next += 1;
            if let Some(p) = provider_of(i)
                && self.claim(i, p)
            {
                return Some(i);
            }
        }
        None
    }

    /// Whether another candidate could still follow (for the deadline share).
    fn more(&self) -> bool {
        self.launched < self.attempts && (self.next..self.cands.len()).any(|j| self.usable(j))
    }

    /// When every candidate is spent and nothing runs: the one to wait for, and how long,
    /// if it comes back with `FIRST_TOKEN_FLOOR` to spare before the deadline and an
    /// attempt is left (DESIGN §3: a run sleeps only when no other candidate is available).
    fn wait_for_comeback(
        &mut self,
        now: Instant,
        deadline: Instant,
    ) -> Option<(Comeback, Duration)> {
        if self.launched >= self.attempts {
            return None;
        }
        let now_ms = crate::now_ms();
        let (pos, &back) = self
            .comeback
            .iter()
            .enumerate()
            .filter(|(_, c)| self.usable_at(c.i, c.at_ms))
            .min_by_key(|(_, c)| c.at_ms)?;
        let (i, at) = (back.i, back.at_ms);
        let wait = crate::wall_time(at.saturating_sub(now_ms));
        if crate::later(now, wait.saturating_add(FIRST_TOKEN_FLOOR)) > deadline {
            return None;
        }
        self.comeback.remove(pos);
        // A provider blocked for its quota in this run is open again at its reset.
        let provider = &self.cands[i].model.provider;
        if self
            .blocked
            .get(provider)
            .is_some_and(|(o, _)| *o == AttemptOutcome::QuotaExhausted)
        {
            self.blocked.remove(provider);
        }
        self.again = Some(i);
        Some((back, wait))
    }

    fn learn(&mut self, cand: &Candidate, failure: &Failure) {
        let outcome = failure.outcome;
        if failure.provider_wide {
            let until = match outcome {
                AttemptOutcome::QuotaExhausted => failure.retry_at_ms.unwrap_or(u64::MAX),
                _ => u64::MAX,
            };
            let block = self
                .blocked
                .entry(cand.model.provider.clone())
                .or_insert((outcome, 0));
            *block = (outcome, block.1.max(until));
        }
        if outcome == AttemptOutcome::ContextTooLong
            && let Some(c) = cand.model.context
        {
            self.too_small = Some(self.too_small.map_or(c, |s| s.max(c)));
        }
    }
}

/// A candidate worth trying again at `at_ms`: after a 429 that said when, or (`full`)
/// when its provider's window has room again.
#[derive(Debug, Clone, Copy)]
struct Comeback {
    i: usize,
    at_ms: u64,
    full: bool,
}

/// What a run writes down as it goes: its attempts (kept by the caller, so an interrupted
/// run still knows what was tried) and the quota each request takes from the limiter.
pub struct Ledger<'a> {
    pub log: RefCell<Vec<AttemptRecord>>,
    pub limiter: &'a RefCell<Limiter>,
    /// Where each request is reserved before it is sent.
    pub store: &'a dyn Store,
    /// Requests sent and not finished: (provider, model, sent at). An interrupted run
    /// records them as `cancelled`, so the quota they spent is still counted.
    pub inflight: RefCell<Vec<(String, String, Instant)>>,
}

impl<'a> Ledger<'a> {
    pub fn new(limiter: &'a RefCell<Limiter>, store: &'a dyn Store) -> Self {
        Ledger {
            log: RefCell::new(Vec::new()),
            limiter,
            store,
            inflight: RefCell::new(Vec::new()),
        }
    }

    /// Every attempt, with the ones cut short by an interruption as `cancelled`.
    pub fn into_attempts(self) -> Vec<AttemptRecord> {
        let mut log = self.log.into_inner();
        for (provider, model, at) in self.inflight.into_inner() {
            log.push(AttemptRecord::cancelled(&provider, &model, at.elapsed()));
        }
        log
    }

    fn done(&self, provider: &str, model: &str) {
        let mut f = self.inflight.borrow_mut();
        if let Some(pos) = f.iter().position(|(p, m, _)| p == provider && m == model) {
            f.remove(pos);
        }
    }
}

/// Tries candidates until one answers.
pub async fn run(
    client: &Client,
    providers: &[Provider],
    plan: &Plan,
    req: &Request,
    deadline: Instant,
    sink: &mut dyn TokenSink,
    ledger: &Ledger<'_>,
) -> Result<Success, Stop> {
    let log = &ledger.log;
    let limiter = ledger.limiter;
    let mut st = Progress {
        cands: &plan.candidates,
        attempts: req.attempts,
        launched: 0,
        next: 0,
        blocked: HashMap::new(),
        too_small: None,
        limiter,
        store: ledger.store,
        refused: false,
        context_tokens: req.needs.context_tokens,
        comeback: Vec::new(),
        again: None,
    };
    let provider_of = |i: usize| {
        providers
            .iter()
            .find(|p| p.name == plan.candidates[i].model.provider)
    };
    let mut opening: FuturesUnordered<Opening> = FuturesUnordered::new();
    // Candidates being opened, with when they were launched.
    let mut running: Vec<Flight> = Vec::new();
    let race = req.race.max(1);
    let mut last_launch = Instant::now();
    let mut out_of_time = false;
    // Origins this run has a connection to, or is opening one to.
    let mut connected: Vec<String> = Vec::new();
    // Connections being opened ahead, by origin: true once open.
    let mut warming: Vec<(String, tokio::sync::watch::Receiver<bool>)> = Vec::new();
    loop {
        // Take every candidate this round launches first, so that the deadline share of
        // each counts only candidates that would follow them, not those beside them.
        // As many at once as the race, and one more beside each attempt that outlived its
        // patience or its hedge delay (`MAX_OVERTAKING` at most): when one of them fails,
        // the other goes on alone.
        let mut width = race
            + running
                .iter()
                .filter(|f| f.beside)
                .count()
                .min(MAX_OVERTAKING);
        let mut launching = Vec::new();
        while opening.len() + launching.len() < width {
            if deadline.saturating_duration_since(Instant::now()) < MIN_ATTEMPT {
                out_of_time = true;
                break;
            }
            let Some(i) = st.take(&provider_of) else {
                break;
            };
            launching.push(i);
            if plan.candidates[i].explored && width < race + MAX_OVERTAKING {
                width += 1;
            }
        }
        let has_next = st.more();
        // Numbered in launch order: `take` counted them all already.
        let first_number = st.launched + 1 - launching.len();
        for (number, i) in (first_number..).zip(launching) {
            let provider = provider_of(i).expect("take() checks the provider");
            let cand = &plan.candidates[i];
            let now = Instant::now();
            let first_by = first_token_by(now, deadline, has_next, cand.ttft_tail_ms);
            sink.trace(format!(
                "attempt {}: {}/{} (first token within {:.1}s, the next beside it after {:.2}s{})",
                number,
                provider.name,
                cand.model.id,
                first_by.duration_since(now).as_secs_f64(),
                cand.patience.as_secs_f64(),
                match (cand.explored, opening.is_empty()) {
                    (true, _) => ", explored: the next beside it at once",
                    (false, true) => "",
                    (false, false) => ", beside another",
                }
            ));
            sink.attempt_started(&provider.name, &cand.model.id);
            ledger
                .inflight
                .borrow_mut()
                .push((provider.name.clone(), cand.model.id.clone(), now));
            let fut = stream::open(
                client,
                provider,
                &cand.model.id,
                req,
                first_by,
                deadline,
                has_next,
            );
            // A connection being opened ahead to this host is waited for (a little): a
            // new one would cost its handshakes again, from the start.
            let origin = crate::wire::client::origin(&provider.base_url);
            let mut warm = warming
                .iter()
                .find(|(o, _)| Some(o) == origin.as_ref())
                .map(|(_, rx)| rx.clone());
            opening.push(Box::pin(async move {
                if let Some(rx) = &mut warm {
                    let _ = timeout(PRECONNECT_WAIT, rx.wait_for(|open| *open)).await;
                }
                (i, fut.await)
            }));
            running.push(Flight {
                i,
                at: now,
                patience: cand.patience,
                beside: cand.explored,
            });
            last_launch = now;
            connected.extend(origin);
        }
        // The next candidate at another host would wait for its TCP and TLS handshakes
        // after a failure here: open its connection now, beside the attempts running.
        if client.preconnect
            && let Some(j) = (st.next..plan.candidates.len()).find(|&j| st.usable(j))
            && let Some(p) = provider_of(j)
            && let Some(o) = crate::wire::client::origin(&p.base_url)
            && !connected.contains(&o)
        {
            sink.trace(format!(
                "pre-connecting to {o} for {}/{}",
                p.name, plan.candidates[j].model.id
            ));
            let (tx, rx) = tokio::sync::watch::channel(false);
            warming.push((o.clone(), rx));
            connected.push(o);
            let (client, p) = (client.clone(), p.clone());
            tokio::spawn(async move {
                client.preconnect(p).await;
                let _ = tx.send(true);
            });
        }
        if opening.is_empty() {
            let Some((back, wait)) = st.wait_for_comeback(Instant::now(), deadline) else {
                break;
            };
            let c = &plan.candidates[back.i].model;
            sink.note(if back.full {
                format!(
                    "no provider has room for a request now; waiting {:.1}s for room at {}",
                    wait.as_secs_f64(),
                    c.provider
                )
            } else {
                format!(
                    "every model has failed for now; waiting {:.1}s for {}/{} to come back",
                    wait.as_secs_f64(),
                    c.provider,
                    c.id
                )
            });
            tokio::time::sleep(wait).await;
            continue;
        }
        // Armed only while a launch is still possible: the hedge (one at a time beside the
        // race) when nothing produced a token within its delay, and the patience of each
        // attempt (`Candidate::patience`, at most `MAX_OVERTAKING` beside the race): either
        // starts the next candidate beside the ones running.
        let can_launch =
            st.more() && deadline.saturating_duration_since(Instant::now()) >= MIN_ATTEMPT;
        let hedge_at = req.hedge.filter(|_| can_launch && width == race).map(|h| {
            let newest = running
                .last()
                .and_then(|f| plan.candidates[f.i].ttft_tail_ms);
            last_launch + hedge_delay(h, newest)
        });
        let overtake_at = running
            .iter()
            .filter(|f| !f.beside)
            .map(Flight::patient_until)
            .min()
            .filter(|_| can_launch && width < race + MAX_OVERTAKING);
        let wake = hedge_at.into_iter().chain(overtake_at).min();
        let next = tokio::select! {
            r = opening.next() => r,
            _ = crate::clock::sleep_until(wake) => {
                let now = Instant::now();
                let mut overtaken = false;
                for f in running.iter_mut().filter(|f| !f.beside && f.patient_until() <= now) {
                    f.beside = true;
                    overtaken = true;
                    let c = &plan.candidates[f.i].model;
                    sink.trace(format!(
                        "no first token from {}/{} within its patience ({} ms); starting the next candidate beside it",
                        c.provider,
                        c.id,
                        f.patience.as_millis()
                    ));
                }
                if !overtaken {
                    sink.trace(format!("hedge: no first token after {} ms; starting the next candidate", now.duration_since(last_launch).as_millis()));
                    if let Some(f) = running.last_mut() {
                        f.beside = true;
                    }
                }
                continue;
            }
        };
        let Some((i, result)) = next else { break };
        let launched_at = running
            .iter()
            .find(|f| f.i == i)
            .map_or_else(Instant::now, |f| f.at);
        running.retain(|f| f.i != i);
        let cand = &plan.candidates[i];
        let provider = provider_of(i).expect("launched candidates have a provider");
        match result {
            Ok(live) => {
                // The winner: drop the others at once (their connections close) and say so.
                for f in running.drain(..) {
                    let c = &plan.candidates[f.i];
                    sink.trace(format!(
                        "  cancelled {}/{}: another candidate answered first",
                        c.model.provider, c.model.id
                    ));
                    ledger.done(&c.model.provider, &c.model.id);
                    let mut record =
                        AttemptRecord::cancelled(&c.model.provider, &c.model.id, f.at.elapsed());
                    record.overtaken = c.explored || f.at.elapsed() >= f.patience;
                    log.borrow_mut().push(record);
                }
                opening = FuturesUnordered::new();
                let has_next = st.more();
                let first_token_ms = live.first_token_ms();
                sink.answering(&provider.name, &cand.model.id);
                let streaming = req.stream.then_some(&mut *sink as &mut dyn TokenSink);
                let finished = stream::finish(
                    live,
                    provider,
                    &cand.model.id,
                    req,
                    deadline,
                    has_next,
                    streaming,
                )
                .await;
                ledger.done(&provider.name, &cand.model.id);
                match finished {
                    Ok((mut success, tps)) => {
                        success.paid = !cand.model.free;
                        let elapsed = launched_at.elapsed();
                        log.borrow_mut().push(AttemptRecord {
                            status: Some(200),
                            first_token_ms,
                            tokens_per_sec: tps,
                            retry_at_ms: success.quota_until_ms,
                            provider_wide: success.quota_until_ms.is_some(),
                            context_tokens: Some(st.context_tokens),
                            catalog_entry: Some(cand.model.entry()),
                            local: crate::providers::is_loopback_url(&provider.base_url),
                            ..AttemptRecord::new(
                                &provider.name,
                                &cand.model.id,
                                AttemptOutcome::Ok,
                                elapsed.as_millis() as u64,
                            )
                        });
                        sink.trace(format!(
                            "answered by {}/{} in {} ms",
                            provider.name,
                            cand.model.id,
                            elapsed.as_millis()
                        ));
                        return Ok(success);
                    }
                    Err(AttemptError::OutputClosed) => {
                        // The reader left; the request was still sent and answered.
                        let mut record = AttemptRecord::cancelled(
                            &provider.name,
                            &cand.model.id,
                            launched_at.elapsed(),
                        );
                        record.outcome = AttemptOutcome::Ok;
                        record.status = Some(200);
                        record.first_token_ms = first_token_ms;
                        log.borrow_mut().push(record);
                        return Err(Stop::OutputClosed);
                    }
                    Err(e) => {
                        if let Some(stop) = failure(e, i, provider, launched_at, &mut st, sink, log)
                        {
                            return Err(stop);
                        }
                    }
                }
            }
            Err(AttemptError::OutputClosed) => return Err(Stop::OutputClosed),
            Err(e) => {
                ledger.done(&provider.name, &cand.model.id);
                if let Some(stop) = failure(e, i, provider, launched_at, &mut st, sink, log) {
                    return Err(stop);
                }
            }
        }
    }
    if st.launched >= st.attempts && st.more() {
        sink.trace(format!("stopping: --attempts {} reached", req.attempts));
    }
    let out_of_time = out_of_time || Instant::now() + MIN_ATTEMPT >= deadline;
    Err(Stop::Error(give_up(
        providers,
        log.borrow().clone(),
        out_of_time,
        st.launched,
        st.refused,
    )))
}

/// Records a failed attempt and learns from it; a failure after text was shown ends the run.
fn failure(
    e: AttemptError,
    i: usize,
    provider: &Provider,
    launched_at: Instant,
    st: &mut Progress,
    sink: &mut dyn TokenSink,
    log: &RefCell<Vec<AttemptRecord>>,
) -> Option<Stop> {
    let cands = st.cands;
    let cand = &cands[i];
    let AttemptError::Failed {
        failure,
        status,
        shown,
        first_token_ms,
    } = e
    else {
        return Some(Stop::OutputClosed);
    };
    // Redacted whole, then shortened: a cut never leaves a piece of a key behind.
    let message = crate::secret::shorten(&redact(provider, &failure.message), MESSAGE_MAX);
    let outcome = if shown {
        AttemptOutcome::StreamInterrupted
    } else {
        failure.outcome
    };
    sink.trace(format!(
        "  {} {}{}: {message}",
        outcome.as_str(),
        status.map(|s| format!("HTTP {s} ")).unwrap_or_default(),
        if failure.provider_wide {
            "(whole provider)"
        } else {
            ""
        }
    ));
    log.borrow_mut().push(AttemptRecord {
        provider: provider.name.clone(),
        model: cand.model.id.clone(),
        outcome,
        status,
        error: Some(message.clone()),
        elapsed_ms: launched_at.elapsed().as_millis() as u64,
        first_token_ms,
        tokens_per_sec: None,
        retry_at_ms: failure.retry_at_ms,
        provider_wide: failure.provider_wide,
        day_limit: failure.day_limit,
        own_rate_limit: failure.own_rate_limit,
        missing: failure.missing,
        piece: None,
        context_tokens: (failure.outcome == AttemptOutcome::ContextTooLong)
            .then_some(st.context_tokens),
        counted: failure.counted,
        catalog_entry: Some(cand.model.entry()),
        local: crate::providers::is_loopback_url(&provider.base_url),
        overtaken: false,
    });
    if shown {
        let err = Error::new(
            ErrorKind::AllFailed,
            format!(
                "The answer from {}/{} broke off after output began: {message}",
                provider.name, cand.model.id
            ),
        );
        return Some(Stop::Error(err.with_attempts(log.borrow().clone())));
    }
    st.learn(cand, &failure);
    // A 429 that says when to come back: worth a wait once nothing else is left.
    if let (AttemptOutcome::RateLimited | AttemptOutcome::QuotaExhausted, Some(at)) =
        (failure.outcome, failure.hint_ms)
    {
        st.comeback.push(Comeback {
            i,
            at_ms: at,
            full: false,
        });
    }
    None
}

/// The run-level error once no candidate answered.
fn give_up(
    providers: &[Provider],
    attempts: Vec<AttemptRecord>,
    out_of_time: bool,
    tried: usize,
    refused: bool,
) -> Error {
    if tried == 0 && !out_of_time {
        let message = match refused {
            true => "No candidate could be tried: every provider's request window is full",
            false => "No candidate could be tried",
        };
        let err = Error::new(ErrorKind::AllFailed, message).with_attempts(attempts);
        return match refused {
            true => err.with_hint("See `freeroute stats` for when each provider has room"),
            false => err,
        };
    }
    if !attempts.is_empty()
        && attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::AuthFailed)
    {
        let vars: Vec<String> = attempts
            .iter()
            .filter_map(|a| providers.iter().find(|p| p.name == a.provider))
            .map(|p| {
                p.key_env
                    .clone()
                    .unwrap_or_else(|| format!("the key of {}", p.name))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        return Error::config("Every provider tried refused its key")
            .with_hint(format!("Check {}", vars.join(", ")))
            .with_attempts(attempts);
    }
    let summary = summarize(&attempts);
    if out_of_time {
        return Error::new(
            ErrorKind::Deadline,
            format!("The deadline passed before any model answered ({summary})"),
        )
        .with_hint("Raise --timeout, or see `freeroute -v` for where the time went")
        .with_attempts(attempts);
    }
    let message = if explain::nothing_reached(&attempts) {
        format!("Nothing could be reached: every attempt failed to connect ({summary})")
    } else {
        format!("Every attempt failed ({summary})")
    };
    let mut err = Error::new(ErrorKind::AllFailed, message).with_attempts(attempts);
    if let Some(p) = err
        .attempts
        .iter()
        .find(|a| a.outcome == AttemptOutcome::PolicyBlocked)
    {
        let hint = format!(
            "{} blocks free models by data policy: allow them at https://openrouter.ai/settings/privacy",
            p.provider
        );
        err = err.with_hint(hint);
    } else if let Some(p) = err
        .attempts
        .iter()
        .find(|a| a.outcome == AttemptOutcome::PaymentRequired)
    {
        let hint = format!(
            "{} reports a negative balance: free models are refused until it is settled",
            p.provider
        );
        err = err.with_hint(hint);
    } else if let Some(hint) = explain::likely_fix(&err.attempts) {
        err = err.with_hint(hint);
    }
    err
}

/// "2 rate_limited, 1 timeout"
fn summarize(attempts: &[AttemptRecord]) -> String {
    if attempts.is_empty() {
        return "no attempt made".into();
    }
    let mut counts: Vec<(AttemptOutcome, usize)> = Vec::new();
    for a in attempts {
        match counts.iter_mut().find(|(o, _)| *o == a.outcome) {
            Some((_, n)) => *n += 1,
            None => counts.push((a.outcome, 1)),
        }
    }
    counts
        .iter()
        .map(|(o, n)| format!("{n} {}", o.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The longest server message kept in an attempt's record (bytes).
const MESSAGE_MAX: usize = 400;

fn redact(provider: &Provider, text: &str) -> String {
    match &provider.key {
        Some(k) => k.redact(text),
        None => text.to_string(),
    }
}

/// While another candidate remains, an attempt may wait at most half of the time left
/// (DESIGN §3); the last candidate may use all of it.
fn share(now: Instant, deadline: Instant, has_next: bool) -> Instant {
    let left = deadline.saturating_duration_since(now);
    if has_next { now + left / 2 } else { deadline }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_token_limit_follows_the_measured_tail() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(100);
        let after = |by: Instant| by.duration_since(now);
        // Unmeasured: half of what is left while another candidate remains, else all of it.
        assert_eq!(
            after(first_token_by(now, deadline, true, None)),
            Duration::from_secs(50)
        );
        assert_eq!(
            after(first_token_by(now, deadline, false, Some(10.0))),
            Duration::from_secs(100)
        );
        // Measured: three times the expected first token, tail included, at least the floor.
        assert_eq!(
            after(first_token_by(now, deadline, true, Some(40.0))),
            FIRST_TOKEN_FLOOR
        );
        assert_eq!(
            after(first_token_by(now, deadline, true, Some(4_000.0))),
            Duration::from_secs(12)
        );
        // Never more than the share.
        assert_eq!(
            after(first_token_by(now, deadline, true, Some(60_000.0))),
            Duration::from_secs(50)
        );
    }

    #[test]
    fn auto_hedge_waits_for_the_measured_tail() {
        assert_eq!(hedge_delay(Hedge::Auto, None), HEDGE_UNMEASURED);
        assert_eq!(hedge_delay(Hedge::Auto, Some(50.0)), HEDGE_MIN);
        assert_eq!(
            hedge_delay(Hedge::Auto, Some(1_500.0)),
            Duration::from_millis(1_500)
        );
        assert_eq!(hedge_delay(Hedge::Auto, Some(60_000.0)), HEDGE_MAX);
        let fixed = Duration::from_millis(250);
        assert_eq!(hedge_delay(Hedge::After(fixed), Some(9_000.0)), fixed);
    }
}
