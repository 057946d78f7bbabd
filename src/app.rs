//! One function per action, calling the stages in the order of DESIGN §7:
//! args + config → request → plan → attempts → outcome → output + state.
//! It holds no policy: each decision lives in the stage that owns it.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::attempt::{self, Stop};
use crate::catalog::{self, Loaded};
use crate::cli::{AskArgs, Cli, Command, ConfigAction, ConfigArgs, ModelsArgs, StatsArgs};
use crate::config::{self, Config, Keyless};
use crate::discover;
use crate::error::{Error, ErrorKind, Result};
use crate::input;
use crate::limiter::Limiter;
use crate::outcome::AttemptRecord;
use crate::output::{Printer, Sink};
use crate::plan::{self, Plan};
use crate::providers::{self, Disabled, Provider};
use crate::request::{self, Needs, Request, Route};
use crate::state::{self, State, Store};
use crate::wire::client::Client;

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let mut printer = Printer::new(cli.global.quiet, cli.global.verbose);
    // `--dry-run --json` has printed its plan; an empty plan adds no second JSON object.
    let json = cli.command.is_none() && cli.ask.json && !cli.ask.dry_run;
    let result = match cli.command {
        None => ask(&cli.ask, cli.global.config.as_deref(), &mut printer),
        Some(Command::Models(args)) => models(&args, cli.global.config.as_deref(), &printer),
        Some(Command::Config(args)) => config_cmd(&args, cli.global.config.as_deref(), &printer),
        Some(Command::Stats(args)) => stats(&args, &printer),
        Some(Command::Batch(args)) => {
            crate::batch::run(&args, cli.global.config.as_deref(), &printer)
        }
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            if json {
                printer.json(&json!({
                    "ok": false,
                    "error": {"kind": err.kind, "message": err.message},
                    "attempts": err.attempts,
                }));
            }
            printer.error(&err);
            err.exit_code()
        }
    }
}

/// A command line clap refused (or `--help`/`--version`, which clap reports the same way):
/// clap's message on stderr and its exit code (2 for a usage error, 0 for help). With
/// `--json` among the options, a usage error is also the contract's one JSON object on
/// stdout (DESIGN §4), so a script that parses stdout gets `error.kind` `usage`, not nothing.
pub fn bad_command_line(err: &clap::Error) -> i32 {
    use clap::error::ErrorKind as Kind;
    let help = matches!(err.kind(), Kind::DisplayHelp | Kind::DisplayVersion);
    let asked_json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if !help && asked_json {
        let rendered = err.render().to_string();
        let message = rendered
            .lines()
            .next()
            .unwrap_or("bad command line")
            .trim_start_matches("error: ")
            .to_string();
        Printer::new(true, false).json(&json!({
            "ok": false,
            "error": {"kind": ErrorKind::Usage, "message": message},
            "attempts": [],
        }));
    }
    // Printing fails only when stderr is closed; the exit code still tells.
    let _ = err.print();
    err.exit_code()
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("Cannot start the async runtime: {e}")))
}

/// Everything the routing stages need, gathered once.
pub(crate) struct Setup {
    pub(crate) providers: Vec<Provider>,
    pub(crate) loaded: Loaded,
    pub(crate) state: State,
    pub(crate) store: Store,
    client: std::cell::OnceCell<Client>,
}

