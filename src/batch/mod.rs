//! `freeroute batch` (DESIGN §6): many prompts, JSONL in and out. Each item is a `Request`
//! asked through the same `Session` as a single run (its plan, ask and record); the session's
//! one limiter keeps the items within every provider's limits, an item waits for the
//! earliest reset when every provider it could use is full, and each finished item is
//! recorded at once. Input is read line by line; output lines are written as items finish
//! (or in input order with `--ordered`), so a crash keeps what finished and `-o OUT`
//! resumes. The scheduling is here; the JSONL reading and writing in `jsonl.rs`.

mod jsonl;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use indicatif::ProgressBar;
use serde_json::Value;

use crate::cli::BatchArgs;
use crate::config;
use crate::error::{Error, ErrorKind, Result};
use crate::input::{self, Input};
use crate::output::{Failure, Printer, report};
use crate::request::{self, AnswerSchema, Request};
use crate::session::{Job, LogLine, Room, Session, Stop, TokenSink};
use crate::settings::{self, Ask, Sources};
use jsonl::{Fields, write_line};

/// Items in flight at once when `--concurrency` is not given.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// One line of input, understood.
struct Item {
    /// Input order, from 0 (for `--ordered`).
    seq: usize,
    id: Value,
    /// The request, or why the item cannot be asked.
    request: std::result::Result<Request, Error>,
}

/// What one finished item produced: its output line and what the summary counts.
struct Done {
    seq: usize,
    line: String,
    ok: bool,
    provider: Option<String>,
    attempts: Vec<crate::outcome::AttemptRecord>,
    /// No request went out because every provider was full when its turn came (another
    /// item took the last slot first): the item goes back in the queue.
    starved: bool,
    /// Cancelled by Ctrl-C.
    interrupted: bool,
}

/// Runs a batch; the exit code follows DESIGN §6 (0 all answered, 4 some failed or
/// undone, else 2 for unreadable input lines).
/// Options of the default action that mean nothing for a batch: exit 2 before anything
/// is read, not once per item.
fn refuse_single_run_options(args: &BatchArgs) -> Result<()> {
    let o = &args.opts;
    let refused = if o.cont {
        Some("-c/--continue")
    } else if o.messages.is_some() {
        Some("--messages")
    } else if o.stream {
        Some("--stream")
    } else if o.images.iter().any(|i| i == "-") {
        Some("-i -")
    } else {
        None
    };
    match refused {
        Some(flag) => Err(Error::usage(format!("{flag} cannot be used with batch")).with_hint(
            "Each item is answered whole as one JSON line; standard input holds the items (give a conversation or an image per item in the input file)",
        )),
        None => Ok(()),
    }
}

