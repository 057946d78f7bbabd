//! Capabilities (DESIGN §1–§4): images, OCR, translation (split when too long), tools,
//! structured output, conversations. Checks what went over the wire and that only capable
//! models were asked.

use serde_json::{Value, json};

use crate::ask::JsonAnswer;
use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::Env;

const VISION_A: &str = "vision/alpha-70b:free";
const VISION_B: &str = "vision/beta-8b:free";
const TOOLS: &str = "tools/agent-70b:free";
const SCHEMA: &str = "schema/json-32b:free";
const TEXT_BIG: &str = "text/big-70b:free";
const TEXT_SMALL: &str = "text/small-8b:free";

fn catalog() -> Reply {
    fake::catalog(vec![
        fake::model_entry(
            VISION_A,
            "0",
            Some(65536),
            &["text", "image"],
            &["max_tokens"],
        ),
        fake::model_entry(
            VISION_B,
            "0",
            Some(32768),
            &["text", "image"],
            &["max_tokens"],
        ),
        fake::model_entry(
            TOOLS,
            "0",
            Some(65536),
            &["text"],
            &["tools", "tool_choice"],
        ),
        fake::model_entry(
            SCHEMA,
            "0",
            Some(32768),
            &["text"],
            &["response_format", "structured_outputs"],
        ),
        fake::model_entry(TEXT_BIG, "0", Some(4096), &["text"], &["max_tokens"]),
        fake::model_entry(TEXT_SMALL, "0", Some(2048), &["text"], &["max_tokens"]),
    ])
}

fn server(chat: impl Fn(&fake::Request) -> Reply + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            catalog()
        } else {
            chat(r)
        }
    })
}

fn echo_ok() -> FakeServer {
    server(|r| fake::answer(&r.model(), &["done"]))
}

fn tests_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn b64(path: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(tests_dir().join(path)).unwrap())
}

fn user_parts(r: &fake::Request) -> Vec<Value> {
    let body = r.json();
    let msgs = body["messages"].as_array().unwrap().clone();
    msgs.iter().rev().find(|m| m["role"] == "user").unwrap()["content"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn image_file_is_sent_as_a_data_url_after_the_text() {
    let s = echo_ok().expect_chats(1);
    let png = tests_dir().join("sign.png");
    let out = Env::new(&s).run(&["-i", png.to_str().unwrap(), "what does the sign say?"]);
    assert_eq!(out.code, 0, "{out}");
    let chats = s.chats();
    assert!(
        [VISION_A, VISION_B].contains(&chats[0].model().as_str()),
        "only vision models: {:?}",
        s.chat_models()
    );
    let parts = user_parts(&chats[0]);
    assert_eq!(
        parts[0],
        json!({"type": "text", "text": "what does the sign say?"})
    );
    assert_eq!(parts[1]["type"], "image_url");
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/png;base64,{}", b64("sign.png"))
    );
}

#[test]
fn mime_type_comes_from_the_bytes_and_urls_pass_through() {
    let s = echo_ok().expect_chats(1);
    let env = Env::new(&s);
    let disguised = env.path("photo.png");
    std::fs::copy(tests_dir().join("hello.jpg"), &disguised).unwrap();
    let out = env.run(&[
        "-i",
        disguised.to_str().unwrap(),
        "-i",
        "https://example.com/cat.webp",
        "describe",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let parts = user_parts(&s.chats()[0]);
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/jpeg;base64,{}", b64("hello.jpg"))
    );
    assert_eq!(parts[2]["image_url"]["url"], "https://example.com/cat.webp");
}

#[test]
fn ocr_reads_the_image_from_stdin_with_no_prompt() {
    let s = server(|r| fake::answer(&r.model(), &["EXIT 4\nPlatform 9 3/4"])).expect_chats(2);
    let bytes = std::fs::read(tests_dir().join("sign.png")).unwrap();
    let env = Env::new(&s);
    let out = env.run_bytes(&["--ocr", "-i", "-"], &bytes);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "EXIT 4\nPlatform 9 3/4\n");
    let body = s.chats()[0].json();
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("Transcribe all text") && system.contains("line breaks"),
        "{system}"
    );
    let parts = user_parts(&s.chats()[0]);
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/png;base64,{}", b64("sign.png"))
    );
    // An instruction given alongside is added to the OCR request.
    let png = tests_dir().join("sign.png");
    let out = env.run(&["--ocr", "-i", png.to_str().unwrap(), "only the first line"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        user_parts(&s.chats()[1])[0]["text"]
            .as_str()
            .unwrap()
            .contains("only the first line")
    );
}

