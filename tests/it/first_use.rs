//! What a new user trips on (issue 15): each test is one of the issue's items, driven
//! through the binary against a fake that behaves like the real server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::ask::{BIG, MID, server};
use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::Env;

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Item 1: `batch --dry-run` plans every item and sends nothing.
#[test]
fn batch_dry_run_sends_nothing() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let env = Env::new(&s);
    let input = "{\"id\": \"a\", \"prompt\": \"one\"}\ntwo\nthree\n";
    let out = env.run_with_stdin(&["batch", "--dry-run"], Some(input));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("3 items") && out.stdout.contains(BIG),
        "the shared plan once, with the item count: {out}"
    );
    assert!(out.stderr.contains("nothing was sent"), "{out}");
    let out = env.run_with_stdin(&["batch", "--dry-run", "--json"], Some(input));
    assert_eq!(out.code, 0, "{out}");
    let plans = lines(&out.stdout);
    assert_eq!(plans.len(), 3, "{out}");
    assert_eq!(plans[0]["id"], "a");
    assert_eq!(plans[1]["id"], 2);
    assert!(
        plans[0]["candidates"].as_array().unwrap().len() > 1,
        "{out}"
    );
    let out = env.run_with_stdin(&["batch", "--dry-run", "--exclude", "*"], Some(input));
    assert_eq!(out.code, 3, "no candidate: {out}");
    assert!(s.chats().is_empty(), "a dry run sent {:?}", s.chat_models());
}

/// Item 5: a provider with a key variable is on only when that variable is set, whatever
/// its base URL; a built-in preset pointed at loopback without its key neither is asked nor
/// keeps `keyless = "auto"` from applying.
#[test]
fn a_provider_whose_key_variable_is_unset_is_off() {
    let gateway = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            fake::catalog(vec![fake::model_entry(
                "gw-8b",
                "0",
                Some(8192),
                &["text"],
                &[],
            )])
        } else {
            fake::answer(&r.model(), &["from the gateway"])
        }
    });
    let keyless =
        FakeServer::start(|r| fake::answer(&r.model(), &["keyless answer"])).expect_chats(1);
    let env = Env::bare().var("FREEROUTE_KEYLESS", "auto").config(&format!(
        "[providers.litellm]\nbase_url = \"{gw}\"\napi_key_env = \"LITELLM_KEY\"\n\
         [providers.groq]\nbase_url = \"{gw}\"\n\
         [providers.llm7]\nbase_url = \"{k}\"\n[providers.kilo]\nenabled = false\n[providers.ovhcloud]\nenabled = false\n",
        gw = gateway.url("/v1"),
        k = keyless.url("/llm7/v1"),
    ));
    let out = env.run(&["config", "show"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("[providers.litellm]  # OFF: LITELLM_KEY is not set"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("[providers.groq]  # OFF: GROQ_API_KEY is not set"),
        "{out}"
    );
    let out = env.run(&["q"]);
    assert_eq!(out.code, 0, "keyless auto applies: {out}");
    assert_eq!(out.stdout, "keyless answer\n");
    assert!(gateway.chats().is_empty(), "asked without its key: {out}");
    // With the variable set, the gateway is on and gets its key.
    let out = env.run_with_env(&["-p", "litellm", "q"], &[("LITELLM_KEY", "gw-key-123")]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "from the gateway\n");
    let chats = gateway.chats();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].header("authorization"), Some("Bearer gw-key-123"));
}

/// A configured local provider with these models (`id = "…", …` entries), answering
/// with `chat`.
fn local_env(s: &FakeServer, models: &str) -> Env {
    Env::bare().config(&format!(
        "[providers.local]\nbase_url = \"{}\"\nmodels = [{models}]\n",
        s.url("/v1")
    ))
}

fn tool_call(model: &str, name: &str) -> Reply {
    Reply::stream(vec![
        Step::Send(fake::chunk(
            model,
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": "{\"city\": \"Paris\"}"}}]}),
            None,
        )),
        Step::Send(fake::chunk(model, json!({}), Some("tool_calls"))),
        Step::Send("data: [DONE]\n\n".into()),
    ])
}