impl Setup {
    pub(crate) fn client(&self) -> Result<&Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = Client::new().map_err(Error::internal)?;
        Ok(self.client.get_or_init(|| c))
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The `keyless` setting: `FREEROUTE_KEYLESS=0` beats the config, which beats `auto`.
fn keyless_mode(config: &Config) -> Keyless {
    match env("FREEROUTE_KEYLESS").as_deref().map(str::trim) {
        Some("0" | "false" | "no" | "off") => Keyless::Never,
        Some("1" | "true" | "yes" | "on") => Keyless::Always,
        _ => config.defaults.keyless.unwrap_or(Keyless::Auto),
    }
}

/// Whether to look for local servers: `FREEROUTE_DISCOVER=0` or `discover = false` turn it off.
fn discover_on(config: &Config) -> bool {
    match env("FREEROUTE_DISCOVER").as_deref().map(str::trim) {
        Some("0" | "false" | "no" | "off") => false,
        _ => config.defaults.discover.unwrap_or(true),
    }
}

/// Every provider this run may use: keyed presets and configured endpoints, local servers
/// found by themselves, and keyless services as the `keyless` setting says (in `auto`
/// mode only when the others have no model at all).
struct Providers {
    list: Vec<Provider>,
    disabled: Vec<Disabled>,
    keyless_waiting: Vec<Provider>,
    mode: Keyless,
}

fn gather_providers(config: &Config, rt: &tokio::runtime::Runtime, printer: &Printer) -> Providers {
    let resolved = providers::resolve(config, &env);
    for d in &resolved.disabled {
        printer.trace(&format!("provider {} off: {}", d.name, d.reason));
    }
    let mut list = resolved.enabled;
    if discover_on(config) {
        let ports = config
            .defaults
            .discover_ports
            .clone()
            .unwrap_or_else(|| discover::DEFAULT_PORTS.to_vec());
        let started = Instant::now();
        let open = rt.block_on(discover::open_ports(
            &ports,
            catalog::cache_dir().as_deref(),
            crate::now_ms(),
        ));
        let found = discover::providers(&open, &list);
        printer.trace(&format!(
            "discovery: ports {ports:?}, open {open:?}, in {} µs",
            started.elapsed().as_micros()
        ));
        list.extend(found);
    }
    let mode = keyless_mode(config);
    let (keyless_now, keyless_waiting) = match mode {
        Keyless::Always => (resolved.keyless, Vec::new()),
        Keyless::Never => (Vec::new(), Vec::new()),
        Keyless::Auto => (Vec::new(), resolved.keyless),
    };
    list.extend(keyless_now);
    Providers {
        list,
        disabled: resolved.disabled,
        keyless_waiting,
        mode,
    }
}

/// Config, providers, catalogs and the remembered state.
pub(crate) fn setup(
    config: &Config,
    config_path: Option<std::path::PathBuf>,
    route: &Route,
    timeout: Duration,
    rt: &tokio::runtime::Runtime,
    printer: &Printer,
) -> Result<Setup> {
    let Providers {
        list,
        disabled,
        keyless_waiting,
        mode,
    } = gather_providers(config, rt, printer);
    let mut enabled = select_providers(
        list,
        &disabled,
        &keyless_waiting,
        route,
        config_path.as_deref(),
        mode,
    )?;
    let store = Store::new(state::state_dir());
    let mut notes = Vec::new();
    let state = store.snapshot(&mut notes);
    for n in &notes {
        printer.note(n);
    }
    let client_cell: std::cell::OnceCell<Client> = std::cell::OnceCell::new();
    let make_client = || -> std::result::Result<Client, String> {
        if let Some(c) = client_cell.get() {
            return Ok(c.clone());
        }
        let c = Client::new()?;
        Ok(client_cell.get_or_init(|| c).clone())
    };
    let fetch_timeout = (timeout / 3).min(Duration::from_secs(15));
    let mut loaded = rt.block_on(catalog::load(
        &enabled,
        route.catalog,
        route.catalog_ttl,
        &make_client,
        crate::now_ms(),
        fetch_timeout,
    ));
    // `keyless = "auto"`: the keyless services only when nothing else offers a model.
    // `auto` means: no provider with a key (or a config entry) and no local server with a
    // model. A keyed provider whose catalog failed does not open the door to services that
    // may log prompts.
    let keyed = enabled.iter().any(|p| p.tier == providers::Tier::Cloud);
    let local_models = loaded
        .models
        .iter()
        .any(|m| m.tier == providers::Tier::Local);
    if !keyed && !local_models && !keyless_waiting.is_empty() && route.providers.is_empty() {
        let names: Vec<_> = keyless_waiting.iter().map(|p| p.name.as_str()).collect();
        printer.note(&format!(
            "No key is set and no local server answered: using keyless free services ({}), which may log prompts",
            names.join(", ")
        ));
        let more = rt.block_on(catalog::load(
            &keyless_waiting,
            route.catalog,
            route.catalog_ttl,
            &make_client,
            crate::now_ms(),
            fetch_timeout,
        ));
        loaded.models.extend(more.models);
        enabled.extend(keyless_waiting);
    }
    for n in &loaded.notes {
        printer.note(n);
    }
    let mut refused = Vec::new();
    for (p, why) in &loaded.failed {
        let provider = enabled.iter().find(|e| &e.name == p);
        // A key refused while listing models is a credentials problem: name the variable.
        if why.starts_with("HTTP 401") || why.starts_with("HTTP 403") {
            let var = provider
                .and_then(|e| e.key_env.clone())
                .unwrap_or_else(|| format!("the key of {p}"));
            printer.note(&format!("{p} refused its key ({why}): check {var}"));
            refused.push(var);
            continue;
        }
        // A port that is open but is no LLM server is not worth a note on every run.
        match provider {
            Some(e) if e.tier == providers::Tier::Local => {
                printer.trace(&format!("No model list from {p}: {why}"))
            }
            _ => printer.note(&format!("No model list from {p}: {why}")),
        }
    }
    if loaded.models.is_empty() && !refused.is_empty() && refused.len() == loaded.failed.len() {
        return Err(Error::config("Every provider refused its key")
            .with_hint(format!("Check {}", refused.join(", "))));
    }
    if loaded.models.is_empty() {
        if enabled.iter().all(|p| p.tier == providers::Tier::Local) && !loaded.failed.is_empty() {
            return Err(no_provider_error(config_path.as_deref(), mode));
        }
        if !loaded.failed.is_empty() {
            let names: Vec<_> = loaded
                .failed
                .iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect();
            return Err(Error::new(
                ErrorKind::AllFailed,
                format!("Could not get any model list ({})", names.join("; ")),
            )
            .with_hint("Check the network, or run once without --offline to fill the cache"));
        }
    }
    Ok(Setup {
        providers: enabled,
        loaded,
        state,
        store,
        client: client_cell,
    })
}

fn no_provider_error(config_path: Option<&Path>, mode: Keyless) -> Error {
    let or = &crate::presets::PRESETS[0];
    let where_ = config_path.map_or_else(
        || "the config file".to_string(),
        |p| p.display().to_string(),
    );
    let keyless = if mode == Keyless::Never {
        "; keyless services are off (keyless = false or FREEROUTE_KEYLESS=0)"
    } else {
        ""
    };
    Error::config(format!(
        "No provider has an API key: set {} (or another provider's key){keyless}",
        or.key_env.unwrap_or_default()
    ))
    .with_hint(format!(
        "Get a free key at {}, run a local server (Ollama, llama.cpp), or add an OpenAI-compatible provider to {where_} (freeroute config init)",
        or.signup
    ))
}

/// Applies `-p` to the providers, with clear errors for unknown or disabled names; with no
/// provider at all, says which variable to set.
fn select_providers(
    mut list: Vec<Provider>,
    disabled: &[Disabled],
    keyless_waiting: &[Provider],
    route: &Route,
    config_path: Option<&Path>,
    mode: Keyless,
) -> Result<Vec<Provider>> {
    for name in &route.providers {
        if list.iter().any(|p| &p.name == name) {
            continue;
        }
        // Naming a keyless service with -p asks for it.
        if let Some(k) = keyless_waiting.iter().find(|p| &p.name == name) {
            list.push(k.clone());
            continue;
        }
        if let Some(d) = disabled.iter().find(|d| &d.name == name) {
            return Err(Error::config(format!(
                "Provider `{name}` is off: {}",
                d.reason
            )));
        }
        let known: Vec<_> = list.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::usage(format!(
            "Unknown provider `{name}` (-p); enabled: {}",
            known.join(", ")
        )));
    }
    if list.is_empty() && keyless_waiting.is_empty() {
        return Err(no_provider_error(config_path, mode));
    }
    Ok(list)
}

