//! `freeroute batch` (DESIGN §6): many prompts, JSONL in and out. Items run concurrently
//! on the same routing path as a single run (`app`'s setup, plan and `run_jobs`), share one
//! `Limiter` so no provider gets more than its limits allow, wait for the earliest reset
//! when every provider is full, and record each item in the shared state as it finishes.
//! Input is read line by line; output lines are written as items finish (or in input order
//! with `--ordered`), so a crash keeps what finished and `-o OUT` resumes.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::app::{self, Setup};
use crate::attempt::{Stop, TokenSink};
use crate::cli::{AskOptions, BatchArgs};
use crate::config::{self, Config};
use crate::error::{Error, ErrorKind, Result};
use crate::input::{self, Input};
use crate::limiter::Limiter;
use crate::outcome::{AttemptOutcome, AttemptRecord};
use crate::output::Printer;
use crate::plan::{self, Plan};
use crate::request::{self, Request};
use crate::state::State;

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
    attempts: Vec<AttemptRecord>,
    /// No request went out because every provider was full when its turn came (another
    /// item took the last slot first): the item goes back in the queue.
    starved: bool,
}

/// Runs a batch; the exit code follows DESIGN §6 (0 all answered, 4 some failed or
/// undone, else 2 for unreadable input lines).
pub fn run(args: &BatchArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let started = Instant::now();
    let (config, config_path) = config::load(config_flag)?;
    // `--timeout` bounds the whole batch; each item keeps the per-run default.
    let batch_deadline = args
        .opts
        .timeout
        .map(|t| started + Duration::from_secs_f64(t.max(0.0)));
    let mut item_opts = args.opts.clone();
    item_opts.timeout = None;
    item_opts.json = true;
    item_opts.stream = false;
    item_opts.no_stream = true;
    let route = request::resolve_route(&item_opts.route, &config);
    let rt = app::runtime()?;
    let item_timeout = config
        .defaults
        .timeout
        .map_or(request::DEFAULT_TIMEOUT_SECS, |t| t);
    let setup = app::setup(
        &config,
        config_path,
        &route,
        Duration::from_secs_f64(item_timeout),
        &rt,
        printer,
    )?;
    let tools = match &item_opts.tools {
        Some(p) => Some(input::load_tools(p)?),
        None => None,
    };

    let (answered, out) = open_output(args.output.as_deref())?;
    let reader: Box<dyn BufRead + Send> = match args.input.as_deref() {
        None | Some("-") => Box::new(BufReader::new(std::io::stdin())),
        Some(path) => {
            Box::new(BufReader::new(std::fs::File::open(path).map_err(|e| {
                Error::input(format!("Cannot read batch input {path}: {e}"))
            })?))
        }
    };
    let total = match args.input.as_deref() {
        Some(path) if path != "-" => count_lines(path),
        _ => None,
    };
    let bar = progress_bar(total, printer);
    let mut results = Results {
        out,
        pending: BTreeMap::new(),
        next: 0,
        ordered: args.ordered,
        counts: Counts::default(),
        bar: &bar,
    };

    let concurrency = args.concurrency.map_or(DEFAULT_CONCURRENCY, |c| c as usize);
    let limiter = RefCell::new(Limiter::new(
        &setup.providers,
        &setup.state,
        crate::now_ms(),
    ));
    // The batch's view of the shared state, refreshed after every item.
    let state = RefCell::new(setup.state.clone());

    // Lines are read on their own thread: a slow producer on stdin never stops the items
    // in flight, and a bounded channel keeps memory bounded.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, std::io::Result<String>)>(64);
    std::thread::spawn(move || {
        for (index, line) in reader.lines().enumerate() {
            if tx.blocking_send((index + 1, line)).is_err() {
                break;
            }
        }
    });
    let mut seq = 0usize;
    let mut rng = app::rng();

    let result: Result<()> = rt.block_on(async {
        let mut running = FuturesUnordered::new();
        let mut input_done = false;
        // Items waiting for a provider to have room, each not to be looked at before then.
        let mut waiting: VecDeque<(Item, Instant)> = VecDeque::new();
        loop {
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
                let prepared = prepare(item, &setup, &state.borrow(), &limiter, &mut rng, batch_deadline);
                match prepared {
                    Prepared::Launch(item, jobs, deadline) => {
                        running.push(run_item(item, jobs, &setup, deadline, &limiter, &bar));
                        if let Some(Some((item, done))) = running.next().now_or_never() {
                            finish_item(item, done, &mut waiting, &setup, &state, &limiter, &mut results, printer)?;
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
                        if let Some(item) = item_from_line(line_no, line, &mut seq, &answered, &item_opts, &config, &tools, &mut results.counts, printer) {
                            waiting.push_back((item, Instant::now()));
                        }
                    }
                },
                Some((item, done)) = running.next(), if !running.is_empty() => {
                    finish_item(item, done, &mut waiting, &setup, &state, &limiter, &mut results, printer)?;
                }
                _ = sleep_until_opt(wake), if wake.is_some() => {}
                // Past the batch deadline, lines not read yet are left alone.
                _ = sleep_until_opt(batch_deadline), if !input_done && batch_deadline.is_some() => {
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
        write_line(&mut results.out, &line)?;
    }
    let counts = results.counts;
    let summary = counts.summary(started.elapsed());
    // The summary always goes to stderr; it is the batch's report, not a note.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{summary}");
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
            "{} input lines could not be read (see above)",
            counts.unreadable
        )));
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    answered: usize,
    failed: usize,
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

/// The ids already answered in OUT (skipped on resume). OUT is rewritten without its
/// failed lines, so each id ends with exactly one line; then it is opened for appending.
fn open_output(path: Option<&Path>) -> Result<(HashSet<String>, Box<dyn Write>)> {
    let Some(path) = path else {
        return Ok((HashSet::new(), Box::new(std::io::stdout())));
    };
    let mut answered = HashSet::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        let mut kept = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["ok"] == true && !v["id"].is_null() {
                answered.insert(v["id"].to_string());
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if kept.len() != text.len() {
            crate::state::write_atomic(path, kept.as_bytes())
                .map_err(|e| Error::input(format!("Cannot rewrite {}: {e}", path.display())))?;
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::input(format!("Cannot open {} for writing: {e}", path.display())))?;
    Ok((answered, Box::new(file)))
}

fn count_lines(path: &str) -> Option<u64> {
    let f = std::fs::File::open(path).ok()?;
    Some(
        BufReader::new(f)
            .lines()
            .map_while(|l| l.ok())
            .filter(|l| !l.trim().is_empty())
            .count() as u64,
    )
}

fn progress_bar(total: Option<u64>, printer: &Printer) -> ProgressBar {
    use std::io::IsTerminal;
    if printer.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
        .expect("valid template");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One input line as an item: blank lines are no item, answered ids count as skipped,
/// unreadable lines are reported on stderr with their number.
#[allow(clippy::too_many_arguments)]
fn item_from_line(
    line_no: usize,
    line: std::io::Result<String>,
    seq: &mut usize,
    answered: &HashSet<String>,
    opts: &AskOptions,
    config: &Config,
    tools: &Option<Vec<Value>>,
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
    let (id, fields) = match parse_line(&line, line_no) {
        Ok(x) => x,
        Err(why) => {
            counts.unreadable += 1;
            printer.error(&Error::input(format!("Input line {line_no}: {why}")));
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
        request: build(&fields, opts, config, tools),
    })
}

/// What to do with an item whose turn has come.
enum Prepared {
    /// Run it now, with these jobs, until this deadline.
    Launch(Item, Vec<(Request, Plan)>, Instant),
    /// Every provider it could use is full: look again then.
    Wait(Item, Instant),
    /// It is finished already (an input error, no eligible model, the batch deadline).
    Done(Done),
}

/// Plans an item and decides: launch now, wait for the earliest reset of a provider it
/// could use (counting providers dropped only for their quota), or give up.
fn prepare(
    item: Item,
    setup: &Setup,
    state: &State,
    limiter: &RefCell<Limiter>,
    rng: &mut fastrand::Rng,
    batch_deadline: Option<Instant>,
) -> Prepared {
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
    let now_ms = crate::now_ms();
    let plan = plan::plan(
        &setup.loaded.models,
        &req.route,
        &req.needs,
        state,
        now_ms,
        rng,
    );
    let l = limiter.borrow();
    let mut providers: Vec<&str> = plan
        .candidates
        .iter()
        .map(|c| c.model.provider.as_str())
        .collect();
    providers.extend(
        plan.dropped
            .iter()
            .filter(|d| d.for_now)
            .map(|d| d.provider.as_str()),
    );
    let room_now = plan
        .candidates
        .iter()
        .any(|c| l.has_room(&c.model.provider, now_ms));
    if !room_now && !providers.is_empty() {
        // `None` from a provider: only requests in flight fill it; look again shortly.
        let at = providers
            .iter()
            .filter_map(|p| l.room_at(p, now_ms))
            .filter(|&t| t > now_ms)
            .min();
        let until = now + Duration::from_millis(at.map_or(100, |t| t - now_ms).max(20));
        if batch_deadline.is_some_and(|d| until >= d) {
            let err = Error::new(
                ErrorKind::Deadline,
                "Every provider is at its limit until after the batch deadline",
            );
            return Prepared::Done(failed_item(&item, err));
        }
        return Prepared::Wait(item, until);
    }
    drop(l);
    let jobs = match app::split_translation(&req, &plan, &setup.loaded.models, state, rng) {
        Some(pieces) => pieces,
        None => vec![(req.clone(), plan)],
    };
    if let Some((r, p)) = jobs.iter().find(|(_, p)| p.candidates.is_empty()) {
        return Prepared::Done(failed_item(&item, app::no_eligible(p, &r.needs)));
    }
    let deadline = batch_deadline.map_or(now + req.timeout, |d| d.min(now + req.timeout));
    Prepared::Launch(item, jobs, deadline)
}

/// A finished item: back in the queue (after a short pause) when it could not send a
/// request because another item took the last slot; else recorded and written.
#[allow(clippy::too_many_arguments)]
fn finish_item(
    item: Item,
    done: Done,
    waiting: &mut VecDeque<(Item, Instant)>,
    setup: &Setup,
    state: &RefCell<State>,
    limiter: &RefCell<Limiter>,
    results: &mut Results,
    printer: &Printer,
) -> Result<()> {
    if done.starved {
        waiting.push_back((item, Instant::now() + Duration::from_millis(50)));
        return Ok(());
    }
    remember(setup, state, limiter, &done, printer);
    results.put(done)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The fields an input line may carry.
#[derive(Default)]
struct Fields {
    prompt: String,
    system: Option<String>,
    images: Vec<String>,
    translate: bool,
    to: Option<String>,
    schema: Option<String>,
    max_tokens: Option<u32>,
}

/// A JSON object line, or a plain text line (its id is its line number).
fn parse_line(line: &str, line_no: usize) -> std::result::Result<(Value, Fields), String> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('{') {
        return Ok((
            json!(line_no),
            Fields {
                prompt: line.to_string(),
                ..Fields::default()
            },
        ));
    }
    let v: Value = serde_json::from_str(trimmed).map_err(|e| format!("not valid JSON ({e})"))?;
    let text = |k: &str| -> std::result::Result<Option<String>, String> {
        match &v[k] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(format!("`{k}` must be a string, not {other}")),
        }
    };
    let images = match &v["image"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or("`image` entries must be strings")
            })
            .collect::<std::result::Result<_, _>>()?,
        _ => return Err("`image` must be a path or URL, or a list of them".into()),
    };
    let schema = match &v["schema"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        obj @ Value::Object(_) => Some(obj.to_string()),
        _ => return Err("`schema` must be a JSON Schema object or a file name".into()),
    };
    let to = text("to")?;
    let fields = Fields {
        prompt: text("prompt")?.unwrap_or_default(),
        system: text("system")?,
        images,
        translate: v["translate"].as_bool().unwrap_or(false) || to.is_some(),
        to,
        schema,
        max_tokens: v["max_tokens"]
            .as_u64()
            .map(|n| n.min(u32::MAX as u64) as u32),
    };
    let id = if v["id"].is_null() {
        json!(line_no)
    } else {
        v["id"].clone()
    };
    Ok((id, fields))
}

/// The request of one item: the batch's options, overridden by the item's fields.
fn build(
    f: &Fields,
    opts: &AskOptions,
    config: &Config,
    tools: &Option<Vec<Value>>,
) -> Result<Request> {
    let mut o = opts.clone();
    if f.system.is_some() {
        o.system = f.system.clone();
    }
    if f.translate {
        o.translate = true;
    }
    if f.to.is_some() {
        o.to = f.to.clone();
    }
    if f.max_tokens.is_some() {
        o.max_tokens = f.max_tokens;
    }
    let mut images = Vec::new();
    for spec in opts.images.iter().chain(&f.images) {
        if spec == "-" {
            return Err(Error::usage(
                "`-i -` cannot be used in a batch: standard input holds the items",
            ));
        }
        images.push(input::load_image(spec)?);
    }
    let schema_arg = f.schema.as_deref().or(opts.schema.as_deref());
    let input = Input {
        prompt: f.prompt.clone(),
        images,
        tools: tools.clone(),
        schema: schema_arg.map(input::load_schema).transpose()?,
        messages: None,
    };
    request::resolve(&o, config, input, None, false)
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
    jobs: Vec<(Request, Plan)>,
    setup: &Setup,
    deadline: Instant,
    limiter: &RefCell<Limiter>,
    bar: &ProgressBar,
) -> (Item, Done) {
    let done = run_item_inner(&item, jobs, setup, deadline, limiter, bar).await;
    (item, done)
}

async fn run_item_inner(
    item: &Item,
    jobs: Vec<(Request, Plan)>,
    setup: &Setup,
    deadline: Instant,
    limiter: &RefCell<Limiter>,
    bar: &ProgressBar,
) -> Done {
    let started = Instant::now();
    if let Some((r, p)) = jobs.iter().find(|(_, p)| p.candidates.is_empty()) {
        return failed_item(item, app::no_eligible(p, &r.needs));
    }
    let client = match setup.client() {
        Ok(c) => c,
        Err(e) => return failed_item(item, e),
    };
    let ledger = crate::attempt::Ledger::new(limiter);
    let mut sink = ItemSink { bar };
    let result = app::run_jobs(
        client,
        &setup.providers,
        &jobs,
        deadline,
        &mut sink,
        &ledger,
    )
    .await;
    let attempts = ledger.into_attempts();
    match result {
        Ok(successes) => {
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
            }
        }
        Err(Stop::OutputClosed) => failed_item(item, Error::internal("Output closed")),
        Err(Stop::Error(e)) => {
            let now = crate::now_ms();
            let full = {
                let l = limiter.borrow();
                jobs.iter()
                    .flat_map(|(_, p)| &p.candidates)
                    .all(|c| !l.has_room(&c.model.provider, now))
            };
            let mut done = failed_item(item, e);
            done.starved = attempts.is_empty() && full;
            done.attempts = attempts;
            done
        }
    }
}