pub fn run(args: &BatchArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let started = Instant::now();
    refuse_single_run_options(args)?;
    let (config, config_path) = config::load(config_flag)?;
    // `--timeout` bounds the whole batch; each item keeps the per-run default.
    let batch = settings::Batch::resolve(&args.opts, &config)?;
    let batch_deadline = batch.deadline.map(|d| started + d);
    let rt = crate::session::runtime()?;
    let session = Session::open(
        &config,
        config_path.as_deref(),
        &Sources::resolve(&config),
        &batch.item.route,
        None,
        batch.item.timeout,
        settings::rng(),
        &rt,
        printer,
    )?;
    // Read once for every item: the tools file and the batch's schema (compiled once).
    let shared = Shared {
        tools: args
            .opts
            .tools
            .as_deref()
            .map(|p| input::load_tools(p, batch.item.timeout))
            .transpose()?,
        schema: args
            .opts
            .schema
            .as_deref()
            .map(|a| input::load_schema(a, batch.item.timeout))
            .transpose()?,
        images: args.opts.images.clone(),
    };

    let reader: Box<dyn BufRead + Send> = match args.input.as_deref() {
        None | Some("-") => Box::new(BufReader::new(std::io::stdin())),
        Some(path) => Box::new(BufReader::new(std::fs::File::open(path).map_err(|e| {
            Error::input(format!("Cannot read batch input {path}")).with_source(e)
        })?)),
    };
    if batch.item.dry_run {
        let answered = jsonl::answered(args.output.as_deref());
        let dry = DryRun {
            answered: &answered,
            ask: &batch.item,
            shared: &shared,
            json: args.opts.json,
        };
        return dry.run(reader, &session, printer);
    }
    let (answered, out) = jsonl::open_output(args.output.as_deref())?;
    let total = match args.input.as_deref() {
        Some(path) if path != "-" => jsonl::count_lines(path),
        _ => None,
    };
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bar = printer.progress_bar(total, finished.clone());
    let mut results = Results {
        out,
        pending: BTreeMap::new(),
        next: 0,
        ordered: args.ordered,
        counts: Counts::default(),
        bar: &bar,
        finished,
        closed: false,
    };
    // Ctrl-C: no new item starts, those in flight are cancelled (`cancelled` attempts, an
    // `interrupted` line each), the summary is written, exit 130.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut interrupted = false;

    let concurrency = args.concurrency.map_or(DEFAULT_CONCURRENCY, |c| c as usize);
    // Lines are read on their own thread: a slow producer on stdin never stops the items
    // in flight, and a bounded channel keeps memory bounded.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, std::io::Result<String>)>(64);
    std::thread::spawn(move || {
        for (index, line) in jsonl::lines(reader).enumerate() {
            if tx.blocking_send((index + 1, line)).is_err() {
                break;
            }
        }
    });
    let mut seq = 0usize;

    let result: Result<()> = rt.block_on(async {
        let mut running = FuturesUnordered::new();
        let mut input_done = false;
        // Items waiting for a provider to have room, each not to be looked at before then.
        let mut waiting: VecDeque<(Item, Instant)> = VecDeque::new();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            // Ctrl-C, or the reader went away (`| head`): nothing more is started, and the
            // items in flight are cancelled (their attempts still recorded).
            if interrupted || results.closed {
                let _ = stop_tx.send(true);
                waiting.clear();
                input_done = true;
            }
            // Launch what can go now, one at a time: each launched item is polled at once so
            // it takes its provider's slot before the next item looks for room.
            let mut wake: Option<Instant> = None;
            let mut still_waiting = VecDeque::new();
            while let Some((item, not_before)) = waiting.pop_front() {
                let now = Instant::now();
                if running.len() >= concurrency || not_before > now {
                    wake = Some(wake.map_or(not_before, |w: Instant| w.min(not_before)).max(now));
                    still_waiting.push_back((item, not_before));
                    continue;
                }
// The state is borrowed only for planning: finishing an item below writes it.
                let prepared = prepare(item, &session, batch_deadline);
                match prepared {
                    Prepared::Launch(item, jobs, deadline) => {
                        running.push(run_item(item, jobs, &session, deadline, &bar, stop_rx.clone()));
                        if let Some(Some((item, done))) = running.next().now_or_never() {
                            finish_item(item, done, &mut waiting, &session, &mut results, printer)?;
                        }
                    }
                    Prepared::Wait(item, until) => {
                        bar.set_message("waiting for a rate-limit reset".to_string());
                        wake = Some(wake.map_or(until, |w: Instant| w.min(until)));
                        still_waiting.push_back((item, until));
                    }
                    Prepared::Done(done) => results.put(done)?,
                }
            }
            waiting = still_waiting;
            if input_done && waiting.is_empty() && running.is_empty() {
                break;
            }
            let want_input = !input_done && running.len() + waiting.len() < concurrency;
            tokio::select! {
                line = rx.recv(), if want_input => match line {
                    None => input_done = true,
                    Some((line_no, line)) => {
                        let before = results.counts.skipped + results.counts.unreadable;
                        if let Some(item) = item_from_line(line_no, line, &mut seq, &answered, &batch.item, &shared, &mut results.counts, printer) {
                            waiting.push_back((item, Instant::now()));
                        }
                        // Skipped and unreadable lines are done as far as the bar goes.
                        bar.inc((results.counts.skipped + results.counts.unreadable - before) as u64);
                    }
                },
                _ = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    let _ = stop_tx.send(true);
                }
                Some((item, done)) = running.next(), if !running.is_empty() => {
                    finish_item(item, done, &mut waiting, &session, &mut results, printer)?;
                }
                _ = crate::clock::sleep_until(wake), if wake.is_some() => {}
                // Past the batch deadline, lines not read yet are left alone.
                _ = crate::clock::sleep_until(batch_deadline), if !input_done && batch_deadline.is_some() => {
                    input_done = true;
                }
            }
        }
        Ok(())
    });
    result?;
    bar.finish_and_clear();
    // Anything still buffered for --ordered (after skipped or unreadable lines) goes out.
    for (_, line) in std::mem::take(&mut results.pending) {
        if !results.closed && !write_line(&mut results.out, &line)? {
            results.closed = true;
        }
    }
    let closed = results.closed;
    let counts = results.counts;
    let summary = counts.summary(started.elapsed());
    // The summary always goes to stderr; it is the batch's report, not a note.
    printer.report(&summary);
    if interrupted {
        return Err(Error::new(
            ErrorKind::Interrupted,
            format!(
                "Interrupted: {} items answered, {} cancelled or not started",
                counts.answered, counts.interrupted
            ),
        )
        .with_hint(match &args.output {
            Some(out) => format!(
                "Run the same command again to resume: ids answered in {} are skipped",
                out.display()
            ),
            None => "With -o OUT, a batch run again resumes where it stopped".to_string(),
        }));
    }
    if closed {
        // As a single run whose reader went away: not an error.
        return Ok(());
    }
    if counts.failed > 0 {
        return Err(Error::new(
            ErrorKind::AllFailed,
            format!(
                "{} of {} items failed or were left undone",
                counts.failed,
                counts.failed + counts.answered
            ),
        ));
    }
    if counts.unreadable > 0 {
        return Err(Error::input(format!(
            "{} could not be read (see above)",
            crate::output::explain::count(counts.unreadable, "input line")
        )));
    }
    Ok(())
}