/// Item 7: under `--tool-choice required` (or a tool's name) a prose answer is
/// `invalid_answer` and the next model is tried; a tools file of tool calls or misspelt
/// keys is exit 2 before anything is sent.
#[test]
fn tool_choice_required_is_enforced_and_tools_files_are_checked() {
    let s = FakeServer::start(|r| match r.model().as_str() {
        "prose-8b" => fake::answer("prose-8b", &["It is sunny in Paris."]),
        m => tool_call(m, "get_weather"),
    })
    .expect_chats(4);
    let env = local_env(
        &s,
        "{ id = \"prose-8b\", context = 8192, tools = true }, { id = \"caller-8b\", context = 8192, tools = true }",
    );
    let tools = env.path("tools.json");
    std::fs::write(
        &tools,
        r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]"#,
    )
    .unwrap();
    let t = tools.to_str().unwrap();
    for choice in ["required", "get_weather"] {
        let out = env.run(&[
            "--json",
            "--tools",
            t,
            "--tool-choice",
            choice,
            "-m",
            "prose-8b",
            "-m",
            "caller-8b",
            "weather?",
        ]);
        assert_eq!(out.code, 0, "{choice}: {out}");
        let v = out.json();
        assert_eq!(v["model"], "caller-8b", "{choice}: {out}");
        assert_eq!(v["attempts"][0]["outcome"], "invalid_answer", "{out}");
        assert_eq!(v["tool_calls"][0]["arguments"]["city"], "Paris");
    }
    let sent = s.chats().len();
    for (body, needle) in [
        (
            r#"[{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]"#,
            "unknown key `id`",
        ),
        (
            r#"[{"type": "function", "function": {"name": "f", "parmeters": {}}}]"#,
            "unknown key `parmeters`",
        ),
        (r#"[{"type": "function", "function": "f"}]"#, "tool 0"),
    ] {
        std::fs::write(&tools, body).unwrap();
        let out = env.run(&["--tools", t, "weather?"]);
        assert_eq!(out.code, 2, "{body}: {out}");
        assert!(out.stderr.contains(needle), "{body}: {out}");
    }
    assert_eq!(s.chats().len(), sent, "a bad tools file sent a request");
}

/// A llama.cpp-like server: `/v1/models` in its shape (context from `meta.n_ctx`), images
/// refused with its 500 until `projector` is on, prompts over 4,096 of its tokens refused
/// with its 400 and counts. Its tokens are denser than freeroute's estimate: 2.7
/// characters each (lorem ipsum's ratio to llama.cpp's tokenizer).
fn llama_like(projector: Arc<AtomicBool>) -> FakeServer {
    FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            let v = json!({"object": "list", "data": [{"id": "smollm2", "object": "model",
                "owned_by": "llamacpp", "meta": {"n_ctx": 4096},
                "architecture": {"input_modalities": ["text", "image"]}}]});
            return Reply::json(200, v.to_string());
        }
        let body = r.json();
        let text: usize = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().map_or(0, str::len))
            .sum();
        let has_image = body.to_string().contains("image_url");
        if has_image && !projector.load(Ordering::SeqCst) {
            return fake::error_json(
                500,
                "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
            );
        }
        let tokens = text * 10 / 27;
        if tokens > 4096 {
            let e = json!({"error": {"code": 400, "message": format!("request ({tokens} tokens) exceeds the available context size (4096 tokens), try increasing it"), "type": "exceed_context_size_error", "n_prompt_tokens": tokens, "n_ctx": 4096}});
            return Reply::json(400, e.to_string());
        }
        fake::answer("smollm2", &["fits"])
    })
}

fn lorem(chars: usize) -> String {
    "lorem ipsum dolor sit amet ".repeat(chars / 27 + 1)[..chars].to_string()
}

/// Item 3: a context limit is learned from the server's own count, and expires (an hour
/// for a server on this machine); a capability miss is forgotten by `--refresh`.
#[test]
fn learned_limits_use_the_server_count_and_expire() {
    let projector = Arc::new(AtomicBool::new(false));
    let s = llama_like(projector.clone());
    let env = Env::bare().config(&format!(
        "[providers.llamacpp]\nbase_url = \"{}\"\n",
        s.url("/v1")
    ));
    let t0: u64 = 1_900_000_000_000;
    let at = |ms: u64| (t0 + ms).to_string();
    let run = |stdin: &str, args: &[&str], now: &str| {
        env.run_full(args, Some(stdin), &[("FREEROUTE_NOW_MS", now)])
    };
    // About 3,000 estimated tokens, 4,444 of llama.cpp's: refused, with its counts.
    let out = run(&lorem(12_000), &["--json"], &at(0));
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(out.json()["attempts"][0]["outcome"], "context_too_long");
    assert_eq!(s.chats().len(), 1);
    // About 2,875 estimated tokens, 4,259 of the server's: below the refused estimate, but
    // over the limit once the estimate is corrected by the server's count. Not sent.
    let out = run(&lorem(11_500), &[], &at(1_000));
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(
        s.chats().len(),
        1,
        "sent a prompt the server's count says is too long"
    );
    // A prompt that fits is sent and answered.
    let out = run(&lorem(8_000), &[], &at(2_000));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "fits\n");
    // An hour later the local server's limit is no longer believed: the long prompt is
    // tried again.
    let out = run(&lorem(11_500), &[], &at(3_601_000));
    assert_eq!(s.chats().len(), 3, "the learned limit never expired: {out}");

    // A vision miss, then the server restarted with its projector: --refresh forgets.
    let img = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hello.jpg");
    let out = run("", &["-i", img, "what is this?"], &at(4_000_000));
    assert_eq!(out.code, 4, "{out}");
    let sent = s.chats().len();
    let out = run("", &["-i", img, "what is this?"], &at(4_001_000));
    assert_eq!(out.code, 3, "the miss is remembered: {out}");
    assert_eq!(s.chats().len(), sent);
    projector.store(true, Ordering::SeqCst);
    let out = run(
        "",
        &["--refresh", "-i", img, "what is this?"],
        &at(4_002_000),
    );
    assert_eq!(out.code, 0, "--refresh forgot nothing: {out}");
    assert_eq!(out.stdout, "fits\n");
}

