//! One function per action, calling the stages in the order of DESIGN §7:
//! settings + input → request → session (plan, ask, record) → output. It holds no
//! policy: each decision lives in the stage that owns it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{
    AskArgs, Cli, Command, ConfigAction, ConfigArgs, ModelsArgs, ServeArgs, StatsArgs,
};
use crate::config;
use crate::error::{Error, ErrorKind, Result};
use crate::input;
use crate::outcome::AttemptRecord;
use crate::output::{Printer, Sink, report};
use crate::providers;
use crate::request::{self, Needs, Request};
use crate::session::{self, LogLine, Session, Stop, Success};
use crate::settings::{self, Ask, Sources};
use crate::store::{FileStore, Store};

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let mut printer = Printer::new(cli.global.quiet, cli.global.verbose, settings::no_color());
    // `--dry-run --json` has printed its plan; an empty plan adds no second JSON object.
    let json = cli.command.is_none() && cli.ask.json && !cli.ask.dry_run;
    let config = cli.global.config.as_deref();
    let result = match cli.command {
        None => ask(&cli.ask, config, &mut printer),
        Some(Command::Models(args)) => models(&args, config, &printer),
        Some(Command::Config(args)) => config_cmd(&args, config, &printer),
        Some(Command::Stats(args)) => stats(&args, config, &printer),
        Some(Command::Batch(args)) => crate::batch::run(&args, config, &printer),
        Some(Command::Serve(args)) => serve(&args, config, &printer),
    };
    match printer.checked(result) {
        Ok(()) => 0,
        Err(err) => {
            if json {
                printer.failure_json(&err);
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
        Printer::new(true, false, true).failure_json(&Error::usage(message));
    }
    // Printing fails only when stderr is closed; the exit code still tells.
    let _ = err.print();
    err.exit_code()
}

fn ask(args: &AskArgs, config_flag: Option<&Path>, printer: &mut Printer) -> Result<()> {
    let started = Instant::now();
    crate::cli::subcommand_typo(&args.prompt)?;
    let (config, config_path) = config::load(config_flag)?;
    let settings = Ask::resolve(args, &config, Printer::stdout_is_terminal())?;
    let mut input = input::gather(&input::Sources {
        words: &args.prompt,
        images: &args.images,
        tools: args.tools.as_deref(),
        schema: args.schema.as_deref(),
        messages: args.messages.as_deref(),
        within: settings.timeout,
    })?;
    let previous = if args.cont {
        let host = FileStore::new(crate::store::file::state_dir());
        let mut earlier = host.last_conversation().ok_or_else(|| {
            Error::usage("No earlier conversation to continue")
                .with_hint("Ask something first: -c continues the last answered run")
        })?;
        input.kept = input::restore_images(&mut earlier, settings.timeout)?;
        Some(earlier)
    } else {
        None
    };
    let req = request::build(&settings, input, previous)?;
    let deadline = started + req.timeout;
    let rt = session::runtime()?;
    let session = Session::open(
        &config,
        config_path.as_deref(),
        &Sources::resolve(&config),
        &req.route,
        (!req.dry_run).then_some(&req.needs),
        req.timeout,
        settings::rng(),
        &rt,
        printer,
    )?;
    let jobs = session.plan(&req);
    report::jobs(&jobs, printer);
    if req.dry_run {
        report::dry_run(&jobs[0], printer);
        // DESIGN §1: a dry run exits 3 whenever no candidate exists.
        return Session::unanswerable(&jobs).map_or(Ok(()), |mut e| {
            e.kind = ErrorKind::NoEligibleModel;
            Err(e)
        });
    }
    if let Some(e) = Session::unanswerable(&jobs) {
        return Err(e);
    }
    let mut sink = Sink {
        printer,
        ends_with_newline: true,
        printed_any: false,
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let run = rt.block_on(session.ask(&jobs, deadline, &mut sink, ctrl_c));
    sink.end_line(matches!(run.result, Some(Err(Stop::OutputClosed))));
    // The answer goes out first: nothing that happens to the memory may cost it.
    let result = deliver(&session, &req, run.result, &run.attempts, started, printer);
    // Catalogs the run answered without are learned now, after a reader of stdout has
    // seen its end (a failure's JSON is printed by the caller, so stdout stays open then).
    let pending = session.catalogs_pending();
    if pending && result.is_ok() {
        printer.close_stdout();
    }
    for n in session.record(&run.attempts, &LogLine::of(&req, &run.attempts, false)) {
        printer.note(&n);
    }
    if pending {
        let left = deadline.saturating_duration_since(Instant::now());
        for n in session.learn_catalogs(left, &rt) {
            printer.note(&n);
        }
    }
    result
}

/// Prints the outcome of a run (answer, JSON, or the error to return) and keeps the
/// conversation of an answered run.
fn deliver(
    session: &Session,
    req: &Request,
    result: Option<std::result::Result<Vec<Success>, Stop>>,
    attempts: &[AttemptRecord],
    started: Instant,
    printer: &Printer,
) -> Result<()> {
    let successes = match result {
        None => {
            return Err(
                Error::new(ErrorKind::Interrupted, "Interrupted").with_attempts(attempts.to_vec())
            );
        }
        Some(Err(Stop::OutputClosed)) => return Ok(()),
        Some(Err(Stop::Error(e))) => return Err(e.with_attempts(attempts.to_vec())),
        Some(Ok(s)) => s,
    };
    for n in session.answer_notes(&successes, attempts) {
        printer.note(&n);
    }
    let total_ms = started.elapsed().as_millis() as u64;
    let answer = crate::outcome::answer(&successes, attempts.to_vec(), total_ms);
    printer.outcome(&answer, req.json, req.stream);
    if let Err(e) = session.save_conversation(req, &answer.content, &answer.tool_calls) {
        printer.note(&format!(
            "Could not keep the conversation for --continue: {e}"
        ));
    }
    Ok(())
}

/// `freeroute serve`: one session for the life of the server, every request asked through it
/// (DESIGN §8).
fn serve(args: &ServeArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let (config, config_path) = config::load(config_flag)?;
    let settings = settings::Serve::resolve(args, &config)?;
    let rt = session::runtime()?;
    let session = Session::open(
        &config,
        config_path.as_deref(),
        &Sources::resolve(&config),
        &settings.ask.route,
        None,
        settings.ask.timeout,
        settings::rng(),
        &rt,
        printer,
    )?;
    crate::serve::run(session, settings, &rt, printer)
}

fn models(args: &ModelsArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let (config, config_path) = config::load(config_flag)?;
    let route = settings::route(&args.route, &config);
    let rt = session::runtime()?;
    let session = Session::open(
        &config,
        config_path.as_deref(),
        &Sources::resolve(&config),
        &route,
        None,
        Duration::from_secs(30),
        settings::rng(),
        &rt,
        printer,
    )?;
    let plan = session.plan_of(&route, &Needs::default());
    report::trace_plan(&plan, printer);
    report::models(&plan, args.json, printer);
    match plan.candidates.is_empty() {
        true => Err(session::unknown_model(&route.models, &plan)
            .unwrap_or_else(|| session::no_eligible(&plan, &Needs::default()))),
        false => Ok(()),
    }
}

fn config_cmd(args: &ConfigArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let path = config::path(config_flag)
        .ok_or_else(|| Error::config("Cannot find a config directory; pass --config PATH"))?;
    match args.action {
        ConfigAction::Path => {
            printer.stdout(&format!("{}\n", path.display()));
        }
        ConfigAction::Init => {
            config::write_starter(&path, args.force)?;
            printer.stdout(&format!("{}\n", path.display()));
        }
        ConfigAction::Show => {
            let (config, loaded_from) = config::load(config_flag)?;
            let sources = Sources::resolve(&config);
            let rt = session::runtime()?;
            let found = session::gather(&config, &sources, &rt, printer);
            let local_models = session::local_models(&found, &config, &sources, &rt);
            let file = loaded_from.map_or_else(
                || format!("{} (not present; built-in defaults)", path.display()),
                |p| p.display().to_string(),
            );
            let shown = report::ShownDefaults::of(&config, &sources);
            report::config(&file, &shown, &found, &local_models, printer);
        }
    }
    Ok(())
}

/// `freeroute stats`: what the router remembers, as a table or one JSON object: the shared
/// memory's view when `[state]` points at one that answers (DESIGN §9), else this host's.
fn stats(args: &StatsArgs, config_flag: Option<&Path>, printer: &Printer) -> Result<()> {
    let (config, _) = config::load(config_flag)?;
    let memory = settings::Memory::resolve(&config);
    let resolved = providers::resolve(&config, &settings::env_var);
    let providers: Vec<_> = resolved
        .enabled
        .into_iter()
        .chain(resolved.keyless)
        .collect();
    if args.reset {
        let note = crate::store::forget(&memory, &providers, args.shared)?;
        printer.note(&note);
        return Ok(());
    }
    let dir = crate::store::file::state_dir();
    let host = FileStore::new(dir.clone());
    let (store, fault) = crate::store::open(&memory, &providers, dir);
    if let Some(note) = &fault {
        printer.note(note);
    }
    let shared = (memory.redis_url.is_some() && fault.is_none())
        .then(|| store.location())
        .flatten();
    report::stats(
        &store.snapshot().bounded(crate::now_ms()),
        host.location().as_deref(),
        shared.as_deref(),
        host.log_counts(),
        crate::now_ms(),
        args.json,
        printer,
    );
    Ok(())
}
