//! Reading the Kubernetes stream channels out of one direction of a WebSocket
//! connection, as it passes: frames (masked from the client, unmasked from the server),
//! fragmented messages joined, control frames skipped; then each message's channel
//! (`v4.channel.k8s.io`, `v5.channel.k8s.io`: a first byte 0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize, 255 close; `base64.channel.k8s.io`, `v4.base64.channel.k8s.io`: a
//! first character `'0'`..`'4'` and the data in base64).
//!
//! Nothing is held but a frame header cut by the end of a chunk: a message's first byte
//! (its channel) says what becomes of it ([`Take`]), and its payload then goes by piece
//! by piece as the chunks bring it, unmasked only when it is wanted. Only messages taken
//! whole (a resize's JSON, base64 text) are assembled.

use std::borrow::Cow;

use base64::Engine as _;

/// Messages taken whole larger than this are not followed (the recording notes it and
/// stops).
pub const MAX_MESSAGE: usize = 16 << 20;

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// What becomes of a message, told by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Passed over, not even unmasked.
    Skip,
    /// Handed on piece by piece, as it comes.
    Pieces,
    /// Handed on once whole (up to [`MAX_MESSAGE`]).
    Whole,
}

/// One direction of a WebSocket connection, parsed as it passes.
#[derive(Default)]
pub struct Frames {
    /// A frame header cut by the end of a chunk.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The current frame's mask, and how much of its payload has passed (the mask's
    /// phase for the next byte).
    mask: Option<[u8; 4]>,
    passed: usize,
    /// Whether the current frame ends its message.
    fin: bool,
    /// Whether it is a control frame (between fragments, never part of a message).
    control: bool,
    /// The first byte of the message being read, and what becomes of it, once known.
    first: Option<(u8, Take)>,
    /// A message taken whole, being assembled (without its first byte).
    message: Vec<u8>,
    /// Where masked payloads are unmasked (reused).
    scratch: Vec<u8>,
    /// Set when the stream stopped making sense (or a message was too large).
    pub broken: bool,
}

impl Frames {
    /// Feeds `bytes`. `take` is asked what becomes of each data message, given its first
    /// byte; `on_data(first, data)` gets the rest of each message that is not skipped: in
    /// pieces, or once whole.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        take: impl Fn(u8) -> Take,
        mut on_data: impl FnMut(u8, &[u8]),
    ) {
        while !self.broken && !bytes.is_empty() {
            if self.left > 0 {
                let (piece, rest) = bytes.split_at(self.left.min(bytes.len()));
                bytes = rest;
                self.left -= piece.len();
                self.payload(piece, &take, &mut on_data);
                if self.left == 0 {
                    self.end_of_frame(&mut on_data);
                }
                continue;
            }
            // a frame header, perhaps begun in an earlier chunk
            let before = self.head.len();
            let frame = if before == 0 {
                parse(bytes)
            } else {
                let add = (MAX_HEADER - before).min(bytes.len());
                self.head.extend_from_slice(&bytes[..add]);
                parse(&self.head)
            };
            let Some(frame) = frame else {
                if before == 0 {
                    self.head.extend_from_slice(bytes);
                }
                // with MAX_HEADER bytes, a header is always complete
                self.broken = self.head.len() >= MAX_HEADER;
                return;
            };
            self.head.clear();
            bytes = &bytes[frame.header - before..];
            self.start_frame(frame);
            if self.left == 0 {
                self.end_of_frame(&mut on_data);
            }
        }
    }

    fn start_frame(&mut self, frame: Frame) {
        self.left = frame.len;
        self.mask = frame.mask;
        self.passed = 0;
        self.fin = frame.fin;
        self.control = frame.opcode >= 0x8;
        match frame.opcode {
            // a new text or binary message
            0x1 | 0x2 => {
                self.first = None;
                self.message.clear();
            }
            // a continuation, or a control frame: the message goes on
            0x0 | 0x8..=0xF => {}
            // reserved opcodes: not a message anyone reads
            _ => self.first = Some((0, Take::Skip)),
        }
    }

    fn payload(
        &mut self,
        mut piece: &[u8],
        take: &impl Fn(u8) -> Take,
        on_data: &mut impl FnMut(u8, &[u8]),
    ) {
        let phase = self.passed;
        self.passed += piece.len();
        if self.control {
            return;
        }
        let mut phase = phase;
        let (first, what) = match self.first {
            Some(known) => known,
            None => {
                let Some((&byte, rest)) = piece.split_first() else {
                    return;
                };
                let byte = byte ^ self.mask.map_or(0, |m| m[phase % 4]);
                let known = (byte, take(byte));
                self.first = Some(known);
                piece = rest;
                phase += 1;
                known
            }
        };
        if what == Take::Skip || piece.is_empty() {
            return;
        }
        let data = match self.mask {
            Some(mask) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(piece);
                unmask(&mut self.scratch, mask, phase);
                &self.scratch[..]
            }
            None => piece,
        };
        if what == Take::Pieces {
            on_data(first, data);
        } else if self.message.len() + data.len() > MAX_MESSAGE {
            self.broken = true;
        } else {
            self.message.extend_from_slice(data);
        }
    }

    fn end_of_frame(&mut self, on_data: &mut impl FnMut(u8, &[u8])) {
        if self.control || !self.fin {
            return;
        }
        if let Some((first, Take::Whole)) = self.first {
            on_data(first, &self.message);
        }
        self.first = None;
        self.message.clear();
    }
}

