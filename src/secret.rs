//! An API key that cannot leak by accident: `Debug` and `Display` redact it, and
//! `redact` scrubs it out of text that came back from a server before that text is shown.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The raw value, for the `Authorization` header of its own provider only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the key in `text` (a server may echo a header back).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 || !text.contains(&self.0) {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("sk-or-v1-abcdef".into());
        assert!(!format!("{s:?}").contains("abcdef"));
        assert!(!format!("{s}").contains("abcdef"));
        assert_eq!(s.expose(), "sk-or-v1-abcdef");
    }

    #[test]
    fn redact_scrubs_echoed_keys() {
        let s = Secret::new("sk-or-v1-abcdef".into());
        assert_eq!(s.redact("bad key sk-or-v1-abcdef!"), "bad key [redacted]!");
        assert_eq!(s.redact("nothing here"), "nothing here");
    }
}
