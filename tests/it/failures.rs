//! Fallback: every failure of DESIGN §3's table leads to the next candidate (or provider),
//! with the right outcome recorded; deadlines bound hangs; pipes never see half an answer.

use std::time::Duration;

use serde_json::json;

use crate::ask::{BIG, JsonAnswer, JsonFailure, MID, SMALL, server};
use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::{Env, KEY, wait_within};

/// The first model fails with `reply`, the second answers.
fn fall_back(
    reply: impl Fn() -> Reply + Send + Sync + 'static,
    extra: &[&str],
) -> (JsonAnswer, FakeServer) {
    let s = server(move |r| {
        if r.model() == BIG {
            reply()
        } else {
            fake::answer(&r.model(), &["second"])
        }
    })
    .expect_chats(2);
    let mut args = vec!["--json", "-m", BIG, "-m", MID];
    args.extend_from_slice(if extra.is_empty() {
        &["--timeout", "20"]
    } else {
        extra
    });
    args.push("question");
    let out = Env::new(&s).run(&args);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.content, "second");
    assert_eq!(a.model, MID);
    assert_eq!(a.attempts.len(), 2, "{out}");
    assert_eq!(a.attempts[1].outcome, "ok");
    (a, s)
}

fn first_outcome(reply: impl Fn() -> Reply + Send + Sync + 'static) -> (String, Option<u16>) {
    let (a, _) = fall_back(reply, &[]);
    (a.attempts[0].outcome.clone(), a.attempts[0].status)
}

#[test]
fn model_level_failures_fall_back_to_the_next_model() {
    type Case = (
        &'static str,
        Box<dyn Fn() -> Reply + Send + Sync>,
        Option<u16>,
    );
    let cases: Vec<Case> = vec![
        (
            "rate_limited",
            Box::new(|| fake::upstream_429(BIG)),
            Some(429),
        ),
        (
            "rate_limited",
            Box::new(|| {
                Reply::json_with(
                    429,
                    &[("retry-after", "7")],
                    r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"error_type":"rate_limit_exceeded"}}}"#,
                )
            }),
            Some(429),
        ),
        (
            "moderated",
            Box::new(|| {
                Reply::json(
                    403,
                    r#"{"error":{"code":403,"message":"Your chosen model requires moderation and your input was flagged","metadata":{"reasons":["harassment"],"flagged_input":"…","provider_name":"X","model_slug":"m"}}}"#,
                )
            }),
            Some(403),
        ),
        (
            "capability_missing",
            Box::new(|| fake::error_json(404, "No endpoints found that support tool use")),
            Some(404),
        ),
        (
            "bad_request",
            Box::new(|| fake::error_json(400, "meta-llama/x is not a valid model ID")),
            Some(400),
        ),
        (
            "bad_request",
            Box::new(|| fake::error_json(422, "Unprocessable")),
            Some(422),
        ),
        (
            "server_error",
            Box::new(|| Reply::Full {
                status: 502,
                headers: vec![],
                body: "<html>Bad gateway</html>".into(),
            }),
            Some(502),
        ),
        (
            "server_error",
            Box::new(|| fake::error_json(500, "Internal Server Error")),
            Some(500),
        ),
        (
            "server_error",
            Box::new(|| {
                fake::error_json(
                    503,
                    "There is no available model provider that meets your routing requirements",
                )
            }),
            Some(503),
        ),
        (
            "server_error",
            Box::new(|| fake::error_json(524, "edge timeout")),
            Some(524),
        ),
        (
            "server_error",
            Box::new(|| fake::error_json(529, "Provider is temporarily overloaded")),
            Some(529),
        ),
        (
            "server_error",
            Box::new(|| fake::error_json(408, "Your request timed out")),
            Some(408),
        ),
        (
            "server_error",
            Box::new(|| fake::mid_stream_error(BIG, &["partial ", "answer"])),
            Some(200),
        ),
        (
            "empty_answer",
            Box::new(|| fake::answer(BIG, &[])),
            Some(200),
        ),
        (
            "connection_failed",
            Box::new(|| {
                Reply::stream(vec![
                    Step::Send(fake::chunk(BIG, json!({"content": "half"}), None)),
                    Step::Drop,
                ])
            }),
            Some(200),
        ),
    ];
    for (expected, reply, status) in cases {
        let (outcome, got_status) = first_outcome(reply);
        assert_eq!(outcome, expected);
        assert_eq!(got_status, status, "{expected}");
    }
}