pub(crate) fn rng() -> fastrand::Rng {
    match env("FREEROUTE_SEED").and_then(|s| s.parse().ok()) {
        Some(seed) => fastrand::Rng::with_seed(seed),
        None => fastrand::Rng::new(),
    }
}

fn ask(args: &AskArgs, config_flag: Option<&Path>, printer: &mut Printer) -> Result<()> {
    let started = Instant::now();
    let (config, config_path) = config::load(config_flag)?;
    let input = input::gather(&input::Sources {
        words: &args.prompt,
        images: &args.images,
        tools: args.tools.as_deref(),
        schema: args.schema.as_deref(),
        messages: args.messages.as_deref(),
    })?;
    let previous = if args.cont {
        let store = Store::new(state::state_dir());
        Some(store.last_conversation().ok_or_else(|| {
            Error::usage("No earlier conversation to continue")
                .with_hint("Ask something first: -c continues the last answered run")
        })?)
    } else {
        None
    };
    let req = request::resolve(
        args,
        &config,
        input,
        previous,
        Printer::stdout_is_terminal(),
    )?;
    let deadline = started + req.timeout;
    let rt = runtime()?;
    let setup = setup(&config, config_path, &req.route, req.timeout, &rt, printer)?;
    let mut rng = rng();
    let plan = make_plan(&req, &setup, &mut rng, printer);
    // A translation too long for every model is split at paragraphs (DESIGN §4).
    let jobs: Vec<(Request, Plan)> =
        match split_translation(&req, &plan, &setup.loaded.models, &setup.state, &mut rng) {
            Some(pieces) => {
                printer.note(&format!(
                    "The text is too long for one model: translating it in {} pieces",
                    pieces.len()
                ));
                pieces
            }
            None => vec![(req.clone(), plan)],
        };
    if req.dry_run {
        print_plan(&jobs[0].1, &jobs[0].0, printer);
        return match jobs.iter().find(|(_, p)| p.candidates.is_empty()) {
            // DESIGN §1: a dry run exits 3 whenever no candidate exists.
            Some((r, p)) => Err(Error {
                kind: ErrorKind::NoEligibleModel,
                ..no_eligible(p, &r.needs)
            }),
            None => Ok(()),
        };
    }
    if let Some((r, p)) = jobs.iter().find(|(_, p)| p.candidates.is_empty()) {
        return Err(no_eligible(p, &r.needs));
    }
    let client = setup.client()?;
    let limiter = RefCell::new(Limiter::new(
        &setup.providers,
        &setup.state,
        crate::now_ms(),
    ));
    let ledger = attempt::Ledger::new(&limiter);
    let mut sink = Sink {
        printer,
        ends_with_newline: true,
        printed_any: false,
    };
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run_jobs(client, &setup.providers, &jobs, deadline, &mut sink, &ledger) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let (printed_any, ends_with_newline) = (sink.printed_any, sink.ends_with_newline);
    let attempts = ledger.into_attempts();
    // The answer goes out first: nothing that happens to the state may cost it.
    let recorded = attempts.clone();
    let result = deliver(
        &setup,
        &req,
        outcome,
        attempts,
        started,
        printed_any,
        ends_with_newline,
        printer,
    );
    remember(&setup, &recorded, &req, printer);
    result
}

