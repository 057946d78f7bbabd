//! Memory across runs (DESIGN §5): concurrent runs lose no update, damage is never fatal,
//! cool-downs and quota blocks carry over and expire, latency moves the ranking, `stats`.

use std::time::Duration;

use crate::ask::{BIG, JsonAnswer, MID, server};
use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::{Env, RUN_LIMIT, wait_within};

/// A custom provider with two models of equal prior on the fake server (no per-minute
/// limit, so many runs can go at once).
fn local(s: &FakeServer) -> Env {
    local_with(s, &["fast-7b", "slow-7b"])
}

/// A local provider listing these models.
fn local_with(s: &FakeServer, ids: &[&str]) -> Env {
    let models: Vec<String> = ids
        .iter()
        .map(|id| format!("{{ id = \"{id}\", context = 8192 }}"))
        .collect();
    Env::bare().config(&format!(
        "[providers.local]\nbase_url = \"{}\"\nmodels = [{}]\n",
        s.url("/v1"),
        models.join(", ")
    ))
}

fn stats(env: &Env) -> serde_json::Value {
    let out = env.run(&["stats", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    out.json()
}

#[test]
fn thirty_two_concurrent_runs_lose_no_update() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"]));
    let env = local(&s);
    let children: Vec<_> = (0..32)
        .map(|_| env.spawn(&["-q", "-m", "fast-7b", "q"]))
        .collect();
    for c in children {
        let out = wait_within(c, RUN_LIMIT, "a concurrent run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"ok\n");
    }
    assert_eq!(s.chats().len(), 32);
    let v = stats(&env);
    let model = crate::harness::stats_row(&v, "models", "model", "fast-7b");
    assert!(
        (model["ok"].as_f64().unwrap() - 32.0).abs() < 0.01,
        "{model}"
    );
    assert_eq!(v["providers"][0]["requests_today"], 32);
    assert_eq!(v["runs_logged"], 32);
    let log = std::fs::read_to_string(env.state_dir().join("requests.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 32);
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["ok"], true);
        assert!(!line.contains("\"q\""), "no prompt text in the log: {line}");
    }
    assert!(
        !std::fs::read_dir(env.state_dir())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
    );
}

#[test]
fn damaged_state_is_set_aside_and_never_fatal() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(3);
    let env = local(&s);
    std::fs::create_dir_all(env.state_dir()).unwrap();
    for damage in ["{not json", "", "{\"version\": 99, \"models\": {}}"] {
        std::fs::write(env.state_dir().join("state.json"), damage).unwrap();
        let out = env.run(&["-m", "fast-7b", "q"]);
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(out.stdout, "ok\n");
        assert!(out.stderr.contains("set it aside"), "{damage:?}: {out}");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.state_dir().join("state.json")).unwrap())
                .unwrap();
        assert_eq!(state["version"], 1);
    }
    let aside = std::fs::read_dir(env.state_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".bad-"))
        .count();
    assert!(aside >= 1);
}

#[test]
fn unwritable_state_dir_degrades_to_no_memory() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(1);
    let env = local(&s);
    // A file where the state directory should be: no directory can be made there.
    let blocker = env.path("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let out = env.run_with_env(
        &["-m", "fast-7b", "q"],
        &[("XDG_STATE_HOME", blocker.to_str().unwrap())],
    );
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "ok\n");
    assert_eq!(out.stderr.matches("without memory").count(), 1, "{out}");
}

