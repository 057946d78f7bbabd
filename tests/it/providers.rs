//! Every free model the user can reach (DESIGN §2): presets with their own keys, header
//! dialects and error shapes; keyless services; local servers found by themselves; key
//! isolation, redirects included.

use serde_json::json;

use crate::ask::JsonAnswer;
use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::{Env, KEY};

const GROQ_KEY: &str = "gsk_test_groq_key_123456";
const GEMINI_KEY: &str = "AIza-test-gemini-key-654321";

fn groq_models() -> Reply {
    Reply::json(200, json!({"object": "list", "data": [
        {"id": "llama-3.3-70b-versatile", "object": "model", "created": 1733447754, "owned_by": "Meta", "active": true, "context_window": 131072},
        {"id": "llama-3.1-8b-instant", "object": "model", "owned_by": "Meta", "active": true, "context_window": 131072},
        {"id": "whisper-large-v3", "object": "model", "owned_by": "OpenAI", "active": true, "context_window": 448}
    ]}).to_string())
}

/// OpenRouter under /api, Groq under /groq, Gemini under /gemini, each with its own rules.
fn fleet(groq_chat: impl Fn(&fake::Request) -> Reply + Send + Sync + 'static) -> (FakeServer, Env) {
    let s = FakeServer::start(move |r| {
        let p = r.path.as_str();
        match (
            p.starts_with("/groq"),
            p.starts_with("/gemini"),
            p.ends_with("/models"),
        ) {
            (true, _, true) => groq_models(),
            (true, _, false) => groq_chat(r),
            (_, true, _) if r.model() == "gemini-2.5-flash" => Reply::json(
                429,
                r#"[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]"#,
            ),
            (_, true, _) => fake::answer(&r.model(), &["from gemini"]),
            (_, _, true) => crate::ask::catalog(),
            _ => fake::answer(&r.model(), &["from openrouter"]),
        }
    });
    let env = Env::new(&s)
        .var("GROQ_API_KEY", GROQ_KEY)
        .var("GEMINI_API_KEY", GEMINI_KEY)
        .config(&format!(
            "[providers.groq]\nbase_url = \"{}\"\n[providers.gemini]\nbase_url = \"{}\"\n",
            s.url("/groq/openai/v1"),
            s.url("/gemini/v1beta/openai")
        ));
    (s, env)
}