fn failed_item(item: &Item, err: Error) -> Done {
    let v = json!({
        "ok": false,
        "error": {"kind": err.kind, "message": err.message},
        "attempts": err.attempts,
        "id": item.id,
    });
    Done {
        seq: item.seq,
        line: v.to_string(),
        ok: false,
        provider: None,
        attempts: err.attempts,
        starved: false,
    }
}

/// Records an item's attempts in the shared state and refreshes the limiter and the plan's
/// view of the state from what was written (other processes' runs included).
fn remember(
    setup: &Setup,
    state: &RefCell<State>,
    limiter: &RefCell<Limiter>,
    done: &Done,
    printer: &Printer,
) {
    if done.attempts.is_empty() {
        return;
    }
    let now = crate::now_ms();
    let mut sent: HashMap<&str, u32> = HashMap::new();
    for a in &done.attempts {
        *sent.entry(a.provider.as_str()).or_default() += 1;
    }
    let line = json!({
        "time_ms": now,
        "ok": done.attempts.iter().any(|a| a.outcome == AttemptOutcome::Ok),
        "attempts": done.attempts,
        "batch": true,
    })
    .to_string();
    let limits = |name: &str| {
        let p = setup.providers.iter().find(|p| p.name == name);
        p.map(|p| (p.limits, p.day_offset_ms)).unwrap_or_default()
    };
    let written = setup.store.update_and_read(
        |s| s.record_attempts(&done.attempts, now, &limits),
        Some(&line),
    );
    let mut l = limiter.borrow_mut();
    for (p, n) in sent {
        l.recorded(p, n);
    }
    match written {
        Ok((notes, written)) => {
            notes.iter().for_each(|n| printer.note(n));
            l.sync(&written, now);
            *state.borrow_mut() = written;
        }
        Err(e) => {
            // Without the file, keep counting in memory so limits still hold.
            let mut s = state.borrow_mut();
            s.record_attempts(&done.attempts, now, &limits);
            l.sync(&s, now);
            printer.note(&format!("Running without memory: {e}"));
        }
    }
}

