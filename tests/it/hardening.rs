//! Hardening (issue 14): hostile servers, damaged files and the edges of the machine.
//! Nothing a server or a file says may make a run panic, hang, lose words or leak a key.

use crate::ask::{BIG, MID, server};
use crate::fake::{self, FakeServer};
use crate::harness::Env;

/// A moment on the memory's clock, 10:00 UTC: far from a day's end.
const NOW: u64 = 1_900_000_000_000 - 1_900_000_000_000 % 86_400_000 + 10 * 3_600_000;
const HOUR: u64 = 3_600_000;

fn at(now: u64) -> [(&'static str, String); 1] {
    [("FREEROUTE_NOW_MS", now.to_string())]
}

fn run_at(env: &Env, now: u64, args: &[&str]) -> crate::harness::Out {
    let [(k, v)] = at(now);
    env.run_with_env(args, &[(k, &v)])
}

fn stats_at(env: &Env, now: u64) -> serde_json::Value {
    let out = run_at(env, now, &["stats", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    out.json()
}

#[test]
fn absurd_numbers_in_a_state_file_that_parses_never_panic() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(1);
    let env = Env::bare().config(&format!(
        "[providers.local]\nbase_url = \"{}\"\nmodels = [{{ id = \"fast-7b\", context = 8192 }}, {{ id = \"slow-7b\", context = 8192 }}]\n",
        s.url("/v1")
    ));
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let damaged = serde_json::json!({
        "version": 1,
        "models": {
            "local/fast-7b": {"ok": 1e308, "fail": -3.0, "ttft_ms": -5000.0, "ttft_dev_ms": 1e308,
                              "gen_ms": 1e308, "tps": -1.0, "load": 1e308, "busy_at": -2.0,
                              "updated_ms": u64::MAX, "load_ms": u64::MAX, "busy_ms": u64::MAX,
                              "cooldown_until_ms": 0, "consecutive_failures": u32::MAX},
            "local/slow-7b": {"ttft_ms": 1e308, "ttft_dev_ms": -1e308, "gen_ms": -5000.0}
        },
        "providers": {
            "other": {"blocked_until_ms": 99_999_999_999_999u64, "day_offset_ms": i64::MIN,
                      "minute_sent_ms": [u64::MAX, 5, u64::MAX],
                      "day": u64::MAX, "day_count": u32::MAX}
        }
    });
    std::fs::write(env.state_dir().join("state.json"), damaged.to_string()).unwrap();
    for args in [
        &["--dry-run", "q"][..],
        &["models"][..],
        &["stats"][..],
        &["stats", "--json"][..],
    ] {
        let out = run_at(&env, NOW, args);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out}");
    }
    let out = run_at(&env, NOW, &["q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "ok\n");
    // What was written back is bounded: finite, non-negative, nothing in the future.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state_dir().join("state.json")).unwrap())
            .unwrap();
    for m in state["models"].as_object().unwrap().values() {
        for k in [
            "ok",
            "fail",
            "ttft_ms",
            "ttft_dev_ms",
            "gen_ms",
            "tps",
            "load",
        ] {
            if let Some(x) = m[k].as_f64() {
                assert!((0.0..1e10).contains(&x), "{k} = {x} in {m}");
            }
        }
        for k in ["updated_ms", "load_ms", "busy_ms"] {
            assert!(m[k].as_u64().unwrap() <= NOW + HOUR, "{k} in {m}");
        }
    }
    let other = &state["providers"]["other"];
    assert!(
        other["blocked_until_ms"].as_u64().unwrap() <= NOW + 25 * HOUR,
        "{other}"
    );
}

#[test]
fn a_server_cannot_block_a_provider_for_centuries() {
    // A quota 429 whose reset is 3,112 years away: the block lasts until the provider's
    // next daily reset at most.
    let s = server(|r| {
        if r.model() == BIG {
            fake::daily_quota_429(99_999_999_999_999)
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let out = run_at(&env, NOW, &["-m", BIG, "q"]);
    assert_eq!(out.code, 4, "{out}");
    let v = stats_at(&env, NOW);
    let until = v["providers"][0]["skipped_until_ms"].as_u64().unwrap();
    let next_midnight = NOW - NOW % 86_400_000 + 86_400_000;
    assert_eq!(until, next_midnight, "{v}");
    // After that reset the provider is asked again.
    let out = run_at(&env, next_midnight + 1_000, &["-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn a_retry_after_of_decades_cools_a_model_for_hours_at_most() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::rate_limit_429(BIG, 999_999_999)
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let out = run_at(&env, NOW, &["-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let v = stats_at(&env, NOW);
    let row = crate::harness::stats_row(&v, "models", "model", BIG);
    let until = row["cooldown_until_ms"].as_u64().unwrap();
    assert!(until > NOW && until <= NOW + 3 * HOUR, "{row}");
    // Once it has passed, the model is tried again.
    let out = run_at(&env, NOW + 3 * HOUR + 1_000, &["--dry-run", "-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stdout.contains("cooling"), "{out}");
}

/// Every piece of `KEY` of 12 characters or more, wherever it starts.
fn key_pieces() -> Vec<&'static str> {
    let k = crate::harness::KEY;
    (0..=k.len() - 12).map(|i| &k[i..i + 12]).collect()
}

/// No piece of the key in these outputs, nor in any file under the run's HOME.
fn assert_no_key_anywhere(env: &Env, outs: &[&crate::harness::Out]) {
    let pieces = key_pieces();
    let check = |what: &str, text: &str| {
        if let Some(p) = pieces.iter().find(|p| text.contains(**p)) {
            panic!("a piece of the key ({p}) is in {what}:\n{text}");
        }
    };
    for o in outs {
        check("stdout", &o.stdout);
        check("stderr", &o.stderr);
    }
    for (path, text) in files_under_home(env) {
        check(&path.display().to_string(), &text);
    }
}

/// The binary started in the test's environment with these standard streams.
fn spawn(
    env: &Env,
    args: &[&str],
    stdin: impl Into<std::process::Stdio>,
    stdout: impl Into<std::process::Stdio>,
    stderr: impl Into<std::process::Stdio>,
) -> std::process::Child {
    env.cmd(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("the binary starts")
}

/// Every file freeroute may have written under the run's HOME (the test's own config
/// aside), with its text.
fn files_under_home(env: &Env) -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![env.home.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n != "config.toml") {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                files.push((path, text));
            }
        }
    }
    files
}

#[test]
fn a_key_echoed_after_a_long_error_never_leaks_whole_or_in_part() {
    let key = crate::harness::KEY;
    let plain = format!("{}Authorization: Bearer {key}", "x".repeat(259));
    let json =
        serde_json::json!({"error": {"message": format!("{}{key}", "y".repeat(359)), "code": 500}});
    let s = server(move |r| match r.model().as_str() {
        BIG => fake::Reply::json(500, plain.clone()),
        MID => fake::Reply::json(500, json.to_string()),
        _ => fake::answer(&r.model(), &["ok"]),
    });
    let env = Env::new(&s);
    let args = ["-m", BIG, "-m", MID, "-m", crate::ask::SMALL, "q"];
    let verbose = env.run(&[&["-v"][..], &args].concat());
    assert_eq!(verbose.code, 0, "{verbose}");
    let json_out = env.run(&[&["--json"][..], &args].concat());
    assert_eq!(json_out.code, 0, "{json_out}");
    let stats = env.run(&["stats"]);
    let stats_json = env.run(&["stats", "--json"]);
    assert!(verbose.stderr.contains("[redacted]"), "{verbose}");
    assert_no_key_anywhere(&env, &[&verbose, &json_out, &stats, &stats_json]);
}

#[test]
fn an_answer_that_carries_the_key_is_not_kept_in_the_conversation() {
    let key = crate::harness::KEY;
    let s = server(move |r| fake::answer(&r.model(), &["your key is ", key, "."]));
    let env = Env::new(&s);
    let out = env.run(&["-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let saved = std::fs::read_to_string(env.state_dir().join("conversations.json")).unwrap();
    assert!(saved.contains("your key is [redacted]."), "{saved}");
    // Only the answer on stdout, which is the user's own, carries it.
    let out = Env::run(&env, &["stats", "--json"]);
    assert_no_key_anywhere(&env, &[&out]);
}

#[test]
fn a_password_in_a_base_url_is_never_shown_or_stored() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            fake::catalog(vec![fake::model_entry(
                "m-7b",
                "0",
                Some(8192),
                &["text"],
                &[],
            )])
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let url = s.url("/v1").replace("http://", "http://me:hunter2pw@");
    let env = Env::bare().config(&format!("[providers.local]\nbase_url = \"{url}\"\n"));
    let run = env.run(&["-m", "m-7b", "q"]);
    assert_eq!(run.code, 0, "{run}");
    let show = env.run(&["config", "show"]);
    assert_eq!(show.code, 0, "{show}");
    assert!(show.stdout.contains("me:***@"), "{show}");
    for o in [&run, &show] {
        assert!(
            !o.stdout.contains("hunter2pw") && !o.stderr.contains("hunter2pw"),
            "{o}"
        );
    }
    for (path, text) in files_under_home(&env) {
        assert!(!text.contains("hunter2pw"), "{}: {text}", path.display());
    }
}

use crate::fake::{Reply, Step};
use std::time::Duration;

/// The attempt records of a `--json` run, as (model, outcome, error) triples.
fn attempts(out: &crate::harness::Out) -> Vec<(String, String, String)> {
    let v = out.json();
    v["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts: {out}"))
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (s("model"), s("outcome"), s("error"))
        })
        .collect()
}

/// BIG replies with `bad`, MID answers "ok": the run must fall back and answer whole.
fn falls_back_from(bad: Reply, error_says: &str) {
    let s = server(move |r| {
        if r.model() == BIG {
            bad.clone()
        } else {
            fake::answer(&r.model(), &["o", "k"])
        }
    });
    let env = Env::new(&s).limit(Duration::from_secs(45));
    let out = env.run(&["--json", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["content"], "ok", "{out}");
    let a = attempts(&out);
    assert_eq!(a[0].0, BIG, "{out}");
    assert!(a[0].2.contains(error_says), "{a:?}");
    assert_eq!(a[1], (MID.into(), "ok".into(), String::new()), "{out}");
}

#[test]
fn a_json_body_that_never_ends_is_cut_at_its_cap() {
    let bad = Reply::Stream {
        headers: vec![("content-type".into(), "application/json".into())],
        steps: vec![Step::Flood(format!(
            "{{\"pad\": \"{}\",",
            "x".repeat(60_000)
        ))],
    };
    falls_back_from(bad, "larger than 16 MiB");
}

#[test]
fn an_sse_line_that_never_ends_is_cut_at_its_cap() {
    let bad = Reply::stream(vec![
        Step::Send("data: {\"choices\":[{\"delta\":{\"content\":\"".into()),
        Step::Flood("y".repeat(60_000)),
    ]);
    falls_back_from(bad, "line longer than 8 MiB");
}

#[test]
fn an_sse_event_that_never_ends_is_cut_at_its_cap() {
    let bad = Reply::stream(vec![Step::Flood(format!("data: {}\n", "z".repeat(60_000)))]);
    falls_back_from(bad, "event larger than 8 MiB");
}

#[test]
fn a_model_list_that_never_ends_is_cut_at_its_cap() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            Reply::Stream {
                headers: vec![("content-type".into(), "application/json".into())],
                steps: vec![
                    Step::Send("{\"data\": [".into()),
                    Step::Flood(format!("{{\"id\": \"{}\"}},", "m".repeat(60_000))),
                ],
            }
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s).limit(Duration::from_secs(45));
    let out = env.run(&["models"]);
    assert!(out.stderr.contains("larger than 32 MiB"), "{out}");
}

/// A stream whose second piece is `bad`: before the fix the piece was dropped and the
/// answer went out with a hole in it, exit 0.
fn with_bad_piece(bad: &str) -> Reply {
    Reply::stream(vec![
        Step::Send(fake::chunk(
            BIG,
            serde_json::json!({"content": "The "}),
            None,
        )),
        Step::Send(bad.into()),
        Step::Send(fake::chunk(
            BIG,
            serde_json::json!({"content": " end."}),
            Some("stop"),
        )),
        Step::Send("data: [DONE]\n\n".into()),
    ])
}

#[test]
fn a_chunk_that_cannot_be_read_fails_the_attempt_instead_of_leaving_a_hole() {
    falls_back_from(
        with_bad_piece("data: {\"choices\":[{\"delta\":{\"content\":\"middle\"}}]\n\n"),
        "a chunk of the answer cannot be read",
    );
    falls_back_from(
        with_bad_piece("data: {\"choices\":[{\"delta\":{\"content\":42}}]}\n\n"),
        "a chunk of the answer cannot be read",
    );
}

#[test]
fn a_wrong_type_in_a_field_freeroute_does_not_need_loses_no_text() {
    for bad in [
        "data: {\"model\": 12345, \"choices\":[{\"delta\":{\"content\":\"middle\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"middle\", \"reasoning\": 7}, \"finish_reason\": 3}], \"usage\": {\"prompt_tokens\": -1}}\n\n",
    ] {
        let reply = with_bad_piece(bad);
        let s = server(move |_| reply.clone());
        let env = Env::new(&s);
        let out = env.run(&["-m", BIG, "q"]);
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(out.stdout, "The middle end.\n", "{bad}");
    }
}

#[test]
fn a_stream_that_starts_with_a_bom_loses_no_event() {
    let s = server(|_| {
        let mut steps = vec![Step::Bytes(
            [
                &b"\xEF\xBB\xBF"[..],
                fake::chunk(BIG, serde_json::json!({"content": "first "}), None).as_bytes(),
            ]
            .concat(),
        )];
        steps.extend(fake::answer_steps(BIG, &["second"]));
        Reply::stream(steps)
    });
    let out = Env::new(&s).run(&["-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "first second\n");
}

#[test]
fn invalid_utf8_in_an_answer_fails_the_attempt_instead_of_printing_replacement_characters() {
    let bad = Reply::stream(vec![
        Step::Bytes(b"data: {\"choices\":[{\"delta\":{\"content\":\"caf\xE9\"}}]}\n\n".to_vec()),
        Step::Send(fake::chunk(
            BIG,
            serde_json::json!({"content": "!"}),
            Some("stop"),
        )),
        Step::Send("data: [DONE]\n\n".into()),
    ]);
    falls_back_from(bad, "not UTF-8");
}

#[test]
fn a_broken_chunk_after_output_began_is_an_interrupted_stream_not_exit_0() {
    let reply = with_bad_piece("data: {\"choices\":[{\"delta\":{\"content\":\"middle\"}}]\n\n");
    let s = server(move |_| reply.clone());
    let out = Env::new(&s).run(&["--stream", "-m", BIG, "-m", MID, "q"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("broke off after output began"), "{out}");
}

#[test]
fn keep_alive_comments_after_the_first_token_do_not_defeat_stall_detection() {
    // One token, then a keep-alive every 5 ms for far longer than the run's deadline.
    let mut steps = vec![Step::Send(fake::chunk(
        BIG,
        serde_json::json!({"content": "Hel"}),
        None,
    ))];
    for _ in 0..4_000 {
        steps.push(Step::Sleep(Duration::from_millis(5)));
        steps.push(Step::Send(": OPENROUTER PROCESSING\n\n".into()));
    }
    let stalls = Reply::stream(steps);
    let s = server(move |r| {
        if r.model() == BIG {
            stalls.clone()
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let out = env.run(&["--json", "--timeout", "8", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["content"], "ok");
    let a = attempts(&out);
    assert_eq!(a[0].1, "timeout", "{a:?}");
    assert!(a[0].2.contains("stalled: no new text"), "{a:?}");
}

#[test]
fn a_finish_then_silence_delivers_the_answer_without_waiting_for_the_idle_cap() {
    let s = server(|_| {
        Reply::stream(vec![
            Step::Send(fake::chunk(
                BIG,
                serde_json::json!({"content": "done"}),
                None,
            )),
            Step::Send(fake::chunk(
                BIG,
                serde_json::json!({"content": ""}),
                Some("stop"),
            )),
            Step::Hang,
        ])
    });
    // Before the fix the answer was held for the 30 s idle cap; the margin is generous.
    let env = Env::new(&s).limit(Duration::from_secs(20));
    let out = env.run(&["--timeout", "120", "-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "done\n");
}

fn full() -> std::process::Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
        .into()
}

#[test]
fn a_closed_or_full_stderr_never_costs_the_answer_or_the_exit_code() {
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let env = Env::new(&s);
    let child = spawn(
        &env,
        &["-v", "-m", MID, "q"],
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
        full(),
    );
    let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "stderr full");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"ok\n");
    // A stderr whose reader has gone (`2>&1 | head -c 1`).
    let mut child = spawn(
        &env,
        &["-v", "-m", MID, "--no-such-flag-either"],
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
        std::process::Stdio::piped(),
    );
    drop(child.stderr.take());
    let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "stderr closed");
    assert_eq!(out.status.code(), Some(2), "a usage error stays exit 2");
    let mut child = spawn(
        &env,
        &["-v", "-m", MID, "q"],
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
        std::process::Stdio::piped(),
    );
    drop(child.stderr.take());
    let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "stderr closed");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"ok\n");
}

#[test]
fn a_full_stdout_is_an_error_not_a_silent_exit_0() {
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let env = Env::new(&s);
    for args in [
        &["-m", MID, "q"][..],
        &["--stream", "-m", MID, "q"],
        &["--json", "-m", MID, "q"],
    ] {
        let child = spawn(
            &env,
            args,
            std::process::Stdio::null(),
            full(),
            std::process::Stdio::piped(),
        );
        let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "stdout full");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Cannot write to standard output: No space left"),
            "{stderr}"
        );
    }
}

#[test]
fn endless_inputs_are_read_up_to_their_limit_and_refused() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(0);
    let env = Env::new(&s);
    for (args, code, says) in [
        (
            &["-i", "/dev/zero", "q"][..],
            2,
            "Image /dev/zero is larger than 20 MiB",
        ),
        (
            &["--tools", "/dev/zero", "q"],
            2,
            "Tools file /dev/zero is larger than 4 MiB",
        ),
        (
            &["--schema", "/dev/zero", "q"],
            2,
            "Schema file /dev/zero is larger than 1 MiB",
        ),
        (
            &["--messages", "/dev/zero"],
            2,
            "Messages file /dev/zero is larger than 64 MiB",
        ),
        (
            &["--config", "/dev/zero", "q"],
            6,
            "Config file /dev/zero is larger than 1 MiB",
        ),
    ] {
        let out = env.run(args);
        assert_eq!(out.code, code, "{args:?}: {out}");
        assert!(out.stderr.contains(says), "{args:?}: {out}");
    }
    // A prompt piped from an endless source.
    let child = spawn(
        &env,
        &["q"],
        std::fs::File::open("/dev/zero").unwrap(),
        std::process::Stdio::piped(),
        std::process::Stdio::piped(),
    );
    let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "stdin /dev/zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Standard input is larger than 32 MiB"),
        "{stderr}"
    );
}

#[test]
fn a_fifo_with_no_writer_is_an_input_error_at_the_deadline_not_a_hang() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(0);
    let env = Env::new(&s).limit(Duration::from_secs(30));
    let fifo = env.path("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    for args in [
        &["--timeout", "2", "-i", fifo, "q"][..],
        &["--timeout", "2", "--messages", fifo],
        &["--timeout", "2", "--tools", fifo, "q"],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(
            out.stderr.contains("gave nothing to read within 2 s"),
            "{out}"
        );
        assert!(out.stderr.contains("FIFO"), "{out}");
    }
}

#[test]
fn a_timeout_too_short_for_anything_is_the_deadline_exit_5() {
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let env = Env::new(&s);
    // No model list yet: the fetch's share of the run ran out.
    let out = env.run(&["--json", "--timeout", "0.000001", "q"]);
    assert_eq!(out.code, 5, "{out}");
    assert_eq!(out.json()["error"]["kind"], "deadline");
    // With the list cached: no time for any attempt.
    assert_eq!(env.run(&["-m", MID, "q"]).code, 0);
    let out = env.run(&["--json", "--timeout", "0.000001", "q"]);
    assert_eq!(out.code, 5, "{out}");
    assert_eq!(out.json()["error"]["kind"], "deadline");
}

/// Runs `cmd` with its stdout on a terminal (util-linux `script` makes the pty).
fn on_a_terminal(cmd: std::process::Command) -> String {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    // stderr away from the terminal, so that only the answer is captured.
    let line = format!("{} 2>/dev/null", line.join(" "));
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line, "/dev/null"]).env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    let child = script
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "a run on a pty");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn control_characters_from_a_model_are_stripped_on_a_terminal_only() {
    let hostile = "safe\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}txet";
    let s = server(move |r| fake::answer(&r.model(), &[hostile]));
    let env = Env::new(&s);
    for args in [&["-m", MID, "q"][..], &["--stream", "-m", MID, "q"]] {
        let shown = on_a_terminal(env.cmd(args));
        assert!(shown.contains("safe]0;pwned[2Jtxet"), "{args:?}: {shown:?}");
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}') && !shown.contains('\u{202e}'),
            "{shown:?}"
        );
    }
    // In a pipe and in JSON, the answer is kept byte for byte.
    let out = env.run(&["-m", MID, "q"]);
    assert_eq!(out.stdout, format!("{hostile}\n"));
    let out = env.run(&["--json", "-m", MID, "q"]);
    assert_eq!(out.json()["content"], hostile);
}

