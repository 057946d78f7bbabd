//! The only module that prints (DESIGN §4): answers and JSON on stdout; notes, the `-v`
//! trace, errors, the spinner and batch's progress bar on stderr. Colour only on a
//! terminal and never with `NO_COLOR`; a spinner appears only when stderr is a terminal
//! and `--quiet` is off. `report` renders the listings (`--dry-run`, `models`, `stats`,
//! `config show`) from serializable rows.

pub mod explain;
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
    stdout_tty: bool,
    spinner: Option<ProgressBar>,
    /// Why stdout could not be written (a full disk, an I/O error), once it failed: the
    /// run then ends with an error (`Printer::checked`). A reader that went away
    /// (a closed pipe) is not a failure.
    stdout_failed: std::cell::RefCell<Option<std::io::Error>>,
}

/// Text with the characters a terminal acts on removed: C0 controls but tab and line
/// feed (ESC, BEL, CR, backspace…), DEL, C1 controls, and the bidirectional overrides
/// and isolates (U+202A–U+202E, U+2066–U+2069) that make text read other than it is.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    let acts = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if text.chars().any(acts) {
        text.chars()
            .filter(|&c| !acts(c))
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// One line to stderr. A closed or full stderr never costs the answer or the exit
/// code: what cannot be said there is dropped.
fn to_stderr(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
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
            stdout_tty: std::io::stdout().is_terminal(),
            spinner: None,
            stdout_failed: std::cell::RefCell::new(None),
        }
    }

    /// The run's result, failed when stdout could not be written (a full disk), whatever
    /// it was: exit 1, with the cause.
    pub fn checked(&self, result: crate::error::Result<()>) -> crate::error::Result<()> {
        match (result, self.stdout_failed.borrow_mut().take()) {
            (Ok(()), Some(e)) => {
                Err(Error::internal("Cannot write to standard output").with_source(e))
            }
            (result, _) => result,
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
            Some(s) => s.suspend(|| to_stderr(line)),
            None => to_stderr(line),
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

    /// The run's error with its causes, then each hint on a line of its own.
    pub fn error(&self, err: &Error) {
        use crate::error::ErrorKind;
        self.clear_spinner();
        to_stderr(&format!(
            "{} {}",
            self.paint("31", "error:"),
            err.full_message()
        ));
        // What each attempt said, one line each, so the hint below can be judged.
        if matches!(
            err.kind,
            ErrorKind::AllFailed | ErrorKind::Deadline | ErrorKind::Config
        ) {
            for line in explain::attempt_lines(&err.attempts) {
                to_stderr(&line);
            }
        }
        for h in &err.hints {
            to_stderr(&format!("{} {h}", self.paint("36", "hint:")));
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

    /// Writes text to stdout; false when it cannot be written (the reader went away, or
    /// a failure that `checked` then reports).
    pub fn stdout(&self, text: &str) -> bool {
        if self.stdout_failed.borrow().is_some() {
            return false;
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
            Err(e) => {
                *self.stdout_failed.borrow_mut() = Some(e);
                false
            }
        }
    }

    /// Ends standard output early: what was written is flushed and the descriptor now
    /// points at /dev/null, so a pipeline's reader sees the end while the run finishes
    /// work of its own (learning a catalog after the answer).
    pub fn close_stdout(&self) {
        let _ = std::io::stdout().lock().flush();
        #[cfg(unix)]
        if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
    }

    /// Answer text: on a terminal without the control characters a model (or a hostile
    /// server) could use to move the cursor, ring the bell, retitle the window or reverse
    /// the text (`for_terminal`); in a pipe, byte for byte.
    pub fn text(&self, text: &str) -> bool {
        if self.stdout_tty {
            self.stdout(&for_terminal(text))
        } else {
            self.stdout(text)
        }
    }

    /// Plain mode: the answer followed by exactly one newline.
    pub fn answer(&self, text: &str) -> bool {
        self.clear_spinner();
        if text.ends_with('\n') {
            self.text(text)
        } else {
            self.text(&format!("{text}\n"))
        }
    }

    /// One JSON document on a line of its own.
    pub fn json<T: Serialize>(&self, value: &T) -> bool {
        self.clear_spinner();
        let mut s = serde_json::to_string(value).expect("output serializes");
        s.push('\n');
        self.stdout(&s)
    }

    /// A run's answer: one JSON object, or its text (unless it was streamed, and so is
    /// out already) and its tool calls one JSON object a line.
    pub fn outcome(&self, answer: &crate::outcome::Answer, json: bool, streamed: bool) {
        if json {
            self.json(answer);
            return;
        }
        if !streamed && !answer.content.is_empty() {
            self.answer(&answer.content);
        }
        for call in &answer.tool_calls {
            self.stdout(&format!("{call}\n"));
        }
    }

    /// The run's failure as the contract's one JSON object (DESIGN §4).
    pub fn failure_json(&self, err: &Error) -> bool {
        self.json(&Failure::of(err, None))
    }

    /// A line of a report (batch's summary, serve's request log), on stderr whatever
    /// `--quiet` says.
    pub fn report(&self, line: &str) {
        self.clear_spinner();
        to_stderr(line);
    }

    /// Batch's progress bar: drawn on stderr when it is a terminal and `--quiet` is off.
    /// Its position counts every item of the input (those skipped on resume too); its rate
    /// counts only the items `finished` by this run since it started.
    pub fn progress_bar(
        &self,
        total: Option<u64>,
        finished: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> ProgressBar {
        if self.quiet || !self.stderr_tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
        let started = std::time::Instant::now();
        let rate = move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let n = finished.load(std::sync::atomic::Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let _ = w.write_str(&rate_text(n as f64 / secs));
        };
        let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {rate} eta {eta} {msg}")
            .expect("valid template")
            .with_key("rate", rate);
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// Items a second, rounded so that it reads at a glance: "12/s", "2.5/s", "0.4/s", or
/// per minute below one every ten seconds.
pub fn rate_text(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "-".into()
    } else if per_sec >= 10.0 {
        format!("{per_sec:.0}/s")
    } else if per_sec >= 0.1 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{:.1}/min", per_sec * 60.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_rounded() {
        assert_eq!(super::rate_text(0.4367), "0.4/s");
        assert_eq!(super::rate_text(23.7), "24/s");
        assert_eq!(super::rate_text(0.01), "0.6/min");
        assert_eq!(super::rate_text(0.0), "-");
    }

    #[test]
    fn for_terminal_strips_what_a_terminal_acts_on() {
        let hostile = "a\x1b]0;pwned\x07b\x1b[2Jc\r\u{202E}fed\u{2066}\x7f\u{9b}\n\td";
        assert_eq!(super::for_terminal(hostile), "a]0;pwnedb[2Jcfed\n\td");
        assert!(matches!(
            super::for_terminal("plain\ttext\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

/// `{"ok": false, "error": {"kind", "message"}, "attempts": […]}`, and a batch item's `id`.
#[derive(Serialize)]
pub struct Failure<'a> {
    pub ok: bool,
    pub error: FailureError,
    pub attempts: &'a [crate::outcome::AttemptRecord],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
pub struct FailureError {
    pub kind: crate::error::ErrorKind,
    pub message: String,
}

impl<'a> Failure<'a> {
    pub fn of(err: &'a Error, id: Option<&'a serde_json::Value>) -> Self {
        Failure {
            ok: false,
            error: FailureError {
                kind: err.kind,
                message: err.full_message(),
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

impl Sink<'_> {
    /// After a streamed answer: its last line closed, unless the reader went away.
    pub fn end_line(&mut self, closed: bool) {
        if self.printed_any && !self.ends_with_newline && !closed {
            self.printer.stdout("\n");
        }
    }
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
        self.printer.text(text)
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