fn groq_quota_429() -> Reply {
    Reply::json_with(
        429,
        &[
            ("retry-after", "2"),
            ("x-ratelimit-limit-requests", "1000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2h13m7.2s"),
        ],
        r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` on requests per day (RPD): Limit 1000, Used 1000","type":"requests","code":"rate_limit_exceeded"}}"#,
    )
}

#[test]
fn groq_day_quota_moves_the_run_to_another_provider_without_waste() {
    let (s, env) = fleet(|_| groq_quota_429());
    let s = s.expect_chats(2);
    let out = env.run(&[
        "--json",
        "-p",
        "groq",
        "-p",
        "gemini",
        "-m",
        "llama-3.3-70b-versatile",
        "-m",
        "gemini-2.5-flash",
        "-m",
        "gemini-2.5-flash-lite",
        "q",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].provider, "groq");
    assert_eq!(a.attempts[0].outcome, "quota_exhausted");
    assert_eq!(a.provider, "gemini");
    let groq_chats: Vec<_> = s
        .chats()
        .into_iter()
        .filter(|r| r.path.starts_with("/groq"))
        .collect();
    assert_eq!(
        groq_chats.len(),
        1,
        "the other Groq model was not asked after the day quota"
    );
    assert_eq!(
        groq_chats[0].header("authorization"),
        Some(format!("Bearer {GROQ_KEY}").as_str())
    );
    assert!(
        !s.chat_models().iter().any(|m| m.contains("whisper")),
        "speech models are not chat models"
    );
    // Gemini's array-shaped 429 is read and the next Gemini model answers.
    assert!(
        a.attempts
            .iter()
            .any(|x| x.provider == "gemini" && x.outcome == "rate_limited"),
        "{:?}",
        a.attempts
    );
    assert_eq!(a.content, "from gemini");
    // The next run skips Groq with no request until the header's reset.
    let out = env.run(&["--json", "-p", "groq", "-p", "gemini", "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        s.chats()
            .iter()
            .filter(|r| r.path.starts_with("/groq"))
            .count(),
        1
    );
    let stats = env.run(&["stats", "--json"]).json();
    let groq = crate::harness::stats_row(&stats, "providers", "provider", "groq");
    assert!(groq["skipped_until_ms"].as_u64().is_some(), "{groq}");
}

#[test]
fn a_wrong_key_is_skipped_with_a_message_naming_its_variable() {
    let (s, env) = fleet(|_| fake::error_json(401, "Invalid API Key"));
    let out = env.run(&[
        "-p",
        "groq",
        "-p",
        "openrouter",
        "--prefer",
        "llama-3.*",
        "q",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("groq refused its key: check GROQ_API_KEY"),
        "{out}"
    );
    assert_eq!(
        s.chats()
            .iter()
            .filter(|r| r.path.starts_with("/groq"))
            .count(),
        1
    );
    for key in [KEY, GROQ_KEY, GEMINI_KEY] {
        assert!(!out.stdout.contains(key) && !out.stderr.contains(key));
    }
}

#[test]
fn every_provider_gets_only_its_own_key() {
    let (s, env) = fleet(|r| fake::answer(&r.model(), &["from groq"]));
    let s = s.expect_chats(3);
    for p in ["groq", "gemini", "openrouter"] {
        let out = env.run(&["-p", p, "q"]);
        assert_eq!(out.code, 0, "{p}: {out}");
    }
    for r in s.requests() {
        let auth = r.header("authorization").unwrap_or_default().to_string();
        let expected = if r.path.starts_with("/groq") {
            GROQ_KEY
        } else if r.path.starts_with("/gemini") {
            GEMINI_KEY
        } else {
            KEY
        };
        assert_eq!(
            auth,
            format!("Bearer {expected}"),
            "{} {}",
            r.method,
            r.path
        );
    }
    // Gemini's catalog is built in: no /models request went there.
    assert!(
        !s.requests()
            .iter()
            .any(|r| r.path.starts_with("/gemini") && r.path.ends_with("/models"))
    );
}

#[test]
fn a_redirect_never_carries_a_key_elsewhere() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            return crate::ask::catalog();
        }
        if r.path.starts_with("/api/") {
            return Reply::Full {
                status: 307,
                headers: vec![("location".into(), "/elsewhere/v1/chat/completions".into())],
                body: String::new(),
            };
        }
        fake::answer(&r.model(), &["second"])
    })
    .expect_chats(2);
    let env = Env::new(&s).var("SECOND_KEY", "second-secret").config(&format!(
        "[providers.second]\nbase_url = \"{}\"\napi_key_env = \"SECOND_KEY\"\nmodels = [{{ id = \"m\" }}]\n",
        s.url("/second/v1")
    ));
    let out = env.run(&["--json", "-m", crate::ask::BIG, "-m", "m", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "server_error");
    assert!(
        !s.requests()
            .iter()
            .any(|r| r.path.starts_with("/elsewhere")),
        "the redirect was not followed"
    );
    assert!(
        s.requests()
            .iter()
            .filter(|r| r.path.starts_with("/second"))
            .all(|r| r.header("authorization") == Some("Bearer second-secret"))
    );
}

#[test]
fn a_refusing_local_endpoint_costs_almost_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let s = crate::ask::server(|r| fake::answer(&r.model(), &["cloud"])).expect_chats(1);
    let env = Env::new(&s).config(&format!("[providers.dead]\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodels = [{{ id = \"local\" }}]\n"));
    let out = env.run(&["--json", "-m", "local", "-m", crate::ask::BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "connection_failed");
    assert!(
        a.attempts[0].elapsed_ms < 1_000,
        "a refused connection is immediate: {:?}",
        a.attempts[0]
    );
}

/// A keyless preset pointed at the fake server, the others turned off.
fn keyless_env(s: &FakeServer, mode: &str) -> Env {
    Env::bare().var("FREEROUTE_KEYLESS", mode).config(&format!(
        "[defaults]\nkeyless = \"auto\"\n[providers.llm7]\nbase_url = \"{}\"\n[providers.kilo]\nenabled = false\n[providers.ovhcloud]\nenabled = false\n",
        s.url("/llm7/v1")
    ))
}

#[test]
fn keyless_service_answers_with_no_authorization_and_says_so() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["keyless answer"])).expect_chats(2);
    for mode in ["1", "auto"] {
        let out = keyless_env(&s, mode).run(&["q"]);
        assert_eq!(out.code, 0, "{mode}: {out}");
        assert_eq!(out.stdout, "keyless answer\n");
        assert!(
            out.stderr.contains("llm7") && out.stderr.contains("may log prompts"),
            "{out}"
        );
    }
    for r in s.chats() {
        assert_eq!(
            r.header("authorization"),
            None,
            "no key goes to a keyless service"
        );
        assert_eq!(r.path, "/llm7/v1/chat/completions");
    }
    // Off: no key and nothing else is exit 6.
    let out = keyless_env(&s, "0").run(&["q"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("keyless services are off"), "{out}");
}

#[test]
fn keyless_auto_stays_out_when_a_key_is_set() {
    let s = crate::ask::server(|r| fake::answer(&r.model(), &["cloud"]));
    let env = Env::new(&s)
        .var("FREEROUTE_KEYLESS", "auto")
        .config(&format!(
            "[providers.llm7]\nbase_url = \"{}\"\n",
            s.url("/llm7/v1")
        ));
    let out = env.run(&["--dry-run", "--json", "q"]);
    let v = out.json();
    assert!(
        v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["provider"] == "openrouter"),
        "{v}"
    );
    // keyless = true puts them in the plan, after every keyed model.
    let out = env.run_with_env(&["--dry-run", "--json", "q"], &[("FREEROUTE_KEYLESS", "1")]);
    let cands = out.json()["candidates"].as_array().unwrap().clone();
    let last = cands.last().unwrap()["provider"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ["llm7", "kilo", "ovhcloud"].contains(&last.as_str()),
        "{last}"
    );
    assert_eq!(cands[0]["provider"], "openrouter");
}

#[test]
fn a_local_server_on_a_discovery_port_is_found_and_used() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            Reply::json(200, json!({"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx": 4096}}]}).to_string())
        } else {
            fake::answer(&r.model(), &["local answer"])
        }
    }).expect_chats(1);
    let env = Env::bare()
        .var("FREEROUTE_DISCOVER", "1")
        .config(&format!("[defaults]\ndiscover_ports = [{}]\n", s.port));
    let out = env.run(&["--json", "hi"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.provider, format!("local-{}", s.port));
    assert_eq!(a.model, "smollm2");
    let out = env.run(&["models", "--json"]);
    let rows = out.json();
    assert_eq!(rows[0]["provider"], format!("local-{}", s.port));
    assert_eq!(rows[0]["context"], 4096);
    let out = env.run(&["config", "show"]);
    assert!(out.stdout.contains("found on a loopback port"), "{out}");
    // Turned off, nothing is found and, with no key, it is exit 6.
    let out = env.run_with_env(&["hi"], &[("FREEROUTE_DISCOVER", "0")]);
    assert_eq!(out.code, 6, "{out}");
}

#[test]
fn cerebras_gets_a_tight_max_tokens_and_its_headers_are_read() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            Reply::json(200, json!({"object": "list", "data": [{"id": "gpt-oss-120b", "object": "model", "owned_by": "Cerebras"}]}).to_string())
        } else {
            let mut reply = fake::answer(&r.model(), &["fast"]);
            if let Reply::Stream { headers, .. } = &mut reply {
                headers.push(("x-ratelimit-remaining-requests-day".into(), "0".into()));
                headers.push(("x-ratelimit-reset-requests-day".into(), "3600".into()));
            }
            reply
        }
    });
    let env = Env::bare()
        .var("CEREBRAS_API_KEY", "csk-test")
        .config(&format!(
            "[providers.cerebras]\nbase_url = \"{}\"\n",
            s.url("/v1")
        ));
    let out = env.run(&["--json", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let body = s.chats()[0].json();
    assert_eq!(body["max_tokens"], 2048);
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.content, "fast");
    // The headers said the day is spent: the next run does not ask.
    let out = env.run(&["q"]);
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(s.chats().len(), 1);
}

#[test]
fn config_show_lists_presets_on_and_off_with_reasons() {
    let env = Env::bare()
        .var("GROQ_API_KEY", GROQ_KEY)
        .config("[providers.mistral]\nenabled = false\n");
    let out = env.run(&["config", "show"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("[providers.groq]  # on: its key variable is set"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("[providers.mistral]  # OFF: enabled = false"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("[providers.gemini]  # OFF: GEMINI_API_KEY is not set"),
        "{out}"
    );
    assert!(out.stdout.contains("keyless = false"), "{out}");
    assert!(!out.stdout.contains(GROQ_KEY));
}

#[test]
fn a_local_model_idle_for_minutes_may_take_seconds_to_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    // A model measured warm in milliseconds, then unloaded (Ollama's keep_alive): its next
    // first token waits 2.6 s for the load, more than the 2 s a warm model would get.
    let cold = Arc::new(AtomicBool::new(false));
    let c = cold.clone();
    let s = FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            Reply::json(200, json!({"object": "list", "data": [{"id": "warm-3b", "object": "model"}, {"id": "other-3b", "object": "model"}]}).to_string())
        } else {
            let mut steps = Vec::new();
            if r.model() == "warm-3b" && c.load(SeqCst) {
                steps.push(Step::Sleep(std::time::Duration::from_millis(2_600)));
            }
            steps.extend(fake::answer_steps(&r.model(), &["from ", &r.model()]));
            Reply::stream(steps)
        }
    }).expect_chats(5);
    let env = Env::bare()
        .var("FREEROUTE_DISCOVER", "1")
        .config(&format!("[defaults]\ndiscover_ports = [{}]\n", s.port));
    let at = |min: u64| (1_800_000_000_000u64 + min * 60_000).to_string();
    let ask = |min: u64| {
        env.run_with_env(
            &["--json", "-m", "warm-3b", "-m", "other-3b", "q"],
            &[("FREEROUTE_NOW_MS", &at(min))],
        )
    };
    for _ in 0..3 {
        assert_eq!(ask(0).json()["model"], "warm-3b");
    }
    cold.store(true, SeqCst);
    // A minute later it is still loaded as far as anyone knows: after its patience (a few
    // hundred ms) the next model is started beside it, and answers first.
    let v = ask(1).json();
    assert_eq!(v["model"], "other-3b", "{v}");
    let warm = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["model"] == "warm-3b");
    assert_eq!(warm.unwrap()["outcome"], "cancelled", "{v}");
    // Ten idle minutes later it may be loading: it is given the time to (3 s of patience,
    // as a model never measured when nothing is).
    let v = ask(11).json();
    assert_eq!(v["model"], "warm-3b", "{v}");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn a_spent_day_quota_is_not_waited_for_on_its_short_retry_after() {
    // Groq's 429 says `retry-after: 2` but its headers say the day's requests are spent
    // for 2 h: with nothing else to try, the run ends instead of asking every 2 s.
    let (s, env) = fleet(|_| groq_quota_429());
    let out = env.run(&[
        "-p",
        "groq",
        "-m",
        "llama-3.3-70b-versatile",
        "--timeout",
        "9",
        "q",
    ]);
    assert_eq!(out.code, 4, "{out}");
    assert!(!out.stderr.contains("waiting"), "{out}");
    assert_eq!(s.chats().len(), 1, "{out}");
}