/// Prints the outcome of a run (answer, JSON, or the error to return) and keeps the
/// conversation of an answered run.
#[allow(clippy::too_many_arguments)]
fn deliver(
    setup: &Setup,
    req: &Request,
    outcome: Option<std::result::Result<Vec<attempt::Success>, Stop>>,
    attempts: Vec<AttemptRecord>,
    started: Instant,
    printed_any: bool,
    ends_with_newline: bool,
    printer: &Printer,
) -> Result<()> {
    let close_line = |printer: &Printer| {
        if printed_any && !ends_with_newline {
            printer.stdout("\n");
        }
    };
    let successes = match outcome {
        None => {
            close_line(printer);
            return Err(Error::new(ErrorKind::Interrupted, "Interrupted").with_attempts(attempts));
        }
        Some(Err(Stop::OutputClosed)) => return Ok(()),
        Some(Err(Stop::Error(mut e))) => {
            close_line(printer);
            e.attempts = attempts;
            return Err(e);
        }
        Some(Ok(s)) => s,
    };
    let total_ms = started.elapsed().as_millis() as u64;
    for s in successes.iter().filter(|s| s.paid) {
        printer.note(&format!(
            "{}/{} is a paid model (--allow-paid)",
            s.provider, s.model
        ));
    }
    for s in &successes {
        if let Some(note) = setup
            .providers
            .iter()
            .find(|p| p.name == s.provider)
            .and_then(|p| p.data_note)
        {
            printer.note(&format!(
                "Answered by {} ({note}); it may log prompts",
                s.provider
            ));
        }
    }
    note_refused_keys(&setup.providers, &attempts, printer);
    let answer = crate::outcome::answer(&successes, attempts, total_ms);
    if req.json {
        printer.json(&answer);
        save_conversation(setup, req, &answer.content, &answer.tool_calls, printer);
        return Ok(());
    }
    if req.stream {
        close_line(printer);
    } else if !answer.content.is_empty() {
        printer.answer(&answer.content);
    }
    for call in &answer.tool_calls {
        printer.stdout(&format!("{call}\n"));
    }
    save_conversation(setup, req, &answer.content, &answer.tool_calls, printer);
    Ok(())
}

/// A provider that refused its key while another answered: say which variable to fix.
pub(crate) fn note_refused_keys(
    providers: &[Provider],
    attempts: &[AttemptRecord],
    printer: &Printer,
) {
    let mut named = Vec::new();
    for a in attempts
        .iter()
        .filter(|a| a.outcome == crate::outcome::AttemptOutcome::AuthFailed)
    {
        if named.contains(&a.provider) {
            continue;
        }
        named.push(a.provider.clone());
        let var = providers
            .iter()
            .find(|p| p.name == a.provider)
            .and_then(|p| p.key_env.clone());
        printer.note(&format!(
            "{} refused its key{}; it is skipped for this run",
            a.provider,
            var.map(|v| format!(": check {v}")).unwrap_or_default()
        ));
    }
}

pub(crate) fn make_plan(
    req: &Request,
    setup: &Setup,
    rng: &mut fastrand::Rng,
    printer: &Printer,
) -> Plan {
    let plan = plan::plan(
        &setup.loaded.models,
        &req.route,
        &req.needs,
        &setup.state,
        crate::now_ms(),
        rng,
    );
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
        printer.trace(&format!("dropped {}/{}: {}", d.provider, d.model, d.reason));
    }
    plan
}

