//! The only module that prints (DESIGN §4): answers and JSON on stdout; notes, the `-v`
//! trace, errors, the spinner and batch's progress bar on stderr. Colour only on a
//! terminal and never with `NO_COLOR`; a spinner appears only when stderr is a terminal
//! and `--quiet` is off. `report` renders the listings (`--dry-run`, `models`, `stats`,
//! `config show`) from serializable rows.
#![allow(clippy::print_stderr)]

pub mod report;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::attempt::TokenSink;
use crate::error::Error;

pub struct Printer {
    pub quiet: bool,
    pub verbose: bool,
    color: bool,
    stderr_tty: bool,
    spinner: Option<ProgressBar>,
}

impl Printer {
    pub fn new(quiet: bool, verbose: bool, no_color: bool) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        let color = stderr_tty && !no_color;
        Printer {
            quiet,
            verbose,
            color,
            stderr_tty,
            spinner: None,
        }
    }

    pub fn stdout_is_terminal() -> bool {
        std::io::stdout().is_terminal()
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn eprint(&self, line: &str) {
        match &self.spinner {
            Some(s) => s.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// A note for the user (suppressed by `--quiet`).
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            self.eprint(&format!("{} {msg}", self.paint("33", "note:")));
        }
    }

    /// A routing trace line (`-v` only).
    pub fn trace(&self, msg: &str) {
        if self.verbose {
            self.eprint(&format!("{} {msg}", self.paint("2", "[freeroute]")));
        }
    }

    /// The run's error, with its hint on a line of its own.
    pub fn error(&self, err: &Error) {
        self.clear_spinner();
        eprintln!("{} {}", self.paint("31", "error:"), err.message);
        if let Some(h) = &err.hint {
            eprintln!("{} {h}", self.paint("36", "hint:"));
        }
    }

    pub fn start_spinner(&mut self) {
        if self.stderr_tty && !self.quiet && self.spinner.is_none() {
            let s = ProgressBar::new_spinner();
            s.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
            );
            s.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some(s);
        }
    }

    pub fn clear_spinner(&self) {
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
    }

    /// Writes text to stdout; false when the reader went away.
    pub fn stdout(&self, text: &str) -> bool {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
    }

    /// Plain mode: the answer followed by exactly one newline.
    pub fn answer(&self, text: &str) -> bool {
        self.clear_spinner();
        if text.ends_with('\n') {
            self.stdout(text)
        } else {
            self.stdout(&format!("{text}\n"))
        }
    }

    /// One JSON document on a line of its own.
    pub fn json<T: Serialize>(&self, value: &T) -> bool {
        self.clear_spinner();
        let mut s = serde_json::to_string(value).expect("output serializes");
        s.push('\n');
        self.stdout(&s)
    }

    /// The run's failure as the contract's one JSON object (DESIGN §4).
    pub fn failure_json(&self, err: &Error) -> bool {
        self.json(&Failure::of(err, None))
    }

    /// A line of a report (batch's summary, serve's request log), on stderr whatever
    /// `--quiet` says.
    pub fn report(&self, line: &str) {
        self.clear_spinner();
        eprintln!("{line}");
    }

    /// Batch's progress bar: drawn on stderr when it is a terminal and `--quiet` is off.
    pub fn progress_bar(&self, total: Option<u64>) -> ProgressBar {
        if self.quiet || !self.stderr_tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// `{"ok": false, "error": {"kind", "message"}, "attempts": […]}`, and a batch item's `id`.
#[derive(Serialize)]
pub struct Failure<'a> {
    pub ok: bool,
    pub error: FailureError<'a>,
    pub attempts: &'a [crate::outcome::AttemptRecord],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
pub struct FailureError<'a> {
    pub kind: crate::error::ErrorKind,
    pub message: &'a str,
}

impl<'a> Failure<'a> {
    pub fn of(err: &'a Error, id: Option<&'a serde_json::Value>) -> Self {
        Failure {
            ok: false,
            error: FailureError {
                kind: err.kind,
                message: &err.message,
            },
            attempts: &err.attempts,
            id,
        }
    }
}

/// The sink of the attempt loop: spinner messages, and tokens to stdout when streaming.
pub struct Sink<'a> {
    pub printer: &'a mut Printer,
    /// Text printed so far ends with a newline (or nothing was printed).
    pub ends_with_newline: bool,
    pub printed_any: bool,
}

impl TokenSink for Sink<'_> {
    fn attempt_started(&mut self, provider: &str, model: &str) {
        self.printer.start_spinner();
        if let Some(s) = &self.printer.spinner {
            s.set_message(format!("{provider}/{model}"));
        }
    }

    fn token(&mut self, text: &str) -> bool {
        if !self.printed_any {
            self.printer.clear_spinner();
            self.printer.spinner = None;
            self.printed_any = true;
        }
        self.ends_with_newline = text.ends_with('\n');
        self.printer.stdout(text)
    }

    fn trace(&mut self, msg: String) {
        self.printer.trace(&msg);
    }

    fn note(&mut self, msg: String) {
        self.printer.note(&msg);
        if let Some(s) = &self.printer.spinner {
            s.set_message("waiting for a cool-down to end");
        }
    }
}
