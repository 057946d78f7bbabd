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
/// The largest event (its `data:` lines joined): one chunk of an answer is small.
pub const MAX_EVENT: usize = 8 * 1024 * 1024;

/// Why a stream cannot be read on; the attempt fails, and says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the stream sent a line longer than {} MiB", MAX_LINE >> 20)]
    LineTooLong,
    #[error("the stream sent an event larger than {} MiB", MAX_EVENT >> 20)]
    EventTooLarge,
    /// Text that is not UTF-8 would reach the user as U+FFFD: refused instead.
    #[error("the stream sent bytes that are not UTF-8")]
    InvalidUtf8,
}

#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no line end: each byte is looked at once, so
    /// decoding is linear in the stream's length however long its lines are.
    scanned: usize,
    data: String,
    has_data: bool,
    /// The first bytes were seen (a UTF-8 BOM there is dropped, as the SSE spec says).
    started: bool,
    /// A line that could not be read, reported by the next call: the events before it
    /// (a `[DONE]` among them, after which nothing more is read) are delivered first.
    broken: Option<DecodeError>,
    /// Bytes examined for line ends, for the test that decoding is linear.
    #[cfg(test)]
    looked: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        self.buf.extend_from_slice(bytes);
        if !self.started {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(Vec::new());
            }
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
            self.started = true;
        }
        let mut events = Vec::new();
        // The lines are read in place, from the buffer taken out for the while: no copy
        // of each line on the streaming path.
        let buf = std::mem::take(&mut self.buf);
        let scanned = self.lines(&buf, &mut events);
        self.buf = buf;
        let (start, i) = match scanned {
            Ok(at) => at,
            Err(e) if events.is_empty() => return Err(e),
            Err(e) => {
                self.broken = Some(e);
                return Ok(events);
            }
        };
        self.buf.drain(..start);
        self.scanned = i - start;
        if self.buf.len() > MAX_LINE {
            return Err(DecodeError::LineTooLong);
        }
        Ok(events)
    }

    /// Decodes the whole lines of `buf` from `scanned` on; returns where the unread rest
    /// starts and how much of it is known to hold no line end.
    fn lines(
        &mut self,
        buf: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(usize, usize), DecodeError> {
        let mut start = 0;
        let mut i = self.scanned;
        loop {
            let Some(off) = buf[i..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                #[cfg(test)]
                {
                    self.looked += buf.len() - i;
                }
                return Ok((start, buf.len()));
            };
            let end = i + off;
            #[cfg(test)]
            {
                self.looked += off + 1;
            }
            // A CR at the very end may be the first half of a CRLF: wait for more.
            if buf[end] == b'\r' && end + 1 == buf.len() {
                return Ok((start, end));
            }
            let line =
                std::str::from_utf8(&buf[start..end]).map_err(|_| DecodeError::InvalidUtf8)?;
            self.line(line, events)?;
            i = end
                + if buf[end] == b'\r' && buf[end + 1] == b'\n' {
                    2
                } else {
                    1
                };
            start = i;
        }
    }

    /// End of stream: a last event without its blank line is still delivered (some servers
    /// close right after the final `data:` line).
    pub fn finish(&mut self) -> Result<Vec<Event>, DecodeError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let mut events = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = std::str::from_utf8(&rest)
                .map_err(|_| DecodeError::InvalidUtf8)?
                .trim_end_matches('\r')
                .to_string();
            self.line(&line, &mut events)?;
        }
        self.dispatch(&mut events);
        Ok(events)
    }

    fn line(&mut self, line: &str, events: &mut Vec<Event>) -> Result<(), DecodeError> {
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line.starts_with(':') {
            events.push(Event::Comment);
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            if self.data.len() + value.len() + 1 > MAX_EVENT {
                return Err(DecodeError::EventTooLarge);
            }
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
        // `event:`, `id:`, `retry:` and unknown fields carry nothing we use.
        Ok(())
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
        out.extend(d.finish().unwrap());
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
        assert_eq!(d.feed(&big), Err(DecodeError::LineTooLong));
    }

    #[test]
    fn endless_event_is_refused() {
        let mut d = Decoder::new();
        let line = format!("data: {}\n", "a".repeat(1024 * 1024));
        let mut refused = None;
        for _ in 0..16 {
            if let Err(e) = d.feed(line.as_bytes()) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(DecodeError::EventTooLarge));
    }

    #[test]
    fn a_bom_at_the_start_is_dropped_in_any_split() {
        let input = b"\xEF\xBB\xBFdata: {\"a\":1}\n\ndata: [DONE]\n\n";
        for piece in 1..input.len() {
            assert_eq!(
                decode_in_pieces(input, piece),
                vec![
                    Event::Data("{\"a\":1}".into()),
                    Event::Data("[DONE]".into())
                ],
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        let mut d = Decoder::new();
        assert_eq!(
            d.feed(b"data: {\"t\":\"a\xFFb\"}\n\n"),
            Err(DecodeError::InvalidUtf8)
        );
        let mut d = Decoder::new();
        d.feed(b"data: \xC3").unwrap();
        assert_eq!(d.finish(), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn a_bad_line_costs_no_event_before_it() {
        let mut d = Decoder::new();
        let events = d
            .feed(b"data: {\"a\":1}\n\ndata: [DONE]\n\n\xFF\xFE garbage {{{\n\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                Event::Data("{\"a\":1}".into()),
                Event::Data("[DONE]".into())
            ]
        );
        assert_eq!(d.feed(b"data: more\n\n"), Err(DecodeError::InvalidUtf8));
        assert_eq!(d.finish(), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn a_long_line_in_small_pieces_is_decoded_in_linear_time() {
        // 1 MiB in 64-byte pieces: rescanning the line at each piece would look at about
        // 8e9 bytes; each byte is looked at once (a CR at a piece's end, twice).
        let mut d = Decoder::new();
        let piece = [b'a'; 64];
        d.feed(b"data: ").unwrap();
        let mut fed = 6;
        for _ in 0..(1024 * 1024 / 64) {
            assert!(d.feed(&piece).unwrap().is_empty());
            fed += piece.len();
        }
        let events = d.feed(b"\n\n").unwrap();
        fed += 2;
        assert_eq!(events.len(), 1);
        assert!(
            d.looked <= 2 * fed,
            "{} bytes looked at for {fed}",
            d.looked
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Pieces an SSE stream (or a broken one) is made of.
        fn piece() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(b"data: ".to_vec()),
                Just(b"data:".to_vec()),
                Just(b"{\"choices\":[{\"delta\":{\"content\":\"h\xC3\xA9\"}}]}".to_vec()),
                Just(b"[DONE]".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b": OPENROUTER PROCESSING".to_vec()),
                Just(b"event: x".to_vec()),
                Just(b"\xEF\xBB\xBF".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..16),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// No input panics the decoder; its memory stays within the caps; and
            /// however the bytes are split, it finds the same events (or refuses).
            #[test]
            fn any_bytes_in_any_split(
                pieces in proptest::collection::vec(piece(), 0..40),
                cuts in proptest::collection::vec(1usize..64, 1..20),
            ) {
                let input: Vec<u8> = pieces.concat();
                let mut whole = Decoder::new();
                let at_once = whole.feed(&input).and_then(|mut ev| {
                    ev.extend(whole.finish()?);
                    Ok(ev)
                });
                let mut d = Decoder::new();
                let mut split = Ok(Vec::new());
                let mut rest = &input[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = cuts[i % cuts.len()].min(rest.len());
                    let (now, later) = rest.split_at(n);
                    rest = later;
                    i += 1;
                    match d.feed(now) {
                        Ok(ev) => {
                            prop_assert!(d.buf.len() <= MAX_LINE && d.data.len() <= MAX_EVENT);
                            if let Ok(all) = &mut split {
                                all.extend(ev);
                            }
                        }
                        Err(e) => {
                            split = Err(e);
                            break;
                        }
                    }
                }
                if let Ok(all) = &mut split {
                    match d.finish() {
                        Ok(ev) => all.extend(ev),
                        Err(e) => split = Err(e),
                    }
                }
                prop_assert_eq!(at_once, split);
            }
        }
    }
}