/// When a translation fits no model, the pieces (with their plans) that each fit the
/// largest eligible context; `None` when no split is needed or none would help.
pub(crate) fn split_translation(
    req: &Request,
    plan: &Plan,
    models: &[crate::catalog::Model],
    state: &State,
    rng: &mut fastrand::Rng,
) -> Option<Vec<(Request, Plan)>> {
    let t = req.translation.as_ref()?;
    if !plan.candidates.is_empty() {
        return None;
    }
    let any_size = Needs {
        context_tokens: 0,
        ..req.needs
    };
    let now = crate::now_ms();
    let open = plan::plan(models, &req.route, &any_size, state, now, rng);
    let largest = open
        .candidates
        .iter()
        .filter_map(|c| c.model.context)
        .max()?;
    let system = request::estimate_tokens(&[crate::wire::openai::Message::text(
        "system",
        t.system.clone(),
    )]);
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
                let p = plan::plan(models, &r.route, &r.needs, state, now, rng);
                (r, p)
            })
            .collect(),
    )
}

/// Runs each job (one, or the pieces of a split translation) in order, sharing the
/// deadline; attempts of a split run carry their piece index.
pub(crate) async fn run_jobs(
    client: &Client,
    providers: &[Provider],
    jobs: &[(Request, Plan)],
    deadline: Instant,
    sink: &mut dyn attempt::TokenSink,
    ledger: &attempt::Ledger<'_>,
) -> std::result::Result<Vec<attempt::Success>, Stop> {
    let log = &ledger.log;
    let mut out = Vec::new();
    for (i, (req, plan)) in jobs.iter().enumerate() {
        if i > 0 && req.stream {
            sink.token("\n\n");
        }
        let before = log.borrow().len();
        let result = attempt::run(client, providers, plan, req, deadline, sink, ledger).await;
        if jobs.len() > 1 {
            for a in log.borrow_mut()[before..].iter_mut() {
                a.piece = Some(i);
            }
        }
        out.push(result?);
    }
    Ok(out)
}

/// Keeps the answered conversation for `--continue` (state dir, last few only).
fn save_conversation(
    setup: &Setup,
    req: &Request,
    content: &str,
    tool_calls: &[serde_json::Value],
    printer: &Printer,
) {
    let mut messages = req.messages.clone();
    let mut reply = crate::wire::openai::Message::text("assistant", content);
    if !tool_calls.is_empty() {
        let calls: Vec<_> = tool_calls
            .iter()
            .map(|c| {
                json!({"id": c["id"], "type": "function", "function": {
                    "name": c["name"],
                    "arguments": match &c["arguments"] { serde_json::Value::String(s) => s.clone(), other => other.to_string() },
                }})
            })
            .collect();
        reply
            .extra
            .insert("tool_calls".into(), serde_json::Value::Array(calls));
    }
    messages.push(reply);
    if let Err(e) = setup.store.save_conversation(&messages) {
        printer.note(&format!(
            "Could not keep the conversation for --continue: {e}"
        ));
    }
}

