//! Reading the Kubernetes streams out of one direction of a SPDY/3.1 connection, as it
//! passes: frames split off as they complete; the client's `SYN_STREAM` header blocks
//! decompressed (one zlib context per direction for the whole connection, with the SPDY/3
//! dictionary, so the parser must see the connection from its first byte) to learn each
//! stream's `streamType` (`stdin`, `stdout`, `stderr`, `error`, `resize`); then the data
//! frames of those streams.

use std::collections::HashMap;

/// Frames larger than this are not followed (the recording notes it and stops).
const MAX_FRAME: usize = 16 << 20;

const SYN_STREAM: u16 = 1;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1):
/// length-prefixed header names and values, then common value fragments.
pub fn dictionary() -> Vec<u8> {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut dictionary = Vec::with_capacity(1423);
    for word in WORDS {
        dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dictionary.extend_from_slice(word.as_bytes());
    }
    dictionary.extend_from_slice(TAIL.as_bytes());
    debug_assert_eq!(
        dictionary.len(),
        1423,
        "the SPDY/3 dictionary is 1423 bytes"
    );
    dictionary
}

/// What one direction of the connection carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A new stream and its `streamType` (from the client).
    Stream(u32, String),
    /// Data of a stream.
    Data(u32, &'a [u8]),
}

/// One direction of a SPDY connection, parsed as it passes. Whole frames are read
/// straight from the bytes handed in; only a frame cut by the end of a chunk is held.
pub struct Frames {
    held: Vec<u8>,
    inflate: flate2::Decompress,
    /// Set when the stream stopped making sense (or a frame was too large).
    pub broken: bool,
}

impl Default for Frames {
    fn default() -> Frames {
        Frames {
            held: Vec::new(),
            inflate: flate2::Decompress::new(true),
            broken: false,
        }
    }
}

impl Frames {
    /// Feeds `bytes`, calling `on_event` for each stream opened and each data frame.
    pub fn push(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event<'_>)) {
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
        while data.len() - at >= 8 {
            let head = &data[at..at + 8];
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            if len > MAX_FRAME {
                self.broken = true;
                return;
            }
            if data.len() - at < 8 + len {
                break;
            }
            let control = head[0] & 0x80 != 0;
            let kind = u16::from_be_bytes([head[2], head[3]]);
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            let frame = &data[at + 8..at + 8 + len];
            at += 8 + len;
            if !control {
                on_event(Event::Data(stream, frame));
            } else if kind == SYN_STREAM && len >= 10 {
                let id = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) & 0x7fff_ffff;
                match headers(&mut self.inflate, &frame[10..]) {
                    Ok(headers) => {
                        let kind = headers.get("streamtype").cloned().unwrap_or_default();
                        on_event(Event::Stream(id, kind));
                    }
                    Err(_) => {
                        self.broken = true;
                        return;
                    }
                }
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

/// Decompresses a header block into name/value pairs (names in lower case).
fn headers(
    inflate: &mut flate2::Decompress,
    block: &[u8],
) -> Result<HashMap<String, String>, String> {
    let mut out = Vec::with_capacity(1024);
    let mut input = block;
    loop {
        out.reserve(4096);
        let before = inflate.total_in();
        let result = inflate.decompress_vec(input, &mut out, flate2::FlushDecompress::Sync);
        input = &input[(inflate.total_in() - before) as usize..];
        match result {
            Ok(_) if input.is_empty() => break,
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => inflate
                .set_dictionary(&dictionary())
                .map(|_| ())
                .map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        }
        if out.len() > MAX_FRAME {
            return Err("header block too large".into());
        }
    }
    let mut rest = &out[..];
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err("header block cut short".into());
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_of(take(4)?);
    let mut headers = HashMap::new();
    for _ in 0..count {
        let n = u32_of(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = u32_of(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(deflate: &mut flate2::Compress, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (name, value) in pairs {
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 1024);
        deflate
            .compress_vec(&raw, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out
    }

    fn syn_stream(deflate: &mut flate2::Compress, id: u32, kind: &str) -> Vec<u8> {
        let block = block(deflate, &[("streamtype", kind)]);
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&block);
        let mut frame = vec![0x80, 3, 0, 1, 0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&payload);
        frame
    }

    fn data(id: u32, bytes: &[u8]) -> Vec<u8> {
        let mut frame = id.to_be_bytes().to_vec();
        frame.push(0);
        frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(bytes);
        frame
    }

    #[test]
    fn streams_and_data_with_one_compression_context() {
        let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
        deflate.set_dictionary(&dictionary()).unwrap();
        let mut wire = syn_stream(&mut deflate, 1, "error");
        wire.extend(syn_stream(&mut deflate, 3, "stdout"));
        wire.extend(syn_stream(&mut deflate, 5, "stderr"));
        wire.extend(data(3, b"hello"));
        wire.extend(data(5, b"oops"));
        for step in [1, 5, 64, wire.len()] {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                frames.push(chunk, |e| {
                    got.push(match e {
                        Event::Stream(id, kind) => (id, kind.into_bytes(), true),
                        Event::Data(id, data) => (id, data.to_vec(), false),
                    })
                });
            }
            assert!(!frames.broken);
            assert_eq!(
                got,
                [
                    (1, b"error".to_vec(), true),
                    (3, b"stdout".to_vec(), true),
                    (5, b"stderr".to_vec(), true),
                    (3, b"hello".to_vec(), false),
                    (5, b"oops".to_vec(), false),
                ],
                "step {step}"
            );
        }
    }
}
