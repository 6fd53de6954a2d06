//! Reading the Kubernetes stream channels out of one direction of a WebSocket
//! connection, as it passes: frames (masked from the client, unmasked from the server),
//! fragmented messages joined, control frames skipped; then each message's channel
//! (`v4.channel.k8s.io`, `v5.channel.k8s.io`: a first byte 0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize, 255 close; `base64.channel.k8s.io`, `v4.base64.channel.k8s.io`: a
//! first character `'0'`..`'4'` and the data in base64).

use std::borrow::Cow;

use base64::Engine as _;

/// Messages larger than this are not followed (the recording notes it and stops).
pub const MAX_MESSAGE: usize = 16 << 20;

/// One direction of a WebSocket connection, parsed as it passes. Whole frames are read
/// straight from the bytes handed in; only a frame cut by the end of a chunk is held.
#[derive(Default)]
pub struct Frames {
    /// The start of a frame that the next chunk completes.
    held: Vec<u8>,
    /// A fragmented message being assembled.
    message: Vec<u8>,
    /// The opcode of the message being assembled from fragments.
    opcode: u8,
    /// Where masked payloads are unmasked (reused).
    scratch: Vec<u8>,
    /// Set when the stream stopped making sense (or a message was too large).
    pub broken: bool,
}

impl Frames {
    /// Feeds `bytes`, calling `on_message(payload)` for each whole data message.
    pub fn push(&mut self, bytes: &[u8], mut on_message: impl FnMut(&[u8])) {
        if self.broken {
            return;
        }
        let mut held = std::mem::take(&mut self.held);
        let data: &[u8] = if held.is_empty() {
            bytes
        } else {
            held.extend_from_slice(bytes);
            &held
        };
        let mut at = 0;
        while let Some(frame) = parse(&data[at..]) {
            let Frame {
                fin,
                opcode,
                header,
                len,
                mask,
            } = frame;
            if len > MAX_MESSAGE || self.message.len() + len > MAX_MESSAGE {
                self.broken = true;
                return;
            }
            let start = at + header;
            at = start + len;
            if opcode >= 0x8 {
                // control frames may come between fragments
                continue;
            }
            let mut payload = &data[start..start + len];
            if let Some(mask) = mask {
                self.scratch.clear();
                self.scratch.extend_from_slice(payload);
                unmask(&mut self.scratch, mask);
                payload = &self.scratch;
            }
            if opcode != 0x0 {
                self.opcode = opcode;
                self.message.clear();
                if fin {
                    // the usual case: a whole message in one frame, not copied
                    if opcode == 0x1 || opcode == 0x2 {
                        on_message(payload);
                    }
                    continue;
                }
            }
            self.message.extend_from_slice(payload);
            if fin && (self.opcode == 0x1 || self.opcode == 0x2) {
                on_message(&self.message);
                self.message.clear();
            }
        }
        let rest = data.len() - at;
        if held.is_empty() {
            self.held.extend_from_slice(&bytes[bytes.len() - rest..]);
        } else {
            held.drain(..held.len() - rest);
            self.held = held;
        }
    }
}

/// XORs `payload` with the frame's mask, four bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
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

/// The frame at the start of `buf`, when all of it is there.
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
    if len > MAX_MESSAGE {
        // the caller stops at it, without waiting for its bytes
        return Some(Frame {
            fin,
            opcode,
            header,
            len,
            mask,
        });
    }
    if buf.len() < header + len {
        return None;
    }
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

/// The channel and data of a message of a channel protocol (`base64`: one of the base64
/// variants); `None` for an empty message or one that does not decode.
pub fn channel_message(message: &[u8], base64: bool) -> Option<(u8, Cow<'_, [u8]>)> {
    let (&first, rest) = message.split_first()?;
    if !base64 {
        return Some((first, Cow::Borrowed(rest)));
    }
    let channel = first.checked_sub(b'0')?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    Some((channel, Cow::Owned(data)))
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

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = frame(true, 2, &[1, b'h', b'i'], Some([1, 2, 3, 4]));
        wire.extend(frame(false, 2, &[2, b'a'], None));
        wire.extend(frame(true, 9, b"ping", None));
        wire.extend(frame(true, 0, b"b", None));
        wire.extend(frame(true, 2, &big, None));
        for step in [1, 3, 7, 4096, wire.len()] {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                frames.push(chunk, |m| got.push(m.to_vec()));
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(got[0], [1, b'h', b'i']);
            assert_eq!(got[1], [2, b'a', b'b']);
            assert_eq!(got[2], big);
        }
    }

    #[test]
    fn channels_binary_and_base64() {
        assert_eq!(
            channel_message(&[1, b'x'], false),
            Some((1, Cow::Borrowed(&b"x"[..])))
        );
        assert_eq!(
            channel_message(b"1eA==", true),
            Some((1, Cow::Owned(b"x".to_vec())))
        );
        assert_eq!(channel_message(b"", true), None);
    }
}