#[test]
fn image_input_errors_name_the_file_and_send_nothing() {
    let s = echo_ok();
    let env = Env::new(&s);
    let text_file = env.path("notes.txt");
    std::fs::write(&text_file, "not an image").unwrap();
    let huge = env.path("huge.png");
    let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
    big.resize(21 * 1024 * 1024, 0);
    std::fs::write(&huge, big).unwrap();
    for (args, needle) in [
        (
            vec!["-i", "/nonexistent/shot.png", "q"],
            "/nonexistent/shot.png",
        ),
        (
            vec!["-i", text_file.to_str().unwrap(), "q"],
            "is not a PNG, JPEG, GIF or WebP",
        ),
        (
            vec!["-i", huge.to_str().unwrap(), "q"],
            "is larger than 20 MiB",
        ),
        (vec!["--ocr", "q"], "--ocr needs an image"),
    ] {
        let out = env.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(out.stderr.contains(needle), "{args:?}: {out}");
    }
    assert!(s.chats().is_empty());
}

#[test]
fn no_model_with_the_capability_is_exit_3_naming_it() {
    let s = echo_ok();
    let out = Env::new(&s).run(&["--vision", "-p", "openrouter", "--exclude", "vision/*", "q"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("image input"), "{out}");
}

#[test]
fn capability_miss_falls_back_and_is_remembered() {
    let s = server(|r| {
        if r.model() == VISION_A {
            fake::error_json(404, "No endpoints found that support image input")
        } else {
            fake::answer(&r.model(), &["seen"])
        }
    })
    .expect_chats(2);
    let env = Env::new(&s);
    let png = tests_dir().join("sign.png");
    let out = env.run(&[
        "--json",
        "--prefer",
        "vision/alpha*",
        "-i",
        png.to_str().unwrap(),
        "q",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "capability_missing");
    assert_eq!(a.model, VISION_B);
    let out = env.run(&["--dry-run", "--json", "--vision", "q"]);
    let v = out.json();
    let dropped = v["dropped"].as_array().unwrap();
    let miss = dropped
        .iter()
        .find(|d| d["model"] == VISION_A)
        .expect("remembered miss drops the model");
    assert!(
        miss["reason"].as_str().unwrap().contains("remembered"),
        "{miss}"
    );
}

#[test]
fn translation_prints_only_the_translation() {
    let s = server(|r| fake::answer(&r.model(), &["Hallo Welt"])).expect_chats(1);
    let out = Env::new(&s).run_with_stdin(
        &["--translate", "--to", "German", "-m", TEXT_BIG],
        Some("Hello world\n"),
    );
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "Hallo Welt\n");
    let body = s.chats()[0].json();
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("into German") && system.contains("Output only the translation"),
        "{system}"
    );
    assert_eq!(body["messages"][1]["content"], "Hello world");
}

