//! Regressions found in review: each test names what went wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use serde_json::json;

use crate::ask::{BIG, JsonAnswer, MID, server};
use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::Env;

#[test]
fn keys_to_loopback_never_go_through_an_http_proxy() {
    let proxy = FakeServer::start(|_| Reply::json(502, "{}"));
    let s = server(|r| fake::answer(&r.model(), &["direct"])).expect_chats(1);
    let proxy_url = proxy.url("");
    let env = Env::new(&s)
        .var("HTTP_PROXY", &proxy_url)
        .var("http_proxy", &proxy_url)
        .var("ALL_PROXY", &proxy_url);
    let out = env.run(&["-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "direct\n");
    assert!(
        proxy.requests().is_empty(),
        "the proxy saw {:?}",
        proxy
            .requests()
            .iter()
            .map(|r| r.header("authorization"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn dry_run_json_with_no_candidate_prints_one_object() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let out = Env::new(&s).run(&["--dry-run", "--json", "--exclude", "*", "q"]);
    assert_eq!(out.code, 3, "{out}");
    let v = out.json();
    assert_eq!(v["candidates"], json!([]));
}

#[test]
fn reasoning_does_not_stretch_the_first_token_share() {
    // BIG thinks aloud (reasoning deltas) for a long time and never answers in time.
    let s = server(|r| {
        if r.model() == BIG {
            let mut steps = Vec::new();
            for _ in 0..100 {
                steps.push(Step::Send(fake::chunk(
                    BIG,
                    json!({"content": "", "reasoning": "hmm "}),
                    None,
                )));
                steps.push(Step::Sleep(Duration::from_millis(100)));
            }
            Reply::stream(steps)
        } else {
            fake::answer(&r.model(), &["answer"])
        }
    })
    .expect_chats(2);
    let out = Env::new(&s).run(&["--json", "--timeout", "6", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "timeout");
    assert!(
        a.attempts[0].elapsed_ms < 4_500,
        "half of 6 s, not all of it: {:?}",
        a.attempts[0]
    );
}

#[test]
fn a_tool_call_answer_without_done_is_still_an_answer() {
    let s = server(|r| {
        Reply::stream(vec![
            Step::Send(fake::chunk(
                &r.model(),
                json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
                None,
            )),
            Step::Send(fake::chunk(&r.model(), json!({}), Some("tool_calls"))),
            Step::Hang,
        ])
    }).expect_chats(1);
    let env = Env::new(&s);
    let tools = env.path("t.json");
    std::fs::write(&tools, r#"[{"type":"function","function":{"name":"f"}}]"#).unwrap();
    let out = env.run(&["--tools", tools.to_str().unwrap(), "--timeout", "6", "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("\"name\":\"f\""), "{out}");
}

#[test]
fn crlf_events_split_across_writes_are_read() {
    let s = server(|r| {
        let m = r.model();
        let a = fake::chunk(&m, json!({"content": "Hel"}), None).replace("\n\n", "\r\n\r\n");
        let b = fake::chunk(&m, json!({"content": "lo"}), Some("stop")).replace("\n\n", "\r\n\r\n");
        let (b1, b2) = b.split_at(b.len() / 2);
        Reply::stream(vec![
            Step::Send(": OPENROUTER PROCESSING\r\n\r\n".into()),
            Step::Send(a),
            Step::Send(b1.to_string()),
            Step::Sleep(Duration::from_millis(20)),
            Step::Send(b2.to_string()),
            Step::Send("data: [DONE]\r\n\r\n".into()),
        ])
    })
    .expect_chats(1);
    let out = Env::new(&s).run(&["-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "Hello\n");
}

#[test]
fn a_key_refused_while_listing_models_is_exit_6_naming_the_variable() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            fake::error_json(401, "Invalid API Key")
        } else {
            fake::answer(&r.model(), &["x"])
        }
    });
    let env = Env::bare()
        .var("GROQ_API_KEY", "gsk_wrong")
        .config(&format!(
            "[providers.groq]\nbase_url = \"{}\"\n",
            s.url("/v1")
        ));
    let out = env.run(&["q"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("GROQ_API_KEY"), "{out}");
    assert!(!out.stderr.contains("gsk_wrong"));
}

#[test]
fn a_key_written_as_api_key_env_is_refused_and_not_echoed() {
    let env = Env::bare().config("[providers.groq]\napi_key_env = \"gsk_live_abcdef123\"\n");
    let out = env.run(&["config", "show"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(
        !out.stdout.contains("gsk_live_abcdef123") && !out.stderr.contains("gsk_live_abcdef123"),
        "{out}"
    );
}

#[test]
fn a_model_cooling_down_is_still_tried_when_nothing_else_is_left() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::error_json(502, "down")
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    assert_eq!(env.run(&["-m", BIG, "q"]).code, 4);
    // BIG now cools down; asked for BIG alone, it is tried anyway rather than exit 3.
    let out = env.run(&["--json", "-m", BIG, "q"]);
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(s.chats().len(), 2);
    let out = env.run(&["--dry-run", "-m", BIG, "-m", MID, "q"]);
    assert!(
        out.stdout.contains("cooling down") && out.stdout.contains("tried last"),
        "{out}"
    );
    let first = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1."))
        .unwrap();
    assert!(first.contains(MID), "{out}");
}

#[test]
fn huge_timeouts_are_a_usage_error_not_a_crash() {
    let out = Env::bare().run(&["--timeout", "1e30", "q"]);
    assert_eq!(out.code, 2, "{out}");
}

#[test]
fn translating_an_image_reads_its_text_and_sends_no_empty_text_part() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            fake::catalog(vec![fake::model_entry(
                "v/see-8b:free",
                "0",
                Some(32768),
                &["text", "image"],
                &[],
            )])
        } else {
            fake::answer(&r.model(), &["AUSGANG"])
        }
    })
    .expect_chats(1);
    let png = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sign.png");
    let out = Env::new(&s).run(&["--translate", "--to", "German", "-i", png.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    let body = s.chats()[0].json();
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Transcribe")
    );
    let parts = body["messages"][1]["content"].as_array().unwrap();
    assert!(
        parts
            .iter()
            .all(|p| p["type"] != "text" || !p["text"].as_str().unwrap().trim().is_empty())
    );
}

#[test]
fn a_429_that_says_when_is_waited_for_once_nothing_else_is_left() {
    let limited = Arc::new(AtomicUsize::new(0));
    let l = limited.clone();
    let s = server(move |r| {
        if r.model() == BIG && l.fetch_add(1, SeqCst).is_multiple_of(2) {
            fake::rate_limit_429(BIG, 1)
        } else {
            fake::answer(&r.model(), &["back"])
        }
    })
    .expect_chats(2);
    let env = Env::new(&s);
    // Nothing else to try: the run waits the second it was told, then asks again.
    let started = std::time::Instant::now();
    let out = env.run(&["--json", "-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.content, "back", "{out}");
    let outcomes: Vec<&str> = a.attempts.iter().map(|t| t.outcome.as_str()).collect();
    assert_eq!(outcomes, ["rate_limited", "ok"], "{out}");
    assert!(
        out.stderr.contains("waiting ") && out.stderr.contains("s for openrouter/"),
        "{out}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // With another model left, nothing is waited for (BIG, now at the request limit its
    // 429 taught, goes last and MID answers); and a deadline that leaves no room for the
    // wait plus 2 s for the attempt ends the run after BIG's next 429, without waiting.
    let out = env.run(&["--json", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(
        (out.code, out.json()["model"].as_str()),
        (0, Some(MID)),
        "{out}"
    );
    assert!(!out.stderr.contains("waiting"), "{out}");
    let out = env.run(&["--timeout", "2.5", "-m", BIG, "q"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(!out.stderr.contains("waiting"), "{out}");
}

#[test]
fn the_per_minute_free_quota_is_waited_for_when_it_is_the_only_way() {
    let spent = Arc::new(AtomicUsize::new(0));
    let n = spent.clone();
    let s = server(move |r| {
        if n.fetch_add(1, SeqCst) == 0 {
            fake::minute_quota_429(1_000)
        } else {
            fake::answer(&r.model(), &["after the minute"])
        }
    });
    let out = Env::new(&s).run(&["--json", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let v = out.json();
    assert_eq!(v["attempts"][0]["outcome"], "quota_exhausted", "{out}");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 2, "{out}");
    // The whole provider was out: MID was not asked before the reset, BIG after it.
    assert_eq!(s.chat_models(), [BIG, BIG], "{out}");
    assert!(out.stderr.contains("waiting"), "{out}");
}

#[test]
fn a_clock_rate_shortens_waits_on_the_memorys_clock() {
    // bench/fleet.sh runs the memory's clock ten times faster than the wall clock; a
    // Retry-After of 20 s on that clock is then 2 s of waiting (at 1000× here, 20 ms).
    let first = Arc::new(AtomicUsize::new(0));
    let f = first.clone();
    let s = server(move |r| {
        if f.fetch_add(1, SeqCst) == 0 {
            fake::rate_limit_429(BIG, 20)
        } else {
            fake::answer(&r.model(), &["soon"])
        }
    })
    .expect_chats(2);
    let started = std::time::Instant::now();
    let out = Env::new(&s).run_with_env(
        &["-m", BIG, "q"],
        &[
            ("FREEROUTE_NOW_MS", "1800000000000"),
            ("FREEROUTE_CLOCK_RATE", "1000"),
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("waiting 0.0s"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "not 20 s of waiting"
    );
}

#[test]
fn a_short_retry_after_does_not_reopen_a_provider_whose_quota_is_spent() {
    // BIG's pool says "retry in 1 s"; MID, of the same provider, says the account's
    // per-minute free quota is spent for a minute: no request before that minute is over.
    let s = server(|r| {
        if r.model() == BIG {
            fake::upstream_429(BIG).with_header("retry-after", "1")
        } else {
            fake::minute_quota_429(60_000)
        }
    });
    let out = Env::new(&s).run(&["--json", "--timeout", "9", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(!out.stderr.contains("waiting"), "{out}");
    assert_eq!(s.chat_models(), [BIG, MID], "{out}");
}

/// Issue 13: `batch --timeout` was checked apart from a single run's, and `inf` aborted
/// the process (exit 134) instead of the single run's clean usage error.
#[test]
fn batch_timeout_inf_is_the_single_runs_usage_error() {
    let s = FakeServer::start(|r| match r.path.ends_with("/models") {
        true => crate::ask::catalog(),
        false => fake::answer(&r.model(), &["hi"]),
    });
    let env = Env::new(&s);
    let single = env.run(&["--timeout", "inf", "q"]);
    assert_eq!(single.code, 2, "{single}");
    let batch = env.run_with_stdin(&["batch", "--timeout", "inf"], Some("q\n"));
    assert_eq!(batch.code, 2, "{batch}");
    let message = |o: &crate::harness::Out| {
        o.stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .map(str::to_string)
    };
    assert_eq!(message(&batch), message(&single), "{batch}");
    assert!(message(&batch).unwrap().contains("--timeout"), "{batch}");
    assert!(s.chats().is_empty(), "nothing was sent");
}

/// Issue 13: `stats` counted a provider's requests of today by the UTC day, so Gemini's
/// (whose quota day starts at 08:00 UTC) showed 0 between 00:00 and 08:00 UTC.
#[test]
fn stats_counts_geminis_requests_by_its_own_day_at_three_utc() {
    // Gemini's models are the preset's list: the fake is asked only to chat.
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["hi"])).expect_chats(2);
    let env = Env::bare()
        .var("GEMINI_API_KEY", "AIza-test-gemini-key-654321")
        .config(&format!(
            "[providers.gemini]\nbase_url = \"{}\"\n",
            s.url("/gemini/v1beta/openai")
        ));
    // 03:00 UTC on day 20,000: still the day before at Gemini.
    let three_am = (20_000u64 * 86_400_000 + 3 * 3_600_000).to_string();
    let at = [("FREEROUTE_NOW_MS", three_am.as_str())];
    for _ in 0..2 {
        let out = env.run_with_env(&["-q", "-p", "gemini", "q"], &at);
        assert_eq!(out.code, 0, "{out}");
    }
    let v = env.run_with_env(&["stats", "--json"], &at).json();
    let gemini = crate::harness::stats_row(&v, "providers", "provider", "gemini");
    assert_eq!(gemini["requests_today"], 2, "{v}");
}
