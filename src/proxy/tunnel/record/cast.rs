//! The asciicast v2 file of a session: a header line, then one event per line
//! (`[seconds, "o", text]` for output, `"i"` for input, `"r"` for a resize `"WxH"`, `"m"`
//! for a marker). Output split inside a multibyte UTF-8 character is held until the rest
//! of the character comes; bytes that are not UTF-8 are written as U+FFFD.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::io::Write as _;

use serde_json::json;

/// Which stream an event comes from: each keeps its own unfinished UTF-8 character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// What the person typed (only when stdin is recorded).
    Stdin,
    /// The command's standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// Builds the lines of a cast, up to a size cap.
pub struct Cast {
    lines: Vec<u8>,
    pending: [Vec<u8>; 3],
    written: u64,
    cap: u64,
    cut: bool,
    last: f64,
}

/// Terminal size until the first resize (asciicast needs one).
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);

impl Cast {
    /// A cast whose lines add up to at most `cap` bytes, starting with its header.
    pub fn new(cap: u64, title: &str) -> Cast {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = json!({
            "version": 2,
            "width": DEFAULT_SIZE.0,
            "height": DEFAULT_SIZE.1,
            "timestamp": timestamp,
            "title": title,
        });
        let mut cast = Cast {
            lines: Vec::new(),
            pending: [Vec::new(), Vec::new(), Vec::new()],
            written: 0,
            cap,
            cut: false,
            last: 0.0,
        };
        cast.line(header.to_string());
        cast
    }

    /// Whether the cap was reached and recording stopped.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Bytes of the cast so far.
    pub fn size(&self) -> u64 {
        self.written
    }

    /// Writes the lines built since the last call to `out`, keeping their buffer for the
    /// next ones (a recorded session builds up to `audit.recording_max_bytes` of lines,
    /// [`super::FLUSH_BYTES`] at a time). On an error, the lines are dropped.
    pub fn write_to(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let written = out.write_all(&self.lines);
        self.lines.clear();
        written
    }

    /// Bytes waiting to be written.
    pub fn waiting(&self) -> usize {
        self.lines.len()
    }

    /// Output (or input) of `stream` at `at` since the start.
    pub fn data(&mut self, at: Duration, stream: Stream, bytes: &[u8]) {
        if self.cut || bytes.is_empty() {
            return;
        }
        let code = if stream == Stream::Stdin { "i" } else { "o" };
        let slot = stream as usize;
        if self.pending[slot].is_empty() {
            // the usual case: straight from the bytes, only an unfinished character kept
            let keep = unfinished_tail(bytes);
            let whole = &bytes[..bytes.len() - keep];
            if !whole.is_empty() {
                self.event(at, code, whole);
            }
            self.pending[slot].extend_from_slice(&bytes[bytes.len() - keep..]);
            return;
        }
        let mut joined = std::mem::take(&mut self.pending[slot]);
        joined.extend_from_slice(bytes);
        let cut = joined.len() - unfinished_tail(&joined);
        if cut > 0 {
            self.event(at, code, &joined[..cut]);
        }
        joined.drain(..cut);
        self.pending[slot] = joined;
    }

    /// A resize to `width`×`height`.
    pub fn resize(&mut self, at: Duration, width: u16, height: u16) {
        if !self.cut {
            self.event(at, "r", format!("{width}x{height}").as_bytes());
        }
    }

    /// A marker (`"m"`), then nothing more is recorded.
    pub fn marker(&mut self, at: Duration, text: &str) {
        if !self.cut {
            let t = at.as_secs_f64().max(self.last);
            self.line(json!([round6(t), "m", text]).to_string());
            self.cut = true;
        }
    }

    /// Writes what is left of unfinished characters (as U+FFFD) at the end of a session.
    pub fn finish(&mut self, at: Duration) {
        for stream in [Stream::Stdin, Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() && !self.cut {
                let code = if stream == Stream::Stdin { "i" } else { "o" };
                self.event(at, code, &rest);
            }
        }
    }

    /// An event of `text`, whose bytes that are not UTF-8 are written as U+FFFD.
    fn event(&mut self, at: Duration, code: &str, text: &[u8]) {
        // times never go back, whichever direction an event came from
        let t = at.as_secs_f64().max(self.last);
        self.last = t;
        // written in place: `[t, "o", "text"]`, the text escaped as JSON
        let start = self.lines.len();
        let _ = write!(self.lines, "[{t:.6}, \"{code}\", ");
        escape_into(&mut self.lines, text);
        self.lines.extend_from_slice(b"]\n");
        let len = (self.lines.len() - start) as u64;
        if self.written + len > self.cap {
            self.lines.truncate(start);
            self.cut = true;
            let marker = json!([
                round6(t),
                "m",
                "recording stopped: the session passed the size cap"
            ])
            .to_string();
            self.line(marker);
            return;
        }
        self.written += len;
    }

