//! WebSocket framing (RFC 6455), the server's side: frames sent unmasked, the client's
//! frames read (masked, maybe fragmented) from the request payload, pings answered.
//!
//! Faithful to what kube-apiserver does for exec, attach and port-forward: binary and text
//! messages, fragmentation, ping and pong, close. Not faithful: a client frame is not
//! required to be masked, there are no extensions (no permessage-deflate), text is not
//! checked to be UTF-8, and an unknown opcode ends the session as a close does.

use actix_web::web;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
pub(super) const OP_BINARY: u8 = 2;
pub(super) const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// A frame the server sends (unmasked).
pub(super) fn ws_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= 0xffff => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// A message from the client.
pub(super) enum WsMessage {
    Data(Bytes),
    Close,
}

/// Reads the client's frames (masked, maybe fragmented) from the request payload.
pub(super) struct WsInput {
    payload: web::Payload,
    buf: BytesMut,
    fragments: Option<BytesMut>,
    tx: mpsc::Sender<Bytes>,
    /// No WebSocket framing (a SPDY/3.1 upgrade): every chunk of the payload is data.
    raw: bool,
}

impl WsInput {
    /// Reads `payload`, answering pings on `tx`; `raw` after a SPDY/3.1 upgrade.
    pub(super) fn new(payload: web::Payload, tx: mpsc::Sender<Bytes>, raw: bool) -> WsInput {
        WsInput {
            payload,
            buf: BytesMut::new(),
            fragments: None,
            tx,
            raw,
        }
    }

    /// The next data message, or `Close` when the client closed (or went away).
    pub(super) async fn next(&mut self) -> WsMessage {
        if self.raw {
            return match self.payload.next().await {
                Some(Ok(chunk)) => WsMessage::Data(chunk),
                _ => WsMessage::Close,
            };
        }
        loop {
            if let Some((fin, opcode, data)) = self.frame() {
                match opcode {
                    OP_PING => {
                        let _ = self.tx.send(ws_frame(OP_PONG, &data)).await;
                    }
                    OP_PONG => {}
                    OP_CLOSE => return WsMessage::Close,
                    OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                        let mut message = self.fragments.take().unwrap_or_default();
                        message.extend_from_slice(&data);
                        if fin {
                            return WsMessage::Data(message.freeze());
                        }
                        self.fragments = Some(message);
                    }
                    _ => return WsMessage::Close,
                }
                continue;
            }
            match self.payload.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return WsMessage::Close,
            }
        }
    }

    /// One whole frame from the buffer, unmasked.
    fn frame(&mut self) -> Option<(bool, u8, Bytes)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        if b.len() < at + len {
            return None;
        }
        self.buf.advance(at);
        let mut data = self.buf.split_to(len);
        if let Some(mask) = mask {
            for (i, byte) in data.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        Some((fin, opcode, data.freeze()))
    }
}
