//! Answering: prompt from args, stdin or both; plain, streamed and JSON output.

use serde::Deserialize;
use serde_json::json;

use crate::fake::{self, FakeServer, Reply};
use crate::harness::{Env, KEY};

pub const BIG: &str = "meta-llama/llama-3.3-70b-instruct:free";
pub const MID: &str = "qwen/qwen3-32b:free";
pub const SMALL: &str = "google/gemma-3-4b-it:free";

/// A catalog with three free models, a paid one and two routers.
pub fn catalog() -> Reply {
    fake::catalog(vec![
        fake::model_entry(BIG, "0", Some(131072), &["text"], &["tools", "max_tokens"]),
        fake::model_entry(MID, "0", Some(40960), &["text"], &["max_tokens"]),
        fake::model_entry(SMALL, "0", Some(32768), &["text", "image"], &["max_tokens"]),
        fake::model_entry(
            "openai/gpt-4o",
            "0.0000025",
            Some(128000),
            &["text", "image"],
            &["tools"],
        ),
        json!({"id": "openrouter/auto", "name": "Auto Router", "context_length": 2000000,
               "pricing": {"prompt": "-1", "completion": "-1"},
               "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]}}),
        json!({"id": "openrouter/free", "name": "Free Models Router", "context_length": 200000,
               "pricing": {"prompt": "0", "completion": "0", "request": "0"},
               "architecture": {"output_modalities": ["text"]}}),
    ])
}

/// A server whose catalog is `catalog()` and whose chat answers come from `chat`.
pub fn server(chat: impl Fn(&fake::Request) -> Reply + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            catalog()
        } else {
            chat(r)
        }
    })
}

/// The `--json` success object, declared here rather than borrowed from the crate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonAnswer {
    pub ok: bool,
    pub content: String,
    pub model: String,
    pub provider: String,
    pub finish_reason: Option<String>,
    pub tool_calls: Vec<serde_json::Value>,
    pub usage: Option<Usage>,
    pub timing: Timing,
    pub attempts: Vec<JsonAttempt>,
    #[serde(default)]
    pub paid: bool,
}

#[derive(Debug, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Deserialize)]
pub struct Timing {
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct JsonAttempt {
    pub provider: String,
    pub model: String,
    pub outcome: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFailure {
    pub ok: bool,
    pub error: JsonError,
    pub attempts: Vec<JsonAttempt>,
}

#[derive(Debug, Deserialize)]
pub struct JsonError {
    pub kind: String,
    pub message: String,
}

#[test]
fn answers_from_words() {
    let s = server(|r| fake::answer(&r.model(), &["Hello", ", ", "world"])).expect_chats(1);
    let out = Env::new(&s).run(&["-m", BIG, "say", "hello"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "Hello, world\n");
    let chats = s.chats();
    assert_eq!(chats.len(), 1);
    let body = chats[0].json();
    assert_eq!(body["model"], BIG);
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "say hello"}])
    );
    assert_eq!(
        chats[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(chats[0].path, "/api/v1/chat/completions");
}

#[test]
fn answers_from_stdin_and_from_both() {
    let s = server(|r| fake::answer(&r.model(), &["ok"])).expect_chats(2);
    let env = Env::new(&s);
    let out = env.run_with_stdin(&["-m", BIG], Some("piped text\n"));
    assert_eq!(out.code, 0, "{out}");
    let out = env.run_with_stdin(
        &["-m", BIG, "-s", "be brief", "summarise", "this"],
        Some("line one\nline two\n"),
    );
    assert_eq!(out.code, 0, "{out}");
    let chats = s.chats();
    assert_eq!(chats[0].json()["messages"][0]["content"], "piped text");
    assert_eq!(
        chats[1].json()["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "line one\nline two\n\nsummarise this"}])
    );
}

#[test]
fn empty_prompt_is_a_usage_error() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let out = Env::new(&s).run_with_stdin(&[], Some("   \n"));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("No prompt"), "{out}");
    assert!(s.chats().is_empty());
}