/// A server found on a discovery port, in llama.cpp's `/v1/models` shape.
fn discovered(answer: &'static str) -> FakeServer {
    FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            Reply::json(200, json!({"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx": 4096}}]}).to_string())
        } else {
            fake::answer(&r.model(), &[answer])
        }
    })
}

/// Item 4: a port that accepts connections but never answers costs a bounded probe, not
/// a catalog timeout on every run; the result is cached and `-v` names the port.
#[test]
fn a_silent_discovery_port_is_skipped_quickly_and_named() {
    // Bound but never accepted: the kernel completes connections, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let s = discovered("local answer");
    // Without the bound, the silent port's catalog fetch alone takes 10 s.
    let env = Env::bare()
        .var("FREEROUTE_DISCOVER", "1")
        .config(&format!(
            "[defaults]\ndiscover_ports = [{silent_port}, {}]\n",
            s.port
        ))
        .limit(std::time::Duration::from_secs(8));
    let out = env.run(&["-v", "models"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("smollm2"), "{out}");
    let named = format!("port {silent_port} accepts connections but sent no HTTP reply");
    assert!(out.stderr.contains(&named), "{out}");
    assert!(
        !out.stdout.contains(&format!("local-{silent_port}")),
        "{out}"
    );
    let out = env.run(&["-v", "hi"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "local answer\n");
    assert!(
        out.stderr.contains("(cached)") && out.stderr.contains(&named),
        "the slow port is remembered like a refused one: {out}"
    );
    drop(silent);
}

/// Item 8: no eligible model, said in words: the request's size against the largest
/// model that has everything else, the other reasons grouped and counted.
#[test]
fn no_eligible_model_is_said_in_words() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["x"]));
    let env = local_env(
        &s,
        "{ id = \"small-8b\", context = 4096 }, { id = \"tiny-1b\", context = 2048 }, { id = \"other-8b\", context = 32768 }",
    );
    let long = lorem(40_000);
    let out = env.run_full(&["--exclude", "other*"], Some(&long), &[]);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains(
            "are larger than every eligible model's context (largest 4,096: local/small-8b)"
        ),
        "{out}"
    );
    assert!(
        out.stderr.contains("1 model is excluded by `other*`"),
        "{out}"
    );
    assert!(!out.stderr.contains("1 context"), "{out}");
    let out = env.run_full(&["--json", "--exclude", "other*"], Some(&long), &[]);
    assert_eq!(out.code, 3, "{out}");
    let message = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("(largest 4,096: local/small-8b)"),
        "{message}"
    );
    assert!(s.chats().is_empty());
}