/// `batch --dry-run`: every item planned, nothing sent (DESIGN §1's `--dry-run`, per item).
struct DryRun<'a> {
    answered: &'a HashSet<String>,
    ask: &'a Ask,
    shared: &'a Shared,
    /// `--json`: one plan object per item, with its id; else items that share a plan are
    /// shown once under their count.
    json: bool,
}

impl DryRun<'_> {
    /// Exit 0 when every item has a candidate, 3 when one has none, else 2 for unreadable
    /// lines or items.
    fn run(
        &self,
        reader: Box<dyn BufRead + Send>,
        session: &Session,
        printer: &Printer,
    ) -> Result<()> {
        let mut counts = Counts::default();
        let mut seq = 0usize;
        let mut items = 0usize;
        let mut without = 0usize;
        // Plans in first-seen order, each with the ids of the items that share it.
        let mut groups: Vec<(String, Vec<Value>, usize, Job)> = Vec::new();
        for (index, line) in reader.lines().enumerate() {
            let line_no = index + 1;
            let Some(item) = item_from_line(
                line_no,
                line,
                &mut seq,
                self.answered,
                self.ask,
                self.shared,
                &mut counts,
                printer,
            ) else {
                continue;
            };
            let req = match item.request {
                Ok(r) => r,
                Err(e) => {
                    counts.unreadable += 1;
                    printer.error(&Error::input(format!(
                        "Input line {line_no}: {}",
                        e.message
                    )));
                    continue;
                }
            };
            items += 1;
            let jobs = session.plan(&req);
            if Session::unanswerable(&jobs).is_some() {
                without += 1;
            }
            let first = jobs.into_iter().next().expect("a request has a job");
            if self.json {
                let timeouts = crate::session::first_token_timeouts(&first.plan, &first.request);
                report::item_plan(&item.id, &first.plan, &timeouts, printer);
                continue;
            }
            let key = plan_key(&first.plan);
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => {
                    if g.1.len() < 6 {
                        g.1.push(item.id);
                    }
                    g.2 += 1;
                }
                None => groups.push((key, vec![item.id], 1, first)),
            }
        }
        for (_, ids, count, job) in &groups {
            report::items_heading(ids, *count, printer);
            let timeouts = crate::session::first_token_timeouts(&job.plan, &job.request);
            let shown = Request {
                json: false,
                ..job.request.clone()
            };
            report::plan(&job.plan, &shown, &timeouts, crate::now_ms(), printer);
        }
        printer.report(&format!(
            "batch --dry-run: {items} {}, {} skipped, {} unreadable; nothing was sent",
            if items == 1 {
                "item planned"
            } else {
                "items planned"
            },
            counts.skipped,
            counts.unreadable
        ));
        if without > 0 {
            return Err(Error::new(
                ErrorKind::NoEligibleModel,
                format!("{without} of {items} items have no candidate"),
            ));
        }
        if counts.unreadable > 0 {
            return Err(Error::input(format!(
                "{} could not be read (see above)",
                crate::output::explain::count(counts.unreadable, "input line")
            )));
        }
        Ok(())
    }
}

