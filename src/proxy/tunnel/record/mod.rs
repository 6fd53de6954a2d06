//! Recording exec and attach sessions as asciicast v2 files ([`cast`]).
//!
//! The tunnel hands the recorder every byte of the session, each direction as it passes
//! (to a thread of the session's own, [`background`]), and the recorder reads the
//! Kubernetes streams out of them: over WebSocket
//! ([`websocket`]: `v4`/`v5.channel.k8s.io` and the base64 variants) or SPDY/3.1
//! ([`spdy`]). Standard output and error become output events, terminal resizes `"r"`
//! events, and standard input `"i"` events only when `audit.record_stdin` is on (typed
//! secrets would be recorded). The bytes are copied on unchanged whatever the recorder
//! makes of them; when it cannot follow the stream any more it notes why and stops.
//!
//! A cluster says which sessions are recorded (`record_sessions`: `off`, `tty` for
//! sessions with a terminal, `all`). Port-forward is never recorded. Past
//! `audit.recording_max_bytes`, the recording stops with a marker and the session goes
//! on. The file is `{audit.recordings_dir}/{org}/{request id}.cast`, mode 0600, written
//! in pieces of at most [`FLUSH_BYTES`] as the session goes; the session's audit event
//! names it, and `GET /pipeline/api/v1/orgs/{org}/audit/sessions/{id}` serves it to the
//! org's admins.

pub mod background;
pub mod cast;
pub mod spdy;
pub mod websocket;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use kubegate_actors::auditor::SessionRecording;
use kubegate_actors::store::RecordSessions;

use cast::{Cast, Stream};
use websocket::Take;

/// The cast is written out once this much of it waits.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// Where recordings go and how large they may grow (`[audit]`).
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// `audit.recordings_dir`.
    pub dir: PathBuf,
    /// `audit.recording_max_bytes`.
    pub max_bytes: u64,
    /// `audit.record_stdin`.
    pub stdin: bool,
    /// With the PostgreSQL audit sink: recordings are kept there too, once a session
    /// ends, so that every replica serves them.
    pub postgres: Option<std::sync::Arc<kubegate_actors::store::PostgresRecordings>>,
}

/// The wire protocol of a session, as the API server's `101` named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A WebSocket channel protocol; `base64`: the text variants.
    Channels {
        /// Whether messages are base64 text.
        base64: bool,
    },
    /// SPDY/3.1 streams.
    Spdy,
}

impl Protocol {
    /// The protocol of an upgrade answered with `upgrade` and `subprotocol`
    /// (`Sec-WebSocket-Protocol`); `None` for one the recorder cannot read.
    pub fn of(upgrade: &str, subprotocol: Option<&str>) -> Option<Protocol> {
        if upgrade.trim().eq_ignore_ascii_case("websocket") {
            return match subprotocol.map(str::trim)? {
                "channel.k8s.io" | "v4.channel.k8s.io" | "v5.channel.k8s.io" => {
                    Some(Protocol::Channels { base64: false })
                }
                "base64.channel.k8s.io" | "v4.base64.channel.k8s.io" => {
                    Some(Protocol::Channels { base64: true })
                }
                _ => None,
            };
        }
        upgrade
            .trim()
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("SPDY/"))
            .then_some(Protocol::Spdy)
    }
}

/// Whether a session is recorded: an exec or attach (`subresource`) on a cluster whose
/// setting asks for it (`tty`: only with a terminal, `tty=true` in the query).
pub fn wanted(setting: RecordSessions, subresource: &str, query: &str) -> bool {
    if subresource != "exec" && subresource != "attach" {
        return false;
    }
    match setting {
        RecordSessions::Off => false,
        RecordSessions::All => true,
        RecordSessions::Tty => query
            .split('&')
            .any(|pair| matches!(pair, "tty=true" | "tty=1" | "tty=True" | "tty=TRUE")),
    }
}

/// The path of the recording `id` of `org` under `dir`; `None` for an id that is not a
/// request id (letters, digits and `-` only), so that no path can be smuggled in.
pub fn path_of(dir: &Path, org: u64, id: &str) -> Option<PathBuf> {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    plain.then(|| dir.join(org.to_string()).join(format!("{id}.cast")))
}

/// One session's recorder.
pub struct Recorder {
    started: Instant,
    cast: Cast,
    protocol: Option<Protocol>,
    stdin: bool,
    up: Parser,
    down: Parser,
    /// SPDY stream ids and their `streamType`, learnt from the client's frames.
    streams: HashMap<u32, String>,
    file: Option<std::fs::File>,
    path: PathBuf,
    org: u64,
    postgres: Option<std::sync::Arc<kubegate_actors::store::PostgresRecordings>>,
    id: String,
    stopped: Option<String>,
}

