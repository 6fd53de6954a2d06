//! The asciicast v2 file of a session: a header line, then one event per line
//! (`[seconds, "o", text]` for output, `"i"` for input, `"r"` for a resize `"WxH"`, `"m"`
//! for a marker). Output split inside a multibyte UTF-8 character is held until the rest
//! of the character comes; bytes that are not UTF-8 are written as U+FFFD.

use std::io::{IoSlice, Write as _};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
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
    lines: Lines,
    /// The chunk of the session being recorded: long runs of plain text found in it are
    /// written from it, not copied ([`Cast::share_from`]).
    source: Option<Bytes>,
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
            lines: Lines::default(),
            source: None,
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
        self.lines.write_to(out)
    }

    /// Bytes waiting to be written.
    pub fn waiting(&self) -> usize {
        self.lines.len()
    }

    /// The chunk the next calls' bytes come from (until it is set to `None`): a long run
    /// of plain text within it is written straight from it, a slice sharing its buffer,
    /// instead of being copied into the lines. Bytes not within it are copied as always.
    pub fn share_from(&mut self, chunk: Option<Bytes>) {
        self.source = chunk;
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
        let start = self.lines.mark();
        let _ = write!(self.lines.own, "[{t:.6}, \"{code}\", ");
        escape_into(&mut self.lines, text, self.source.as_ref());
        self.lines.own.extend_from_slice(b"]\n");
        let len = (self.lines.len() - start.len) as u64;
        if self.written + len > self.cap {
            self.lines.back_to(start);
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
        self.lines.own.extend_from_slice(line.as_bytes());
        self.lines.own.push(b'\n');
    }
}

/// The lines waiting to be written: the bytes built here, and between them slices
/// written as they are (plain text from the session's chunk, or runs of one escape from
/// [`repeated`]). One `writev` writes them all, so a byte of those slices is copied once,
/// into the page cache, and never into the lines first.
#[derive(Default)]
struct Lines {
    own: Vec<u8>,
    /// Each slice with the length of `own` where it goes, in order.
    shared: Vec<(usize, Bytes)>,
    shared_len: usize,
}

/// Where [`Lines`] stood, to go back to.
struct Mark {
    own: usize,
    shared: usize,
    len: usize,
}

/// Slices written at most this many to a `writev` (Linux takes 1,024).
const SLICES: usize = 512;

impl Lines {
    fn len(&self) -> usize {
        self.own.len() + self.shared_len
    }

    fn share(&mut self, bytes: Bytes) {
        self.shared_len += bytes.len();
        self.shared.push((self.own.len(), bytes));
    }

    fn mark(&self) -> Mark {
        Mark {
            own: self.own.len(),
            shared: self.shared.len(),
            len: self.len(),
        }
    }

    fn back_to(&mut self, mark: Mark) {
        self.own.truncate(mark.own);
        for (_, bytes) in self.shared.drain(mark.shared..) {
            self.shared_len -= bytes.len();
        }
    }

    /// Writes everything in order, then empties (an error too drops what was waiting).
    fn write_to(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let written = if self.shared.is_empty() {
            out.write_all(&self.own)
        } else {
            let mut slices = Vec::with_capacity(self.shared.len() * 2 + 1);
            let mut from = 0;
            for (at, bytes) in &self.shared {
                if *at > from {
                    slices.push(IoSlice::new(&self.own[from..*at]));
                }
                slices.push(IoSlice::new(bytes));
                from = *at;
            }
            if self.own.len() > from {
                slices.push(IoSlice::new(&self.own[from..]));
            }
            slices
                .chunks_mut(SLICES)
                .try_for_each(|some| write_all_vectored(out, some))
        };
        self.own.clear();
        self.shared.clear();
        self.shared_len = 0;
        written
    }
}

/// `Write::write_all_vectored`, which is not stable yet.
fn write_all_vectored(
    out: &mut impl std::io::Write,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Plain text written from the session's chunk rather than copied: runs at least this
/// long (a shorter one costs more as a slice of its own than as a copy).
const SHARED_RUN: usize = 1024;

/// Runs of one byte to escape at least this long are written from [`repeated`].
const REPEATED_RUN: usize = 64;

/// How many escapes one of [`repeated`]'s buffers holds.
const REPEATS: usize = 4096;

/// The escape of `byte` (one that has one) written [`REPEATS`] times, made once: a run of
/// it (`/dev/zero`'s NULs, a line of `=`s is plain) is written as slices of this, the
/// cast's bytes never built one by one.
fn repeated(byte: u8) -> &'static Bytes {
    static REPEATED: [OnceLock<Bytes>; 256] = [const { OnceLock::new() }; 256];
    REPEATED[byte as usize].get_or_init(|| {
        let escape = ESCAPE[byte as usize].to_le_bytes();
        escape[..ESCAPE_LEN[byte as usize] as usize]
            .repeat(REPEATS)
            .into()
    })
}

/// How many bytes at the start of `bytes` are `byte` (at least one), 8 compared at a time.
fn same_run(bytes: &[u8], byte: u8) -> usize {
    let eight = u64::from_ne_bytes([byte; 8]);
    let words = bytes
        .chunks_exact(8)
        .take_while(|w| u64::from_ne_bytes((*w).try_into().unwrap_or_default()) == eight)
        .count();
    let at = words * 8;
    at + bytes[at..].iter().take_while(|&&b| b == byte).count()
}