#[test]
fn context_too_long_moves_to_a_model_with_a_larger_context() {
    let s = server(|r| {
        if r.model() == MID {
            Reply::json(
                400,
                r#"{"error":{"code":400,"message":"This endpoint's maximum context length is 40960 tokens. However, you requested about 41000 tokens","metadata":{"error_type":"context_length_exceeded"}}}"#,
            )
        } else {
            fake::answer(&r.model(), &["roomy"])
        }
    });
    let out = Env::new(&s).run(&["--json", "-m", MID, "-m", SMALL, "-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "context_too_long");
    assert_eq!(a.model, BIG);
    assert_eq!(
        s.chat_models(),
        vec![MID, BIG],
        "the smaller-context model was skipped"
    );
}

#[test]
fn finish_reason_error_in_a_200_answer_is_never_printed() {
    // A non-streaming body with an embedded error, and a stream ending in finish_reason "error".
    let (a, _) = fall_back(
        || {
            Reply::json(
                200,
                r#"{"choices":[{"message":{"role":"assistant","content":"partial output..."},"finish_reason":"error","error":{"code":502,"message":"Provider disconnected mid-stream","metadata":{"error_type":"provider_unavailable"}}}]}"#,
            )
        },
        &[],
    );
    assert_eq!(a.attempts[0].outcome, "server_error");
    assert!(
        a.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("Provider disconnected")
    );
    let (a, _) = fall_back(
        || {
            Reply::stream(vec![
                Step::Send(fake::chunk(BIG, json!({"content": "so far"}), None)),
                Step::Send(fake::chunk(BIG, json!({"content": ""}), Some("error"))),
                Step::Send("data: [DONE]\n\n".into()),
            ])
        },
        &[],
    );
    assert_eq!(a.attempts[0].outcome, "server_error");
}

#[test]
fn string_error_code_mid_stream_is_understood() {
    let (a, _) = fall_back(
        || {
            Reply::stream(vec![
            Step::Send(fake::chunk(BIG, json!({"content": "Hi"}), None)),
            Step::Send("data: {\"error\":{\"code\":\"server_error\",\"message\":\"Provider disconnected unexpectedly\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n".into()),
        ])
        },
        &[],
    );
    assert!(
        a.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("server_error")
    );
}

#[test]
fn a_pipe_never_sees_half_an_answer() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::mid_stream_error(BIG, &["The first half of a ", "broken answer"])
        } else {
            fake::answer(&r.model(), &["A complete answer."])
        }
    })
    .expect_chats(2);
    let out = Env::new(&s).run(&["-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "A complete answer.\n");
}

#[test]
fn streamed_output_that_breaks_ends_with_exit_4() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::mid_stream_error(BIG, &["The first half"])
        } else {
            fake::answer(&r.model(), &["other"])
        }
    });
    let out = Env::new(&s).run(&["--stream", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(out.stdout, "The first half\n");
    assert!(out.stderr.contains("broke off"), "{out}");
    assert_eq!(s.chat_models(), vec![BIG], "no fallback once output began");
}

#[test]
fn a_hang_after_headers_is_bounded_and_the_next_model_answers() {
    let s = server(|r| {
        if r.model() == BIG {
            Reply::stream(vec![
                Step::Send(": OPENROUTER PROCESSING\n\n".into()),
                Step::Hang,
            ])
        } else {
            fake::answer(&r.model(), &["rescued"])
        }
    })
    .expect_chats(2);
    let out = Env::new(&s).run(&["--json", "-m", BIG, "-m", MID, "--timeout", "4", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "timeout");
    // The hung attempt got at most half of the deadline (generous margin for slow machines).
    assert!(a.attempts[0].elapsed_ms < 3_500, "{:?}", a.attempts[0]);
    assert_eq!(a.content, "rescued");
}

#[test]
fn a_stall_mid_stream_is_a_timeout() {
    let (a, _) = fall_back(
        || {
            Reply::stream(vec![
                Step::Send(fake::chunk(BIG, json!({"content": "start"}), None)),
                Step::Hang,
            ])
        },
        &["--timeout", "4"],
    );
    assert_eq!(a.attempts[0].outcome, "timeout");
    assert!(a.attempts[0].error.as_deref().unwrap().contains("stalled"));
    // The stall may take at most half of the time left (about 2 s of 4), leaving the rest
    // to the next model; generous margin for slow machines.
    assert!(a.attempts[0].elapsed_ms < 3_500, "{:?}", a.attempts[0]);
}

#[test]
fn a_stall_on_the_only_model_ends_at_the_idle_cap_not_the_deadline() {
    // One candidate and ten minutes: after the first token only the cap between chunks
    // (30 s) bounds the wait. The run's limit stays under the fake's own connection limit
    // (90 s), so a missing cap shows as a run killed at the limit, not as a dropped
    // connection.
    let s = server(|r| {
        Reply::stream(vec![
            Step::Send(fake::chunk(&r.model(), json!({"content": "start"}), None)),
            Step::Hang,
        ])
    })
    .expect_chats(1);
    let env = Env::new(&s).limit(Duration::from_secs(80));
    let out = env.run(&["--json", "-m", BIG, "--timeout", "600", "q"]);
    assert!(matches!(out.code, 4 | 5), "{out}");
    let f: JsonFailure = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(f.attempts[0].outcome, "timeout", "{out}");
    assert!(
        f.attempts[0].error.as_deref().unwrap().contains("stalled"),
        "{out}"
    );
}

#[test]
fn hang_on_the_only_model_ends_at_the_deadline_with_exit_5() {
    let s = server(|_| Reply::Hang);
    let out = Env::new(&s).run(&["--json", "-m", BIG, "--timeout", "2", "q"]);
    assert_eq!(out.code, 5, "{out}");
    let f: JsonFailure = serde_json::from_str(&out.stdout).unwrap();
    assert!(!f.ok);
    assert_eq!(f.error.kind, "deadline");
    assert_eq!(f.attempts[0].outcome, "timeout");
}

#[test]
fn all_failing_gives_exit_4_and_a_json_failure() {
    let s = server(|_| fake::error_json(502, "down"));
    let out = Env::new(&s).run(&["--json", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 4, "{out}");
    let f: JsonFailure = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(f.error.kind, "all_failed");
    assert!(
        f.error.message.contains("2 server_error"),
        "{}",
        f.error.message
    );
    assert_eq!(f.attempts.len(), 2);
    let out = Env::new(&s).run(&["-m", BIG, "q"]);
    assert_eq!(out.code, 4);
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("error: Every attempt failed"), "{out}");
}

#[test]
fn attempts_limit_is_respected() {
    let s = server(|_| fake::error_json(500, "down"));
    let out = Env::new(&s).run(&["--attempts", "2", "q"]);
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(s.chats().len(), 2);
}

/// Two providers on one fake server: OpenRouter and a second account under `/second/v1`.
fn two_providers(
    first: impl Fn(&fake::Request) -> Reply + Send + Sync + 'static,
) -> (FakeServer, Env) {
    let s = FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            crate::ask::catalog()
        } else if r.path.starts_with("/api/") {
            first(r)
        } else {
            fake::answer(&r.model(), &["from the second provider"])
        }
    });
    let env = Env::new(&s).var("SECOND_KEY", "second-key-value").config(&format!(
        "[providers.second]\nbase_url = \"{}\"\napi_key_env = \"SECOND_KEY\"\nmodels = [{{ id = \"local-model\", context = 32768 }}]\n",
        s.url("/second/v1")
    ));
    (s, env)
}