#[test]
fn a_kept_conversation_names_its_images_by_file_and_continue_reads_them_again() {
    let s = server(|r| fake::answer(&r.model(), &["a sign"]));
    let env = Env::new(&s);
    let image = env.path("sign.png");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sign.png"),
        &image,
    )
    .unwrap();
    let image = image.to_str().unwrap();
    let out = env.run(&["-i", image, "What is this?"]);
    assert_eq!(out.code, 0, "{out}");
    let kept = std::fs::read_to_string(env.state_dir().join("conversations.json")).unwrap();
    assert!(kept.contains(&format!("file://{image}")), "{kept}");
    assert!(!kept.contains("base64"), "no image bytes are kept");
    // --continue sends the image again, read from its file.
    let out = env.run(&["-c", "And its colour?"]);
    assert_eq!(out.code, 0, "{out}");
    let last = s.chats().pop().unwrap().json();
    let sent = last["messages"].to_string();
    assert!(sent.contains("data:image/png;base64,"), "{sent}");
    assert!(!sent.contains("file://"), "{sent}");
    // Gone: a clear input error naming it, nothing sent.
    std::fs::remove_file(image).unwrap();
    let before = s.chats().len();
    let out = env.run(&["-c", "And now?"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "The conversation's image {image} cannot be read again"
        )),
        "{out}"
    );
    assert_eq!(s.chats().len(), before);
}

