//! SPDY/3.1 framing for port-forward (and for exec and attach over a SPDY upgrade): frames
//! read from and written to the session, in binary WebSocket messages or, after a plain
//! SPDY/3.1 upgrade, as they are.
//!
//! SPDY frames handled: SYN_STREAM, SYN_REPLY (sent), DATA, RST_STREAM, PING (answered),
//! GOAWAY, SETTINGS and WINDOW_UPDATE (ignored; a WINDOW_UPDATE is sent for what was
//! received, as a SPDY server owes it). Header blocks are zlib with the SPDY/3
//! dictionary, one compression context per direction, as the SPDY/3 draft says. Not
//! faithful: what the stand-in sends is not held back by the client's flow-control window,
//! and stream priorities are not read.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::websocket::{ws_frame, OP_BINARY};

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1),
/// from the spec's text in kubegate's SPDY reader.
pub(super) fn spdy_dictionary() -> Vec<u8> {
    kubegate::proxy::tunnel::record::spdy::dictionary()
}

pub(super) const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
pub(super) const RST_STREAM: u16 = 3;
pub(super) const PING: u16 = 6;
pub(super) const GOAWAY: u16 = 7;
pub(super) const WINDOW_UPDATE: u16 = 9;
pub(super) const FLAG_FIN: u8 = 1;

/// One SPDY frame.
#[derive(Debug)]
pub(super) enum SpdyFrame {
    Control { kind: u16, flags: u8, data: Bytes },
    Data { stream: u32, flags: u8, data: Bytes },
}

/// SPDY framing and the two header compression contexts of one connection.
pub(super) struct Spdy {
    inflate: flate2::Decompress,
    deflate: flate2::Compress,
    dictionary: Vec<u8>,
}

impl Spdy {
    pub(super) fn new() -> Spdy {
        let dictionary = spdy_dictionary();
        let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
        deflate
            .set_dictionary(&dictionary)
            .expect("zlib takes the SPDY dictionary");
        Spdy {
            inflate: flate2::Decompress::new(true),
            deflate,
            dictionary,
        }
    }

    /// Splits one frame off `buf`, if it holds a whole one.
    pub(super) fn frame(buf: &mut BytesMut) -> Option<SpdyFrame> {
        if buf.len() < 8 {
            return None;
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            return None;
        }
        let head = buf.split_to(8);
        let data = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 != 0 {
            let kind = u16::from_be_bytes([head[2], head[3]]);
            Some(SpdyFrame::Control { kind, flags, data })
        } else {
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            Some(SpdyFrame::Data {
                stream,
                flags,
                data,
            })
        }
    }

    /// Decompresses a header block into name/value pairs.
    fn headers(&mut self, block: &[u8]) -> Result<HashMap<String, String>, String> {
        let mut out = Vec::with_capacity(1024);
        let mut input = block;
        loop {
            out.reserve(4096);
            let before_in = self.inflate.total_in();
            let result =
                self.inflate
                    .decompress_vec(input, &mut out, flate2::FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match result {
                Ok(_) if input.is_empty() => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| format!("SPDY dictionary refused: {e}"))?;
                }
                Err(e) => return Err(format!("header block: {e}")),
            }
        }
        let mut b = Bytes::from(out);
        let read_u32 = |b: &mut Bytes| -> Result<u32, String> {
            if b.len() < 4 {
                return Err("header block too short".into());
            }
            Ok(b.get_u32())
        };
        let count = read_u32(&mut b)?;
        let mut headers = HashMap::new();
        for _ in 0..count {
            let n = read_u32(&mut b)? as usize;
            if b.len() < n {
                return Err("header name cut short".into());
            }
            let name = String::from_utf8_lossy(&b.split_to(n)).into_owned();
            let n = read_u32(&mut b)? as usize;
            if b.len() < n {
                return Err("header value cut short".into());
            }
            let value = String::from_utf8_lossy(&b.split_to(n)).into_owned();
            headers.insert(name, value);
        }
        Ok(headers)
    }

    /// A compressed header block of `pairs`.
    fn header_block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (name, value) in pairs {
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Sync)
                .expect("zlib compresses");
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.capacity() > out.len() {
                break;
            }
        }
        out
    }

    pub(super) fn control(kind: u16, flags: u8, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + data.len());
        out.put_u16(0x8003);
        out.put_u16(kind);
        out.put_u8(flags);
        out.put_uint(data.len() as u64, 3);
        out.extend_from_slice(data);
        out.freeze()
    }

    pub(super) fn data(stream: u32, flags: u8, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + data.len());
        out.put_u32(stream & 0x7fff_ffff);
        out.put_u8(flags);
        out.put_uint(data.len() as u64, 3);
        out.extend_from_slice(data);
        out.freeze()
    }

    fn syn_reply(&mut self, stream: u32) -> Bytes {
        let mut data = stream.to_be_bytes().to_vec();
        data.extend_from_slice(&self.header_block(&[]));
        Self::control(SYN_REPLY, 0, &data)
    }

    /// Opens the stream a SYN_STREAM asks for (`data`: its frame's, 10 bytes at least)
    /// and answers with a SYN_REPLY: the stream and its headers. `Err(Some(why))` when
    /// the header block does not read, `Err(None)` when the client has gone.
    pub(super) async fn open(
        &mut self,
        out: &Out,
        data: &[u8],
    ) -> Result<(u32, HashMap<String, String>), Option<String>> {
        let stream = stream_id(data);
        let headers = self.headers(&data[10..]).map_err(Some)?;
        if !send_spdy(out, self.syn_reply(stream)).await {
            return Err(None);
        }
        Ok((stream, headers))
    }
}

/// The stream id a control frame's data starts with.
pub(super) fn stream_id(data: &[u8]) -> u32 {
    u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff
}

/// Where SPDY frames go: in binary WebSocket messages, or as they are (a SPDY upgrade).
#[derive(Clone)]
pub(super) struct Out {
    pub(super) tx: mpsc::Sender<Bytes>,
    pub(super) raw: bool,
}

/// Sends SPDY bytes, as one binary WebSocket message unless `raw`.
pub(super) async fn send_spdy(out: &Out, spdy: Bytes) -> bool {
    let message = if out.raw {
        spdy
    } else {
        ws_frame(OP_BINARY, &spdy)
    };
    out.tx.send(message).await.is_ok()
}