/// Folds the run into the state and the request log. A failure to save is one warning,
/// never fatal.
fn remember(setup: &Setup, attempts: &[AttemptRecord], req: &Request, printer: &Printer) {
    if attempts.is_empty() {
        return;
    }
    let now = crate::now_ms();
    let ok = attempts
        .iter()
        .any(|a| a.outcome == crate::outcome::AttemptOutcome::Ok);
    let mut line = json!({
        "time_ms": now,
        "ok": ok,
        "attempts": attempts,
        "timeout_ms": req.timeout.as_millis() as u64,
    });
    if req.log_prompts {
        // Only when the config opts in: the last user message's text.
        let prompt = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| match &m.content {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        line["prompt"] = json!(prompt);
    }
    let line = line.to_string();
    let limits = |name: &str| {
        let p = setup.providers.iter().find(|p| p.name == name);
        p.map(|p| (p.limits, p.day_offset_ms)).unwrap_or_default()
    };
    match setup
        .store
        .update(|s| s.record_attempts(attempts, now, &limits), Some(&line))
    {
        Ok(notes) => notes.iter().for_each(|n| printer.note(n)),
        Err(e) => printer.note(&format!("Running without memory: {e}")),
    }
}

pub(crate) fn no_eligible(plan: &Plan, needs: &Needs) -> Error {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for d in &plan.dropped {
        // Group by the reason's wording up to any number, e.g. "not free", "lacks image input".
        let key = d
            .reason
            .split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches(" for")
            .to_string();
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    let detail = if counts.is_empty() {
        "the providers listed no models".to_string()
    } else {
        counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut need = Vec::new();
    if needs.vision {
        need.push("image input");
    }
    if needs.tools {
        need.push("tool calling");
    }
    if needs.schema {
        need.push("structured output");
    }
    let what = if need.is_empty() {
        String::new()
    } else {
        format!(" with {}", need.join(" and "))
    };
    // Models that match but whose provider is out of quota or blocked for now: not a
    // question of capabilities or filters (exit 3) but of no model answering now (exit 4).
    if plan.dropped.iter().any(|d| d.for_now) {
        return Error::new(
            ErrorKind::AllFailed,
            format!("No model{what} can be asked now: {detail}"),
        )
        .with_hint("See `freeroute stats` for when each provider's quota resets");
    }
    Error::new(
        ErrorKind::NoEligibleModel,
        format!("No eligible model{what}: {detail}"),
    )
    .with_hint("See `freeroute --dry-run -v \"…\"` for each model's reason")
}

/// The worst-case deadline plan of a sequential run: each candidate's first-token timeout
/// if every one before it used all of its own (DESIGN §3; `attempt::first_token_by`).
fn deadline_plan(plan: &Plan, req: &Request) -> Vec<Duration> {
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

fn print_plan(plan: &Plan, req: &Request, printer: &Printer) {
    let timeouts = deadline_plan(plan, req);
    let timeout_of = |i: usize| timeouts.get(i).map(|d| d.as_millis() as u64);
    if req.json {
        #[derive(Serialize)]
        struct C<'a> {
            provider: &'a str,
            model: &'a str,
            score: f64,
            why: String,
            /// The score's parts, each to two decimals.
            parts: crate::plan::Score,
            /// Worst-case first-token timeout; absent past the attempt limit.
            first_token_timeout_ms: Option<u64>,
        }
        let candidates: Vec<C> = plan
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| C {
                provider: &c.model.provider,
                model: &c.model.id,
                score: round(c.score.total),
                why: c.score.explain(),
                parts: c.score.rounded(),
                first_token_timeout_ms: timeout_of(i),
            })
            .collect();
        printer.json(&json!({"candidates": candidates, "dropped": plan.dropped}));
        return;
    }
    let mut s = String::new();
    s.push_str(&format!(
        "{} candidates, in the order they would be tried (deadline {:.0}s, at most {} attempts, race {}{}):\n",
        plan.candidates.len(),
        req.timeout.as_secs_f64(),
        req.attempts,
        req.race,
        match req.hedge {
            Some(request::Hedge::After(d)) => format!(", hedge after {} ms", d.as_millis()),
            Some(request::Hedge::Auto) => ", hedge auto".into(),
            None => String::new(),
        }
    ));
    for (i, c) in plan.candidates.iter().enumerate() {
        let mut t = timeout_of(i).map_or("not reached".to_string(), |ms| {
            format!("first token within {:.1}s", ms as f64 / 1000.0)
        });
        if let Some(until) = c.cooling_until_ms {
            let wait = crate::plan::filter::format_wait(until, crate::now_ms());
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
            s.push_str(&format!("     {}/{}: {}\n", d.provider, d.model, d.reason));
        }
    }
    printer.stdout(&s);
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn models(args: &ModelsArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let (config, config_path) = config::load(config_flag)?;
    let route = request::resolve_route(&args.route, &config);
    let rt = runtime()?;
    let setup = setup(
        &config,
        config_path,
        &route,
        Duration::from_secs(30),
        &rt,
        printer,
    )?;
    let needs = Needs {
        context_tokens: 0,
        ..Needs::default()
    };
    let plan = plan::plan(
        &setup.loaded.models,
        &route,
        &needs,
        &setup.state,
        crate::now_ms(),
        &mut rng(),
    );
    if args.json {
        let rows: Vec<_> = plan
            .candidates
            .iter()
            .map(|c| {
                json!({
                    "provider": c.model.provider,
                    "model": c.model.id,
                    "context": c.model.context,
                    "capabilities": c.model.caps,
                    "free": c.model.free,
                    "score": round(c.score.total),
                    "why": c.score.explain(),
                })
            })
            .collect();
        printer.json(&rows);
        return Ok(());
    }
    let mut s = String::new();
    s.push_str(&format!(
        "{:<4}{:<12}{:<56}{:>9}  {:<18}{}\n",
        "#", "PROVIDER", "MODEL", "CONTEXT", "CAPABILITIES", "SCORE"
    ));
    for (i, c) in plan.candidates.iter().enumerate() {
        let caps = [
            (c.model.caps.vision, "vision"),
            (c.model.caps.tools, "tools"),
            (c.model.caps.schema, "schema"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",");
        let ctx = c.model.context.map_or("?".to_string(), |c| c.to_string());
        s.push_str(&format!(
            "{:<4}{:<12}{:<56}{:>9}  {:<18}{:.2}\n",
            i + 1,
            c.model.provider,
            c.model.id,
            ctx,
            if caps.is_empty() { "text".into() } else { caps },
            c.score.total
        ));
    }
    printer.stdout(&s);
    if plan.candidates.is_empty() {
        return Err(no_eligible(&plan, &needs));
    }
    Ok(())
}

fn config_cmd(args: &ConfigArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let path = config::path(config_flag)
        .ok_or_else(|| Error::config("Cannot find a config directory; pass --config PATH"))?;
    match args.action {
        ConfigAction::Path => {
            printer.stdout(&format!("{}\n", path.display()));
            Ok(())
        }
        ConfigAction::Init => {
            if path.exists() && !args.force {
                return Err(Error::usage(format!("{} already exists", path.display()))
                    .with_hint("Pass --force to overwrite it"));
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::config(format!("Cannot create {}: {e}", dir.display())))?;
            }
            state::write_atomic(&path, config::STARTER.as_bytes())
                .map_err(|e| Error::config(format!("Cannot write {}: {e}", path.display())))?;
            printer.stdout(&format!("{}\n", path.display()));
            Ok(())
        }
        ConfigAction::Show => {
            let (config, loaded_from) = config::load(config_flag)?;
            let rt = runtime()?;
            let Providers {
                list,
                disabled,
                keyless_waiting,
                mode,
            } = gather_providers(&config, &rt, printer);
            let mut s = String::new();
            s.push_str(&format!(
                "# config file: {}\n",
                loaded_from.map_or_else(
                    || format!("{} (not present; built-in defaults)", path.display()),
                    |p| p.display().to_string()
                )
            ));
            let d = &config.defaults;
            s.push_str("[defaults]\n");
            s.push_str(&format!(
                "timeout = {}\n",
                d.timeout.unwrap_or(request::DEFAULT_TIMEOUT_SECS)
            ));
            s.push_str(&format!(
                "attempts = {}\n",
                d.attempts.unwrap_or(request::DEFAULT_ATTEMPTS)
            ));
            s.push_str(&format!(
                "catalog_ttl = {}\n",
                d.catalog_ttl.unwrap_or(request::DEFAULT_CATALOG_TTL)
            ));
            s.push_str(&format!(
                "translate_to = {:?}\n",
                d.translate_to.as_deref().unwrap_or("English")
            ));
            s.push_str(&format!(
                "prefer = {:?}\nexclude = {:?}\n",
                d.prefer, d.exclude
            ));
            let keyless = match mode {
                Keyless::Auto => "\"auto\"  # only when no other provider has a model",
                Keyless::Always => "true",
                Keyless::Never => "false",
            };
            s.push_str(&format!("keyless = {keyless}\n"));
            s.push_str(&format!(
                "discover = {}\ndiscover_ports = {:?}\n",
                discover_on(&config),
                d.discover_ports
                    .clone()
                    .unwrap_or_else(|| discover::DEFAULT_PORTS.to_vec())
            ));
            let describe = |p: &Provider, status: &str, s: &mut String| {
                s.push_str(&format!("\n[providers.{}]  # {status}\n", p.name));
                s.push_str(&format!("base_url = {:?}\n", p.base_url));
                match (&p.key_env, &p.key) {
                    (Some(var), Some(_)) => s.push_str(&format!("api_key_env = {var:?}  # set\n")),
                    (Some(var), None) => s.push_str(&format!(
                        "api_key_env = {var:?}  # not set; none needed here\n"
                    )),
                    (None, _) => s.push_str("# no key\n"),
                }
                if let Some(preset) = providers::preset(&p.name) {
                    s.push_str(&format!("# free allowance: {}\n", preset.allowance));
                }
                if let Some(m) = &p.models {
                    s.push_str(&format!("# {} models listed\n", m.len()));
                }
            };
            for p in &list {
                let status = match p.tier {
                    providers::Tier::Cloud if p.configured => "on: added in the config",
                    providers::Tier::Cloud => "on: its key variable is set",
                    providers::Tier::Local => "on: found on a loopback port",
                    providers::Tier::Keyless => "on: keyless = true",
                };
                describe(p, status, &mut s);
            }
            for p in &keyless_waiting {
                describe(
                    p,
                    "standby: keyless, used only when no other provider has a model",
                    &mut s,
                );
            }
            for d in &disabled {
                s.push_str(&format!("\n[providers.{}]  # off: {}\n", d.name, d.reason));
            }
            printer.stdout(&s);
            Ok(())
        }
    }
}

/// `freeroute stats`: what the router remembers, as a table or one JSON object.
fn stats(args: &StatsArgs, printer: &Printer) -> Result<()> {
    let store = Store::new(state::state_dir());
    if args.reset {
        store
            .reset()
            .map_err(|e| Error::internal(format!("Cannot reset the state: {e}")))?;
        printer
            .note("Forgot all remembered health, latency, cool-downs, quotas and the request log");
        return Ok(());
    }
    let mut notes = Vec::new();
    let st = store.snapshot(&mut notes);
    notes.iter().for_each(|n| printer.note(n));
    let now = crate::now_ms();
    let (runs, answered) = store
        .log_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map_or((0, 0), |text| {
            let runs = text.lines().filter(|l| !l.trim().is_empty()).count();
            let ok = text.lines().filter(|l| l.contains("\"ok\":true")).count();
            (runs, ok)
        });
    let models: Vec<_> = st
        .models
        .iter()
        .map(|(key, m)| {
            let (provider, model) = key.split_once('/').unwrap_or((key.as_str(), ""));
            json!({
                "provider": provider,
                "model": model,
                "success_ratio": round(m.health(now)),
                "ok": round(m.ok),
                "failed": round(m.fail),
                "first_token_ms": m.ttft_ms.map(|t| t.round()),
                "first_token_dev_ms": m.ttft_dev_ms.map(|t| t.round()),
                "rest_of_answer_ms": m.gen_ms.map(|t| t.round()),
                "expected_answer_ms": m.expected_answer_ms().map(|t| t.round()),
                "recent_requests": round(m.load(now)),
                "busy_at_requests": m.busy_at.map(round),
                "tokens_per_sec": m.tps.map(round),
                "cooldown_until_ms": (m.cooldown_until_ms > now).then_some(m.cooldown_until_ms),
                "last_outcome": m.last_outcome,
                "last_error": m.last_error,
                "missing": m.misses,
                "too_long_at_tokens": m.too_long_at,
                "updated_ms": m.updated_ms,
            })
        })
        .collect();
    let providers: Vec<_> = st
        .providers
        .iter()
        .map(|(name, p)| {
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
            let today = p.day == now / 86_400_000;
            let this_minute = now < p.minute_start_ms + crate::minute_ms();
            json!({
                "provider": name,
                "requests_this_minute": if this_minute { p.minute_count } else { 0 },
                "requests_today": if today { p.day_count } else { 0 },
                "per_minute_limit": p.per_minute,
                "per_day_limit": p.day_limit.or(p.per_day),
                "skipped_until_ms": block.as_ref().map(|b| b.0),
                "skipped_because": block.as_ref().map(|b| b.1.clone()),
            })
        })
        .collect();
    if args.json {
        printer.json(&json!({
            "state_dir": store.dir(),
            "models": models,
            "providers": providers,
            "runs_logged": runs,
            "runs_answered": answered,
        }));
        return Ok(());
    }
    let mut s = String::new();
    if let Some(d) = store.dir() {
        s.push_str(&format!(
            "# {}: {runs} runs logged, {answered} answered\n",
            d.display()
        ));
    }
    if models.is_empty() && providers.is_empty() {
        s.push_str("Nothing remembered yet.\n");
        printer.stdout(&s);
        return Ok(());
    }
    s.push_str(&format!(
        "{:<60} {:>7} {:>9} {:>8} {:>10}  {}\n",
        "MODEL", "SUCCESS", "1ST TOKEN", "TOK/S", "COOL-DOWN", "LAST"
    ));
    for (m, (key, _)) in models.iter().zip(&st.models) {
        let cool = m["cooldown_until_ms"]
            .as_u64()
            .map_or("-".to_string(), |t| {
                crate::plan::filter::format_wait(t, now)
            });
        let last = match (m["last_outcome"].as_str(), m["last_error"].as_str()) {
            (Some(o), Some(e)) => format!("{o}: {}", e.chars().take(60).collect::<String>()),
            (Some(o), None) => o.to_string(),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "{:<60} {:>6.0}% {:>9} {:>8} {:>10}  {}\n",
            key,
            m["success_ratio"].as_f64().unwrap_or(0.5) * 100.0,
            m["first_token_ms"]
                .as_f64()
                .map_or("-".into(), |t| format!("{t:.0} ms")),
            m["tokens_per_sec"]
                .as_f64()
                .map_or("-".into(), |t| format!("{t:.0}")),
            cool,
            last
        ));
    }
    s.push_str(&format!(
        "\n{:<20} {:>12} {:>12}  {}\n",
        "PROVIDER", "THIS MINUTE", "TODAY (UTC)", "SKIPPED"
    ));
    for p in &providers {
        let limit = |v: &serde_json::Value| v.as_u64().map_or(String::new(), |n| format!("/{n}"));
        let skipped = match (
            p["skipped_until_ms"].as_u64(),
            p["skipped_because"].as_str(),
        ) {
            (Some(t), Some(why)) => {
                format!("for {} ({why})", crate::plan::filter::format_wait(t, now))
            }
            _ => "-".into(),
        };
        s.push_str(&format!(
            "{:<20} {:>12} {:>12}  {}\n",
            p["provider"].as_str().unwrap_or(""),
            format!(
                "{}{}",
                p["requests_this_minute"],
                limit(&p["per_minute_limit"])
            ),
            format!("{}{}", p["requests_today"], limit(&p["per_day_limit"])),
            skipped
        ));
    }
    printer.stdout(&s);
    Ok(())
}
