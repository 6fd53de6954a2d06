//! A session's [`Recorder`] on a thread of its own, so that parsing, escaping and
//! writing the cast are not done between two reads of the tunnel.
//!
//! Each direction hands its chunks over as they pass (the same `Bytes` the tunnel sends
//! on, not a copy), stamped with the time they passed. At most [`QUEUE`] chunks wait for
//! the recorder, and as many more are being recorded (the recorder takes all that wait
//! at once); past that, the direction that would add one waits for room, so a
//! recording is never missing bytes and the memory it holds stays bounded (chunks are
//! at most [`super::super::WINDOW`] bytes, plus the batch that crossed it). Once the
//! recorder has nothing more to record (the cap, or a stream it cannot follow), the
//! chunks are no longer handed over at all.
//!
//! When the session ends, both senders are dropped, the thread records what is queued,
//! writes the end of the cast and returns the audit event's record of it
//! ([`Background::finish`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kubegate_actors::auditor::SessionRecording;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::{Keep, Recorder};

/// Chunks that may wait for the recorder, both directions together.
pub const QUEUE: usize = 16;

/// Longest the end of a session waits for its recorder to write what is left; past it,
/// the audit event says so and the recorder finishes on its own.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// How much the recorder thread's nice value is raised: on a busy core it yields to the
/// workers, and records in the time they leave (the queue bounds how far it may lag).
const NICE: i32 = 10;

/// The recorder thread's stack: parsing and escaping need little.
const STACK: usize = 256 * 1024;

/// A chunk of the session, as it passed.
struct Piece {
    at: Instant,
    from_client: bool,
    bytes: Bytes,
}

/// One direction's way to the recorder thread.
pub struct Sender {
    to: PollSender<Piece>,
    from_client: bool,
    done: Arc<AtomicBool>,
}

impl Sender {
    /// Ready once a chunk may be handed over (room in the queue), or at once when the
    /// recorder takes no more.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        // an error: the thread is gone (it panicked); nothing more is recorded
        self.to.poll_reserve(cx).map(|_| ())
    }

    /// Hands `bytes` over, after [`Sender::poll_ready`] said there is room.
    pub fn send(&mut self, bytes: Bytes) {
        if self.done.load(Ordering::Relaxed) || bytes.is_empty() {
            self.to.abort_send();
            return;
        }
        let piece = Piece {
            at: Instant::now(),
            from_client: self.from_client,
            bytes,
        };
        // no room reserved: the thread is gone (it panicked), and `Background::finish`
        // says the recorder failed
        if self.to.send_item(piece).is_err() {
            self.done.store(true, Ordering::Relaxed);
        }
    }
}

/// A recorder running on its thread.
pub struct Background {
    finished: std::sync::mpsc::Receiver<(SessionRecording, Option<Keep>)>,
    id: String,
}

impl Background {
    /// Starts `recorder` on a thread of its own; with it, the ways to it of the client's
    /// direction and of the API server's.
    pub fn spawn(recorder: Recorder) -> std::io::Result<(Background, Sender, Sender)> {
        let (to, mut from) = mpsc::channel::<Piece>(QUEUE);
        let (done_tx, finished) = std::sync::mpsc::sync_channel(1);
        let done = Arc::new(AtomicBool::new(false));
        let id = recorder.id.clone();
        let thread_done = done.clone();
        std::thread::Builder::new()
            .name("recorder".into())
            .stack_size(STACK)
            .spawn(move || {
                // the tunnel's threads come first: the recorder takes the time they leave
                let _ = rustix::process::nice(NICE);
                let mut recorder = recorder;
                // all that is queued taken at once, which frees the whole queue in one
                // go: a tunnel waiting for room is woken once per batch, not once per
                // chunk (which, on a shared core, had the two threads take turns at
                // every chunk)
                let mut batch = Vec::with_capacity(QUEUE);
                while from.blocking_recv_many(&mut batch, QUEUE) > 0 {
                    for piece in batch.drain(..) {
                        if piece.from_client {
                            recorder.from_client_at(piece.at, &piece.bytes);
                        } else {
                            recorder.from_server_at(piece.at, &piece.bytes);
                        }
                    }
                    if recorder.done() {
                        thread_done.store(true, Ordering::Relaxed);
                    }
                }
                let _ = done_tx.send(recorder.finish_keeping());
            })?;
        let sender = |from_client| Sender {
            to: PollSender::new(to.clone()),
            from_client,
            done: done.clone(),
        };
        Ok((Background { finished, id }, sender(true), sender(false)))
    }

