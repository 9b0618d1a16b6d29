//! Incremental decoder for the HTTP/1.1 chunked transfer coding (RFC 9112 §7.1).
//!
//! [`ChunkedDecoder`] never copies or buffers payload: it reports where the payload lies in the
//! caller's buffer ([`Decoded::Data`]) and how many bytes the caller may drop. Framing lines
//! (chunk-size lines, trailer lines) are only consumed once complete, so the caller keeps an
//! incomplete line buffered and calls again with more bytes behind it.
//!
//! # Accepted syntax
//!
//! ```text
//! chunked-body = *chunk last-chunk *( trailer-line CRLF ) CRLF
//! chunk        = size-line chunk-data CRLF      ; size > 0
//! last-chunk   = size-line                      ; size = 0
//! size-line    = 1*16HEXDIG *( SP / HTAB ) [ ";" ext ] CRLF
//! ```
//!
//! - The size is 1 to 16 hex digits, either case. More digits are rejected even when leading
//!   zeros keep the value small (hyper accepts those as long as the value fits in a `u64`);
//!   no real encoder pads a size that far.
//! - Extensions (anything but CR and LF after the `;`) are skipped unread.
//! - Lines end with CRLF only. A bare LF (or a CR not followed by LF) is an error anywhere:
//!   this matches hyper 1.x, which requires the CR in size lines and after chunk data and
//!   rejects an LF inside extensions (hyperium/hyper#2600). A relay that ended lines at a bare
//!   LF where hyper or the next hop does not would frame the body differently from them, the
//!   raw material of request smuggling. Inside trailer lines hyper keeps a bare LF as field
//!   text; we reject it instead, so we may refuse a body hyper accepts but never end one
//!   anywhere else.
//! - Trailer fields are skipped, not parsed.
//!
//! # Limits
//!
//! A chunk-size line may hold at most [`MAX_SIZE_LINE`] bytes before its CRLF
//! ([`ChunkedError::LineTooLong`]); the trailer section, from the byte after the last chunk's
//! size line up to and including the final CRLF, at most [`MAX_TRAILER_SECTION`] bytes
//! ([`ChunkedError::TrailersTooLong`]). Both are checked on the bytes present, so a peer that
//! never ends a line cannot make the caller buffer without bound.

use std::ops::Range;

/// Longest chunk-size line (size, whitespace and extensions, without the CRLF) accepted.
pub const MAX_SIZE_LINE: usize = 4096;

/// Longest trailer section accepted, counting every trailer line and the final CRLF.
/// Equal to hyper's own trailer limit.
pub const MAX_TRAILER_SECTION: usize = 16 * 1024;

/// 16 hex digits hold any `u64`, so capping the digit count rules out overflow without
/// checked arithmetic.
const MAX_SIZE_DIGITS: u32 = 16;

/// Decodes a chunked body as it arrives, without copying payload bytes.
///
/// Feed it the bytes that follow the message head. Each [`decode`](Self::decode) call reports
/// how many input bytes were consumed and one [`Decoded`] event; the caller drops the consumed
/// bytes and calls again, with more bytes appended if the event was [`Decoded::NeedMore`].
///
/// ```
/// use compresh_forward::wire::chunked::{ChunkedDecoder, Decoded};
///
/// let mut buf = b"5\r\nhel".to_vec();
/// let mut decoder = ChunkedDecoder::new();
/// let mut body = Vec::new();
/// loop {
///     let (consumed, found) = decoder.decode(&buf).expect("well-formed body");
///     if let Decoded::Data(range) = &found {
///         body.extend_from_slice(&buf[range.clone()]);
///     }
///     buf.drain(..consumed);
///     match found {
///         Decoded::Data(_) => {}
///         Decoded::NeedMore => buf.extend_from_slice(b"lo\r\n0\r\n\r\n"), // read more
///         Decoded::Done => break,
///     }
/// }
/// assert_eq!(body, b"hello");
/// assert!(buf.is_empty());
/// ```
///
/// After an error the decoder stays failed: every later call returns the same error.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Payload bytes: this range of the input (non-empty).
    Data(Range<usize>),
    /// Nothing more can be decoded from the input: read more and call again with the
    /// unconsumed rest followed by the new bytes.
    NeedMore,
    /// The body ended (last chunk and trailer section read, including the final CRLF).
    Done,
}