#[test]
fn quota_block_lasts_until_the_reset_then_lifts() {
    // A daily reset at midnight UTC, five hours after the runs (a reset further away than
    // the provider's next one is cut to it: tests/it/hardening.rs).
    let reset = 4_102_444_800_000u64;
    let now = (reset - 5 * 3_600_000).to_string();
    let s = server(move |r| {
        if r.model() == BIG {
            fake::daily_quota_429(reset)
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let at_now = [("FREEROUTE_NOW_MS", now.as_str())];
    let out = env.run_with_env(&["-m", BIG, "q"], &at_now);
    assert_eq!(out.code, 4, "{out}");
    let out = env.run_with_env(&["stats", "--json"], &at_now);
    assert_eq!(out.code, 0, "{out}");
    let v = out.json();
    let p = &v["providers"][0];
    assert_eq!(p["skipped_until_ms"], reset);
    assert_eq!(
        p["per_day_limit"], 50,
        "the daily limit is learned from the reply"
    );
    // While blocked: no request at all; exit 4 (no model can answer now), not 3 (which
    // is for capabilities and filters).
    let out = env.run_with_env(&["-m", MID, "q"], &at_now);
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("can be asked now"), "{out}");
    assert_eq!(s.chats().len(), 1);
    // After the reset (the clock moved through the state's view of time): used again.
    let after = (reset + 1000).to_string();
    let out = env.run_with_env(&["-m", MID, "q"], &[("FREEROUTE_NOW_MS", &after)]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(s.chat_models(), vec![BIG, MID]);
}

#[test]
fn per_minute_window_is_respected_without_a_request() {
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let env = Env::new(&s);
    let now: u64 = 1_900_000_000_000;
    for i in 0..20 {
        let t = (now + i * 100).to_string();
        let out = env.run_with_env(&["-q", "-m", MID, "q"], &[("FREEROUTE_NOW_MS", &t)]);
        assert_eq!(out.code, 0, "run {i}: {out}");
    }
    let t = (now + 5_000).to_string();
    let out = env.run_with_env(&["--dry-run", "-m", MID, "q"], &[("FREEROUTE_NOW_MS", &t)]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("20 requests this minute"), "{out}");
    let t = (now + 61_000).to_string();
    let out = env.run_with_env(&["-m", MID, "q"], &[("FREEROUTE_NOW_MS", &t)]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(s.chats().len(), 21);
}

#[test]
fn measured_latency_moves_the_faster_model_ahead() {
    let s = FakeServer::start(|r| {
        let mut steps = fake::answer_steps(&r.model(), &["ok"]);
        if r.model() == "slow-7b" {
            steps.insert(0, Step::Sleep(Duration::from_millis(2500)));
        }
        Reply::stream(steps)
    })
    .expect_chats(4);
    let env = local(&s);
    for model in ["slow-7b", "fast-7b", "slow-7b", "fast-7b"] {
        let out = env.run(&["-m", model, "q"]);
        assert_eq!(out.code, 0, "{out}");
    }
    for seed in ["1", "2", "3"] {
        let out = env.run_with_env(&["--dry-run", "--json", "q"], &[("FREEROUTE_SEED", seed)]);
        let v = out.json();
        assert_eq!(v["candidates"][0]["model"], "fast-7b", "seed {seed}: {out}");
    }
    let v = stats(&env);
    let ttft = |id: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == id)
            .unwrap()["first_token_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(ttft("slow-7b") > 2000.0 && ttft("fast-7b") < 1000.0, "{v}");
}

#[test]
fn a_quick_first_token_then_a_slow_stream_counts_as_slow() {
    // drip-7b starts at once but takes 1.6 s to finish; steady-7b starts after 300 ms and
    // finishes at once: steady is the faster answer, and ranks first.
    let s = FakeServer::start(|r| {
        let model = r.model();
        if model == "drip-7b" {
            let mut steps = vec![Step::Send(fake::chunk(
                &model,
                serde_json::json!({"role": "assistant", "content": "a"}),
                None,
            ))];
            for _ in 0..4 {
                steps.push(Step::Sleep(Duration::from_millis(400)));
                steps.push(Step::Send(fake::chunk(
                    &model,
                    serde_json::json!({"content": " b"}),
                    None,
                )));
            }
            steps.extend(fake::answer_steps(&model, &[" c"]));
            Reply::stream(steps)
        } else {
            let mut steps = fake::answer_steps(&model, &["ok"]);
            steps.insert(0, Step::Sleep(Duration::from_millis(300)));
            Reply::stream(steps)
        }
    })
    .expect_chats(4);
    let env = local_with(&s, &["drip-7b", "steady-7b"]);
    for model in ["drip-7b", "steady-7b", "drip-7b", "steady-7b"] {
        let out = env.run(&["-m", model, "q"]);
        assert_eq!(out.code, 0, "{out}");
    }
    let v = stats(&env);
    let field = |id: &str, f: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == id)
            .unwrap()[f]
            .as_f64()
            .unwrap_or_else(|| panic!("{f} of {id}: {v}"))
    };
    assert!(
        field("drip-7b", "first_token_ms") < field("steady-7b", "first_token_ms"),
        "{v}"
    );
    assert!(field("drip-7b", "rest_of_answer_ms") > 1000.0, "{v}");
    assert!(
        field("drip-7b", "expected_answer_ms") > field("steady-7b", "expected_answer_ms"),
        "{v}"
    );
    for seed in ["1", "2", "3"] {
        let out = env.run_with_env(&["--dry-run", "--json", "q"], &[("FREEROUTE_SEED", seed)]);
        let v = out.json();
        assert_eq!(
            v["candidates"][0]["model"], "steady-7b",
            "seed {seed}: {out}"
        );
        assert!(
            v["candidates"][1]["parts"]["latency"].as_f64().unwrap() < -0.3,
            "{out}"
        );
    }
}

#[test]
fn stats_shows_failures_and_cooldowns_and_reset_forgets() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::upstream_429(BIG)
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    })
    .expect_chats(2);
    let env = Env::new(&s);
    let out = env.run(&["--json", "-m", BIG, "-m", MID, "q"]);
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "rate_limited");
    let v = stats(&env);
    let models = v["models"].as_array().unwrap();
    let big = models.iter().find(|m| m["model"] == BIG).unwrap();
    assert_eq!(big["last_outcome"], "rate_limited");
    assert!(big["cooldown_until_ms"].as_u64().is_some(), "{big}");
    assert!(big["success_ratio"].as_f64().unwrap() < 0.5);
    let mid = models.iter().find(|m| m["model"] == MID).unwrap();
    assert!(mid["success_ratio"].as_f64().unwrap() > 0.5);
    assert!(mid["first_token_ms"].is_number());
    assert_eq!(v["providers"][0]["requests_today"], 2);
    let table = env.run(&["stats"]);
    assert!(
        table.stdout.contains(BIG) && table.stdout.contains("rate_limited"),
        "{table}"
    );
    let out = env.run(&["stats", "--reset"]);
    assert_eq!(out.code, 0, "{out}");
    let v = stats(&env);
    assert!(v["models"].as_array().unwrap().is_empty());
    assert_eq!(v["runs_logged"], 0);
}

