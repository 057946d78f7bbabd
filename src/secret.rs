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

    /// Replaces every occurrence of the key in `text` (a server may echo a header back),
    /// and every piece of it: a word of `FRAGMENT` or more key characters that is part of
    /// the key, as a cut (ours or the server's) leaves behind.
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        let whole = text.replace(&self.0, REDACTED);
        if self.0.len() < FRAGMENT {
            return whole;
        }
        let mut out = String::with_capacity(whole.len());
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            if word.len() >= FRAGMENT && self.0.contains(word.as_str()) {
                out.push_str(REDACTED);
            } else {
                out.push_str(word);
            }
            word.clear();
        };
        for c in whole.chars() {
            // A word is a run of the characters the key is made of.
            if self.0.contains(c) {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
        flush(&mut word, &mut out);
        out
    }
}

const REDACTED: &str = "[redacted]";

/// The shortest piece of a key that is scrubbed on its own: long enough not to hit
/// ordinary words (`sk-or-v1-` is 9).
const FRAGMENT: usize = 8;

/// `text` cut to at most `max` bytes at a character boundary, with `…` when cut. Text
/// from a server is redacted before it is cut (`Secret::redact`), never after.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A URL as it may be shown or stored: a password in it (`user:password@`) becomes `***`.
pub fn public_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
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
    fn redact_scrubs_pieces_left_at_a_cut() {
        let key = "sk-or-v1-0123456789abcdef0123456789";
        let s = Secret::new(key.into());
        // A cut that keeps all but the last character, and one that keeps the end only.
        let cut = format!("Authorization: Bearer {}…", &key[..key.len() - 1]);
        assert_eq!(s.redact(&cut), "Authorization: Bearer [redacted]…");
        let tail = format!("…{} was refused", &key[20..]);
        assert_eq!(s.redact(&tail), "…[redacted] was refused");
        // Ordinary words, and short pieces that any text may share with a key, stay.
        assert_eq!(s.redact("sk-or error 0123"), "sk-or error 0123");
    }

    #[test]
    fn shorten_cuts_at_a_character_boundary() {
        assert_eq!(shorten("héllo", 2), "h…");
        assert_eq!(shorten("hi", 5), "hi");
    }

    #[test]
    fn public_url_hides_a_password() {
        assert_eq!(
            public_url("https://me:hunter2@llm.example.com/v1"),
            "https://me:***@llm.example.com/v1"
        );
        assert_eq!(
            public_url("http://127.0.0.1:8080/v1"),
            "http://127.0.0.1:8080/v1"
        );
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