#[test]
fn quota_429_skips_the_providers_other_free_models_and_moves_on() {
    let reset = 4_102_444_800_000u64; // far future, in epoch ms
    let (s, env) = two_providers(move |_| fake::daily_quota_429(reset));
    let s = s.expect_chats(2);
    let out = env.run(&["--json", "--prefer", "meta-llama/*", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.provider, "second");
    assert_eq!(a.attempts[0].outcome, "quota_exhausted");
    assert_eq!(
        (
            a.attempts[0].provider.as_str(),
            a.attempts[0].model.as_str()
        ),
        ("openrouter", BIG)
    );
    assert_eq!(
        (
            a.attempts[1].provider.as_str(),
            a.attempts[1].model.as_str()
        ),
        ("second", "local-model")
    );
    let to_openrouter = s
        .chats()
        .iter()
        .filter(|r| r.path.starts_with("/api/"))
        .count();
    assert_eq!(
        to_openrouter, 1,
        "no other OpenRouter free model was asked after the quota 429"
    );
    // The next run remembers: OpenRouter is skipped without a request.
    let out = env.run(&["--json", "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        s.chats()
            .iter()
            .filter(|r| r.path.starts_with("/api/"))
            .count(),
        1
    );
}

#[test]
fn provider_wide_failures_skip_the_provider() {
    for (reply, outcome) in [
        (fake::error_json(401, "User not found."), "auth_failed"),
        (
            fake::error_json(402, "Insufficient credits"),
            "payment_required",
        ),
        (
            fake::error_json(
                404,
                "No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy",
            ),
            "policy_blocked",
        ),
    ] {
        let (s, env) = two_providers(move |_| reply.clone());
        let s = s.expect_chats(2);
        let out = env.run(&["--json", "--prefer", "meta-llama/*", "q"]);
        assert_eq!(out.code, 0, "{out}");
        let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(a.attempts[0].outcome, outcome);
        assert_eq!(a.provider, "second");
        assert_eq!(
            s.chats()
                .iter()
                .filter(|r| r.path.starts_with("/api/"))
                .count(),
            1,
            "{outcome}"
        );
    }
}

#[test]
fn a_wrong_key_everywhere_is_exit_6_naming_the_variable() {
    let s = server(|_| fake::error_json(401, "User not found."));
    let out = Env::new(&s).run(&["q"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("OPENROUTER_API_KEY"), "{out}");
}

#[test]
fn data_policy_block_prints_the_remedy() {
    let s = server(|_| {
        fake::error_json(
            404,
            "No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy",
        )
    });
    let out = Env::new(&s).run(&["q"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(
        out.stderr
            .contains("https://openrouter.ai/settings/privacy"),
        "{out}"
    );
}

#[test]
fn each_key_goes_only_to_its_own_provider() {
    let (s, env) = two_providers(|_| fake::upstream_429(BIG));
    let s = s.expect_chats(2);
    let out = env.run(&["-m", BIG, "-m", "local-model", "q"]);
    assert_eq!(out.code, 0, "{out}");
    for r in s.requests() {
        let auth = r.header("authorization").unwrap_or_default().to_string();
        if r.path.starts_with("/api/") {
            assert_eq!(auth, format!("Bearer {KEY}"), "{}", r.path);
        } else {
            assert_eq!(auth, "Bearer second-key-value", "{}", r.path);
        }
    }
}

#[test]
fn the_key_never_appears_in_output_even_when_echoed() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::error_json(400, &format!("bad header Authorization: Bearer {KEY}"))
        } else if r.model() == MID {
            fake::error_json(500, "down")
        } else {
            fake::answer(&r.model(), &["fine"])
        }
    })
    .expect_chats(3);
    let env = Env::new(&s);
    for args in [
        vec!["-v", "--json", "-m", BIG, "-m", MID, "-m", SMALL, "q"],
        vec!["-v", "-m", BIG, "-m", MID, "q"],
        vec!["-v", "--dry-run", "q"],
        vec!["config", "show"],
    ] {
        let out = env.run(&args);
        assert!(
            !out.stdout.contains(KEY) && !out.stderr.contains(KEY),
            "{args:?}: {out}"
        );
        assert!(
            !out.stdout.contains("0123456789abcdef") && !out.stderr.contains("0123456789abcdef")
        );
    }
    for entry in walk(env.home.path()) {
        let text = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains(KEY),
            "key written to {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn a_cooled_down_model_is_not_tried_first_next_run() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::upstream_429(BIG)
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let out = env.run(&["--prefer", "meta-llama/*", "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(s.chat_models()[0], BIG);
    let out = env.run(&["--prefer", "meta-llama/*", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let asked = s.chat_models();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_ne!(asked[2], BIG, "the rate-limited model is cooling down");
}

#[test]
fn ctrl_c_ends_the_run_at_once_with_130() {
    let s = server(|_| Reply::Hang);
    let env = Env::new(&s);
    let child = env.spawn(&["--json", "-m", BIG, "--timeout", "50", "q"]);
    s.wait_for_chats(1);
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = wait_within(child, Duration::from_secs(20), "the run after Ctrl-C");
    assert_eq!(out.status.code(), Some(130));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "interrupted");
    assert_eq!(v["ok"], false);
}
