//! Fuzz the chunked transfer-coding decoder with arbitrary bytes arriving in two reads.
//!
//! The first two bytes pick where the rest is cut. Asserts the calling contract (consumed counts
//! and `Data` ranges within the input, `Done` sticky) and that the outcome does not depend on
//! how the bytes arrived: the same payload and the same ending (done with the same bytes left
//! over, waiting with the same bytes buffered, or the same error) whole and in two parts.
//! Errors are compared too: the decoder decides them by byte position alone, so an error that
//! depends on the cut would be a bug.

#![no_main]

use compresh_forward::wire::chunked::{ChunkedDecoder, ChunkedError, Decoded};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Done, with this many bytes (buffered or not yet read) left to the caller.
    Done(usize),
    /// Every part fed and the decoder still wants more; this many bytes stay buffered.
    NeedMore(usize),
    Failed(ChunkedError),
}

/// Feeds `parts` one read at a time, keeping unconsumed bytes buffered in front of the next
/// read, as a caller relaying a body from a socket does.
fn feed(parts: &[&[u8]]) -> (Vec<u8>, End) {
    let mut decoder = ChunkedDecoder::new();
    let mut buf = Vec::new();
    let mut payload = Vec::new();
    for (read, part) in parts.iter().enumerate() {
        buf.extend_from_slice(part);
        loop {
            let (consumed, found) = match decoder.decode(&buf) {
                Ok(ok) => ok,
                Err(err) => {
                    assert_eq!(decoder.decode(&buf), Err(err.clone()));
                    return (payload, End::Failed(err));
                }
            };
            assert!(consumed <= buf.len());
            match found {
                Decoded::Data(range) => {
                    assert!(range.start < range.end && range.end <= buf.len());
                    assert_eq!(consumed, range.end);
                    payload.extend_from_slice(&buf[range]);
                    buf.drain(..consumed);
                }
                Decoded::NeedMore => {
                    buf.drain(..consumed);
                    break;
                }
                Decoded::Done => {
                    buf.drain(..consumed);
                    assert!(decoder.is_done());
                    assert_eq!(decoder.decode(&buf), Ok((0, Decoded::Done)));
                    let unread: usize = parts[read + 1..].iter().map(|p| p.len()).sum();
                    return (payload, End::Done(buf.len() + unread));
                }
            }
        }
    }
    assert!(!decoder.is_done());
    (payload, End::NeedMore(buf.len()))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (cut, body) = data.split_at(2);
    let cut = usize::from(u16::from_le_bytes([cut[0], cut[1]])) % (body.len() + 1);
    let whole = feed(&[body]);
    let split = feed(&[&body[..cut], &body[cut..]]);
    assert_eq!(whole, split, "cut at {cut}");
});
