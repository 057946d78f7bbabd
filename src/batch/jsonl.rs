//! Batch input and output (DESIGN §6): JSONL items or plain text lines in; result lines
//! out; on resume, the ids already answered in OUT.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::settings::ItemFields;

/// The ids already answered in OUT (skipped on resume). OUT is rewritten without its
/// failed lines, so each id ends with exactly one line; then it is opened for appending.
pub fn open_output(path: Option<&Path>) -> Result<(HashSet<String>, Box<dyn Write>)> {
    let Some(path) = path else {
        return Ok((HashSet::new(), Box::new(std::io::stdout())));
    };
    let mut answered = HashSet::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        let mut kept = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["ok"] == true && !v["id"].is_null() {
                answered.insert(v["id"].to_string());
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if kept.len() != text.len() {
            crate::store::write_atomic(path, kept.as_bytes()).map_err(|e| {
                Error::input(format!("Cannot rewrite {}", path.display())).with_source(e)
            })?;
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            Error::input(format!("Cannot open {} for writing", path.display())).with_source(e)
        })?;
    Ok((answered, Box::new(file)))
}

/// The ids answered in OUT, read only (`batch --dry-run` changes no file).
pub fn answered(path: Option<&Path>) -> HashSet<String> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["ok"] == true && !v["id"].is_null())
        .map(|v| v["id"].to_string())
        .collect()
}

pub fn count_lines(path: &str) -> Option<u64> {
    let f = std::fs::File::open(path).ok()?;
    Some(
        BufReader::new(f)
            .lines()
            .map_while(|l| l.ok())
            .filter(|l| !l.trim().is_empty())
            .count() as u64,
    )
}

/// The fields a JSON item may have; any other is an input error, as in the config.
pub const FIELDS: &[&str] = &[
    "id",
    "prompt",
    "system",
    "image",
    "translate",
    "to",
    "schema",
    "max_tokens",
];

/// The fields an input line may carry.
#[derive(Default)]
pub struct Fields {
    pub prompt: String,
    pub images: Vec<String>,
    pub schema: Option<String>,
    /// What overrides the batch's settings.
    pub settings: ItemFields,
}

/// The longest input line read; a longer one is that line's input error, and memory
/// stays bounded whatever the input (`/dev/zero` included).
pub const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

/// The lines of `r` without their line ends, each at most `MAX_LINE_BYTES` and UTF-8 (a
/// line that is not is an `Err` for that line alone; reading goes on after it).
pub fn lines(mut r: impl BufRead) -> impl Iterator<Item = std::io::Result<String>> {
    use std::io::{Error as IoError, ErrorKind};
    let mut eof = false;
    std::iter::from_fn(move || {
        if eof {
            return None;
        }
        let mut buf = Vec::new();
        let mut too_long = false;
        loop {
            let avail = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e)),
            };
            if avail.is_empty() {
                eof = true;
                if buf.is_empty() && !too_long {
                    return None;
                }
                break;
            }
            let (piece, used, ended) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if !too_long {
                buf.extend_from_slice(piece);
                if buf.len() > MAX_LINE_BYTES {
                    (too_long, buf) = (true, Vec::new());
                }
            }
            r.consume(used);
            if ended {
                break;
            }
        }
        if too_long {
            let why = format!("longer than {} MiB", MAX_LINE_BYTES >> 20);
            return Some(Err(IoError::new(ErrorKind::InvalidData, why)));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Some(String::from_utf8(buf).map_err(|_| IoError::new(ErrorKind::InvalidData, "not UTF-8")))
    })
}

/// An input line that cannot be an item: that item's input error (the batch goes on).
#[derive(Debug, thiserror::Error)]
#[error("Input line {line}: {problem}")]
pub struct LineError {
    pub line: usize,
    pub problem: String,
}

impl From<LineError> for Error {
    fn from(e: LineError) -> Self {
        Error::input(e.to_string())
    }
}

/// A JSON object line, or a plain text line (its id is its line number).
pub fn parse_line(line: &str, line_no: usize) -> std::result::Result<(Value, Fields), LineError> {
    fields_of(line, line_no).map_err(|problem| LineError {
        line: line_no,
        problem,
    })
}