    fn line(&mut self, line: String) {
        self.written += line.len() as u64 + 1;
        self.lines.extend_from_slice(line.as_bytes());
        self.lines.push(b'\n');
    }
}

/// Each byte's JSON escape, padded to 8 bytes (little-endian), with its length in
/// [`ESCAPE_LEN`]: `\u00XX` for control characters, the short forms for `\n`, `\r`,
/// `\t`, `"` and `\`.
const ESCAPE: [u64; 256] = {
    let hex = b"0123456789abcdef";
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 32 {
        let code = [b'\\', b'u', b'0', b'0', hex[i >> 4], hex[i & 15], 0, 0];
        table[i] = u64::from_le_bytes(code);
        i += 1;
    }
    let short = [
        (b'\n', b'n'),
        (b'\r', b'r'),
        (b'\t', b't'),
        (b'"', b'"'),
        (b'\\', b'\\'),
    ];
    let mut j = 0;
    while j < short.len() {
        table[short[j].0 as usize] = u64::from_le_bytes([b'\\', short[j].1, 0, 0, 0, 0, 0, 0]);
        j += 1;
    }
    table
};

/// The length of each byte's escape in [`ESCAPE`]; 0 for a byte written as it is.
const ESCAPE_LEN: [u8; 256] = {
    let mut lens = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        lens[i] = match i as u8 {
            b'\n' | b'\r' | b'\t' | b'"' | b'\\' => 2,
            0x00..=0x1f => 6,
            _ => 0,
        };
        i += 1;
    }
    lens
};

/// Whether all the bytes of `block` are written as they are: ASCII, none below `0x20`, no
/// `"`, no `\`. Every byte is looked at, without stopping early, so that the compiler
/// makes it a few vector comparisons.
fn plain_block(block: &[u8; 32]) -> bool {
    block.iter().fold(true, |plain, &b| {
        plain & (0x20..0x80).contains(&b) & (b != b'"') & (b != b'\\')
    })
}

/// Appends `text` as a JSON string, bytes that are not UTF-8 as U+FFFD (as
/// `String::from_utf8_lossy` reads them). Terminal output is mostly ASCII, with escape
/// sequences here and there, and at worst nothing but control characters (`/dev/zero`):
/// runs of plain ASCII are found 32 bytes at a time, which also shows them to be UTF-8,
/// and copied whole; runs of bytes to escape are written from [`ESCAPE`] one 8-byte
/// store each, into room made for them once; runs of other bytes (multibyte characters)
/// are checked as UTF-8 on their own. A run of non-ASCII bytes ends at an ASCII byte,
/// which never belongs to a multibyte character, so it reads as it would within the
/// whole text. (This one pass replaced a UTF-8 check of the whole text, then a scan for
/// escapes, and the byte-by-byte loop before them cost four times as much.)
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while let Some(Ok(block)) = bytes.get(i..i + 32).map(<&[u8; 32]>::try_from) {
            if !plain_block(block) {
                break;
            }
            i += 32;
        }
        while i < bytes.len() && bytes[i] < 0x80 && ESCAPE_LEN[bytes[i] as usize] == 0 {
            i += 1;
        }
        out.extend_from_slice(&bytes[start..i]);
        let run = bytes[i..]
            .iter()
            .take_while(|&&b| ESCAPE_LEN[b as usize] != 0)
            .count();
        if run > 0 {
            let mut at = out.len();
            out.resize(at + run * 8, 0);
            for &b in &bytes[i..i + run] {
                out[at..at + 8].copy_from_slice(&ESCAPE[b as usize].to_le_bytes());
                at += ESCAPE_LEN[b as usize] as usize;
            }
            out.truncate(at);
            i += run;
        }
        let wide = bytes[i..].iter().take_while(|&&b| b >= 0x80).count();
        if wide > 0 {
            let run = &bytes[i..i + wide];
            match std::str::from_utf8(run) {
                Ok(_) => out.extend_from_slice(run),
                Err(_) => out.extend_from_slice(String::from_utf8_lossy(run).as_bytes()),
            }
            i += wide;
        }
    }
    out.push(b'"');
}

