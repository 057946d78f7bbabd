//! Turns what the user typed and piped into values (DESIGN §1 "Prompt text"). The only
//! module that reads standard input.

use std::io::{IsTerminal, Read};

use crate::error::{Error, Result};

/// Whether standard input is a terminal (then it is never read).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Reads all of standard input as text.
pub fn read_stdin_text() -> Result<String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| Error::input(format!("Cannot read standard input: {e}")))?;
    String::from_utf8(buf).map_err(|_| {
        Error::input("Standard input is not UTF-8 text")
            .with_hint("Pipe text, or pass an image with -i - once image input is supported")
    })
}

/// The prompt: the words joined by spaces; with piped text too, the piped text, a blank
/// line, then the words.
pub fn join_prompt(words: &[String], piped: Option<&str>) -> String {
    let words = words.join(" ");
    let piped = piped
        .map(|p| p.trim_end_matches(['\n', '\r']))
        .filter(|p| !p.trim().is_empty());
    match (piped, words.trim().is_empty()) {
        (Some(p), true) => p.to_string(),
        (Some(p), false) => format!("{p}\n\n{words}"),
        (None, _) => words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_piped_text_and_words() {
        let w = vec!["write".to_string(), "a".into(), "message".into()];
        assert_eq!(join_prompt(&w, None), "write a message");
        assert_eq!(join_prompt(&w, Some("diff\n")), "diff\n\nwrite a message");
        assert_eq!(join_prompt(&[], Some("only piped\n")), "only piped");
        assert_eq!(join_prompt(&w, Some("  \n")), "write a message");
        assert_eq!(join_prompt(&[], None), "");
    }
}
