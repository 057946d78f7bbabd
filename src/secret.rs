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

    /// Who the key belongs to, without the key (DESIGN §9: quota belongs to a key): the
    /// first 16 hex digits of its SHA-256, enough to tell keys apart, useless to recover it.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
    fn a_fingerprint_tells_keys_apart_and_hides_them() {
        let a = Secret::new("sk-or-v1-abcdef".into());
        assert_eq!(a.fingerprint().len(), 16);
        assert_eq!(
            a.fingerprint(),
            Secret::new("sk-or-v1-abcdef".into()).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            Secret::new("sk-or-v1-abcdeg".into()).fingerprint()
        );
        assert!(!a.fingerprint().contains("abcdef"));
    }

    #[test]
    fn redact_scrubs_echoed_keys() {
        let s = Secret::new("sk-or-v1-abcdef".into());
        assert_eq!(s.redact("bad key sk-or-v1-abcdef!"), "bad key [redacted]!");
        assert_eq!(s.redact("nothing here"), "nothing here");
    }
}