/// What makes two items' plans the same for the reader: the same candidates (their order
/// differs from item to item by the ranking's jitter, as it would when they run) and every
/// drop with its reason.
fn plan_key(plan: &crate::plan::Plan) -> String {
    let mut cands: Vec<String> = plan
        .candidates
        .iter()
        .map(|c| format!("{}/{}", c.model.provider, c.model.id))
        .collect();
    cands.sort();
    let mut key = cands.join("\n");
    key.push('|');
    for d in &plan.dropped {
        key.push_str(&format!("{}/{}: {}\n", d.provider, d.model, d.why));
    }
    key
}

#[derive(Default)]
struct Counts {
    answered: usize,
    failed: usize,
    /// Cancelled by Ctrl-C (counted among `failed` too).
    interrupted: usize,
    skipped: usize,
    unreadable: usize,
    per_provider: BTreeMap<String, usize>,
}

impl Counts {
    fn summary(&self, elapsed: Duration) -> String {
        let per = if self.per_provider.is_empty() {
            "none".to_string()
        } else {
            self.per_provider
                .iter()
                .map(|(p, n)| format!("{p} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "batch: {} answered, {} failed, {} skipped, {} unreadable, {:.1}s; answers per provider: {per}",
            self.answered,
            self.failed,
            self.skipped,
            self.unreadable,
            elapsed.as_secs_f64()
        )
    }
}

/// One input line as an item: blank lines are no item, answered ids count as skipped,
/// unreadable lines are reported on stderr with their number.
#[allow(clippy::too_many_arguments)]
fn item_from_line(
    line_no: usize,
    line: std::io::Result<String>,
    seq: &mut usize,
    answered: &HashSet<String>,
    ask: &Ask,
    shared: &Shared,
    counts: &mut Counts,
    printer: &Printer,
) -> Option<Item> {
    let line = match line {
        Ok(l) => l,
        Err(e) => {
            counts.unreadable += 1;
            printer.error(&Error::input(format!(
                "Input line {line_no} cannot be read: {e}"
            )));
            return None;
        }
    };
    if line.trim().is_empty() {
        return None;
    }
    let (id, fields) = match jsonl::parse_line(&line, line_no) {
        Ok(x) => x,
        Err(why) => {
            counts.unreadable += 1;
            printer.error(&why.into());
            return None;
        }
    };
    if answered.contains(&id.to_string()) {
        counts.skipped += 1;
        return None;
    }
    let this = *seq;
    *seq += 1;
    Some(Item {
        seq: this,
        id,
        request: build(&fields, ask, shared),
    })
}

/// What to do with an item whose turn has come.
enum Prepared {
    /// Run it now, with these jobs, until this deadline.
    Launch(Item, Vec<Job>, Instant),
    /// Every provider it could use is full: look again then.
    Wait(Item, Instant),
    /// It is finished already (an input error, no eligible model, the batch deadline).
    Done(Done),
}

/// Plans an item and decides: launch now, wait for the earliest reset of a provider it
/// could use (counting providers dropped only for their quota), or give up.
fn prepare(item: Item, session: &Session, batch_deadline: Option<Instant>) -> Prepared {
    let now = Instant::now();
    if batch_deadline.is_some_and(|d| now >= d) {
        let err = Error::new(
            ErrorKind::Deadline,
            "The batch deadline passed before this item started",
        );
        return Prepared::Done(failed_item(&item, err));
    }
    let req = match &item.request {
        Ok(r) => r.clone(),
        Err(e) => {
            let err = Error::new(e.kind, e.message.clone());
            return Prepared::Done(failed_item(&item, err));
        }
    };
    let jobs = session.plan(&req);
    if let Room::At(until) = session.room(&jobs) {
        if batch_deadline.is_some_and(|d| until >= d) {
            let err = Error::new(
                ErrorKind::Deadline,
                "Every provider is at its limit until after the batch deadline",
            );
            return Prepared::Done(failed_item(&item, err));
        }
        return Prepared::Wait(item, until);
    }
    if let Some(e) = Session::unanswerable(&jobs) {
        return Prepared::Done(failed_item(&item, e));
    }
    let deadline = batch_deadline.map_or(now + req.timeout, |d| d.min(now + req.timeout));
    Prepared::Launch(item, jobs, deadline)
}

/// A finished item: back in the queue (after a short pause) when it could not send a
/// request because another item took the last slot; else recorded and written.
fn finish_item(
    item: Item,
    done: Done,
    waiting: &mut VecDeque<(Item, Instant)>,
    session: &Session,
    results: &mut Results,
    printer: &Printer,
) -> Result<()> {
    if done.starved {
        waiting.push_back((item, Instant::now() + Duration::from_millis(50)));
        return Ok(());
    }
    if let Ok(req) = &item.request {
        for n in session.record(&done.attempts, &LogLine::of(req, &done.attempts, true)) {
            printer.note(&n);
        }
    }
    results.put(done)
}

/// What every item shares: the batch's tools, schema and images, read once.
struct Shared {
    tools: Option<Vec<Value>>,
    schema: Option<AnswerSchema>,
    images: Vec<String>,
}

/// The request of one item: the batch's settings, overridden by the item's fields.
fn build(f: &Fields, ask: &Ask, shared: &Shared) -> Result<Request> {
    let mut images = Vec::new();
    for spec in shared.images.iter().chain(&f.images) {
        if spec == "-" {
            return Err(Error::usage(
                "`-i -` cannot be used in a batch: standard input holds the items",
            ));
        }
        images.push(input::load_image(spec, ask.timeout)?);
    }
    let schema = match &f.schema {
        Some(arg) => Some(input::load_schema(arg, ask.timeout)?),
        None => shared.schema.clone(),
    };
    let input = Input {
        prompt: f.prompt.clone(),
        images,
        tools: shared.tools.clone(),
        schema,
        messages: None,
        kept: Vec::new(),
    };
    request::build(&ask.with_item(&f.settings), input, None)
}

/// The sink of a batch item: no tokens on stdout, the model being tried on the bar.
struct ItemSink<'a> {
    bar: &'a ProgressBar,
}

impl TokenSink for ItemSink<'_> {
    fn attempt_started(&mut self, provider: &str, model: &str) {
        self.bar.set_message(format!("{provider}/{model}"));
    }
    fn token(&mut self, _text: &str) -> bool {
        true
    }
    fn trace(&mut self, _msg: String) {}
    fn note(&mut self, _msg: String) {
        self.bar.set_message("waiting for a cool-down to end");
    }
}