fn round6(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}

/// How many bytes at the end of `buf` begin a character that is not complete yet.
fn unfinished_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines built since the last call, written out.
    fn taken(cast: &mut Cast) -> Vec<u8> {
        let mut out = Vec::new();
        cast.write_to(&mut out).unwrap();
        out
    }

    fn events(cast: &mut Cast) -> Vec<serde_json::Value> {
        String::from_utf8(taken(cast))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_character_split_between_chunks_is_joined() {
        let mut cast = Cast::new(1 << 20, "t");
        let euro = "€".as_bytes(); // 3 bytes
        cast.data(Duration::from_millis(1), Stream::Stdout, &[b'a', euro[0]]);
        cast.data(Duration::from_millis(2), Stream::Stdout, &euro[1..2]);
        cast.data(Duration::from_millis(3), Stream::Stdout, &[euro[2], b'b']);
        cast.finish(Duration::from_millis(4));
        let e = events(&mut cast);
        assert_eq!(e[0]["version"], 2);
        assert_eq!(
            (e[0]["width"].as_u64(), e[0]["height"].as_u64()),
            (Some(80), Some(24))
        );
        let text: String = e[1..].iter().map(|e| e[2].as_str().unwrap()).collect();
        assert_eq!(text, "a€b");
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn past_the_cap_a_marker_and_nothing_more() {
        let mut cast = Cast::new(200, "t");
        for i in 0..20 {
            cast.data(Duration::from_millis(i), Stream::Stdout, b"0123456789");
        }
        assert!(cast.is_cut());
        let e = events(&mut cast);
        assert_eq!(e.last().unwrap()[1], "m");
        assert!(cast.size() <= 200 + 100);
        cast.resize(Duration::from_secs(1), 100, 40);
        assert!(taken(&mut cast).is_empty());
    }

    #[test]
    fn text_is_escaped_as_json_reads_it() {
        let text: String = (0u8..128)
            .map(char::from)
            .chain("€ \"q\" \\".chars())
            .collect();
        let mut out = Vec::new();
        escape_into(&mut out, text.as_bytes());
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, text);
        let mut zeros = Vec::new();
        escape_into(&mut zeros, b"\0\0");
        assert_eq!(zeros, br#""\u0000\u0000""#);
    }

    #[test]
    fn escapes_are_found_at_every_place_in_a_word() {
        // each character that needs escaping, alone and in runs, at each offset of the
        // eight-byte words the scan reads, between plain and multibyte text
        for special in ['\0', '\n', '\x1b', '\x1f', '"', '\\', '\t'] {
            for before in 0..17 {
                for run in [1, 2, 9] {
                    let text = format!(
                        "{}{}é~\x7f{}",
                        "a".repeat(before),
                        special.to_string().repeat(run),
                        "z".repeat(before % 5)
                    );
                    let mut out = Vec::new();
                    escape_into(&mut out, text.as_bytes());
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        serde_json::to_string(&text).unwrap(),
                        "{text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_read_as_from_utf8_lossy_reads_them() {
        let mut cases: Vec<Vec<u8>> = [
            &b"a\xffb"[..],
            b"\xe2\x82",
            b"\xe2\x82a\xe2\x82\xac",
            b"\xf0\x9f\x98\x80\x80x",
            b"\xc3\x28\xc3",
            b"\xed\xa0\x80\x00",
            b"\xf4\x90\x80\x80\"",
        ]
        .iter()
        .map(|c| c.to_vec())
        .collect();
        // and bytes of every kind at random, in runs long enough for the 32-byte scan
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300 {
            let bytes = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // mostly ASCII letters, some controls, some high bytes
                    match seed % 8 {
                        0 => (seed >> 8) as u8,
                        1 => 0xe2,
                        2 => 0x82 + (seed >> 20) as u8 % 0x3e,
                        _ => b'a' + (seed >> 12) as u8 % 26,
                    }
                })
                .collect();
            cases.push(bytes);
        }
        for bytes in cases {
            let mut out = Vec::new();
            escape_into(&mut out, &bytes);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, String::from_utf8_lossy(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn times_never_go_back() {
        let mut cast = Cast::new(1 << 20, "t");
        cast.data(Duration::from_millis(5), Stream::Stdout, b"x");
        cast.resize(Duration::from_millis(3), 100, 30);
        let e = events(&mut cast);
        assert_eq!(e[2][0].as_f64(), Some(0.005));
        assert_eq!(e[2][2], "100x30");
    }
}