/// Items 9 and 10: every attempt failed: one line per attempt and a hint; nothing reached
/// at all: say so and what to do.
#[test]
fn every_attempt_failed_lists_the_attempts_and_a_fix() {
    let s = FakeServer::start(|_| {
        fake::error_json(500, "upstream exploded\n\n  while loading the weights")
    })
    .expect_chats(1);
    let env = local_env(&s, "{ id = \"m-8b\", context = 8192 }");
    let out = env.run(&["q"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(
        out.stderr.contains(
            "  local/m-8b: server_error (HTTP 500): upstream exploded while loading the weights\n"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("hint: The servers failed"), "{out}");

    // No key, no network: the keyless service cannot be reached.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::bare().var("FREEROUTE_KEYLESS", "auto").config(&format!(
        "[providers.llm7]\nbase_url = \"http://127.0.0.1:{port}/v1\"\n[providers.kilo]\nenabled = false\n[providers.ovhcloud]\nenabled = false\n"
    ));
    let out = env.run(&["q"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("Nothing could be reached"), "{out}");
    assert!(
        out.stderr.contains("OPENROUTER_API_KEY")
            && out.stderr.contains("config show")
            && out.stderr.contains("start a local server")
            && out.stderr.contains("check the network"),
        "{out}"
    );
}

/// Item 11: a data-policy 404 that another provider recovered from is still told.
#[test]
fn a_data_policy_block_is_told_even_when_another_provider_answers() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            crate::ask::catalog()
        } else if r.path.starts_with("/api/") {
            fake::error_json(
                404,
                "No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy",
            )
        } else {
            fake::answer(&r.model(), &["from local"])
        }
    })
    .expect_chats(2);
    let env = Env::new(&s).config(&format!(
        "[providers.local]\nbase_url = \"{}\"\nmodels = [{{ id = \"echo-8b\", context = 8192 }}]\n",
        s.url("/v1")
    ));
    let out = env.run(&["-m", BIG, "-m", "echo-8b", "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "from local\n");
    assert!(
        out.stderr.contains("openrouter refuses every free model")
            && out
                .stderr
                .contains("https://openrouter.ai/settings/privacy"),
        "{out}"
    );
    let out = env.run(&["-q", "-m", "echo-8b", "q"]);
    assert!(out.stderr.is_empty(), "-q: {out}");
}

/// Item 12: an answer cut by the token limit says so.
#[test]
fn an_answer_cut_by_the_token_limit_says_so() {
    let s = FakeServer::start(|r| {
        let m = r.model();
        let usage = json!({"id": "gen-1", "model": m, "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28}});
        Reply::stream(vec![
            Step::Send(fake::chunk(&m, json!({"role": "assistant", "content": "Once upon a"}), None)),
            Step::Send(fake::chunk(&m, json!({}), Some("length"))),
            Step::Send(format!("data: {usage}\n\n")),
            Step::Send("data: [DONE]\n\n".into()),
        ])
    })
    .expect_chats(1);
    let env = local_env(&s, "{ id = \"m-8b\", context = 8192 }");
    let out = env.run(&["--max-tokens", "16", "tell a story"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "Once upon a\n");
    assert!(
        out.stderr.contains("cut at 16 tokens") && out.stderr.contains("--max-tokens"),
        "{out}"
    );
}

/// Item 13: `-m PROVIDER/MODEL`, the form the plan and `stats` show, pins that provider;
/// an OpenRouter id with slashes still works whole; an unknown id lists the closest.
#[test]
fn model_flag_takes_provider_slash_model_and_suggests_close_ids() {
    let s = server(|r| fake::answer(&r.model(), &[&format!("from {}", r.path)])).expect_chats(3);
    let env = Env::new(&s).config(&format!(
        "[providers.local]\nbase_url = \"{}\"\nmodels = [{{ id = \"{MID}\", context = 8192 }}, {{ id = \"echo-8b\", context = 8192 }}]\n",
        s.url("/v1")
    ));
    let out = env.run(&["--json", "-m", "local/echo-8b", "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["provider"], "local");
    // The same id at two providers: the prefix pins one.
    let out = env.run(&["--json", "-m", &format!("local/{MID}"), "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["provider"], "local", "{out}");
    let out = env.run(&["--json", "-m", &format!("openrouter/{MID}"), "q"]);
    assert_eq!(out.json()["provider"], "openrouter", "{out}");
    let out = env.run(&["-m", "qwen3-23b", "q"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr
            .contains("No enabled provider has a model `qwen3-23b`")
            && out.stderr.contains(&format!("openrouter/{MID}")),
        "{out}"
    );
}

/// Item 14: a mistyped subcommand is not sent to a model.
#[test]
fn a_mistyped_subcommand_is_not_sent_as_a_prompt() {
    let s = server(|r| fake::answer(&r.model(), &["answered"])).expect_chats(2);
    let env = Env::new(&s);
    for (typo, meant) in [
        ("model", "models"),
        ("stat", "stats"),
        ("confg", "config"),
        ("bach", "batch"),
    ] {
        let out = env.run(&[typo]);
        assert_eq!(out.code, 2, "{typo}: {out}");
        assert!(
            out.stderr
                .contains(&format!("did you mean `freeroute {meant}`?"))
                && out.stderr.contains(&format!("freeroute -- {typo}")),
            "{typo}: {out}"
        );
    }
    assert!(s.chats().is_empty());
    let out = env.run(&["--", "model"]);
    assert_eq!(out.code, 0, "{out}");
    let out = env.run(&["hello"]);
    assert_eq!(out.code, 0, "an ordinary word is a prompt: {out}");
}

fn prompt_of(r: &fake::Request) -> String {
    r.json()["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Answers "re: PROMPT"; a prompt "slow N" after N×100 ms; "hang" never, unless `wake`.
fn batch_server(wake: Arc<AtomicBool>) -> FakeServer {
    FakeServer::start(move |r| {
        let p = prompt_of(r);
        if p.starts_with("hang") && !wake.load(Ordering::SeqCst) {
            return Reply::Hang;
        }
        let delay = p
            .strip_prefix("slow ")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let mut steps = vec![Step::Sleep(std::time::Duration::from_millis(delay * 100))];
        steps.extend(fake::answer_steps(&r.model(), &[&format!("re: {p}")]));
        Reply::stream(steps)
    })
}

/// Item 15: unknown item fields are that line's input error; single-run options are
/// refused up front; a closed stdout ends the batch quietly, exit 0.
#[test]
fn batch_input_is_checked_and_a_closed_stdout_ends_it() {
    let s = batch_server(Arc::new(AtomicBool::new(false)));
    let env = local_env(&s, "{ id = \"echo-8b\", context = 8192 }");
    let input = "{\"prompt\": \"one\", \"sytem\": \"be brief\"}\ntwo\n";
    let out = env.run_with_stdin(&["batch"], Some(input));
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("Input line 1: unknown field `sytem` (did you mean `system`?"),
        "{out}"
    );
    assert_eq!(
        lines(&out.stdout).len(),
        1,
        "the other line is answered: {out}"
    );
    assert_eq!(s.chats().len(), 1);
    for flag in [
        &["-c"][..],
        &["--stream"],
        &["--messages", "chat.json"],
        &["-i", "-"],
    ] {
        let mut args = vec!["batch"];
        args.extend_from_slice(flag);
        let out = env.run_with_stdin(&args, Some("two\n"));
        assert_eq!(out.code, 2, "{flag:?}: {out}");
        assert!(
            out.stderr.contains("cannot be used with batch"),
            "{flag:?}: {out}"
        );
    }
    assert_eq!(s.chats().len(), 1, "a refused option sent something");

    // `| head -1`: the reader leaves after the first line.
    let many: String = (0..30).map(|i| format!("slow {}\n", i % 3)).collect();
    let mut child = env
        .cmd(&["batch", "--concurrency", "2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(many.as_bytes());
    });
    {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("\"ok\":true"), "{first}");
    }
    let out =
        crate::harness::wait_within(child, std::time::Duration::from_secs(30), "batch | head");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(s.chats().len() < 31, "kept sending after the reader left");
}

/// Item 2: Ctrl-C in a batch: nothing new starts, the items in flight are cancelled and
/// written as `interrupted`, the summary is printed, exit 130; a rerun resumes.
#[test]
fn ctrl_c_in_a_batch_writes_the_summary_and_resumes() {
    let wake = Arc::new(AtomicBool::new(false));
    let s = batch_server(wake.clone());
    let env = local_env(&s, "{ id = \"echo-8b\", context = 8192 }");
    let input = env.path("in.txt");
    let output = env.path("out.jsonl");
    std::fs::write(&input, "fast\nhang a\nhang b\nhang c\n").unwrap();
    let args = [
        "batch",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--concurrency",
        "2",
    ];
    let child = env.spawn(&args);
    s.wait_for_chats(3);
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = crate::harness::wait_within(
        child,
        std::time::Duration::from_secs(20),
        "batch after Ctrl-C",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("batch: 1 answered"),
        "the summary: {stderr}"
    );
    let written = lines(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(written.len(), 3, "{written:?}");
    let interrupted: Vec<&Value> = written.iter().filter(|v| v["ok"] == false).collect();
    assert_eq!(interrupted.len(), 2, "{written:?}");
    for v in &interrupted {
        assert_eq!(v["error"]["kind"], "interrupted");
        assert_eq!(v["attempts"][0]["outcome"], "cancelled", "{v}");
    }
    assert_eq!(s.chats().len(), 3, "an item started after Ctrl-C");
    // Run again: the answered id is skipped, the others are answered.
    wake.store(true, Ordering::SeqCst);
    let out = env.run(&args);
    assert_eq!(out.code, 0, "{out}");
    let written = lines(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(written.len(), 4, "{written:?}");
    assert!(written.iter().all(|v| v["ok"] == true), "{written:?}");
    assert_eq!(s.chats().len(), 6);
}

/// Item 16: on resume the bar counts every item (the skipped ones done) and its rate is
/// rounded. The bar is drawn only on a terminal: the run gets one from `script(1)`.
#[test]
fn the_resumed_batch_bar_counts_every_item() {
    let s = batch_server(Arc::new(AtomicBool::new(false)));
    let env = local_env(&s, "{ id = \"echo-8b\", context = 8192 }");
    let input = env.path("in.txt");
    let output = env.path("out.jsonl");
    let items: String = (1..=20).map(|i| format!("item {i}\n")).collect();
    std::fs::write(&input, format!("{items}slow 15\n")).unwrap();
    let done: String = (1..=20)
        .map(|i| format!("{{\"ok\":true,\"id\":{i},\"content\":\"re: item {i}\"}}\n"))
        .collect();
    std::fs::write(&output, done).unwrap();
    // A pty from script(1) with no terminal around it has no size: give it one.
    let cmd = format!(
        "stty cols 120 rows 40; {} batch {} -o {}",
        env!("CARGO_BIN_EXE_freeroute"),
        input.display(),
        output.display()
    );
    let c = env.cmd(&[]);
    let mut script = std::process::Command::new("script");
    // indicatif draws nothing when TERM is unset or `dumb`.
    script
        .args(["-qec", &cmd, "/dev/null"])
        .env_clear()
        .env("TERM", "xterm");
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    let out = crate::harness::wait_within(
        script
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        std::time::Duration::from_secs(30),
        "batch on a terminal",
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.chats().len(), 1, "{screen}");
    assert!(
        screen.contains("20/21"),
        "the skipped items count as done: {screen}"
    );
    let long_rate = screen
        .split_whitespace()
        .any(|w| w.ends_with("/s") && w.split('.').nth(1).is_some_and(|d| d.len() > 3));
    assert!(!long_rate, "an unrounded rate: {screen}");
}

/// Item 6: a found llama.cpp server's `/props` says what it can do (here: tools and a
/// `json_schema` response format, no vision); a capability nobody claimed gets a hint
/// saying how to claim it in the config.
#[test]
fn a_found_local_server_says_what_it_can_do() {
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/v1/models") {
            Reply::json(200, json!({"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx": 4096}}]}).to_string())
        } else if r.path == "/props" {
            Reply::json(200, json!({"default_generation_settings": {"n_ctx": 4096}, "modalities": {"vision": false, "audio": false}, "chat_template_caps": {"supports_tools": true, "supports_tool_calls": true}}).to_string())
        } else {
            fake::answer(&r.model(), &["{\"name\": \"Ada\"}"])
        }
    })
    .expect_chats(1);
    let env = Env::bare()
        .var("FREEROUTE_DISCOVER", "1")
        .config(&format!("[defaults]\ndiscover_ports = [{}]\n", s.port));
    let out = env.run(&["models", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let caps = &out.json()[0]["capabilities"];
    assert_eq!(
        caps,
        &json!({"vision": false, "tools": true, "schema": true}),
        "{out}"
    );
    let out = env.run(&["--schema", "{\"type\": \"object\"}", "extract"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["name"], "Ada");
    let img = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hello.jpg");
    let out = env.run(&["-i", img, "what is this?"]);
    assert_eq!(out.code, 3, "{out}");
    let name = format!("local-{}", s.port);
    assert!(
        out.stderr.contains(&format!(
            "[providers.{name}] base_url = \"http://127.0.0.1:{}/v1\", models = [{{ id = \"smollm2\", vision = true }}]",
            s.port
        )),
        "{out}"
    );
}

/// Item 17 (part): small words a careful user notices.
#[test]
fn small_things_are_said_right() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["x"]));
    let env = local_env(&s, "{ id = \"m-8b\", context = 8192 }");
    let out = env.run(&["--dry-run", "q"]);
    assert!(out.stdout.starts_with("1 candidate, in the order"), "{out}");
    let out = env.run(&["--max-tokens", "0", "q"]);
    assert_eq!(out.code, 2, "{out}");
    let out = env.run(&["--help"]);
    assert!(out.stdout.contains("1 internal error"), "{out}");
    let out = env.run(&["stats", "--reset"]);
    assert!(out.stderr.contains("conversations"), "{out}");
    assert!(s.chats().is_empty());
}

/// Item 17: the `stats` table is one line per row whatever a server's error message
/// holds (blank lines, newlines, tabs, a carriage return, an escape), and SUCCESS is the
/// plain share of successful attempts: 100% after runs that all succeeded.
#[test]
fn the_stats_table_keeps_one_line_per_row_and_says_the_success_share() {
    let s = FakeServer::start(|r| match r.model().as_str() {
        "bad-70b" => fake::error_json(500, "upstream\n\nfailed:\tsee\r\nlog \x1b[31mred"),
        m => fake::answer(m, &["fine"]),
    });
    let env = local_env(
        &s,
        "{ id = \"bad-70b\", context = 8192 }, { id = \"good-8b\", context = 8192 }",
    );
    for _ in 0..3 {
        let out = env.run(&["-m", "good-8b", "q"]);
        assert_eq!(out.code, 0, "{out}");
    }
    let out = env.run(&["-m", "bad-70b", "q"]);
    assert_eq!(out.code, 4, "{out}");
    let table = env.run(&["stats"]);
    assert_eq!(table.code, 0, "{table}");
    let v = env.run(&["stats", "--json"]).json();
    let models = v["models"].as_array().unwrap().len();
    let providers = v["providers"].as_array().unwrap().len();
    let rows: Vec<&str> = table.stdout.lines().filter(|l| !l.is_empty()).collect();
    // The state line, two headings, one line per model and per provider.
    assert_eq!(rows.len(), 3 + models + providers, "{table}");
    assert!(
        !table.stdout.contains(['\r', '\t', '\x1b']),
        "{:?}",
        table.stdout
    );
    let row = |name: &str| {
        *rows
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}: {table}"))
    };
    assert!(
        row("local/bad-70b").contains("server_error: upstream failed: see log"),
        "{table}"
    );
    assert!(row("local/good-8b").contains(" 100% "), "{table}");
    assert!(row("local/bad-70b").contains(" 0% "), "{table}");
}

/// Item 17: `models` marks the last-resort tier (keyless services) on every one of its
/// rows, in the table and in `--json`.
#[test]
fn models_marks_the_last_resort_tier() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let env = Env::new(&s).var("FREEROUTE_KEYLESS", "1").config(&format!(
        "[providers.llm7]\nbase_url = \"{}\"\n[providers.kilo]\nenabled = false\n[providers.ovhcloud]\nenabled = false\n",
        s.url("/llm7/v1")
    ));
    let out = env.run(&["models"]);
    assert_eq!(out.code, 0, "{out}");
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert!(rows.iter().any(|r| r.contains(" openrouter ")), "{out}");
    assert!(rows.iter().any(|r| r.contains(" llm7 ")), "{out}");
    for r in &rows {
        assert_eq!(
            r.contains(" llm7 "),
            r.ends_with("last resort: keyless, may log prompts"),
            "{out}"
        );
    }
    let v = env.run(&["models", "--json"]).json();
    for m in v.as_array().unwrap() {
        let tier = if m["provider"] == "llm7" {
            "keyless"
        } else {
            "cloud"
        };
        assert_eq!(m["tier"], tier, "{m}");
    }
}

/// Item 17: `config show` lists the models of a server it found on a discovery port, as
/// it lists a configured provider's.
#[test]
fn config_show_lists_a_discovered_servers_models() {
    let s = discovered("x");
    let env = Env::bare()
        .var("FREEROUTE_DISCOVER", "1")
        .config(&format!("[defaults]\ndiscover_ports = [{}]\n", s.port));
    let out = env.run(&["config", "show"]);
    assert_eq!(out.code, 0, "{out}");
    let section = out
        .stdout
        .split(&format!("[providers.local-{}]", s.port))
        .nth(1)
        .unwrap_or_else(|| panic!("no section for the found server: {out}"));
    let section = section.split("\n[").next().unwrap();
    assert!(section.contains("found on a loopback port"), "{out}");
    assert!(section.contains("smollm2 (context 4096"), "{out}");
    assert!(s.chats().is_empty());
}

/// Item 17: the words of a few messages: plurals, a noun mid-sentence in lower case, a
/// config type error that says what the setting takes (not serde's `f64`), the image
/// limit in MiB.
#[test]
fn messages_say_plurals_types_and_sizes_in_words() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["x"]));
    let env = local_env(&s, "{ id = \"m-8b\", context = 8192 }");
    let batch = env.path("in.jsonl");
    std::fs::write(&batch, "hello\n{\"prompt\": 5}\n").unwrap();
    let out = env.run(&["batch", batch.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("1 input line could not be read"),
        "{out}"
    );
    let out = env.run(&["--schema", "missing.json", "q"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("Cannot read schema file missing.json"),
        "{out}"
    );
    // One byte over 20 MiB, a PNG by its first bytes.
    let big = env.path("big.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(20 * 1024 * 1024 + 1, 0);
    std::fs::write(&big, bytes).unwrap();
    let out = env.run(&["-i", big.to_str().unwrap(), "q"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("is larger than 20 MiB"), "{out}");
    assert!(!out.stderr.contains(" MB"), "{out}");
    let help = env.run(&["--help"]);
    assert!(help.stdout.contains("at most 20 MiB"), "{help}");
    let bad = env.config("[defaults]\ntimeout = \"slow\"\n");
    let out = bad.run(&["q"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(
        out.stderr.contains(
            "key `defaults.timeout`: expected a number, such as 120 or 0.5; found string \"slow\""
        ),
        "{out}"
    );
    assert!(!out.stderr.contains("f64"), "{out}");
    let bad = Env::bare().config("[defaults]\ndiscover_ports = [70000]\n");
    let out = bad.run(&["q"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(
        out.stderr
            .contains("expected a whole number from 0 to 65535"),
        "{out}"
    );
    assert!(s.chats().len() == 1, "only the batch's good line is sent");
}

/// The committed bash completions' answer for a command line whose last word is being
/// completed (`words`, the last one the partial word).
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/completions/freeroute.bash");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cmd = format!(
        "source '{script}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; _freeroute freeroute '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let dir = tempfile::tempdir().unwrap();
    // A file that a file-name completion would offer.
    std::fs::write(dir.path().join("notes.txt"), "").unwrap();
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &cmd])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Item 18: `-p <TAB>` offers provider names and `--tool-choice <TAB>` the choices, not
/// file names; any provider name (one of the config) and a tool's name are still taken.
#[test]
fn completions_offer_provider_names_and_tool_choices() {
    let offered = bash_completes(&["freeroute", "-p", ""]);
    for name in ["openrouter", "groq", "llm7", "llamacpp", "ollama"] {
        assert!(offered.iter().any(|o| o == name), "{name}: {offered:?}");
    }
    assert!(!offered.iter().any(|o| o == "notes.txt"), "{offered:?}");
    assert_eq!(
        bash_completes(&["freeroute", "models", "--provider", "ll"]),
        ["llm7", "llamacpp"]
    );
    assert_eq!(
        bash_completes(&["freeroute", "--tools", "t.json", "--tool-choice", ""]),
        ["auto", "none", "required"]
    );
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["x"]));
    let env = Env::bare().config(&format!(
        "[providers.my-gateway]\nbase_url = \"{}\"\nmodels = [{{ id = \"m-8b\", tools = true }}]\n",
        s.url("/v1")
    ));
    let out = env.run(&["-p", "my-gateway", "--dry-run", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let tools = env.path("tools.json");
    std::fs::write(
        &tools,
        r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]"#,
    )
    .unwrap();
    let out = env.run(&[
        "--tools",
        tools.to_str().unwrap(),
        "--tool-choice",
        "get_weather",
        "--dry-run",
        "q",
    ]);
    assert_eq!(out.code, 0, "{out}");
}

/// Item 18: the man pages refer only to pages that exist, and the main page has EXAMPLES,
/// EXIT STATUS, ENVIRONMENT and FILES sections instead of clap's EXTRA.
#[test]
fn the_man_pages_refer_only_to_pages_that_exist() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let main = std::fs::read_to_string(dir.join("freeroute.1")).unwrap();
    let sections: Vec<&str> = main
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"'))
        .collect();
    for s in [
        "EXAMPLES",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(sections.contains(&s), "{s}: {sections:?}");
    }
    assert!(!sections.contains(&"EXTRA"), "{sections:?}");
    for var in [
        "OPENROUTER_API_KEY",
        "FREEROUTE_CONFIG",
        "NO_COLOR",
        "HTTPS_PROXY",
    ] {
        assert!(main.contains(var), "{var}");
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let page = std::fs::read_to_string(&path).unwrap().replace("\\-", "-");
        // Every `name(1)` a page names is a page here.
        for (i, _) in page.match_indices("(1)") {
            let name: String = page[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.starts_with("freeroute") {
                assert!(
                    dir.join(format!("{name}.1")).exists(),
                    "{} refers to {name}(1), which is not in man/",
                    path.display()
                );
            }
        }
    }
}

/// Item 17: `-v` names the providers that are off in one line, not one line each.
#[test]
fn verbose_names_the_providers_that_are_off_in_one_line() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["x"]));
    let env = local_env(&s, "{ id = \"m-8b\", context = 8192 }");
    let out = env.run(&["-v", "--dry-run", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let naming: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("gemini") || l.contains("huggingface"))
        .collect();
    assert_eq!(naming.len(), 1, "{out}");
    assert!(
        naming[0].contains("gemini") && naming[0].contains("huggingface"),
        "{out}"
    );
}