fn fields_of(line: &str, line_no: usize) -> std::result::Result<(Value, Fields), String> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('{') {
        return Ok((
            json!(line_no),
            Fields {
                prompt: line.to_string(),
                ..Fields::default()
            },
        ));
    }
    let v: Value = serde_json::from_str(trimmed).map_err(|e| format!("not valid JSON ({e})"))?;
    if let Some(o) = v.as_object()
        && let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str()))
    {
        let known: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();
        let near = crate::output::explain::closest(k, &known, 1);
        let hint = match near.first() {
            Some(n) if crate::output::explain::edit_distance(k, n) <= 2 => {
                format!("did you mean `{n}`? ")
            }
            _ => String::new(),
        };
        return Err(format!(
            "unknown field `{k}` ({hint}an item has {})",
            FIELDS.join(", ")
        ));
    }
    let text = |k: &str| -> std::result::Result<Option<String>, String> {
        match &v[k] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(format!("`{k}` must be a string, not {other}")),
        }
    };
    let images = match &v["image"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or("`image` entries must be strings")
            })
            .collect::<std::result::Result<_, _>>()?,
        _ => return Err("`image` must be a path or URL, or a list of them".into()),
    };
    let schema = match &v["schema"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        obj @ Value::Object(_) => Some(obj.to_string()),
        _ => return Err("`schema` must be a JSON Schema object or a file name".into()),
    };
    let to = text("to")?;
    let fields = Fields {
        prompt: text("prompt")?.unwrap_or_default(),
        images,
        schema,
        settings: ItemFields {
            system: text("system")?,
            translate: v["translate"].as_bool().unwrap_or(false) || to.is_some(),
            to,
            max_tokens: v["max_tokens"]
                .as_u64()
                .map(|n| n.min(u32::MAX as u64) as u32),
        },
    };
    let id = if v["id"].is_null() {
        json!(line_no)
    } else {
        v["id"].clone()
    };
    Ok((id, fields))
}

/// Writes one result line; `Ok(false)` when the reader went away (`| head`), which ends
/// the batch as it ends a single run: quietly, exit 0.
pub fn write_line(out: &mut Box<dyn Write>, line: &str) -> Result<bool> {
    let written = out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::internal("Cannot write a result").with_source(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_reading_goes_on_after_a_bad_one() {
        let mut input = b"first\r\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE_BYTES + 10]);
        input.extend(b"\n\xFF\nlast");
        let got: Vec<_> = lines(std::io::BufReader::new(&input[..]))
            .map(|l| l.map_err(|e| e.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                Ok("first".to_string()),
                Err("longer than 32 MiB".to_string()),
                Err("not UTF-8".to_string()),
                Ok("last".to_string()),
            ]
        );
    }

    #[test]
    fn lines_are_json_items_or_plain_prompts() {
        let (id, f) = parse_line("Translate this", 7).unwrap();
        assert_eq!(id, json!(7));
        assert_eq!(f.prompt, "Translate this");
        let (id, f) = parse_line(
            r#"{"id": "a1", "prompt": "hi", "to": "de", "image": ["x.png"], "max_tokens": 9}"#,
            1,
        )
        .unwrap();
        assert_eq!(id, json!("a1"));
        assert!(f.settings.translate && f.settings.to.as_deref() == Some("de"));
        assert_eq!(f.images, vec!["x.png"]);
        assert_eq!(f.settings.max_tokens, Some(9));
        let (id, _) = parse_line(r#"{"prompt": "no id"}"#, 3).unwrap();
        assert_eq!(id, json!(3));
        assert!(parse_line(r#"{"prompt": 5}"#, 1).is_err());
        let Err(typo) = parse_line(r#"{"prompt": "hi", "sytem": "x"}"#, 1) else {
            panic!("an unknown field is an error")
        };
        assert!(
            typo.problem.contains("unknown field `sytem`") && typo.problem.contains("`system`"),
            "{typo}"
        );
        assert!(parse_line("{broken", 1).is_err());
    }
}
