//! A seeded fuzz of the response reader through the real binary (issue 14): streams with
//! keep-alives, a BOM, odd splits, fields of the wrong type and trailing noise must give
//! the whole answer; a stream with a broken chunk, bytes that are not UTF-8 or a cut
//! before its end must fall back (or, once text was printed, fail). Never exit 0 with a
//! piece missing or altered.

use crate::ask::{BIG, MID, server};
use crate::fake::{self, Reply, Step};
use crate::harness::Env;

const PIECES: [&str; 4] = ["Alpha ", "beta ", "gämma ", "delta."];
const FALLBACK: &str = "FALLBACK";

/// What was done to the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Damage {
    None,
    /// One content chunk's JSON cut short.
    Truncated,
    /// A byte that is not UTF-8 inside a content string.
    NotUtf8,
    /// Content of the wrong type.
    WrongType,
    /// The connection dropped before the finish.
    Cut,
}

/// The stream of one seed and what was done to it.
fn stream(seed: u64) -> (Reply, Damage) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let damage = match rng.u8(0..8) {
        0 => Damage::Truncated,
        1 => Damage::NotUtf8,
        2 => Damage::WrongType,
        3 => Damage::Cut,
        _ => Damage::None,
    };
    let damaged_piece = rng.usize(0..PIECES.len());
    let mut events: Vec<Vec<u8>> = Vec::new();
    let keep_alive = |rng: &mut fastrand::Rng, events: &mut Vec<Vec<u8>>| {
        if rng.bool() {
            events.push(b": OPENROUTER PROCESSING\n\n".to_vec());
        }
    };
    keep_alive(&mut rng, &mut events);
    events.push(
        fake::chunk(
            BIG,
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        )
        .into_bytes(),
    );
    for (i, p) in PIECES.iter().enumerate() {
        keep_alive(&mut rng, &mut events);
        let mut chunk = serde_json::json!({
            "id": "gen-1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]
        });
        // Fields freeroute does not need, of the wrong type: harmless.
        match rng.u8(0..4) {
            0 => chunk["model"] = serde_json::json!(12345),
            1 => chunk["usage"] = serde_json::json!({"prompt_tokens": -1}),
            2 => chunk["choices"][0]["delta"]["reasoning"] = serde_json::json!(7),
            _ => {}
        }
        let mut data = chunk.to_string().into_bytes();
        if i == damaged_piece {
            match damage {
                Damage::Truncated => data.truncate(data.len() - rng.usize(1..6)),
                Damage::NotUtf8 => {
                    let at = data
                        .windows(p.len())
                        .position(|w| w == p.as_bytes())
                        .unwrap();
                    data.insert(at + 1, 0xFF);
                }
                Damage::WrongType => {
                    chunk["choices"][0]["delta"]["content"] = serde_json::json!(42);
                    data = chunk.to_string().into_bytes();
                }
                _ => {}
            }
        }
        let line_end: &[u8] = [&b"\n\n"[..], b"\r\n\r\n", b"\r\r"][rng.usize(0..3)];
        events.push([b"data: ", &data[..], line_end].concat());
        if damage == Damage::Cut && i == damaged_piece {
            break;
        }
    }
    if damage != Damage::Cut {
        events
            .push(fake::chunk(BIG, serde_json::json!({"content": ""}), Some("stop")).into_bytes());
        events.push(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n".to_vec());
        events.push(b"data: [DONE]\n\n".to_vec());
        if rng.bool() {
            events.push(b"data: trailing noise after the end\n\n".to_vec());
        }
    }
    let mut bytes = events.concat();
    if rng.u8(0..4) == 0 {
        bytes.splice(0..0, *b"\xEF\xBB\xBF");
    }
    // Sent in pieces of random size, so that lines, events and characters are split.
    let mut steps = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = rng.usize(1..=64).min(rest.len());
        steps.push(Step::Bytes(rest[..n].to_vec()));
        rest = &rest[n..];
    }
    if damage == Damage::Cut {
        steps.push(Step::Drop);
    }
    (Reply::stream(steps), damage)
}

#[test]
fn no_stream_a_server_can_send_gives_a_wrong_answer_with_exit_0() {
    let whole: String = PIECES.concat();
    let mut tally = std::collections::BTreeMap::new();
    for seed in 0..120u64 {
        let (reply, damage) = stream(seed);
        *tally.entry(format!("{damage:?}")).or_insert(0) += 1;
        let s = server(move |r| {
            if r.model() == BIG {
                reply.clone()
            } else {
                fake::answer(&r.model(), &[FALLBACK])
            }
        });
        let env = Env::new(&s);
        let streamed = seed % 3 == 0;
        let args: &[&str] = if streamed {
            &["--stream", "-m", BIG, "-m", MID, "q"]
        } else {
            &["-m", BIG, "-m", MID, "q"]
        };
        let out = env.run(args);
        let what = format!("seed {seed}, {damage:?}, streamed {streamed}: {out}");
        match (damage, out.code) {
            (Damage::None, 0) => assert_eq!(out.stdout, format!("{whole}\n"), "{what}"),
            (Damage::None, _) => panic!("an intact stream must answer: {what}"),
            // Damaged: the fallback's answer, whole; or, once text was printed, a failure.
            (_, 0) => assert_eq!(out.stdout, format!("{FALLBACK}\n"), "{what}"),
            (_, 4) if streamed => assert!(
                whole.starts_with(out.stdout.trim_end_matches('\n')),
                "{what}"
            ),
            _ => panic!("a damaged stream must fall back or fail: {what}"),
        }
    }
    // Every kind of damage was tried.
    assert_eq!(tally.len(), 5, "{tally:?}");
}