/// XORs `payload` with the frame's mask, starting at byte `phase` of the mask's cycle,
/// four bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4], phase: usize) {
    let mask: [u8; 4] = std::array::from_fn(|i| mask[(phase + i) % 4]);
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

struct Frame {
    fin: bool,
    opcode: u8,
    header: usize,
    len: usize,
    mask: Option<[u8; 4]>,
}

/// The header of the frame at the start of `buf`, once all of it is there (its payload
/// may not be: `len` says how long it is).
fn parse(buf: &[u8]) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut header) = match buf[1] & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as u64,
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (n as u64, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(header..header + 4)?.try_into().ok()?;
        header += 4;
        Some(m)
    } else {
        None
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    Some(Frame {
        fin,
        opcode,
        header,
        len,
        mask,
    })
}

/// A Kubernetes stream channel.
pub const STDIN: u8 = 0;
/// Standard output.
pub const STDOUT: u8 = 1;
/// Standard error.
pub const STDERR: u8 = 2;
/// Terminal resizes.
pub const RESIZE: u8 = 4;

/// The channel a message's first byte names (`base64`: the text variants, whose first
/// byte is the channel's digit).
pub fn channel_of(first: u8, base64: bool) -> Option<u8> {
    if base64 {
        first.checked_sub(b'0')
    } else {
        Some(first)
    }
}

