//! End-to-end against a real llama.cpp server (SmolLM2-135M, from PyPI), not the fake:
//! answers, streaming, `--json`, and the two errors llama.cpp really sends (image input on a
//! text-only model, a prompt over `n_ctx`). Ignored by default; they need a running server:
//!
//! ```sh
//! eval "$(.ci/llama-server.sh start)" && export FREEROUTE_LLAMA_URL
//! cargo test --test it real_llama -- --ignored
//! .ci/llama-server.sh stop
//! ```
//!
//! What the server sends is in `shared/reference/real-backends.md`. Assert shapes, not words.

use serde_json::Value;

use crate::fake::{self, FakeServer};
use crate::harness::{Env, Out};

/// The id llama-server answers to (`model_alias` in `.ci/llama_server.py`).
const MODEL: &str = "smollm2";
const FAKE_VISION: &str = "fake/vision-8b";

/// The server's base URL (without `/v1`). Unset is a failure, never a silent pass.
fn llama_url() -> String {
    match std::env::var("FREEROUTE_LLAMA_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_string(),
        _ => panic!(
            "FREEROUTE_LLAMA_URL is not set: these tests need a real llama.cpp server.\n\
             Start one with `eval \"$(.ci/llama-server.sh start)\" && export FREEROUTE_LLAMA_URL`, \
             then run `cargo test --test it real_llama -- --ignored`"
        ),
    }
}

/// A sealed environment whose only provider is the llama server, with `extra` appended
/// to its `[providers.llama]` table.
fn env_with(extra: &str) -> Env {
    Env::bare()
        .var("FREEROUTE_DISCOVER", "0")
        .var("FREEROUTE_KEYLESS", "0")
        .config(&format!(
            "[providers.llama]\nbase_url = \"{}/v1\"\n{extra}",
            llama_url()
        ))
}

fn env() -> Env {
    env_with("")
}

/// Arguments shared by every run: only the llama provider unless more are named, a generous
/// deadline, a short deterministic answer.
fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-q",
        "--timeout",
        "120",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
    ];
    a.extend_from_slice(extra);
    a
}

fn attempts(v: &Value, out: &Out) -> Vec<Value> {
    v["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts array: {out}"))
        .clone()
}

