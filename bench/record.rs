//! `cargo bench --bench record`: what recording an exec session costs, the recorder
//! alone, on the streams of `cargo bench --bench stream` (no network, no tunnel).
//!
//! - **download**: 256 MiB of stdout from `head -c 256MiB /dev/zero`, in the stand-in's
//!   `v5.channel.k8s.io` messages (32 KiB of data each), handed to the recorder in the
//!   64 KiB pieces the tunnel reads. The zeros are 6 cast bytes each, so the cast reaches
//!   the default cap (64 MiB) after about 10.9 MiB and the rest is passed over.
//! - **echo**: 64 MiB of `x` both ways: the client's stdin messages (masked, 32 KiB each,
//!   not recorded by default) and the echoed stdout.
//!
//! Each is timed 9 times into a fresh file; the median and the best are printed, beside
//! what writing the same number of cast bytes to a file costs alone (the page cache's
//! share). Figures only: nothing is asserted.

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use kubegate::proxy::tunnel::record::{Protocol, Recorder, RecordingSettings};

const MIB: usize = 1024 * 1024;
const MESSAGE: usize = 32 * 1024;
const READ: usize = 64 * 1024;
const RUNS: usize = 9;

/// A server frame (unmasked) of one channel message of `data`.
fn server_frame(channel: u8, data: &[u8]) -> Vec<u8> {
    frame(channel, data, None)
}

/// A client frame, masked with `mask`.
fn client_frame(channel: u8, data: &[u8], mask: [u8; 4]) -> Vec<u8> {
    frame(channel, data, Some(mask))
}

fn frame(channel: u8, data: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let len = data.len() + 1;
    assert!(len < 65536);
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![0x82, masked | 126];
    out.extend_from_slice(&(len as u16).to_be_bytes());
    let mut payload = vec![channel];
    payload.extend_from_slice(data);
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    out.extend_from_slice(&payload);
    out
}

/// `stream` in the tunnel's 64 KiB reads, each a slice of one buffer (as the tunnel's
/// chunks are of its read buffer).
fn chunks(stream: &bytes::Bytes) -> impl Iterator<Item = bytes::Bytes> + '_ {
    (0..stream.len())
        .step_by(READ)
        .map(|at| stream.slice(at..(at + READ).min(stream.len())))
}

/// `total` bytes of `byte` on stdout (channel 1), as one wire stream.
fn stream_of(byte: u8, total: usize, client: bool) -> bytes::Bytes {
    let data = vec![byte; MESSAGE];
    let one = if client {
        client_frame(0, &data, [0x12, 0x34, 0x56, 0x78])
    } else {
        server_frame(1, &data)
    };
    let mut out = Vec::with_capacity(one.len() * total / MESSAGE);
    for _ in 0..total / MESSAGE {
        out.extend_from_slice(&one);
    }
    out.into()
}

struct Timing {
    median: Duration,
    best: Duration,
    cast_bytes: u64,
}

fn timed(mut run: impl FnMut(usize) -> u64) -> Timing {
    let mut times = Vec::new();
    let mut cast_bytes = 0;
    run(usize::MAX); // warm
    for i in 0..RUNS {
        let start = Instant::now();
        cast_bytes = run(i);
        times.push(start.elapsed());
    }
    times.sort();
    Timing {
        median: times[RUNS / 2],
        best: times[0],
        cast_bytes,
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = RecordingSettings {
        dir: dir.path().to_path_buf(),
        max_bytes: 64 * MIB as u64,
        stdin: false,
        postgres: None,
    };
    let download = stream_of(0, 256 * MIB, false);
    let echo_down = stream_of(b'x', 64 * MIB, false);
    let echo_up = stream_of(b'x', 64 * MIB, true);
    let mut n = 0;
    let mut session = |label: &str, up: &bytes::Bytes, down: &bytes::Bytes| {
        n += 1;
        let id = format!("{label}-{n}");
        let mut recorder = Recorder::start(&settings, 1, &id, "bench").unwrap();
        recorder.protocol(Some(Protocol::Channels { base64: false }));
        // the two directions interleaved, as a session brings them
        let (mut u, mut d) = (chunks(up), chunks(down));
        loop {
            let (a, b) = (u.next(), d.next());
            if a.is_none() && b.is_none() {
                break;
            }
            if let Some(a) = a {
                recorder.from_client_at(Instant::now(), black_box(&a));
            }
            if let Some(b) = b {
                recorder.from_server_at(Instant::now(), black_box(&b));
            }
        }
        let recording = recorder.finish();
        let _ = std::fs::remove_file(dir.path().join(format!("1/{id}.cast")));
        recording.bytes
    };
    let down = timed(|_| session("download", &bytes::Bytes::new(), &download));
    let echo = timed(|_| session("echo", &echo_up, &echo_down));

    // the page cache's share: the same bytes written in 64 KiB pieces
    let write = |bytes: u64| {
        timed(|i| {
            let path = dir.path().join(format!("write-{i}"));
            let mut file = std::fs::File::create(&path).unwrap();
            let piece = vec![b'x'; READ];
            let mut left = bytes as usize;
            while left > 0 {
                let n = left.min(READ);
                file.write_all(&piece[..n]).unwrap();
                left -= n;
            }
            drop(file);
            let _ = std::fs::remove_file(&path);
            bytes
        })
    };
    let write_down = write(down.cast_bytes);
    let write_echo = write(echo.cast_bytes);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("the recorder alone (median / best of {RUNS}):");
    for (label, t, w, input) in [
        ("download, 256 MiB of zeros", &down, &write_down, 256.0),
        ("echo, 64 MiB each way", &echo, &write_echo, 64.0),
    ] {
        println!(
            "  {label:28} {:6.1} / {:6.1} ms, {:5.1} MiB of cast; writing those bytes alone {:5.1} / {:5.1} ms; {:6.0} MiB/s of session",
            ms(t.median),
            ms(t.best),
            t.cast_bytes as f64 / MIB as f64,
            ms(w.median),
            ms(w.best),
            input / t.median.as_secs_f64(),
        );
    }
}