/// Why a chunked body is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// The chunk size is empty, has a non-hex digit, or is followed by something other than
    /// spaces, tabs, `;` extensions or CRLF.
    #[error("invalid chunk size")]
    InvalidSize,
    /// The chunk size has more than 16 hex digits (it would not fit in a `u64`).
    #[error("chunk size has more than 16 hex digits")]
    SizeOverflow,
    /// A chunk-size line runs past [`MAX_SIZE_LINE`] bytes without its CRLF.
    #[error("chunk size line longer than {MAX_SIZE_LINE} bytes")]
    LineTooLong,
    /// A line ended with a bare LF or a CR not followed by LF, or chunk data was not followed
    /// by CRLF.
    #[error("expected CRLF in chunked body")]
    MissingCrlf,
    /// The trailer section runs past [`MAX_TRAILER_SECTION`] bytes.
    #[error("chunked trailer section longer than {MAX_TRAILER_SECTION} bytes")]
    TrailersTooLong,
}

#[derive(Debug, Default)]
enum State {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data; `remaining` is never 0.
    Data {
        remaining: u64,
    },
    /// Expecting the CRLF that closes a chunk's data.
    DataEnd,
    /// After the last chunk; `seen` trailer-section bytes were consumed.
    Trailers {
        seen: usize,
    },
    Done,
    Failed(ChunkedError),
}

impl ChunkedDecoder {
    /// A decoder positioned at the start of a chunked body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode from `input`. Returns how many bytes of `input` were consumed and what was found.
    ///
    /// The caller drops the consumed bytes and calls again with the rest (plus newly read bytes
    /// when the result was [`Decoded::NeedMore`]). A chunk-size line or trailer line that is
    /// incomplete is NOT consumed (the caller keeps it buffered), but payload bytes are handed
    /// out as soon as any are present (a chunk may be delivered in several
    /// [`Decoded::Data`] pieces).
    ///
    /// The consumed count may be non-zero with [`Decoded::NeedMore`] (complete framing lines
    /// before an incomplete one); with [`Decoded::Data`] it is exactly the range's end. With
    /// [`Decoded::Done`] it stops right after the final CRLF: bytes behind it (a pipelined
    /// message) are left to the caller, and later calls return `Ok((0, Decoded::Done))`.
    ///
    /// # Errors
    ///
    /// A [`ChunkedError`] as soon as the bytes present prove the body malformed; the decoder
    /// then returns that error on every later call.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), ChunkedError> {
        let result = self.step(input);
        if let Err(err) = &result {
            self.state = State::Failed(err.clone());
        }
        result
    }

    /// True once [`Decoded::Done`] was returned.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn step(&mut self, input: &[u8]) -> Result<(usize, Decoded), ChunkedError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Size => {
                    let Some((len, size)) = size_line(rest)? else {
                        return Ok((pos, Decoded::NeedMore));
                    };
                    pos += len;
                    self.state = if size == 0 {
                        State::Trailers { seen: 0 }
                    } else {
                        State::Data { remaining: size }
                    };
                }
                State::Data { remaining } => {
                    if rest.is_empty() {
                        return Ok((pos, Decoded::NeedMore));
                    }
                    // A size beyond usize (32-bit targets) is simply more than is present.
                    let n = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data { remaining: left }
                    };
                    return Ok((pos + n, Decoded::Data(pos..pos + n)));
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok((pos, Decoded::NeedMore)),
                    _ => return Err(ChunkedError::MissingCrlf),
                },
                State::Trailers { seen } => {
                    let Some(len) = trailer_line(rest, seen)? else {
                        return Ok((pos, Decoded::NeedMore));
                    };
                    pos += len;
                    if len == 2 {
                        self.state = State::Done;
                        return Ok((pos, Decoded::Done));
                    }
                    self.state = State::Trailers { seen: seen + len };
                }
                // Only reachable on entry: every transition into Done returns at once.
                State::Done => return Ok((pos, Decoded::Done)),
                State::Failed(ref err) => return Err(err.clone()),
            }
        }
    }
}