#[test]
#[ignore = "needs a real llama.cpp server: FREEROUTE_LLAMA_URL from .ci/llama-server.sh start"]
fn real_llama_plain_answer() {
    let out = env().run(&args(&[
        "--no-stream",
        "-p",
        "llama",
        "Say hello in one short sentence.",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stdout.trim().is_empty(), "empty answer: {out}");
    assert!(out.stdout.ends_with('\n'), "no final newline: {out}");
}

#[test]
#[ignore = "needs a real llama.cpp server: FREEROUTE_LLAMA_URL from .ci/llama-server.sh start"]
fn real_llama_streamed_answer() {
    let out = env().run(&args(&["--stream", "-p", "llama", "Name a colour."]));
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stdout.trim().is_empty(), "empty answer: {out}");
}

#[test]
#[ignore = "needs a real llama.cpp server: FREEROUTE_LLAMA_URL from .ci/llama-server.sh start"]
fn real_llama_json_reports_model_usage_and_timing() {
    let out = env().run(&args(&["--json", "-p", "llama", "What is two plus two?"]));
    assert_eq!(out.code, 0, "{out}");
    let v = out.json();
    assert_eq!(v["ok"], true, "{out}");
    assert_eq!(v["provider"], "llama", "{out}");
    assert_eq!(v["model"], MODEL, "{out}");
    assert!(
        !v["content"].as_str().unwrap_or_default().trim().is_empty(),
        "{out}"
    );
    let completion = v["usage"]["completion_tokens"].as_u64();
    assert!(
        completion.is_some_and(|n| n > 0),
        "usage.completion_tokens missing or zero: {out}"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().is_some(), "{out}");
    assert!(
        v["timing"]["first_token_ms"].is_u64(),
        "timing.first_token_ms missing: {out}"
    );
    let a = attempts(&v, &out);
    assert_eq!(a.len(), 1, "{out}");
    assert_eq!(a[0]["outcome"], "ok", "{out}");
    assert_eq!(a[0]["status"], 200, "{out}");
}

#[test]
#[ignore = "needs a real llama.cpp server: FREEROUTE_LLAMA_URL from .ci/llama-server.sh start"]
fn real_llama_image_on_a_text_model_fails_over() {
    // llama.cpp answers 500 "image input is not supported" for a model without mmproj; the
    // config claims vision so that it is tried, and the fake vision model answers instead.
    let fallback = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            fake::catalog(vec![fake::model_entry(
                FAKE_VISION,
                "0",
                Some(32768),
                &["text", "image"],
                &["max_tokens"],
            )])
        } else {
            fake::answer(&r.model(), &["fallback"])
        }
    });
    let env = env_with(&format!(
        "models = [{{ id = \"{MODEL}\", context = 4096, vision = true }}]\n\
         [providers.fake]\nbase_url = \"{}\"\n\
         models = [{{ id = \"{FAKE_VISION}\", context = 32768, vision = true }}]\n",
        fallback.url("/v1")
    ));
    let png = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sign.png");
    let out = env.run(&args(&[
        "--json",
        "-m",
        MODEL,
        "-m",
        FAKE_VISION,
        "-i",
        png.to_str().unwrap(),
        "What does the sign say?",
    ]));
    assert_eq!(out.code, 0, "{out}");
    let v = out.json();
    assert_eq!(v["ok"], true, "{out}");
    assert_eq!(v["content"], "fallback", "{out}");
    assert_eq!(v["provider"], "fake", "{out}");
    let a = attempts(&v, &out);
    assert_eq!(a.len(), 2, "{out}");
    assert_eq!(a[0]["provider"], "llama", "{out}");
    assert_eq!(a[0]["model"], MODEL, "{out}");
    assert_eq!(a[0]["outcome"], "capability_missing", "{out}");
    assert_eq!(a[0]["status"], 500, "{out}");
    assert!(
        a[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("image input is not supported"),
        "{out}"
    );
    assert_eq!(a[1]["provider"], "fake", "{out}");
    assert_eq!(a[1]["outcome"], "ok", "{out}");
    assert_eq!(fallback.chat_models(), vec![FAKE_VISION.to_string()]);
    // The refusal is a capability miss, not an outage: a text question still goes to it.
    let out = env.run(&[
        "--json",
        "-m",
        MODEL,
        "--max-tokens",
        "8",
        "--timeout",
        "120",
        "Say hi",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["provider"], "llama", "{out}");
}

#[test]
#[ignore = "needs a real llama.cpp server: FREEROUTE_LLAMA_URL from .ci/llama-server.sh start"]
fn real_llama_prompt_over_the_context_is_context_too_long() {
    // The config claims 32768 tokens so the filter lets 25,000 characters through (about
    // 8,300 tokens to SmolLM2's tokenizer); the server's n_ctx is 4096, so llama.cpp refuses
    // with 400 exceed_context_size_error before generating anything.
    let env = env_with(&format!(
        "models = [{{ id = \"{MODEL}\", context = 32768 }}]\n"
    ));
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "eiusmod",
        "tempor",
        "incididunt",
    ];
    let mut text = String::new();
    for w in words.iter().cycle() {
        if text.len() >= 25_000 {
            break;
        }
        text.push_str(w);
        text.push(' ');
    }
    let out = env.run_with_stdin(
        &args(&["--json", "-p", "llama", "-m", MODEL, "Summarise this."]),
        Some(&text),
    );
    assert_eq!(out.code, 4, "the only candidate failed: {out}");
    let v = out.json();
    assert_eq!(v["ok"], false, "{out}");
    let a = attempts(&v, &out);
    assert_eq!(a.len(), 1, "{out}");
    assert_eq!(a[0]["provider"], "llama", "{out}");
    assert_eq!(a[0]["outcome"], "context_too_long", "{out}");
    assert_eq!(a[0]["status"], 400, "{out}");
}