enum Parser {
    Channels(websocket::Frames),
    Spdy(spdy::Frames),
}

impl Parser {
    fn of(protocol: Protocol) -> Parser {
        match protocol {
            Protocol::Channels { .. } => Parser::Channels(Default::default()),
            Protocol::Spdy => Parser::Spdy(Default::default()),
        }
    }

    fn broken(&self) -> bool {
        match self {
            Parser::Channels(f) => f.broken,
            Parser::Spdy(f) => f.broken,
        }
    }
}

impl Recorder {
    /// Starts the recording `id` (the request id) of a session of `org`: creates its file,
    /// before the API server is asked (a session that cannot be recorded does not start).
    pub fn start(
        settings: &RecordingSettings,
        org: u64,
        id: &str,
        title: &str,
    ) -> std::io::Result<Recorder> {
        let path = path_of(&settings.dir, org, id)
            .ok_or_else(|| std::io::Error::other(format!("\"{id}\" is not a request id")))?;
        if let Some(parent) = path.parent() {
            kubegate_actors::fsutil::create_private_dir(parent)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        Ok(Recorder {
            started: Instant::now(),
            cast: Cast::new(settings.max_bytes, title),
            protocol: None,
            stdin: settings.stdin,
            up: Parser::Channels(Default::default()),
            down: Parser::Channels(Default::default()),
            streams: HashMap::new(),
            file: Some(file),
            path,
            org,
            postgres: settings.postgres.clone(),
            id: id.to_string(),
            stopped: None,
        })
    }

    /// The protocol the API server answered with; `None`: one the recorder cannot read,
    /// and the recording stops there, saying so.
    pub fn protocol(&mut self, protocol: Option<Protocol>) {
        match protocol {
            Some(p) => {
                self.protocol = Some(p);
                self.up = Parser::of(p);
                self.down = Parser::of(p);
            }
            None => {
                self.stopped = Some("the session's protocol cannot be read".into());
                let at = self.at();
                self.cast.marker(
                    at,
                    "recording stopped: the session's protocol cannot be read",
                );
            }
        }
    }

    fn at(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether there is nothing more to record: the cap was reached, or the stream could
    /// not be followed. The bytes are then not even parsed.
    fn done(&self) -> bool {
        self.stopped.is_some() || self.cast.is_cut()
    }

    /// Bytes the client sent, now.
    pub fn from_client(&mut self, bytes: &[u8]) {
        self.client(Instant::now(), bytes)
    }

    /// A chunk the client sent, passed at `when`: long runs of its text are written to
    /// the cast from it, not copied.
    pub fn from_client_at(&mut self, when: Instant, chunk: &Bytes) {
        self.sharing(chunk, |r| r.client(when, chunk));
    }

    /// A chunk the API server sent, passed at `when`: long runs of its text are written
    /// to the cast from it, not copied.
    pub fn from_server_at(&mut self, when: Instant, chunk: &Bytes) {
        self.sharing(chunk, |r| r.server(when, chunk));
    }

    /// `record`s `chunk` with the cast sharing its runs ([`Cast::share_from`]).
    fn sharing(&mut self, chunk: &Bytes, record: impl FnOnce(&mut Self)) {
        self.cast.share_from(Some(chunk.clone()));
        record(self);
        self.cast.share_from(None);
    }

    fn client(&mut self, when: Instant, bytes: &[u8]) {
        if self.done() {
            return;
        }
        let at = when.saturating_duration_since(self.started);
        let (cast, stdin, streams) = (&mut self.cast, self.stdin, &mut self.streams);
        match (&mut self.up, self.protocol) {
            (Parser::Channels(frames), Some(Protocol::Channels { base64 })) => {
                // stdin, the bulk of what a client sends, is passed over unless recorded;
                // a resize is read whole (its JSON), as is anything in base64
                let pieces = if base64 { Take::Whole } else { Take::Pieces };
                let take = |first| match websocket::channel_of(first, base64) {
                    Some(websocket::RESIZE) => Take::Whole,
                    Some(websocket::STDIN) if stdin => pieces,
                    _ => Take::Skip,
                };
                frames.push(bytes, take, |first, rest| {
                    let channel = websocket::channel_of(first, base64);
                    match (channel, websocket::channel_data(rest, base64)) {
                        (Some(websocket::STDIN), Some(data)) => cast.data(at, Stream::Stdin, &data),
                        (Some(websocket::RESIZE), Some(data)) => resize(cast, at, &data),
                        _ => {}
                    }
                })
            }
            (Parser::Spdy(frames), Some(Protocol::Spdy)) => {
                frames.push(bytes, |event| match event {
                    spdy::Event::Stream(id, kind) => {
                        streams.insert(id, kind);
                    }
                    spdy::Event::Data(id, data) => match streams.get(&id).map(String::as_str) {
                        Some("stdin") if stdin => cast.data(at, Stream::Stdin, data),
                        Some("resize") => resize(cast, at, data),
                        _ => {}
                    },
                })
            }
            _ => {}
        }
        self.after();
    }

    /// Bytes the API server sent, now.
    pub fn from_server(&mut self, bytes: &[u8]) {
        self.server(Instant::now(), bytes)
    }

    fn server(&mut self, when: Instant, bytes: &[u8]) {
        if self.done() {
            return;
        }
        let at = when.saturating_duration_since(self.started);
        let (cast, streams) = (&mut self.cast, &self.streams);
        match (&mut self.down, self.protocol) {
            (Parser::Channels(frames), Some(Protocol::Channels { base64 })) => {
                let pieces = if base64 { Take::Whole } else { Take::Pieces };
                let take = |first| match websocket::channel_of(first, base64) {
                    Some(websocket::STDOUT | websocket::STDERR) => pieces,
                    _ => Take::Skip,
                };
                frames.push(bytes, take, |first, rest| {
                    let stream = match websocket::channel_of(first, base64) {
                        Some(websocket::STDOUT) => Stream::Stdout,
                        _ => Stream::Stderr,
                    };
                    if let Some(data) = websocket::channel_data(rest, base64) {
                        cast.data(at, stream, &data);
                    }
                })
            }
            (Parser::Spdy(frames), Some(Protocol::Spdy)) => frames.push(bytes, |event| {
                if let spdy::Event::Data(id, data) = event {
                    match streams.get(&id).map(String::as_str) {
                        Some("stdout") => cast.data(at, Stream::Stdout, data),
                        Some("stderr") => cast.data(at, Stream::Stderr, data),
                        _ => {}
                    }
                }
            }),
            _ => {}
        }
        self.after();
    }

    fn after(&mut self) {
        if self.stopped.is_none() && (self.up.broken() || self.down.broken()) {
            self.stopped = Some("the stream could not be followed".into());
            let at = self.at();
            self.cast
                .marker(at, "recording stopped: the stream could not be followed");
        }
        if self.cast.waiting() >= FLUSH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.cast.waiting() == 0 {
            return;
        }
        let written = match &mut self.file {
            Some(file) => self.cast.write_to(file),
            // the file failed before: the lines go nowhere
            None => self.cast.write_to(&mut std::io::sink()),
        };
        if let Err(e) = written {
            log::error!("recording {} could not be written: {e}", self.id);
            self.stopped = Some(format!("the recording could not be written: {e}"));
            self.file = None;
        }
    }

    /// Ends the recording: what is left is written, and the audit event's record of it
    /// returned. With the PostgreSQL sink, the cast is then copied there (on the actix
    /// runtime this is called on).
    pub fn finish(self) -> SessionRecording {
        let (recording, keep) = self.finish_keeping();
        if let Some(keep) = keep {
            keep.spawn();
        }
        recording
    }

    /// [`Recorder::finish`], on any thread: the copy to PostgreSQL is returned, to be
    /// started on the runtime.
    pub fn finish_keeping(mut self) -> (SessionRecording, Option<Keep>) {
        let at = self.at();
        self.cast.finish(at);
        self.flush();
        if self.cast.is_cut() && self.stopped.is_none() {
            self.stopped = Some("stopped at audit.recording_max_bytes".into());
        }
        self.file = None;
        let keep = self.postgres.take().map(|postgres| Keep {
            postgres,
            path: self.path.clone(),
            org: self.org,
            id: self.id.clone(),
        });
        let recording = SessionRecording {
            id: self.id.clone(),
            bytes: self.cast.size(),
            stopped: self.stopped.take(),
        };
        (recording, keep)
    }
}

/// A finished recording still to be copied into PostgreSQL (`[audit] sink = "postgres"`),
/// so that every replica serves it.
pub struct Keep {
    postgres: std::sync::Arc<kubegate_actors::store::PostgresRecordings>,
    path: PathBuf,
    org: u64,
    id: String,
}

impl Keep {
    /// Reads the cast back from its file and saves it, in a task of the actix runtime
    /// this is called on.
    pub fn spawn(self) {
        let Keep {
            postgres,
            path,
            org,
            id,
        } = self;
        actix_rt::spawn(async move {
            let cast = match actix_web::web::block(move || std::fs::read(path)).await {
                Ok(Ok(cast)) => cast,
                Ok(Err(e)) => return log::error!("recording {id} not read back: {e}"),
                Err(e) => return log::error!("recording {id} not read back: {e}"),
            };
            if let Err(e) = postgres.save(org, &id, &cast).await {
                log::error!("{e}; it stays in its file on this replica");
            }
        });
    }
}

/// Removes the recordings under `dir` last written more than `older_than` ago
/// (`audit.recording_retention`); returns how many went. Each removal is logged.
pub fn sweep(dir: &Path, older_than: Duration) -> usize {
    let Ok(orgs) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for org in orgs.map_while(Result::ok) {
        let Ok(files) = std::fs::read_dir(org.path()) else {
            continue;
        };
        for file in files.map_while(Result::ok) {
            let path = file.path();
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > older_than);
            if old && path.extension().is_some_and(|e| e == "cast") {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        removed += 1;
                        log::info!(
                            "recording {} removed: older than audit.recording_retention",
                            path.display()
                        );
                    }
                    Err(e) => log::warn!("recording {} not removed: {e}", path.display()),
                }
            }
        }
    }
    removed
}