/// Whether `run` lies within `chunk`'s bytes (then `chunk.slice_ref(run)` shares them).
fn within(chunk: &Bytes, run: &[u8]) -> bool {
    let (start, end) = (
        chunk.as_ptr() as usize,
        chunk.as_ptr() as usize + chunk.len(),
    );
    let at = run.as_ptr() as usize;
    at >= start && at + run.len() <= end
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
/// and copied whole (or, when long and within `source`, shared with it); bytes to escape
/// are taken a run of one byte at a time, found 8 bytes at a time: a long run is written
/// as slices of [`repeated`], a short one from [`ESCAPE`] one 8-byte store each, into
/// room made for them once; runs of other bytes (multibyte characters) are checked as
/// UTF-8 on their own. A run of non-ASCII bytes ends at an ASCII byte, which never
/// belongs to a multibyte character, so it reads as it would within the whole text.
/// (This one pass replaced a UTF-8 check of the whole text, then a scan for escapes, and
/// the byte-by-byte loop before them cost four times as much.)
fn escape_into(lines: &mut Lines, bytes: &[u8], source: Option<&Bytes>) {
    lines.own.push(b'"');
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
        let plain = &bytes[start..i];
        match source {
            Some(chunk) if plain.len() >= SHARED_RUN && within(chunk, plain) => {
                lines.share(chunk.slice_ref(plain))
            }
            _ => lines.own.extend_from_slice(plain),
        }
        // bytes to escape, a run of one byte at a time
        while i < bytes.len() && ESCAPE_LEN[bytes[i] as usize] != 0 {
            let byte = bytes[i];
            let same = same_run(&bytes[i..], byte);
            let each = ESCAPE_LEN[byte as usize] as usize;
            if same >= REPEATED_RUN {
                let all = repeated(byte);
                let mut left = same;
                while left > 0 {
                    let n = left.min(REPEATS);
                    lines.share(all.slice(..n * each));
                    left -= n;
                }
            } else {
                // one 8-byte store each, into room made for them once
                let out = &mut lines.own;
                let mut at = out.len();
                out.resize(at + same * 8, 0);
                let escape = ESCAPE[byte as usize].to_le_bytes();
                for _ in 0..same {
                    out[at..at + 8].copy_from_slice(&escape);
                    at += each;
                }
                out.truncate(at);
            }
            i += same;
        }
        let wide = bytes[i..].iter().take_while(|&&b| b >= 0x80).count();
        if wide > 0 {
            let run = &bytes[i..i + wide];
            match std::str::from_utf8(run) {
                Ok(_) => lines.own.extend_from_slice(run),
                Err(_) => lines
                    .own
                    .extend_from_slice(String::from_utf8_lossy(run).as_bytes()),
            }
            i += wide;
        }
    }
    lines.own.push(b'"');
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

    /// `bytes` escaped, written out.
    fn escaped(bytes: &[u8], source: Option<&Bytes>) -> Vec<u8> {
        let mut lines = Lines::default();
        escape_into(&mut lines, bytes, source);
        let mut out = Vec::new();
        lines.write_to(&mut out).unwrap();
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
        let out = escaped(text.as_bytes(), None);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, text);
        assert_eq!(escaped(b"\0\0", None), br#""\u0000\u0000""#);
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
                    let out = escaped(text.as_bytes(), None);
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
            let out = escaped(&bytes, None);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, String::from_utf8_lossy(&bytes), "{bytes:?}");
            // the same bytes as a chunk whose runs may be shared read the same
            let chunk = Bytes::from(bytes.clone());
            assert_eq!(escaped(&chunk, Some(&chunk)), out, "{bytes:?}");
        }
    }

    #[test]
    fn long_runs_are_written_from_the_chunk_and_from_the_repeated_escapes() {
        // plain runs long and short, NULs long and short, escapes mixed, multibyte text
        let mut text = Vec::new();
        for (i, n) in [1, 63, 64, 65, 1023, 1024, 5000, 4096 * 2 + 7]
            .iter()
            .enumerate()
        {
            text.extend(std::iter::repeat_n(b'a' + i as u8, *n));
            text.extend(std::iter::repeat_n(0u8, *n));
            text.extend_from_slice("\r\n\x1b[0m€\"".as_bytes());
            text.extend(std::iter::repeat_n(b'\n', *n));
        }
        let chunk = Bytes::from(text.clone());
        let mut lines = Lines::default();
        escape_into(&mut lines, &chunk[3..], Some(&chunk));
        // the long runs went as slices, the chunk's and the NULs' and newlines'
        let from_chunk = lines
            .shared
            .iter()
            .filter(|(_, b)| within(&chunk, b))
            .count();
        assert!(from_chunk >= 3, "{from_chunk}");
        assert!(lines.shared.len() > from_chunk);
        let waiting = lines.len();
        let mut out = Vec::new();
        lines.write_to(&mut out).unwrap();
        assert_eq!(out.len(), waiting);
        assert_eq!(out, escaped(&text[3..], None));
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back.as_bytes(), &text[3..]);
        assert_eq!(lines.len(), 0);
    }

    #[test]
    fn the_cap_holds_with_shared_runs() {
        // an event that would pass the cap leaves nothing of itself, slices included
        let chunk = Bytes::from(vec![b'x'; 40_000]);
        let mut cast = Cast::new(100_000, "t");
        cast.share_from(Some(chunk.clone()));
        for i in 0..3 {
            cast.data(Duration::from_millis(i), Stream::Stdout, &chunk);
        }
        cast.share_from(None);
        assert!(cast.is_cut());
        let size = cast.size();
        let out = taken(&mut cast);
        assert_eq!(out.len() as u64, size);
        let e: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(e.len(), 4, "header, two events, the marker");
        assert_eq!(e[2][2].as_str().unwrap().len(), 40_000);
        assert_eq!(e[3][1], "m");
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