/// The data of a message of a channel protocol, given all or a piece of what follows
/// its first byte: as it is, or decoded from base64 (`None` when it does not decode).
pub fn channel_data(rest: &[u8], base64: bool) -> Option<Cow<'_, [u8]>> {
    if !base64 {
        return Some(Cow::Borrowed(rest));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    Some(Cow::Owned(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    /// What `frames` hands on of `wire` cut into `step`-byte chunks: each message's
    /// first byte and data, pieces of one message joined; and the most bytes it held.
    fn read(wire: &[u8], step: usize, take: impl Fn(u8) -> Take) -> (Vec<(u8, Vec<u8>)>, usize) {
        let mut frames = Frames::default();
        let (mut got, mut most_held): (Vec<(u8, Vec<u8>)>, usize) = (Vec::new(), 0);
        let mut open = false;
        for chunk in wire.chunks(step) {
            frames.push(chunk, &take, |first, data| {
                // pieces of a message come one after another until the next message
                match got.last_mut() {
                    Some((f, so_far)) if open && *f == first => so_far.extend_from_slice(data),
                    _ => got.push((first, data.to_vec())),
                }
                open = take(first) == Take::Pieces;
            });
            most_held = most_held.max(frames.head.len() + frames.message.len());
            assert!(!frames.broken, "step {step}");
        }
        (got, most_held)
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = frame(true, 2, &[1, b'h', b'i'], Some([1, 2, 3, 4]));
        wire.extend(frame(false, 2, &[2, b'a'], None));
        wire.extend(frame(true, 9, b"ping", None));
        wire.extend(frame(true, 0, b"b", Some([5, 6, 7, 8])));
        wire.extend(frame(true, 2, &big, Some([1, 3, 5, 7])));
        wire.extend(frame(true, 2, &[], None));
        wire.extend(frame(true, 2, &[4], None));
        for step in [1, 3, 7, 4096, wire.len()] {
            for take in [Take::Whole, Take::Pieces] {
                let (got, _) = read(&wire, step, |_| take);
                let expected = [
                    (1, b"hi".to_vec()),
                    (2, b"ab".to_vec()),
                    (big[0], big[1..].to_vec()),
                ];
                // a message of nothing but its channel: whole, it is handed on empty
                match take {
                    Take::Whole => assert_eq!(got[..3], expected, "step {step}"),
                    _ => assert_eq!(got, expected, "step {step}"),
                }
                if take == Take::Whole {
                    assert_eq!(got.len(), 4, "step {step}");
                    assert_eq!(got[3], (4, vec![]));
                }
            }
        }
    }

    #[test]
    fn unwanted_messages_are_passed_over_however_the_bytes_are_cut() {
        // channel 0 (stdin) unwanted: a large masked one, a small one, and one in
        // fragments; channel 4 wanted whole after each, channel 1 in pieces at the end
        let big = [vec![0u8], vec![b'x'; 70_000]].concat();
        let out = [vec![1u8], vec![b'o'; 70_000]].concat();
        let mut wire = frame(true, 2, &big, Some([9, 8, 7, 6]));
        wire.extend(frame(true, 2, &[4, b'a'], Some([1, 2, 3, 4])));
        wire.extend(frame(true, 2, &[0, b's'], None));
        wire.extend(frame(false, 2, &[0, b'f'], None));
        wire.extend(frame(true, 0, b"g", None));
        wire.extend(frame(true, 2, &[4, b'b'], None));
        wire.extend(frame(true, 2, &out, Some([2, 4, 6, 8])));
        let take = |first| match first {
            4 => Take::Whole,
            1 => Take::Pieces,
            _ => Take::Skip,
        };
        for step in [1, 2, 5, 4096, 65_536, wire.len()] {
            let (got, most_held) = read(&wire, step, take);
            assert_eq!(
                got,
                [
                    (4, b"a".to_vec()),
                    (4, b"b".to_vec()),
                    (1, out[1..].to_vec())
                ],
                "step {step}"
            );
            // never more than a frame's header: neither the skipped message nor the one
            // in pieces is kept
            assert!(
                most_held <= MAX_HEADER,
                "step {step}: {most_held} bytes held"
            );
        }
    }

    #[test]
    fn a_long_stream_cut_at_random_places_comes_out_whole() {
        // many messages of all header sizes, masked or not, cut into chunks of sizes
        // from a small deterministic generator (as TCP reads cut them)
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for i in 0..300u32 {
            let len = match i % 4 {
                0 => next(120),
                1 => 126 + next(2000),
                2 => 65_536 + next(70_000),
                _ => next(40_000),
            } as usize;
            let payload: Vec<u8> = std::iter::once(1u8)
                .chain((0..len).map(|j| b'a' + ((i as usize + j) % 26) as u8))
                .collect();
            let mask = (i % 3 != 0).then(|| (next(u32::MAX as u64) as u32).to_be_bytes());
            wire.extend(frame(true, 2, &payload, mask));
            if i % 10 == 0 {
                wire.extend(frame(true, 9, b"ping", mask));
            }
            sent.extend_from_slice(&payload[1..]);
        }
        let mut frames = Frames::default();
        let mut got = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let most = if next(4) == 0 { 20 } else { 70_000 };
            let n = (1 + next(most) as usize).min(wire.len() - at);
            frames.push(
                &wire[at..at + n],
                |_| Take::Pieces,
                |first, data| {
                    assert_eq!(first, 1);
                    got.extend_from_slice(data);
                },
            );
            at += n;
        }
        assert!(!frames.broken);
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the data differs");
    }

    #[test]
    fn a_message_taken_whole_past_the_limit_breaks_the_stream() {
        let mut frames = Frames::default();
        let header = [0x82, 127];
        let len = (MAX_MESSAGE as u64 + 2).to_be_bytes();
        frames.push(
            &[&header[..], &len[..], &[4, 0, 0]].concat(),
            |_| Take::Whole,
            |_, _| {},
        );
        assert!(!frames.broken, "not yet: the bytes have not come");
        frames.push(&vec![0; MAX_MESSAGE], |_| Take::Whole, |_, _| {});
        assert!(frames.broken);
        // in pieces, any size passes
        let mut frames = Frames::default();
        let mut seen = 0;
        frames.push(
            &[&header[..], &len[..], &[1]].concat(),
            |_| Take::Pieces,
            |_, d| seen += d.len(),
        );
        frames.push(
            &vec![0; MAX_MESSAGE + 1],
            |_| Take::Pieces,
            |_, d| seen += d.len(),
        );
        assert!(!frames.broken);
        assert_eq!(seen, MAX_MESSAGE + 1);
    }

    #[test]
    fn channels_binary_and_base64() {
        assert_eq!(channel_of(1, false), Some(1));
        assert_eq!(channel_of(b'1', true), Some(1));
        assert_eq!(channel_of(b'!', true), None);
        assert_eq!(channel_data(b"x", false), Some(Cow::Borrowed(&b"x"[..])));
        assert_eq!(channel_data(b"eA==", true), Some(Cow::Owned(b"x".to_vec())));
        assert_eq!(channel_data(b"e!", true), None);
    }
}