async fn run_item(
    item: Item,
    jobs: Vec<Job>,
    session: &Session,
    deadline: Instant,
    bar: &ProgressBar,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Item, Done) {
    let done = run_item_inner(&item, &jobs, session, deadline, bar, stop).await;
    (item, done)
}

async fn run_item_inner(
    item: &Item,
    jobs: &[Job],
    session: &Session,
    deadline: Instant,
    bar: &ProgressBar,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Done {
    let started = Instant::now();
    let mut sink = ItemSink { bar };
    let cancel = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let run = session.ask(jobs, deadline, &mut sink, cancel).await;
    let attempts = run.attempts;
    match run.result {
        Some(Ok(successes)) => {
            let answer = crate::outcome::answer(
                &successes,
                attempts.clone(),
                started.elapsed().as_millis() as u64,
            );
            let mut v = serde_json::to_value(&answer).expect("answer serializes");
            v["id"] = item.id.clone();
            Done {
                seq: item.seq,
                line: v.to_string(),
                ok: true,
                provider: Some(answer.provider),
                attempts,
                starved: false,
                interrupted: false,
            }
        }
        None => {
            let err = Error::new(
                ErrorKind::Interrupted,
                "Interrupted (Ctrl-C) before it was answered",
            )
            .with_attempts(attempts);
            let mut done = failed_item(item, err);
            done.interrupted = true;
            done
        }
        Some(Err(Stop::OutputClosed)) => failed_item(item, Error::internal("Output closed")),
        Some(Err(Stop::Error(e))) => {
            let mut done = failed_item(item, e);
            done.starved = attempts.is_empty() && !session.any_room(jobs);
            done.attempts = attempts;
            done
        }
    }
}

fn failed_item(item: &Item, err: Error) -> Done {
    let line = serde_json::to_string(&Failure::of(&err, Some(&item.id))).expect("serializes");
    Done {
        seq: item.seq,
        line,
        ok: false,
        provider: None,
        attempts: err.attempts,
        starved: false,
        interrupted: false,
    }
}

/// Where finished items go: the output (in input order with `--ordered`), the counts of
/// the summary, and the progress bar.
struct Results<'a> {
    out: Box<dyn Write>,
    /// Lines waiting for an earlier item (`--ordered`), by input position.
    pending: BTreeMap<usize, String>,
    next: usize,
    ordered: bool,
    counts: Counts,
    bar: &'a ProgressBar,
    /// Items this run finished (the bar's rate).
    finished: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The reader of the output went away: nothing more is written or sent.
    closed: bool,
}

impl Results<'_> {
    /// Writes a finished item now, or (with `--ordered`) once every earlier item is out.
    fn put(&mut self, done: Done) -> Result<()> {
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if done.interrupted {
            self.counts.interrupted += 1;
        }
        if done.ok {
            self.counts.answered += 1;
            if let Some(p) = &done.provider {
                *self.counts.per_provider.entry(p.clone()).or_default() += 1;
            }
        } else {
            self.counts.failed += 1;
        }
        self.bar.inc(1);
        if self.counts.failed > 0 {
            self.bar
                .set_message(format!("{} failed", self.counts.failed));
        }
        if self.closed {
            return Ok(());
        }
        if !self.ordered {
            self.closed = !write_line(&mut self.out, &done.line)?;
            return Ok(());
        }
        self.pending.insert(done.seq, done.line);
        while let Some(line) = self.pending.remove(&self.next) {
            if !write_line(&mut self.out, &line)? {
                self.closed = true;
                break;
            }
            self.next += 1;
        }
        Ok(())
    }
}
