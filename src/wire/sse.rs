//! Server-sent events: bytes in, `data` payloads out. LF, CRLF and CR line ends; multi-line
//! `data:` fields; `:` comment lines (OpenRouter's `: OPENROUTER PROCESSING` keep-alive)
//! reported separately so they never count as a token. No policy, no JSON.

/// What one complete SSE event carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The joined `data:` lines of one event.
    Data(String),
    /// A comment line (a keep-alive).
    Comment,
}

/// The longest line the decoder keeps in memory; a server that sends more without a line
/// end is broken, and bounding it keeps memory bounded while streaming.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    data: String,
    has_data: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, LineTooLong> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                // A CR at the very end may be the first half of a CRLF: wait for more.
                if b == b'\r' && i + 1 == self.buf.len() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                self.line(&line, &mut events);
                i += if b == b'\r' && self.buf[i + 1] == b'\n' {
                    2
                } else {
                    1
                };
                start = i;
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(events)
    }

    /// End of stream: a last event without its blank line is still delivered (some servers
    /// close right after the final `data:` line).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest)
                .trim_end_matches('\r')
                .to_string();
            self.line(&line, &mut events);
        }
        self.dispatch(&mut events);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            events.push(Event::Comment);
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
        // `event:`, `id:`, `retry:` and unknown fields carry nothing we use.
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        if self.has_data {
            events.push(Event::Data(std::mem::take(&mut self.data)));
            self.has_data = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            out.extend(d.feed(chunk).unwrap());
        }
        out.extend(d.finish());
        out
    }

    const STREAM: &[u8] = b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\r\n\r\n\
data: {\"a\":1}\n\ndata: {\"b\":\r\ndata: 2}\r\n\r\nevent: message\nid: 7\ndata:{\"c\":3}\r\rdata: [DONE]\n\n";

    #[test]
    fn every_split_gives_the_same_events() {
        let expected = vec![
            Event::Comment,
            Event::Comment,
            Event::Data("{\"a\":1}".into()),
            Event::Data("{\"b\":\n2}".into()),
            Event::Data("{\"c\":3}".into()),
            Event::Data("[DONE]".into()),
        ];
        for piece in 1..=STREAM.len() {
            assert_eq!(
                decode_in_pieces(STREAM, piece),
                expected,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn multibyte_utf8_split_across_chunks() {
        let input = "data: {\"t\":\"héllo ✓\"}\n\n".as_bytes();
        for piece in 1..input.len() {
            assert_eq!(
                decode_in_pieces(input, piece),
                vec![Event::Data("{\"t\":\"héllo ✓\"}".into())]
            );
        }
    }

    #[test]
    fn last_event_without_blank_line_is_delivered() {
        assert_eq!(
            decode_in_pieces(b"data: x", 3),
            vec![Event::Data("x".into())]
        );
    }

    #[test]
    fn endless_line_is_refused() {
        let mut d = Decoder::new();
        let big = vec![b'a'; MAX_LINE + 1];
        assert_eq!(d.feed(&big), Err(LineTooLong));
    }
}