/// Parses a chunk-size line at the start of `input`: `Some((line length with CRLF, size))`,
/// or `None` while the line is incomplete.
fn size_line(input: &[u8]) -> Result<Option<(usize, u64)>, ChunkedError> {
    #[derive(Clone, Copy)]
    enum Part {
        Digits,
        Whitespace,
        Extension,
    }

    let mut part = Part::Digits;
    let mut size: u64 = 0;
    let mut digits = 0;
    let mut after_cr = false;
    for (i, &byte) in input.iter().enumerate() {
        if after_cr {
            return if byte == b'\n' {
                Ok(Some((i + 1, size)))
            } else {
                Err(ChunkedError::MissingCrlf)
            };
        }
        if i == MAX_SIZE_LINE && byte != b'\r' {
            return Err(ChunkedError::LineTooLong);
        }
        match (part, byte, hex_value(byte)) {
            (Part::Digits, _, Some(value)) => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(ChunkedError::SizeOverflow);
                }
                size = size << 4 | u64::from(value);
                digits += 1;
            }
            // Checked before any terminator so that an empty size is never read as 0
            // (the `\r\n\r\n` = `0\r\n\r\n` confusion hyper fixed in hyperium/hyper#3494).
            (Part::Digits, _, None) if digits == 0 => return Err(ChunkedError::InvalidSize),
            (_, b'\r', _) => after_cr = true,
            (_, b'\n', _) => return Err(ChunkedError::MissingCrlf),
            (Part::Extension, _, _) => {}
            (_, b';', _) => part = Part::Extension,
            (_, b' ' | b'\t', _) => part = Part::Whitespace,
            (Part::Digits | Part::Whitespace, _, _) => return Err(ChunkedError::InvalidSize),
        }
    }
    Ok(None)
}