#[test]
fn a_long_translation_is_split_at_paragraphs_and_reassembled_in_order() {
    // Each piece is answered with a marker naming the piece's first paragraph.
    let s = server(|r| {
        let body = r.json();
        let text = body["messages"][1]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let first = text
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .split(' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        fake::answer(&r.model(), &[&format!("<{first}>")])
    })
    .expect_chats(2);
    let paragraphs: Vec<String> = (0..48)
        .map(|i| format!("P{i} {}", "lorem ipsum dolor sit amet ".repeat(12)))
        .collect();
    let text = paragraphs.join("\n\n");
    let out = Env::new(&s).run_with_stdin(
        &[
            "--json",
            "--translate",
            "--to",
            "de",
            "-p",
            "openrouter",
            "--exclude",
            "vision/*",
            "--exclude",
            "tools/*",
            "--exclude",
            "schema/*",
        ],
        Some(&text),
    );
    assert_eq!(out.code, 0, "{out}");
    let v = out.json();
    let pieces = v["pieces"].as_array().expect("pieces reported");
    assert!(pieces.len() >= 2, "{v}");
    let chats = s.chats();
    assert_eq!(chats.len(), pieces.len());
    // Every paragraph went out exactly once, in order.
    let sent: Vec<String> = chats
        .iter()
        .map(|c| {
            c.json()["messages"][1]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sent.join("\n\n"), text);
    let content = v["content"].as_str().unwrap();
    let markers: Vec<&str> = content.split("\n\n").collect();
    assert_eq!(markers.len(), pieces.len());
    assert_eq!(markers[0], "<P0 lorem>");
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a["piece"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (0..pieces.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(v["model"], pieces[0]["model"]);
}

#[test]
fn ocr_and_translation_together() {
    let s = server(|r| fake::answer(&r.model(), &["AUSGANG 4"])).expect_chats(1);
    let png = tests_dir().join("sign.png");
    let out = Env::new(&s).run(&[
        "--ocr",
        "--translate",
        "--to",
        "German",
        "-i",
        png.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "AUSGANG 4\n");
    let body = s.chats()[0].json();
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("Transcribe") && system.contains("into German"),
        "{system}"
    );
    assert!([VISION_A, VISION_B].contains(&s.chats()[0].model().as_str()));
}

fn tool_stream(model: &str) -> Reply {
    let frag = |v: Value| Step::Send(fake::chunk(model, v, None));
    Reply::stream(vec![
        Step::Send(": OPENROUTER PROCESSING\n\n".into()),
        frag(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        ),
        frag(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]})),
        frag(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
        Step::Send(fake::chunk(model, json!({}), Some("tool_calls"))),
        Step::Send("data: [DONE]\n\n".into()),
    ])
}

#[test]
fn tool_calls_are_assembled_and_printed_as_json_lines() {
    let s = server(|r| tool_stream(&r.model())).expect_chats(2);
    let env = Env::new(&s);
    let tools = env.path("tools.json");
    std::fs::write(&tools, r#"{"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}"#).unwrap();
    let out = env.run(&[
        "--tools",
        tools.to_str().unwrap(),
        "--tool-choice",
        "required",
        "weather in Paris?",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let line: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        line,
        json!({"id": "call_abc", "name": "get_weather", "arguments": {"city": "Paris"}})
    );
    let body = s.chats()[0].json();
    assert_eq!(s.chats()[0].model(), TOOLS, "only the tool-capable model");
    assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["provider"]["require_parameters"], true);
    let out = env.run(&["--json", "--tools", tools.to_str().unwrap(), "weather?"]);
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        a.tool_calls,
        vec![json!({"id": "call_abc", "name": "get_weather", "arguments": {"city": "Paris"}})]
    );
    assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
}

#[test]
fn bad_tools_and_schema_files_are_input_errors() {
    let s = echo_ok();
    let env = Env::new(&s);
    let bad_json = env.path("bad.json");
    std::fs::write(&bad_json, "{nope").unwrap();
    let not_tools = env.path("not-tools.json");
    std::fs::write(&not_tools, r#"[{"type": "function"}]"#).unwrap();
    for (args, needle) in [
        (
            vec!["--tools", bad_json.to_str().unwrap(), "q"],
            "not valid JSON",
        ),
        (vec!["--tools", not_tools.to_str().unwrap(), "q"], "tool 0"),
        (
            vec!["--tools", "/nonexistent/tools.json", "q"],
            "/nonexistent/tools.json",
        ),
        (
            vec!["--schema", "{\"type\": \"bogus\"}", "q"],
            "not a valid JSON Schema",
        ),
        (
            vec!["--schema", bad_json.to_str().unwrap(), "q"],
            "not valid JSON",
        ),
    ] {
        let out = env.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(out.stderr.contains(needle), "{args:?}: {out}");
    }
    assert!(s.chats().is_empty());
}

#[test]
fn schema_answers_are_validated_and_printed_alone() {
    let schema = r#"{"type":"object","required":["name","age"],"properties":{"name":{"type":"string"},"age":{"type":"integer"}}}"#;
    let s = FakeServer::start(|r| {
        if r.path.ends_with("/models") {
            return fake::catalog(vec![
                fake::model_entry(
                    "schema/first-70b:free",
                    "0",
                    Some(32768),
                    &["text"],
                    &["response_format"],
                ),
                fake::model_entry(
                    "schema/second-8b:free",
                    "0",
                    Some(32768),
                    &["text"],
                    &["structured_outputs"],
                ),
                fake::model_entry("plain/text-70b:free", "0", Some(32768), &["text"], &[]),
            ]);
        }
        if r.model() == "schema/first-70b:free" {
            fake::answer(&r.model(), &["{\"name\": \"Ada\", \"age\": \"old\"}"])
        } else {
            fake::answer(
                &r.model(),
                &["```json\n{\"name\": \"Ada\", \"age\": 36}\n```"],
            )
        }
    })
    .expect_chats(3);
    let env = Env::new(&s);
    let out = env.run(&[
        "--json",
        "--schema",
        schema,
        "--prefer",
        "schema/first*",
        "Ada Lovelace, 36",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.attempts[0].outcome, "invalid_answer");
    assert!(a.attempts[0].error.as_deref().unwrap().contains("schema"));
    assert_eq!(a.content, "{\"name\": \"Ada\", \"age\": 36}");
    assert!(!s.chat_models().contains(&"plain/text-70b:free".to_string()));
    let body = s.chats()[0].json();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["name", "age"])
    );
    let out = env.run(&["--schema", schema, "-m", "schema/second-8b:free", "Ada"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "{\"name\": \"Ada\", \"age\": 36}\n");
}

#[test]
fn messages_file_arrives_intact_with_words_appended() {
    let s = echo_ok().expect_chats(1);
    let env = Env::new(&s);
    let conv = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ]);
    let file = env.path("conv.json");
    std::fs::write(&file, conv.to_string()).unwrap();
    let out = env.run(&[
        "--messages",
        file.to_str().unwrap(),
        "-m",
        TEXT_BIG,
        "another",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let mut expected = conv.as_array().unwrap().clone();
    expected.push(json!({"role": "user", "content": "another"}));
    assert_eq!(s.chats()[0].json()["messages"], Value::Array(expected));
    std::fs::write(
        &file,
        r#"[{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]"#,
    )
    .unwrap();
    let out = env.run(&["--messages", file.to_str().unwrap(), "q"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("message 1") && out.stderr.contains("wizard"),
        "{out}"
    );
}

#[test]
fn continue_sends_the_previous_exchange_first() {
    let s = server(|r| {
        let n = r.json()["messages"].as_array().unwrap().len();
        if r.model() == TEXT_BIG && n > 1 {
            fake::upstream_429(TEXT_BIG)
        } else {
            fake::answer(&r.model(), &[&format!("answer {n}")])
        }
    })
    .expect_chats(2);
    let env = Env::new(&s);
    let out = env.run(&["-c", "q"]);
    assert_eq!(out.code, 2, "nothing to continue yet: {out}");
    let out = env.run(&["-m", TEXT_BIG, "first question"]);
    assert_eq!(out.stdout, "answer 1\n", "{out}");
    let out = env.run(&[
        "--json",
        "-c",
        "-m",
        TEXT_BIG,
        "-m",
        TEXT_SMALL,
        "and then?",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.model, TEXT_SMALL, "a fallback may answer the follow-up");
    let last = s.chats().last().unwrap().json();
    assert_eq!(
        last["messages"],
        json!([
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "answer 1"},
            {"role": "user", "content": "and then?"}
        ])
    );
    // The request log never holds the conversation.
    let log = std::fs::read_to_string(env.state_dir().join("requests.jsonl")).unwrap();
    assert!(!log.contains("first question"));
}

#[test]
fn an_unnamed_parameters_miss_is_remembered_for_the_capability_asked() {
    // OpenRouter's answer to `require_parameters` names no capability (reference §1).
    let s = server(|r| {
        if r.model() == TOOLS {
            fake::error_json(
                404,
                "No endpoints found that can handle the requested parameters.",
            )
        } else {
            fake::answer(&r.model(), &["plain"])
        }
    });
    let env = Env::new(&s);
    let tools = env.path("tools.json");
    std::fs::write(&tools, r#"{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}"#).unwrap();
    let out = env.run(&["--json", "--tools", tools.to_str().unwrap(), "q"]);
    assert_eq!(out.code, 4, "{out}");
    let v = out.json();
    assert_eq!(v["attempts"][0]["outcome"], "capability_missing", "{out}");
    // Remembered as the typed capability, not by the words of the error.
    let stats = env.run(&["stats", "--json"]).json();
    let model = crate::harness::stats_row(&stats, "models", "model", TOOLS);
    assert_eq!(model["missing"], serde_json::json!(["tools"]), "{stats}");
    // The next run with tools leaves it out without a request ...
    let out = env.run(&["--tools", tools.to_str().unwrap(), "q"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("tool calling"), "{out}");
    assert_eq!(s.chats().len(), 1);
    // ... and a run without tools still may use it.
    let v = env.run(&["--dry-run", "--json", "q"]).json();
    let candidates = v["candidates"].as_array().unwrap();
    assert!(candidates.iter().any(|c| c["model"] == TOOLS), "{v}");
}