fn write_line(out: &mut Box<dyn Write>, line: &str) -> Result<()> {
    out.write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| Error::internal(format!("Cannot write a result: {e}")))
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
}

impl Results<'_> {
    /// Writes a finished item now, or (with `--ordered`) once every earlier item is out.
    fn put(&mut self, done: Done) -> Result<()> {
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
        if !self.ordered {
            return write_line(&mut self.out, &done.line);
        }
        self.pending.insert(done.seq, done.line);
        while let Some(line) = self.pending.remove(&self.next) {
            write_line(&mut self.out, &line)?;
            self.next += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_items_or_plain_prompts() {
        let (id, f) = parse_line("Translate this", 7).unwrap();
        assert_eq!(id, json!(7));
        assert_eq!(f.prompt, "Translate this");
        let (id, f) = parse_line(
            r#"{"id": "a1", "prompt": "hi", "to": "de", "image": ["x.png"], "max_tokens": 9}"#,
            1,
        )
        .unwrap();
        assert_eq!(id, json!("a1"));
        assert!(f.translate && f.to.as_deref() == Some("de"));
        assert_eq!(f.images, vec!["x.png"]);
        assert_eq!(f.max_tokens, Some(9));
        let (id, _) = parse_line(r#"{"prompt": "no id"}"#, 3).unwrap();
        assert_eq!(id, json!(3));
        assert!(parse_line(r#"{"prompt": 5}"#, 1).is_err());
        assert!(parse_line("{broken", 1).is_err());
    }
}