#[test]
fn an_image_from_standard_input_is_not_kept() {
    let s = server(|r| fake::answer(&r.model(), &["a sign"]));
    let env = Env::new(&s);
    let png = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sign.png")).unwrap();
    let out = env.run_bytes(&["-i", "-", "What is this?"], &png);
    assert_eq!(out.code, 0, "{out}");
    let kept = std::fs::read_to_string(env.state_dir().join("conversations.json")).unwrap();
    assert!(!kept.contains("base64"), "{kept}");
    assert!(kept.contains("not kept"), "{kept}");
}

#[test]
fn ctrl_c_while_the_model_lists_are_fetched_is_exit_130_with_the_json_object() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            Reply::Hang
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let child = spawn(
        &env,
        &["--json", "q"],
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
        std::process::Stdio::piped(),
    );
    let waited = std::time::Instant::now();
    while s.count("/models") == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no model list was asked for"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "Ctrl-C in the fetch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["error"]["kind"], "interrupted", "{v}");
}

#[test]
fn a_pooled_connection_the_server_dropped_is_retried_once_not_blamed_on_the_model() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::upstream_429(BIG)
        } else {
            Reply::CloseIfReused(Box::new(fake::answer(&r.model(), &["ok"])))
        }
    });
    let env = Env::new(&s);
    // The catalog and the 429 leave a connection in the pool; MID's request on it is
    // dropped, and sent again on a new connection.
    let out = env.run(&["--json", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["content"], "ok");
    let a = attempts(&out);
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[1].1, "ok", "{a:?}");
}

#[test]
fn bytes_that_are_not_utf8_after_done_cost_no_answer() {
    // Found by bench/hostile.py (seeds 85, 90, 138): the answer was dropped and the next
    // model asked, or, streamed, exit 4 after the whole answer was printed.
    let s = server(|r| {
        if r.model() == BIG {
            let mut steps = fake::answer_steps(BIG, &["whole ", "answer"]);
            steps.push(Step::Bytes(b"\xff\xfe garbage {{{\n\n".to_vec()));
            Reply::stream(steps)
        } else {
            fake::answer(&r.model(), &[FALLBACK_TEXT])
        }
    });
    let env = Env::new(&s);
    for args in [
        &["-m", BIG, "-m", MID, "q"][..],
        &["--stream", "-m", BIG, "-m", MID, "q"],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert_eq!(out.stdout, "whole answer\n", "{args:?}");
    }
}

const FALLBACK_TEXT: &str = "the other model";