/// A resize message: `{"Width":W,"Height":H}`, one or several (SPDY sends them one after
/// another on its stream).
fn resize(cast: &mut Cast, at: Duration, data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    for size in serde_json::Deserializer::from_slice(data)
        .into_iter::<Size>()
        .map_while(Result::ok)
    {
        cast.resize(at, size.width, size.height);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_recordings_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RecordingSettings {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            stdin: false,
            postgres: None,
        };
        let r = Recorder::start(&settings, 3, "req-1", "t").unwrap();
        let kept = r.finish();
        assert_eq!(kept.id, "req-1");
        assert!(dir.path().join("3/req-1.cast").exists());
        // a second recording with the same id is refused, not overwritten
        assert!(Recorder::start(&settings, 3, "req-1", "t").is_err());
        assert_eq!(sweep(dir.path(), Duration::from_secs(3600)), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(sweep(dir.path(), Duration::from_millis(10)), 1);
        assert!(!dir.path().join("3/req-1.cast").exists());
    }

    /// A client frame (masked) of a channel message.
    fn client_frame(channel: u8, data: &[u8]) -> Vec<u8> {
        let mut payload = vec![channel];
        payload.extend_from_slice(data);
        let mut frame = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(&payload);
        frame
    }

    fn cast_of(dir: &Path, id: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join(format!("1/{id}.cast")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn stdin_is_recorded_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        for (stdin, id) in [(false, "no-stdin"), (true, "with-stdin")] {
            let settings = RecordingSettings {
                dir: dir.path().to_path_buf(),
                max_bytes: 1 << 20,
                stdin,
                postgres: None,
            };
            let mut r = Recorder::start(&settings, 1, id, "t").unwrap();
            r.protocol(Some(Protocol::Channels { base64: false }));
            r.from_client(&client_frame(websocket::STDIN, b"s3cret\n"));
            r.from_client(&client_frame(
                websocket::RESIZE,
                br#"{"Width":120,"Height":40}"#,
            ));
            r.from_server(&[0x82, 4, websocket::STDOUT, b'o', b'k', b'\n']);
            let recording = r.finish();
            assert!(recording.stopped.is_none());
            let events = cast_of(dir.path(), id);
            let codes: Vec<&str> = events[1..].iter().map(|e| e[1].as_str().unwrap()).collect();
            if stdin {
                assert_eq!(codes, ["i", "r", "o"]);
                assert_eq!(events[1][2], "s3cret\n");
            } else {
                assert_eq!(codes, ["r", "o"]);
            }
            assert_eq!(events[codes.len()][2], "ok\n");
        }
    }

    #[test]
    fn which_sessions_and_protocols() {
        assert!(wanted(RecordSessions::All, "exec", "command=ls"));
        assert!(wanted(RecordSessions::All, "attach", ""));
        assert!(!wanted(RecordSessions::All, "portforward", ""));
        assert!(!wanted(RecordSessions::Off, "exec", "tty=true"));
        assert!(wanted(
            RecordSessions::Tty,
            "exec",
            "command=sh&tty=true&stdin=true"
        ));
        assert!(!wanted(RecordSessions::Tty, "exec", "command=ls"));
        assert_eq!(
            Protocol::of("websocket", Some("v5.channel.k8s.io")),
            Some(Protocol::Channels { base64: false })
        );
        assert_eq!(
            Protocol::of("websocket", Some("v4.base64.channel.k8s.io")),
            Some(Protocol::Channels { base64: true })
        );
        assert_eq!(Protocol::of("SPDY/3.1", None), Some(Protocol::Spdy));
        assert_eq!(Protocol::of("websocket", Some("portforward.k8s.io")), None);
        assert!(path_of(Path::new("/r"), 1, "../x").is_none());
        assert_eq!(
            path_of(Path::new("/r"), 1, "ab-12").unwrap(),
            Path::new("/r/1/ab-12.cast")
        );
    }
}