    /// Ends the recording. Both senders must be dropped first (until then the thread
    /// waits for more chunks): waits (at most
    /// [`FINISH_TIMEOUT`]) for the thread to record what is queued and write the end of
    /// the cast, and returns the audit event's record of it. With the PostgreSQL sink,
    /// the cast is then copied there (on the runtime this is called on).
    pub fn finish(self) -> SessionRecording {
        match self.finished.recv_timeout(FINISH_TIMEOUT) {
            Ok((recording, keep)) => {
                if let Some(keep) = keep {
                    keep.spawn();
                }
                recording
            }
            Err(e) => {
                let why = match e {
                    std::sync::mpsc::RecvTimeoutError::Timeout => {
                        "the recorder did not finish writing in time"
                    }
                    std::sync::mpsc::RecvTimeoutError::Disconnected => "the recorder failed",
                };
                log::error!("recording {}: {why}", self.id);
                SessionRecording {
                    id: self.id.clone(),
                    bytes: 0,
                    stopped: Some(why.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tunnel::record::{Protocol, RecordingSettings};

    /// A server frame of one stdout message.
    fn stdout(data: &[u8]) -> Bytes {
        let mut frame = vec![0x82, 126];
        frame.extend_from_slice(&((data.len() + 1) as u16).to_be_bytes());
        frame.push(1);
        frame.extend_from_slice(data);
        Bytes::from(frame)
    }

    /// A WebSocket session's recorder, on its thread, writing `{dir}/1/{id}.cast`.
    fn started(dir: &std::path::Path, cap: u64, id: &str) -> (Background, Sender, Sender) {
        let settings = RecordingSettings {
            dir: dir.to_path_buf(),
            max_bytes: cap,
            stdin: false,
            postgres: None,
        };
        let mut recorder = Recorder::start(&settings, 1, id, "t").unwrap();
        recorder.protocol(Some(Protocol::Channels { base64: false }));
        Background::spawn(recorder).unwrap()
    }

    #[test]
    fn every_chunk_is_recorded_in_order_through_a_full_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (background, up, mut down) = started(dir.path(), 64 << 20, "queued");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // many more chunks than the queue holds: each waits for room, none is lost
        let messages = QUEUE * 20;
        runtime.block_on(async {
            for i in 0..messages {
                std::future::poll_fn(|cx| down.poll_ready(cx)).await;
                down.send(stdout(format!("line {i}\n").repeat(100).as_bytes()));
            }
        });
        drop((up, down));
        let recording = background.finish();
        assert!(recording.stopped.is_none(), "{recording:?}");
        let cast = std::fs::read_to_string(dir.path().join("1/queued.cast")).unwrap();
        assert_eq!(recording.bytes, cast.len() as u64);
        let text: String = cast
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[2].to_string())
            .map(|t| serde_json::from_str::<String>(&t).unwrap())
            .collect();
        let expected: String = (0..messages)
            .map(|i| format!("line {i}\n").repeat(100))
            .collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn past_the_cap_chunks_are_no_longer_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let (background, up, mut down) = started(dir.path(), 4096, "capped");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..QUEUE * 4 {
                std::future::poll_fn(|cx| down.poll_ready(cx)).await;
                down.send(stdout(&[b'x'; 1000]));
            }
        });
        // the recorder has said it takes no more: no room is waited for
        for _ in 0..1000 {
            if down.done.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..QUEUE * 2 {
            assert!(down.poll_ready(&mut cx).is_ready());
            down.send(stdout(&[b'x'; 1000]));
        }
        drop((up, down));
        let recording = background.finish();
        assert!(recording.stopped.unwrap().contains("recording_max_bytes"));
        assert!(recording.bytes <= 4096 + 200);
    }
}