#[test]
fn the_request_log_keeps_prompts_only_when_asked() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(2);
    let env = local(&s);
    assert_eq!(env.run(&["-m", "fast-7b", "secret question"]).code, 0);
    let log = std::fs::read_to_string(env.state_dir().join("requests.jsonl")).unwrap();
    assert!(!log.contains("secret question"));
    let env = env.config("[defaults]\nlog_prompts = true\n");
    assert_eq!(env.run(&["-m", "fast-7b", "logged question"]).code, 0);
    let log = std::fs::read_to_string(env.state_dir().join("requests.jsonl")).unwrap();
    assert!(
        log.lines()
            .last()
            .unwrap()
            .contains("\"prompt\":\"logged question\""),
        "{log}"
    );
}

#[test]
fn a_context_limit_learned_from_a_400_is_remembered() {
    let s = server(|r| {
        let long = r.json()["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .len()
            > 10_000;
        if r.model() == MID && long {
            fake::error_json(400, "This endpoint's maximum context length is 8192 tokens")
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let long = "word ".repeat(4_000);
    let out = env.run_with_stdin(&["-m", MID, "-m", BIG], Some(&long));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(s.chat_models(), vec![MID, BIG]);
    // The same size again: MID is not asked; a short prompt still goes to it.
    let out = env.run_with_stdin(&["--dry-run", "-m", MID, "-m", BIG], Some(&long));
    assert!(out.stdout.contains("too long for it before"), "{out}");
    let out = env.run(&["-m", MID, "short"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(s.chat_models().last().unwrap(), MID);
    let stats = env.run(&["stats", "--json"]).json();
    let mid = crate::harness::stats_row(&stats, "models", "model", MID);
    assert!(
        mid["success_ratio"].as_f64().unwrap() > 0.5,
        "a too-long prompt is not the model's failure: {mid}"
    );
}

#[test]
fn a_model_at_its_learned_request_limit_is_tried_last() {
    // fast-7b takes 4 requests a window, then answers 429 with a Retry-After (a limit on our
    // own requests, not a shared pool); the test opens a new window with `open`.
    let window = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = window.clone();
    let s = FakeServer::start(move |r| {
        use std::sync::atomic::Ordering;
        if r.model() == "fast-7b" && w.fetch_add(1, Ordering::SeqCst) >= 4 {
            return fake::rate_limit_429("fast-7b", 1);
        }
        fake::answer(&r.model(), &["ok"])
    });
    let env = local(&s);
    let at = |ms: u64| [("FREEROUTE_NOW_MS", (1_800_000_000_000 + ms).to_string())];
    let run = |args: &[&str], ms: u64| {
        let now = at(ms);
        env.run_with_env(args, &[(now[0].0, now[0].1.as_str())])
    };
    for _ in 0..4 {
        assert_eq!(run(&["-m", "fast-7b", "q"], 0).code, 0);
    }
    // The fifth meets the limit: its load then (5 requests) is learned.
    let out = run(&["--json", "-m", "fast-7b", "-m", "slow-7b", "q"], 0);
    let v = out.json();
    assert_eq!(v["attempts"][0]["outcome"], "rate_limited", "{out}");
    assert_eq!(v["model"], "slow-7b", "{out}");
    // 40 s later the cool-down is over and the load has faded (5 × e^(-40/60) ≈ 2.6): the
    // model is a candidate again.
    window.store(0, std::sync::atomic::Ordering::SeqCst);
    let plan = run(
        &["--dry-run", "-m", "fast-7b", "-m", "slow-7b", "q"],
        40_000,
    );
    assert!(!plan.stdout.contains("tried last"), "{plan}");
    // Three more requests bring the load back to about 5.6: tried last, without a request,
    // while a model with room exists; the plan says why.
    for _ in 0..3 {
        assert_eq!(run(&["-m", "fast-7b", "q"], 40_000).code, 0);
    }
    let plan = run(
        &["--dry-run", "-m", "fast-7b", "-m", "slow-7b", "q"],
        40_000,
    );
    assert!(plan.stdout.contains("tried last"), "{plan}");
    let sent = s.chats().len();
    let out = run(&["--json", "-m", "fast-7b", "-m", "slow-7b", "q"], 40_000);
    let v = out.json();
    assert_eq!(v["model"], "slow-7b", "{out}");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(s.chats().len(), sent + 1);
}

#[test]
fn sixty_four_parallel_runs_never_send_a_provider_more_than_its_minute_limit() {
    // Issue 14, item 11: the quota is reserved in the state, under its lock, before a
    // request is sent. The clock stands still, so the whole test is one minute window.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = sent.clone();
    let s = FakeServer::start(move |r| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        fake::answer(&r.model(), &["ok"])
    });
    let env = local(&s)
        .config("requests_per_minute = 20\n")
        .var("FREEROUTE_NOW_MS", "1800000000000");
    let children: Vec<_> = (0..64)
        .map(|_| env.spawn(&["-q", "--timeout", "20", "q"]))
        .collect();
    let mut answered = 0;
    for c in children {
        let out = wait_within(c, RUN_LIMIT, "a parallel run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => answered += 1,
            // Full when it tried, or already when it planned: either way it says so.
            Some(4) => assert!(
                stderr.contains("request window is full") || stderr.contains("can be asked now"),
                "{stderr}"
            ),
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
    // Every slot of the window is used, none twice. A run whose first attempt outlives its
    // patience on this loaded machine (64 processes on a few cores; the fake's first tokens
    // teach a 60 ms patience) starts the other model beside it: two slots for one answer.
    assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 20);
    assert!((16..=20).contains(&answered), "{answered} answered");
    let v = stats(&env);
    assert_eq!(v["providers"][0]["requests_this_minute"], 20, "{v}");
}

#[test]
fn a_state_lock_held_by_another_process_costs_a_run_only_its_memory() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(1);
    let env = local(&s);
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let lock = std::fs::File::create(env.state_dir().join("state.lock")).unwrap();
    lock.lock().unwrap();
    let out = env
        .limit(Duration::from_secs(20))
        .run(&["-m", "fast-7b", "q"]);
    drop(lock);
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out}");
    assert!(out.stderr.contains("held the state's lock"), "{out}");
}

#[test]
fn a_run_that_finds_a_provider_full_goes_to_the_next_one() {
    let limited = FakeServer::start(|r| fake::answer(&r.model(), &["limited"]));
    let other = FakeServer::start(|r| fake::answer(&r.model(), &["other"]));
    let env = Env::bare()
        .config(&format!(
            "[providers.limited]\nbase_url = \"{}\"\nmodels = [{{ id = \"fast-7b\", context = 8192 }}]\nrequests_per_minute = 2\n\n\
             [providers.other]\nbase_url = \"{}\"\nmodels = [{{ id = \"other-7b\", context = 8192 }}]\n",
            limited.url("/v1"),
            other.url("/v1")
        ))
        .var("FREEROUTE_NOW_MS", "1800000000000");
    let children: Vec<_> = (0..10)
        .map(|_| env.spawn(&["-q", "--prefer", "fast-*", "q"]))
        .collect();
    let mut answers = Vec::new();
    for c in children {
        let out = wait_within(c, RUN_LIMIT, "a parallel run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        answers.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(
        limited.chats().len(),
        2,
        "the limited provider's window, no more"
    );
    assert_eq!(answers.iter().filter(|a| *a == "limited").count(), 2);
    assert_eq!(answers.iter().filter(|a| *a == "other").count(), 8);
}

/// A request counts in its model's load when it is sent, not when its run ends: a run
/// started while another's request is in flight sees it (parallel runs spread before they
/// meet a model's limit, issue 18), and the outcome recorded later does not count it again.
#[test]
fn a_request_in_flight_counts_in_its_model_load_for_runs_started_meanwhile() {
    let s = server(|r| fake::late_answer(&r.model(), Duration::from_secs(5), &["late ", "answer"]));
    let env = local(&s);
    let load = |v: &serde_json::Value| {
        crate::harness::stats_row(v, "models", "model", "fast-7b")["recent_requests"]
            .as_f64()
            .unwrap()
    };
    let child = env.spawn(&["-q", "--timeout", "60", "-m", "fast-7b", "q"]);
    s.wait_for_chats(1);
    // It fades with a time constant of a minute: about 0.92 after the 5 s of the answer.
    let during = load(&stats(&env));
    assert!((0.85..=1.0).contains(&during), "in flight: {during}");
    let out = wait_within(child, RUN_LIMIT, "the run in flight");
    assert!(out.status.success());
    let after = load(&stats(&env));
    assert!((0.85..=1.0).contains(&after), "counted once: {after}");
}