/// Length (with CRLF) of the trailer line at the start of `input`, or `None` while it is
/// incomplete; `seen` trailer-section bytes came before it.
fn trailer_line(input: &[u8], seen: usize) -> Result<Option<usize>, ChunkedError> {
    let mut after_cr = false;
    for (i, &byte) in input.iter().enumerate() {
        if seen + i >= MAX_TRAILER_SECTION {
            return Err(ChunkedError::TrailersTooLong);
        }
        match (after_cr, byte) {
            (true, b'\n') => return Ok(Some(i + 1)),
            (true, _) | (false, b'\n') => return Err(ChunkedError::MissingCrlf),
            (false, b'\r') => after_cr = true,
            (false, _) => {}
        }
    }
    Ok(None)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What a caller ends up with after feeding a whole input through [`feed`].
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Outcome {
        payload: Vec<u8>,
        /// Input bytes fed so far when `Done` came.
        done_at: Option<usize>,
        /// Bytes the caller still holds, buffered or not yet read (empty after an error, where
        /// how much was consumed before the bad byte legitimately depends on the cuts).
        leftover: Vec<u8>,
        error: Option<ChunkedError>,
        data_events: usize,
    }

    /// Feeds `input` the way a caller reading from a socket would: the bytes arrive in pieces
    /// ending at `cuts` (ascending) and at the end; unconsumed bytes stay buffered in front of
    /// the next piece. Checks the per-call contract on the way.
    fn feed(input: &[u8], cuts: &[usize]) -> Outcome {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = Vec::new();
        let mut out = Outcome::default();
        let mut fed = 0;
        'pieces: for end in cuts.iter().copied().chain([input.len()]) {
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            loop {
                let (consumed, found) = match decoder.decode(&buf) {
                    Ok(ok) => ok,
                    Err(err) => {
                        assert_eq!(decoder.decode(&buf), Err(err.clone()), "errors are sticky");
                        assert!(!decoder.is_done());
                        out.error = Some(err);
                        return out;
                    }
                };
                assert!(consumed <= buf.len());
                match found {
                    Decoded::Data(range) => {
                        assert!(!range.is_empty(), "empty Data");
                        assert_eq!(consumed, range.end);
                        out.payload.extend_from_slice(&buf[range]);
                        out.data_events += 1;
                        buf.drain(..consumed);
                    }
                    Decoded::NeedMore => {
                        assert!(!decoder.is_done());
                        buf.drain(..consumed);
                        continue 'pieces;
                    }
                    Decoded::Done => {
                        assert!(decoder.is_done());
                        buf.drain(..consumed);
                        assert_eq!(decoder.decode(&buf), Ok((0, Decoded::Done)));
                        out.done_at = Some(fed);
                        break 'pieces;
                    }
                }
            }
        }
        buf.extend_from_slice(&input[fed..]);
        out.leftover = buf;
        out
    }

    /// Every single cut position, all of them for inputs up to 4 KiB, else a spread plus the
    /// last few positions (exhaustive would be quadratic in debug builds).
    fn single_cuts(len: usize) -> Vec<usize> {
        if len <= 4096 {
            return (0..=len).collect();
        }
        let mut cuts: Vec<usize> = (0..=len).step_by(len / 1000).collect();
        cuts.extend(len.saturating_sub(8)..=len);
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// All the ways [`check_body`] and [`check_error`] cut an input.
    fn cut_sets(len: usize) -> Vec<Vec<usize>> {
        let mut sets = vec![vec![], (1..len).collect()];
        sets.extend(single_cuts(len).into_iter().map(|cut| vec![cut]));
        if len <= 64 {
            for first in 0..=len {
                sets.extend((first..=len).map(|second| vec![first, second]));
            }
        }
        sets
    }

    /// `encoded` decodes to `payload`, ending exactly at its last byte, however it is cut;
    /// bytes sent after it stay with the caller.
    fn check_body(encoded: &[u8], payload: &[u8]) {
        for cuts in cut_sets(encoded.len()) {
            let out = feed(encoded, &cuts);
            assert_eq!(out.error, None, "cuts {cuts:?}");
            assert_eq!(out.payload, payload, "cuts {cuts:?}");
            assert_eq!(out.done_at, Some(encoded.len()), "cuts {cuts:?}");
            assert!(out.leftover.is_empty(), "cuts {cuts:?}");
        }
        let pipelined = [encoded, b"GET / HTTP/1.1\r\n\r\n".as_slice()].concat();
        for cut in single_cuts(encoded.len()) {
            let out = feed(&pipelined, &[cut, encoded.len()]);
            assert_eq!(out.payload, payload);
            assert_eq!(out.done_at, Some(encoded.len()));
            assert_eq!(out.leftover, b"GET / HTTP/1.1\r\n\r\n");
            let whole = feed(&pipelined, &[]);
            assert_eq!(whole.leftover, b"GET / HTTP/1.1\r\n\r\n");
        }
    }

    /// `encoded` fails with `expected` however it is cut, after the same payload.
    fn check_error(encoded: &[u8], expected: &ChunkedError) {
        let first = feed(encoded, &[]);
        assert_eq!(
            first.error.as_ref(),
            Some(expected),
            "{:?}",
            String::from_utf8_lossy(encoded)
        );
        for cuts in cut_sets(encoded.len()) {
            let out = feed(encoded, &cuts);
            assert_eq!(out.error.as_ref(), Some(expected), "cuts {cuts:?}");
            assert_eq!(out.payload, first.payload, "cuts {cuts:?}");
        }
    }

    fn encode(chunks: &[&[u8]], trailers: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        out.extend_from_slice(trailers.as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn simple_body() {
        check_body(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world");
        check_body(&encode(&[b"a", b"bc"], ""), b"abc");
    }

    #[test]
    fn zero_length_body() {
        check_body(b"0\r\n\r\n", b"");
        check_body(b"000\r\n\r\n", b"");
        assert_eq!(feed(b"0\r\n\r\n", &[]).data_events, 0);
    }

    #[test]
    fn extensions_and_whitespace_are_skipped() {
        check_body(
            b"5;name=value\r\nhello\r\n3 ; x=\"a b\"\r\nabc\r\n4\t \t;\r\nwxyz\r\n2   \r\nhi\r\n\
              1;;;  ;\r\n!\r\n0;last=1 \t\r\n\r\n",
            b"helloabcwxyzhi!",
        );
        // Bytes that are not CR or LF are extension text, whatever they are.
        check_body(b"1;\x00\x7f\xff\"\\\r\nx\r\n0\r\n\r\n", b"x");
    }

    #[test]
    fn trailers_are_skipped() {
        check_body(
            &encode(&[b"data"], "Expires: never\r\nX-Checksum: abc\r\n"),
            b"data",
        );
        check_body(b"0\r\nX: 1\r\n\r\n", b"");
        // Trailer text is not parsed: only its line ends matter.
        check_body(b"0\r\n:\t\x00\xff\r\n \r\n\r\n", b"");
    }

    #[test]
    fn hex_sizes_any_case_and_leading_zeros() {
        let thirty_one = [b'z'; 31];
        let encoded = [
            b"A\r\n0123456789\r\n1f\r\n".as_slice(),
            &thirty_one,
            b"\r\n1F\r\n",
            &thirty_one,
            b"\r\n0000000000000010\r\n0123456789abcdef\r\n0\r\n\r\n",
        ]
        .concat();
        let payload = [
            b"0123456789".as_slice(),
            &thirty_one,
            &thirty_one,
            b"0123456789abcdef",
        ]
        .concat();
        check_body(&encoded, &payload);
    }

    #[test]
    fn many_chunks() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let mut chunks = Vec::new();
        let mut rest = payload.as_slice();
        for len in (1..).map(|i| i % 37 + 1) {
            let (chunk, tail) = rest.split_at(len.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
        assert!(chunks.len() > 200);
        let encoded = encode(&chunks, "");
        // Every single cut and byte by byte (pairs of cuts would take too long here).
        for cuts in [vec![], (1..encoded.len()).collect()]
            .into_iter()
            .chain(single_cuts(encoded.len()).into_iter().map(|cut| vec![cut]))
        {
            let out = feed(&encoded, &cuts);
            assert_eq!(out.payload, payload);
            assert_eq!(out.done_at, Some(encoded.len()));
            assert!(out.leftover.is_empty());
        }
    }

    #[test]
    fn large_chunk_in_pieces() {
        let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 256) as u8).collect();
        let encoded = encode(&[&payload], "");
        let cuts: Vec<usize> = (4096..encoded.len()).step_by(4096).collect();
        let out = feed(&encoded, &cuts);
        assert_eq!(out.error, None);
        assert!(out.payload == payload);
        assert_eq!(out.done_at, Some(encoded.len()));
        // Handed out as it arrived, not held back until the chunk was complete.
        assert_eq!(out.data_events, cuts.len() + 1);
    }

    #[test]
    fn data_ranges_and_consumed_counts() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(b""), Ok((0, Decoded::NeedMore)));
        // An incomplete size line is left with the caller.
        assert_eq!(decoder.decode(b"5"), Ok((0, Decoded::NeedMore)));
        assert_eq!(decoder.decode(b"5\r"), Ok((0, Decoded::NeedMore)));
        assert_eq!(decoder.decode(b"5\r\nhel"), Ok((6, Decoded::Data(3..6))));
        assert_eq!(decoder.decode(b""), Ok((0, Decoded::NeedMore)));
        assert_eq!(decoder.decode(b"lo\r"), Ok((2, Decoded::Data(0..2))));
        // A lone CR after the data is kept until its LF arrives.
        assert_eq!(decoder.decode(b"\r"), Ok((0, Decoded::NeedMore)));
        // CRLF consumed, next size line incomplete: non-zero consumed with NeedMore.
        assert_eq!(decoder.decode(b"\r\n1"), Ok((2, Decoded::NeedMore)));
        assert_eq!(
            decoder.decode(b"1\r\nx\r\n0\r\nA: b"),
            Ok((4, Decoded::Data(3..4)))
        );
        assert_eq!(decoder.decode(b"\r\n0\r\nA: b"), Ok((5, Decoded::NeedMore)));
        // Complete trailer lines are consumed, the incomplete one is not.
        assert_eq!(decoder.decode(b"A: b\r\nC: d"), Ok((6, Decoded::NeedMore)));
        assert!(!decoder.is_done());
        assert_eq!(decoder.decode(b"C: d\r\n\r\nnext"), Ok((8, Decoded::Done)));
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(b"next"), Ok((0, Decoded::Done)));
        assert_eq!(decoder.decode(b"0\r\n\r\n"), Ok((0, Decoded::Done)));
    }

    #[test]
    fn largest_size_is_accepted() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(b"FFFFFFFFFFFFFFFF\r\nabc"),
            Ok((21, Decoded::Data(18..21)))
        );
        assert_eq!(decoder.decode(b"def"), Ok((3, Decoded::Data(0..3))));
    }

    #[test]
    fn pipelined_bytes_stay_with_the_caller() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(b"0\r\n\r\nGET / HTTP/1.1\r\n"),
            Ok((5, Decoded::Done))
        );
        // check_body covers the same for every body and cut.
    }

    #[test]
    fn invalid_size() {
        for input in [
            b"\r\n".as_slice(),
            b"\r\n\r\n",
            b"\n",
            b";ext\r\n",
            b" 5\r\n",
            b"\t5\r\n",
            b"x\r\n",
            b"5x\r\n",
            b"5 5\r\n",
            b"5 x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x5\r\n",
            b"5\r\nhello\r\nz\r\n",
            b"5\r\nhello\r\n\r\n",
        ] {
            check_error(input, &ChunkedError::InvalidSize);
        }
    }

    #[test]
    fn size_overflow() {
        for input in [
            b"00000000000000001\r\n".as_slice(),
            b"f0000000000000003\r\n",
            b"10000000000000000\r\n",
            b"5\r\nhello\r\nFFFFFFFFFFFFFFFFF",
        ] {
            check_error(input, &ChunkedError::SizeOverflow);
        }
    }

    #[test]
    fn size_line_length_limit() {
        let mut line = b"5;".to_vec();
        line.resize(MAX_SIZE_LINE, b'e');
        // Exactly at the limit: fine, and an incomplete line at the limit waits.
        check_body(
            &[&line, b"\r\nhello\r\n0\r\n\r\n".as_slice()].concat(),
            b"hello",
        );
        assert_eq!(
            ChunkedDecoder::new().decode(&line),
            Ok((0, Decoded::NeedMore))
        );
        let too_long = [&line, b"e".as_slice()].concat();
        check_error(&too_long, &ChunkedError::LineTooLong);
        check_error(
            &[&too_long, b"\r\n".as_slice()].concat(),
            &ChunkedError::LineTooLong,
        );
        let spaces = [b"5".as_slice(), &[b' '; MAX_SIZE_LINE]].concat();
        check_error(&spaces, &ChunkedError::LineTooLong);
    }

    #[test]
    fn missing_crlf() {
        for input in [
            // Bare LF or lone CR ending a size line.
            b"5\nhello\r\n0\r\n\r\n".as_slice(),
            b"5 \n",
            b"5;a\n",
            b"5;a\nb\r\n",
            b"5\rhello",
            b"5;a\rb\r\n",
            b"0\n\r\n",
            // Chunk data not followed by CRLF.
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b"5\r\nhello\n",
            b"5\r\nhello\n\r\n",
            b"5\r\nhello world\r\n",
            // Trailer lines and the final line.
            b"0\r\n\n",
            b"0\r\n\rX",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX: y\rZ\r\n\r\n",
            b"0\r\nX: y\r\n\n",
        ] {
            check_error(input, &ChunkedError::MissingCrlf);
        }
    }

    #[test]
    fn trailer_section_limit() {
        // 16 lines of 1022 + CRLF bytes, then the final CRLF: 16 * 1024 + 2 - 32 + 30 bytes.
        let line = |len: usize| [vec![b'x'; len], b"\r\n".to_vec()].concat();
        let mut section: Vec<u8> = (0..15).flat_map(|_| line(1022)).collect();
        let last = MAX_TRAILER_SECTION - section.len() - 2 - 2;
        section.extend(line(last));
        section.extend_from_slice(b"\r\n");
        assert_eq!(section.len(), MAX_TRAILER_SECTION);
        let body = [b"1\r\na\r\n0\r\n".as_slice(), &section].concat();
        check_body(&body, b"a");

        let mut over = section.clone();
        over.insert(0, b'x');
        let body = [b"1\r\na\r\n0\r\n".as_slice(), &over].concat();
        check_error(&body, &ChunkedError::TrailersTooLong);
        // A line that never ends fails once it passes the limit, not when it ends.
        let endless = [b"0\r\n".as_slice(), &[b'x'; MAX_TRAILER_SECTION + 1]].concat();
        check_error(&endless, &ChunkedError::TrailersTooLong);
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(&endless[..endless.len() - 1]),
            Ok((3, Decoded::NeedMore))
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(b"5\r\nhelloX"), Ok((8, Decoded::Data(3..8))));
        assert_eq!(decoder.decode(b"X"), Err(ChunkedError::MissingCrlf));
        assert_eq!(
            decoder.decode(b"\r\n0\r\n\r\n"),
            Err(ChunkedError::MissingCrlf)
        );
        assert!(!decoder.is_done());
    }

    /// Builds a chunked encoding of `payload` cut into chunks of `sizes` (cycled), with
    /// optional extensions, uppercase hex and trailers.
    fn encode_with(
        payload: &[u8],
        sizes: &[usize],
        extensions: bool,
        uppercase: bool,
        trailers: &[String],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = payload;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            let size_line = if uppercase {
                format!("{:X}", chunk.len())
            } else {
                format!("{:x}", chunk.len())
            };
            out.extend_from_slice(size_line.as_bytes());
            if extensions {
                out.extend_from_slice(b" ;ext=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for trailer in trailers {
            out.extend_from_slice(trailer.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn cut_points(len: usize, picks: &[prop::sample::Index]) -> Vec<usize> {
        let mut cuts: Vec<usize> = picks.iter().map(|pick| pick.index(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    /// Byte strings built from pieces of chunked syntax, so that random inputs get past the
    /// first byte and reach every state.
    fn chunked_ish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            b"0".as_slice(),
            b"1",
            b"3",
            b"a",
            b"F",
            b"\r",
            b"\n",
            b"\r\n",
            b";",
            b" ",
            b"x",
            b"hello",
            b"0\r\n",
            b"\r\n\r\n",
            b"3\r\nabc\r\n",
            b"X: y\r\n",
        ]);
        prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn decodes_any_chunking_and_cuts(
            payload in prop::collection::vec(any::<u8>(), 0..600),
            sizes in prop::collection::vec(1usize..80, 1..20),
            extensions: bool,
            uppercase: bool,
            trailers in prop::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let encoded = encode_with(&payload, &sizes, extensions, uppercase, &trailers);
            let out = feed(&encoded, &cut_points(encoded.len(), &picks));
            prop_assert_eq!(out.error, None);
            prop_assert_eq!(out.payload, payload);
            prop_assert_eq!(out.done_at, Some(encoded.len()));
            prop_assert!(out.leftover.is_empty());
        }

        #[test]
        fn outcome_does_not_depend_on_cuts(
            input in chunked_ish(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let whole = feed(&input, &[]);
            let cut = feed(&input, &cut_points(input.len(), &picks));
            prop_assert_eq!(&whole.payload, &cut.payload);
            prop_assert_eq!(&whole.error, &cut.error);
            prop_assert_eq!(whole.done_at.is_some(), cut.done_at.is_some());
            if whole.error.is_none() {
                prop_assert_eq!(&whole.leftover, &cut.leftover);
            }
        }
    }
}