#[test]
fn double_dash_sends_a_subcommand_name_as_prompt() {
    let s = server(|r| fake::answer(&r.model(), &["fine"])).expect_chats(1);
    let out = Env::new(&s).run(&["-m", BIG, "--", "models"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(s.chats()[0].json()["messages"][0]["content"], "models");
}

#[test]
fn json_success_has_the_contract_shape() {
    let s = server(|r| fake::answer(&r.model(), &["forty", "-two"])).expect_chats(1);
    let out = Env::new(&s).run(&["--json", "-m", BIG, "answer?"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.ends_with("}\n") && out.stdout.lines().count() == 1,
        "{out}"
    );
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert!(a.ok);
    assert_eq!(a.content, "forty-two");
    assert_eq!(a.model, BIG);
    assert_eq!(a.provider, "openrouter");
    assert_eq!(a.finish_reason.as_deref(), Some("stop"));
    assert!(a.tool_calls.is_empty());
    let u = a
        .usage
        .expect("usage from the chunk after the finish chunk");
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (12, 2, 14)
    );
    assert!(a.timing.first_token_ms.is_some());
    assert!(a.timing.total_ms >= a.timing.first_token_ms.unwrap());
    assert_eq!(a.attempts.len(), 1);
    assert_eq!(a.attempts[0].outcome, "ok");
    assert_eq!(a.attempts[0].status, Some(200));
    assert!(!a.paid);
}

#[test]
fn stream_flag_prints_tokens_as_they_come() {
    let s = server(|r| fake::answer(&r.model(), &["a", "b", "c"])).expect_chats(1);
    let out = Env::new(&s).run(&["--stream", "-m", BIG, "abc"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "abc\n");
}

#[test]
fn non_streaming_json_body_is_accepted() {
    // Some servers ignore `stream: true` and answer with one JSON body.
    let s = server(|r| {
        Reply::json(200, json!({"id": "x", "model": r.model(), "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).to_string())
    }).expect_chats(1);
    let out = Env::new(&s).run(&["-m", BIG, "x"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "whole\n");
}

#[test]
fn paid_and_router_models_are_never_requested() {
    // Every free model fails: the run must still never touch the paid model or openrouter/auto.
    let s = server(|r| fake::upstream_429(&r.model()));
    let out = Env::new(&s).run(&["--json", "hello"]);
    assert_eq!(out.code, 4, "{out}");
    let asked = s.chat_models();
    assert!(
        !asked
            .iter()
            .any(|m| m == "openai/gpt-4o" || m == "openrouter/auto"),
        "{asked:?}"
    );
    assert_eq!(
        asked.last().map(String::as_str),
        Some("openrouter/free"),
        "the free router goes last: {asked:?}"
    );
    assert_eq!(asked.len(), 4, "{asked:?}");
}

#[test]
fn allow_paid_reaches_paid_models_and_says_so() {
    let s = server(|r| fake::answer(&r.model(), &["paid answer"])).expect_chats(1);
    let out = Env::new(&s).run(&["--json", "--allow-paid", "-m", "openai/gpt-4o", "x"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert!(a.paid);
    assert!(out.stderr.contains("paid model"), "{out}");
}

#[test]
fn dry_run_sends_nothing_and_explains() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let env = Env::new(&s);
    let out = env.run(&["--dry-run", "hello"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(BIG) && out.stdout.contains("not free"),
        "{out}"
    );
    let out = env.run(&["--dry-run", "--json", "--exclude", "qwen/*", "hello"]);
    assert_eq!(out.code, 0, "{out}");
    let v = out.json();
    let cands: Vec<&str> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["model"].as_str().unwrap())
        .collect();
    assert_eq!(cands.len(), 3, "{cands:?}");
    assert_eq!(cands[2], "openrouter/free");
    assert!(v["candidates"][0]["score"].is_number() && v["candidates"][0]["why"].is_string());
    let dropped = v["dropped"].as_array().unwrap();
    assert!(
        dropped
            .iter()
            .any(|d| d["model"] == MID && d["reason"].as_str().unwrap().contains("excluded"))
    );
    assert!(dropped.iter().any(|d| d["model"] == "openrouter/auto"));
    assert!(s.chats().is_empty(), "dry run sent a chat request");
    let out = env.run(&["--dry-run", "--exclude", "*", "hello"]);
    assert_eq!(out.code, 3, "{out}");
}

#[test]
fn prefer_ranks_first_and_provider_filter_applies() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let env = Env::new(&s);
    let out = env.run(&["--dry-run", "--json", "--prefer", "google/*", "hi"]);
    assert_eq!(out.json()["candidates"][0]["model"], SMALL, "{out}");
    let out = env.run(&["-p", "nope", "hi"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("Unknown provider `nope`"), "{out}");
}

#[test]
fn context_that_does_not_fit_is_dropped() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    // ~45,000 tokens: only the 131k model and the free router fit.
    let long = "word ".repeat(36_000);
    let out = Env::new(&s).run_with_stdin(&["--dry-run", "--json"], Some(&long));
    let v = out.json();
    let cands: Vec<&str> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["model"].as_str().unwrap())
        .collect();
    assert_eq!(cands, vec![BIG, "openrouter/free"], "{out}");
}
