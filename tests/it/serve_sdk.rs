//! Real clients, not only our own: the official `openai` and `anthropic` Python SDKs
//! (tests/sdk/clients.py) against `freeroute serve`, in front of the fake and in front of a
//! real llama.cpp server. Ignored by default; they need the SDK venv (and the llama server):
//!
//! ```sh
//! python3 -m venv ~/.cache/freeroute-ci/sdk && ~/.cache/freeroute-ci/sdk/bin/pip install openai anthropic
//! export FREEROUTE_SDK_PYTHON=~/.cache/freeroute-ci/sdk/bin/python
//! cargo test --test it sdk_ -- --ignored
//! eval "$(.ci/llama-server.sh start)" && export FREEROUTE_LLAMA_URL
//! cargo test --test it real_llama_behind_serve -- --ignored
//! ```
//!
//! Unset variables are failures, never silent passes.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake::{self, Reply, Step};
use crate::harness::{Env, wait_within};
use crate::serve::{A, Served, VISION, fake as serve_fake};

fn python() -> String {
    match std::env::var("FREEROUTE_SDK_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => panic!(
            "FREEROUTE_SDK_PYTHON is not set: these tests need a venv with the openai and anthropic SDKs \
             (python3 -m venv ~/.cache/freeroute-ci/sdk && ~/.cache/freeroute-ci/sdk/bin/pip install openai anthropic)"
        ),
    }
}

/// Runs tests/sdk/clients.py MODE against the server; its report is the failure message.
fn run_clients(mode: &str, served: &Served) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/clients.py");
    let child = Command::new(python())
        .args([script, mode, &format!("http://127.0.0.1:{}", served.port)])
        .env("NO_PROXY", "*")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the SDK venv's python");
    let out = wait_within(child, Duration::from_secs(240), "tests/sdk/clients.py");
    let report = format!(
        "{}{}\n--- serve's stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        served.stderr()
    );
    assert!(out.status.success(), "{report}");
    let expected = if mode == "fake" {
        "13 passed, 0 failed"
    } else {
        "2 passed, 0 failed"
    };
    assert!(report.contains(expected), "{report}");
}

/// What the fake answers, by what the request asks: a tool call for tools (until the
/// tool's result is in), the schema's JSON, a description of an image, else a greeting.
fn sdk_reply(r: &fake::Request) -> Reply {
    let v = r.json();
    let model = r.model();
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    let last_is_tool = messages.last().is_some_and(|m| m["role"] == "tool");
    let has_image = messages.iter().any(|m| {
        m["content"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["type"] == "image_url"))
    });
    if v["tools"].is_array() && !last_is_tool {
        return Reply::stream(vec![
            Step::Send(fake::chunk(
                &model,
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_w1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\": "}}]}),
                None,
            )),
            Step::Send(fake::chunk(
                &model,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                None,
            )),
            Step::Send(fake::chunk(&model, json!({}), Some("tool_calls"))),
            Step::Send("data: [DONE]\n\n".into()),
        ]);
    }
    if v["response_format"]["type"] == "json_schema" {
        return fake::answer(&model, &["{\"name\": \"Ada\", ", "\"born\": 1815}"]);
    }
    if has_image {
        return fake::answer(&model, &["A single ", "pixel"]);
    }
    if last_is_tool {
        return fake::answer(&model, &["It is ", "sunny"]);
    }
    fake::answer(&model, &["Hello ", "from ", "the fake"])
}

#[test]
#[ignore = "needs the SDK venv: FREEROUTE_SDK_PYTHON (see .ci/run)"]
fn sdk_clients_get_their_answers_through_serve() {
    let server = serve_fake(sdk_reply).expect_chats(10);
    let env = Env::new(&server);
    let served = Served::start(&env, &[]);
    run_clients("fake", &served);
    // The clients' own keys never went upstream.
    for c in server.chats() {
        let auth = c.header("authorization").unwrap_or_default();
        assert!(!auth.contains("client-own-key"), "{auth}");
    }
    let used: Vec<String> = server.chat_models();
    assert!(
        used.iter().any(|m| m == VISION),
        "images and tools go to the vision model: {used:?}"
    );
    assert!(used.iter().any(|m| m == A) || used.len() > 1, "{used:?}");
}

#[test]
#[ignore = "needs the SDK venv and a real llama.cpp server: FREEROUTE_SDK_PYTHON, FREEROUTE_LLAMA_URL"]
fn real_llama_behind_serve_answers_the_openai_sdk() {
    let url = match std::env::var("FREEROUTE_LLAMA_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().trim_end_matches('/').to_string(),
        _ => panic!(
            "FREEROUTE_LLAMA_URL is not set: start one with `eval \"$(.ci/llama-server.sh start)\" && export FREEROUTE_LLAMA_URL`"
        ),
    };
    let env = Env::bare().config(&format!("[providers.llama]\nbase_url = \"{url}/v1\"\n"));
    let served = Served::start(&env, &["--timeout", "120"]);
    run_clients("llama", &served);
    let models: Value = served.get("/v1/models").json();
    assert!(models["data"].as_array().unwrap().len() > 1, "{models}");
}
