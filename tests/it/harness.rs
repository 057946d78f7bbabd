//! Runs the binary in a sealed environment and collects stdout, stderr and exit code.
//! A run that takes longer than its limit (`RUN_LIMIT` unless the test sets one) is killed
//! and fails the test. `NO_COLOR=1` is set unless the test allows colour.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::fake::FakeServer;

pub const KEY: &str = "sk-or-v1-test-secret-0123456789abcdef";
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

pub struct Env {
    pub home: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
    pub config: String,
    /// Runs get `NO_COLOR=1`.
    pub no_color: bool,
    /// A run still going after this is killed and fails the test.
    pub limit: Duration,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim_end())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self}"))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Env {
    /// An environment whose OpenRouter points at the fake server and has a key.
    pub fn new(server: &FakeServer) -> Env {
        let mut env = Env::bare();
        env.vars.push(("OPENROUTER_API_KEY".into(), KEY.into()));
        env.config = format!(
            "[providers.openrouter]\nbase_url = \"{}\"\n",
            server.url("/api/v1")
        );
        env
    }

    /// No key, no config.
    pub fn bare() -> Env {
        let home = tempfile::tempdir().unwrap();
        // Tests never reach the internet: no keyless services, no probing of local ports,
        // unless a test turns them on.
        let vars = vec![
            ("FREEROUTE_SEED".into(), "7".into()),
            ("FREEROUTE_DISCOVER".into(), "0".into()),
            ("FREEROUTE_KEYLESS".into(), "0".into()),
        ];
        Env {
            home,
            vars,
            config: String::new(),
            no_color: true,
            limit: RUN_LIMIT,
        }
    }

    pub fn var(mut self, k: &str, v: &str) -> Env {
        self.vars.push((k.into(), v.into()));
        self
    }

    pub fn config(mut self, extra: &str) -> Env {
        self.config.push_str(extra);
        self
    }

    /// Runs without `NO_COLOR`, as a user who never set it.
    pub fn allow_color(mut self) -> Env {
        self.no_color = false;
        self
    }

    /// Kills a run still going after `limit` (and fails the test) instead of `RUN_LIMIT`.
    pub fn limit(mut self, limit: Duration) -> Env {
        self.limit = limit;
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state/freeroute")
    }

    /// The binary started with `args`, stdin empty, stdout and stderr captured (for runs
    /// the test acts on while they go: `wait_within` collects them).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary starts")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let config_path = self.path("config/freeroute/config.toml");
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        // Rewritten only when it changed: processes started in parallel must never see a
        // half-written file.
        if std::fs::read_to_string(&config_path).ok().as_deref() != Some(self.config.as_str()) {
            std::fs::write(&config_path, &self.config).unwrap();
        }
        let mut c = Command::new(env!("CARGO_BIN_EXE_freeroute"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_DATA_HOME", self.path("data"));
        if self.no_color {
            c.env("NO_COLOR", "1");
        }
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_full(args, None, &[])
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_full(args, stdin, &[])
    }

    /// Runs with extra variables for this run only.
    pub fn run_with_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Out {
        self.run_full(args, None, extra)
    }

    /// Runs with raw bytes on standard input (an image, say).
    pub fn run_bytes(&self, args: &[&str], stdin: &[u8]) -> Out {
        self.run_raw(args, Some(stdin), &[])
    }

    pub fn run_full(&self, args: &[&str], stdin: Option<&str>, extra: &[(&str, &str)]) -> Out {
        self.run_raw(args, stdin.map(str::as_bytes), extra)
    }

    fn run_raw(&self, args: &[&str], stdin: Option<&[u8]>, extra: &[(&str, &str)]) -> Out {
        let mut c = self.cmd(args);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn freeroute");
        if let Some(bytes) = stdin {
            // From a thread: a run that never reads its input must not block the test.
            let mut pipe = child.stdin.take().unwrap();
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let output = wait_within(child, self.limit, &format!("freeroute {args:?}"));
        Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Waits for a started run, killing it when `limit` passes first; then the test fails,
/// naming `what`. For tests that start the binary themselves (`Env::cmd`).
pub fn wait_within(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.expect("wait for freeroute"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// The entry of a `stats --json` list (`models` or `providers`) whose `field` is `value`.
pub fn stats_row(
    stats: &serde_json::Value,
    list: &str,
    field: &str,
    value: &str,
) -> serde_json::Value {
    stats[list]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r[field] == value))
        .cloned()
        .unwrap_or_else(|| panic!("no {list} entry with {field} = {value} in {stats}"))
}
