//! exec, attach and port-forward in the API server stand-in, over WebSocket as
//! kube-apiserver v1.32 speaks them to kubectl v1.32.
//!
//! - `pods/exec` and `pods/attach`: the channel protocol, `v5.channel.k8s.io` or
//!   `v4.channel.k8s.io` (the client's first choice wins). Every binary message starts
//!   with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the error channel (a `metav1.Status`
//!   as JSON when the command ends), 4 resize; v5 adds 255, on which the client says it
//!   closed one of its channels (`[255, 0]`: no more stdin). No process is started: the
//!   stand-in runs a few commands itself ([`Command`]): `echo ARGS`, `cat` (stdin back on
//!   stdout until stdin closes), `head -c N /dev/zero`, `sh -c 'exit N'`, `false`; anything
//!   else fails as a missing executable does. Attaching runs a `cat` that first prints
//!   `attached to {pod}/{container}`.
//! - `pods/portforward`: the `SPDY/3.1+portforward.k8s.io` subprotocol, SPDY/3.1 frames
//!   carried in binary WebSocket messages, as kubectl 1.31+ sends them. Each forwarded
//!   connection is two SPDY streams with the headers `streamType` (`data` or `error`),
//!   `port` and `requestID`; the stand-in replies to both and joins the data stream to a
//!   TCP connection to `127.0.0.1:{port}` (the "pod's port": tests start a server there).
//!   SPDY frames handled: SYN_STREAM, SYN_REPLY (sent), DATA, RST_STREAM, PING (answered),
//!   GOAWAY, SETTINGS and WINDOW_UPDATE (ignored; a WINDOW_UPDATE is sent for what was
//!   received, as a SPDY server owes it). Header blocks are zlib with the SPDY/3
//!   dictionary, one compression context per direction, as the SPDY/3 draft says.
//!
//! - The same over a plain SPDY/3.1 upgrade (kubectl before 1.30/1.31, or
//!   `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` / `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`):
//!   the protocol is negotiated with `X-Stream-Protocol-Version` (`v4.channel.k8s.io`,
//!   `portforward.k8s.io`) and the SPDY frames follow the 101 directly. exec and attach
//!   then use one SPDY stream per `streamType` (error, stdin, stdout, stderr, resize)
//!   instead of channels. (actix-http hands a handler the bytes after a SPDY upgrade only
//!   with kubegate's patch, `vendor/actix-http/KUBEGATE-PATCH.md`, which the stand-in,
//!   built in the same workspace, gets too.)
//!
//! What is not faithful: there is no TTY (resize messages are read and ignored), no
//! kubelet and no container runtime.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a stream request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamKind {
    Exec,
    Attach,
    PortForward,
}

impl StreamKind {
    pub(super) fn of(subresource: &str) -> Option<StreamKind> {
        match subresource {
            "exec" => Some(StreamKind::Exec),
            "attach" => Some(StreamKind::Attach),
            "portforward" => Some(StreamKind::PortForward),
            _ => None,
        }
    }
}

const CHANNEL_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

fn status(code: u16, reason: &str, message: &str) -> HttpResponse {
    super::status_response(code, reason, message, None)
}

/// Answers an upgrade request for `kind` on the pod `namespace/pod`.
pub(super) fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    kind: StreamKind,
    namespace: &str,
    pod: &str,
    container: &str,
) -> HttpResponse {
    let header_value = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let query = super::query_pairs(req.query_string());
    let command = || match kind {
        StreamKind::Attach => Command::Attach(format!("{pod}/{container}")),
        _ => Command::parse(
            &query
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>(),
        ),
    };
    let flag = |name: &str| query.iter().any(|(k, v)| k == name && v == "true");
    if header_value("upgrade").eq_ignore_ascii_case("SPDY/3.1") {
        // the protocol is negotiated with X-Stream-Protocol-Version (httpstream.Handshake)
        let offered: Vec<String> = req
            .headers()
            .get_all("x-stream-protocol-version")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .collect();
        let wanted = match kind {
            StreamKind::PortForward => "portforward.k8s.io",
            _ => "v4.channel.k8s.io",
        };
        if !offered.iter().any(|p| p == wanted) {
            return status(
                403,
                "Forbidden",
                &format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{wanted}]"),
            );
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let out = Out { tx, raw: true };
        match kind {
            StreamKind::PortForward => {
                actix_rt::spawn(port_forward(format!("{namespace}/{pod}"), payload, out));
            }
            _ => {
                let wants = Wants {
                    stdin: flag("stdin"),
                    stdout: flag("stdout"),
                    stderr: flag("stderr"),
                    tty: flag("tty"),
                };
                actix_rt::spawn(run_command_spdy(command(), wants, payload, out));
            }
        }
        let body = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|m| m.map(Ok::<_, std::io::Error>))
        });
        let mut response = HttpResponse::SwitchingProtocols()
            .insert_header((header::UPGRADE, "SPDY/3.1"))
            .insert_header(("X-Stream-Protocol-Version", wanted))
            .streaming(body);
        response
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Upgrade);
        return response;
    }
    if !header_value("upgrade").eq_ignore_ascii_case("websocket") {
        return status(
            400,
            "BadRequest",
            "the stand-in speaks exec, attach and port-forward over WebSocket and SPDY/3.1 only",
        );
    }
    let key = header_value("sec-websocket-key");
    if key.is_empty() || header_value("sec-websocket-version") != "13" {
        return status(
            400,
            "BadRequest",
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        );
    }
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let supported: &[&str] = match kind {
        StreamKind::Exec | StreamKind::Attach => &CHANNEL_PROTOCOLS,
        StreamKind::PortForward => &[PORT_FORWARD_PROTOCOL],
    };
    let Some(protocol) = offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
    else {
        return status(
            400,
            "BadRequest",
            &format!("none of the subprotocols {offered:?} is supported; supported: {supported:?}"),
        );
    };
    let accept = actix_http::ws::hash_key(key.as_bytes());
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    match kind {
        StreamKind::Exec | StreamKind::Attach => {
            let v5 = protocol == "v5.channel.k8s.io";
            actix_rt::spawn(run_command(command(), flag("stdin"), v5, payload, tx));
        }
        StreamKind::PortForward => {
            let name = format!("{namespace}/{pod}");
            actix_rt::spawn(port_forward(name, payload, Out { tx, raw: false }));
        }
    }
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|m| m.map(Ok::<_, std::io::Error>))
    });
    let mut response = HttpResponse::SwitchingProtocols()
        .insert_header((header::UPGRADE, "websocket"))
        .insert_header((
            "Sec-WebSocket-Accept",
            std::str::from_utf8(&accept).unwrap_or_default().to_string(),
        ))
        .insert_header(("Sec-WebSocket-Protocol", protocol))
        .streaming(body);
    // `Connection: upgrade`, not `close, upgrade` (Go drops a Connection header with close)
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Upgrade);
    response
}

// ---------------------------------------------------------------------------------------
// WebSocket framing (RFC 6455), the server's side
// ---------------------------------------------------------------------------------------

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// A frame the server sends (unmasked).
fn ws_frame(opcode: u8, payload: &[u8]) -> Bytes {
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
enum WsMessage {
    Data(Bytes),
    Close,
}

/// Reads the client's frames (masked, maybe fragmented) from the request payload.
struct WsInput {
    payload: web::Payload,
    buf: BytesMut,
    fragments: Option<BytesMut>,
    tx: mpsc::Sender<Bytes>,
    /// No WebSocket framing (a SPDY/3.1 upgrade): every chunk of the payload is data.
    raw: bool,
}

impl WsInput {
    /// Reads `payload`, answering pings on `tx`; `raw` after a SPDY/3.1 upgrade.
    fn new(payload: web::Payload, tx: mpsc::Sender<Bytes>, raw: bool) -> WsInput {
        WsInput {
            payload,
            buf: BytesMut::new(),
            fragments: None,
            tx,
            raw,
        }
    }

    /// The next data message, or `Close` when the client closed (or went away).
    async fn next(&mut self) -> WsMessage {
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

// ---------------------------------------------------------------------------------------
// exec and attach
// ---------------------------------------------------------------------------------------

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE_CHANNEL: u8 = 255;

/// The commands the stand-in runs itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// `echo ARGS`: the arguments and a newline on stdout.
    Echo(String),
    /// `cat`: stdin back on stdout until stdin closes.
    Cat,
    /// `head -c N /dev/zero`: N zero bytes on stdout.
    Zeros(u64),
    /// `sh -c 'exit N'`, `false`: nothing, then exit code N.
    Exit(u32),
    /// `sh -c 'echo TEXT >&2; exit N'`: TEXT on stderr, exit code N.
    Stderr(String, u32),
    /// Attaching to the container: a greeting, then `cat`.
    Attach(String),
    /// Anything else: not found.
    Missing(String),
}

impl Command {
    pub(super) fn parse(argv: &[String]) -> Command {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["echo", rest @ ..] => Command::Echo(rest.join(" ")),
            ["cat"] => Command::Cat,
            ["false"] => Command::Exit(1),
            ["true"] => Command::Exit(0),
            ["head", "-c", n, "/dev/zero"] => match n.parse() {
                Ok(n) => Command::Zeros(n),
                Err(_) => Command::Missing(argv.join(" ")),
            },
            ["sh", "-c", script] => {
                let script = script.trim();
                if let Some(code) = script
                    .strip_prefix("exit ")
                    .and_then(|c| c.trim().parse().ok())
                {
                    return Command::Exit(code);
                }
                // echo TEXT >&2; exit N
                if let Some((echo, exit)) = script.split_once(';') {
                    if let (Some(text), Some(code)) = (
                        echo.trim()
                            .strip_prefix("echo ")
                            .and_then(|t| t.strip_suffix(">&2")),
                        exit.trim()
                            .strip_prefix("exit ")
                            .and_then(|c| c.trim().parse().ok()),
                    ) {
                        return Command::Stderr(text.trim().to_string(), code);
                    }
                }
                Command::Missing(argv.join(" "))
            }
            _ => Command::Missing(argv.first().cloned().unwrap_or_default()),
        }
    }

    /// Runs the command up to its stdin: what it prints goes to `write(STDOUT or STDERR,
    /// bytes)`, which says `false` once the client is gone. Returns its exit, or `None`
    /// for `cat` and attaching, which go on with stdin.
    async fn print<F, Fut>(&self, write: F) -> Option<Result<u32, String>>
    where
        F: Fn(u8, Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        Some(match self {
            Command::Echo(text) => {
                write(STDOUT, format!("{text}\n").into_bytes()).await;
                Ok(0)
            }
            Command::Zeros(n) => {
                let block = vec![0u8; 32 * 1024];
                let mut n = *n;
                while n > 0 {
                    let take = n.min(block.len() as u64) as usize;
                    if !write(STDOUT, block[..take].to_vec()).await {
                        break;
                    }
                    n -= take as u64;
                }
                Ok(0)
            }
            Command::Exit(code) => Ok(*code),
            Command::Stderr(text, code) => {
                write(STDERR, format!("{text}\n").into_bytes()).await;
                Ok(*code)
            }
            Command::Attach(target) => {
                write(STDOUT, format!("attached to {target}\n").into_bytes()).await;
                return None;
            }
            Command::Cat => return None,
            Command::Missing(name) => Err(name.clone()),
        })
    }
}

fn channel_message(channel: u8, data: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    ws_frame(OP_BINARY, &message)
}

/// Runs `command`, then sends its `Status` on the error channel and closes.
async fn run_command(
    command: Command,
    stdin: bool,
    v5: bool,
    payload: web::Payload,
    tx: mpsc::Sender<Bytes>,
) {
    let mut input = WsInput::new(payload, tx.clone(), false);
    let send = |channel: u8, data: Vec<u8>| {
        let tx = tx.clone();
        async move { tx.send(channel_message(channel, &data)).await.is_ok() }
    };
    let argv = format!("{command:?}");
    let exit: Result<u32, String> = match command.print(send).await {
        Some(exit) => exit,
        None => {
            if stdin {
                loop {
                    match input.next().await {
                        WsMessage::Data(message) if !message.is_empty() => {
                            match message[0] {
                                STDIN if !send(STDOUT, message[1..].to_vec()).await => break,
                                CLOSE_CHANNEL if v5 && message.get(1) == Some(&STDIN) => break,
                                // resize (4) and anything else: no TTY here
                                _ => {}
                            }
                        }
                        WsMessage::Data(_) => {}
                        WsMessage::Close => break,
                    }
                }
            }
            Ok(0)
        }
    };
    let status = exit_status(&argv, exit);
    send(ERROR, status.to_string().into_bytes()).await;
    let _ = tx.send(ws_frame(OP_CLOSE, &1000u16.to_be_bytes())).await;
    // dropping the last sender ends the response: the connection closes
}

/// The streams a SPDY exec asks for (its query).
#[derive(Debug, Clone, Copy)]
struct Wants {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// The status of a finished command, as the error channel or stream carries it.
fn exit_status(argv: &str, exit: Result<u32, String>) -> serde_json::Value {
    match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {argv}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
        Err(name) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: failed to exec in container: OCI runtime exec failed: exec failed: unable to start container process: exec: \"{name}\": executable file not found in $PATH: unknown"),
            "reason": "InternalError",
            "code": 500
        }),
    }
}

/// exec and attach over a SPDY/3.1 upgrade (`v4.channel.k8s.io`): the client opens one
/// SPDY stream per `streamType` (error, stdin, stdout, stderr, resize); once all it asked
/// for are there, the command runs; its Status goes on the error stream, then every
/// stream is finished and the client closes the connection.
async fn run_command_spdy(command: Command, wants: Wants, payload: web::Payload, out: Out) {
    let mut input = WsInput::new(payload, out.tx.clone(), true);
    let mut spdy = Spdy::new();
    let mut buf = BytesMut::new();
    let mut streams: HashMap<String, u32> = HashMap::new();
    let mut expected = vec!["error"];
    for (wanted, name) in [
        (wants.stdin, "stdin"),
        (wants.stdout, "stdout"),
        (wants.stderr, "stderr"),
        (wants.tty, "resize"),
    ] {
        if wanted {
            expected.push(name);
        }
    }
    let mut pending: Vec<SpdyFrame> = Vec::new();
    // the streams, within 10 s as the kubelet allows
    let opened = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !expected.iter().all(|e| streams.contains_key(*e)) {
            match input.next().await {
                WsMessage::Data(chunk) => buf.extend_from_slice(&chunk),
                WsMessage::Close => return false,
            }
            while let Some(frame) = Spdy::frame(&mut buf) {
                match frame {
                    SpdyFrame::Control {
                        kind: SYN_STREAM,
                        data,
                        ..
                    } if data.len() >= 10 => {
                        let Ok((id, headers)) = spdy.open(&out, &data).await else {
                            return false;
                        };
                        if let Some(kind) = headers.get("streamtype") {
                            streams.insert(kind.clone(), id);
                        }
                    }
                    SpdyFrame::Control {
                        kind: PING, data, ..
                    } => {
                        send_spdy(&out, Spdy::control(PING, 0, &data)).await;
                    }
                    other => pending.push(other),
                }
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if !opened {
        return;
    }
    let id = |name: &str| streams.get(name).copied();
    let write = |name: &'static str, data: Vec<u8>| {
        let out = out.clone();
        let stream = id(name);
        async move {
            match stream {
                Some(stream) => send_spdy(&out, Spdy::data(stream, 0, &data)).await,
                None => true,
            }
        }
    };
    let argv = format!("{command:?}");
    let printed = command
        .print(|channel, data| {
            write(
                if channel == STDERR {
                    "stderr"
                } else {
                    "stdout"
                },
                data,
            )
        })
        .await;
    let exit: Result<u32, String> = match printed {
        Some(exit) => exit,
        None => {
            if let Some(stdin) = id("stdin") {
                'stdin: loop {
                    for frame in std::mem::take(&mut pending)
                        .into_iter()
                        .chain(std::iter::from_fn(|| Spdy::frame(&mut buf)))
                    {
                        match frame {
                            SpdyFrame::Data {
                                stream,
                                flags,
                                data,
                            } if stream == stdin => {
                                if !data.is_empty() && !write("stdout", data.to_vec()).await {
                                    break 'stdin;
                                }
                                if flags & FLAG_FIN != 0 {
                                    break 'stdin;
                                }
                            }
                            SpdyFrame::Control {
                                kind: RST_STREAM | GOAWAY,
                                ..
                            } => break 'stdin,
                            SpdyFrame::Control {
                                kind: PING, data, ..
                            } => {
                                send_spdy(&out, Spdy::control(PING, 0, &data)).await;
                            }
                            _ => {}
                        }
                    }
                    match input.next().await {
                        WsMessage::Data(chunk) => buf.extend_from_slice(&chunk),
                        WsMessage::Close => break,
                    }
                }
            }
            Ok(0)
        }
    };
    write("error", exit_status(&argv, exit).to_string().into_bytes()).await;
    for name in ["error", "stdout", "stderr", "stdin", "resize"] {
        if let Some(stream) = id(name) {
            send_spdy(&out, Spdy::data(stream, FLAG_FIN, &[])).await;
        }
    }
    // the client closes the connection once it has read its streams to the end
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let WsMessage::Data(_) = input.next().await {}
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// port-forward: SPDY/3.1 in WebSocket messages
// ---------------------------------------------------------------------------------------

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1):
/// length-prefixed header names and values, then common value fragments.
pub(super) fn spdy_dictionary() -> Vec<u8> {
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
    assert_eq!(
        dictionary.len(),
        1423,
        "the SPDY/3 dictionary is 1423 bytes"
    );
    dictionary
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 1;

/// One SPDY frame.
#[derive(Debug)]
enum SpdyFrame {
    Control { kind: u16, flags: u8, data: Bytes },
    Data { stream: u32, flags: u8, data: Bytes },
}

/// SPDY framing and the two header compression contexts of one connection.
struct Spdy {
    inflate: flate2::Decompress,
    deflate: flate2::Compress,
    dictionary: Vec<u8>,
}

impl Spdy {
    fn new() -> Spdy {
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
    fn frame(buf: &mut BytesMut) -> Option<SpdyFrame> {
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

    fn control(kind: u16, flags: u8, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + data.len());
        out.put_u16(0x8003);
        out.put_u16(kind);
        out.put_u8(flags);
        out.put_uint(data.len() as u64, 3);
        out.extend_from_slice(data);
        out.freeze()
    }

    fn data(stream: u32, flags: u8, data: &[u8]) -> Bytes {
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
    async fn open(
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
fn stream_id(data: &[u8]) -> u32 {
    u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff
}

/// Where SPDY frames go: in binary WebSocket messages, or as they are (a SPDY upgrade).
#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<Bytes>,
    raw: bool,
}

/// Sends SPDY bytes, as one binary WebSocket message unless `raw`.
async fn send_spdy(out: &Out, spdy: Bytes) -> bool {
    let message = if out.raw {
        spdy
    } else {
        ws_frame(OP_BINARY, &spdy)
    };
    out.tx.send(message).await.is_ok()
}

/// One forwarded connection: the error stream and the data stream of a `requestID`.
#[derive(Default)]
struct Forward {
    error_stream: Option<u32>,
    data_stream: Option<u32>,
    port: u16,
}

/// The port-forward session: SPDY, over the WebSocket or (a SPDY upgrade) as it is.
async fn port_forward(pod: String, payload: web::Payload, out: Out) {
    let mut input = WsInput::new(payload, out.tx.clone(), out.raw);
    let mut spdy = Spdy::new();
    let mut buf = BytesMut::new();
    let mut forwards: HashMap<String, Forward> = HashMap::new();
    let mut writers: HashMap<u32, tokio::net::tcp::OwnedWriteHalf> = HashMap::new();
    'session: loop {
        let message = match input.next().await {
            WsMessage::Data(m) => m,
            WsMessage::Close => break,
        };
        buf.extend_from_slice(&message);
        while let Some(frame) = Spdy::frame(&mut buf) {
            match frame {
                SpdyFrame::Control {
                    kind: SYN_STREAM,
                    data,
                    ..
                } if data.len() >= 10 => {
                    let (stream, headers) = match spdy.open(&out, &data).await {
                        Ok(opened) => opened,
                        Err(why) => {
                            if let Some(e) = why {
                                log::error!("port-forward {pod}: {e}");
                            }
                            break 'session;
                        }
                    };
                    let request = headers.get("requestid").cloned().unwrap_or_default();
                    let port: u16 = headers
                        .get("port")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    let forward = forwards.entry(request).or_default();
                    forward.port = port;
                    match headers.get("streamtype").map(String::as_str) {
                        Some("error") => forward.error_stream = Some(stream),
                        Some("data") => forward.data_stream = Some(stream),
                        _ => {}
                    }
                    if let (Some(error_stream), Some(data_stream)) =
                        (forward.error_stream, forward.data_stream)
                    {
                        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                            Ok(conn) => {
                                let (reader, writer) = conn.into_split();
                                writers.insert(data_stream, writer);
                                actix_rt::spawn(pump(
                                    reader,
                                    data_stream,
                                    error_stream,
                                    out.clone(),
                                ));
                            }
                            Err(e) => {
                                let text = format!("error forwarding port {port} to pod {pod}, uid : failed to connect to localhost:{port} inside namespace: {e}");
                                let _ =
                                    send_spdy(&out, Spdy::data(error_stream, 0, text.as_bytes()))
                                        .await;
                                let _ =
                                    send_spdy(&out, Spdy::data(error_stream, FLAG_FIN, &[])).await;
                                let _ =
                                    send_spdy(&out, Spdy::data(data_stream, FLAG_FIN, &[])).await;
                            }
                        }
                    }
                }
                SpdyFrame::Control {
                    kind: PING, data, ..
                } => {
                    if !send_spdy(&out, Spdy::control(PING, 0, &data)).await {
                        break 'session;
                    }
                }
                SpdyFrame::Control {
                    kind: RST_STREAM,
                    data,
                    ..
                } if data.len() >= 4 => {
                    writers.remove(&stream_id(&data));
                }
                SpdyFrame::Control { kind: GOAWAY, .. } => break 'session,
                SpdyFrame::Control { .. } => {}
                SpdyFrame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(writer) = writers.get_mut(&stream) {
                        if !data.is_empty() {
                            if writer.write_all(&data).await.is_err() {
                                writers.remove(&stream);
                            } else {
                                let mut update = stream.to_be_bytes().to_vec();
                                update.extend_from_slice(&(data.len() as u32).to_be_bytes());
                                let _ =
                                    send_spdy(&out, Spdy::control(WINDOW_UPDATE, 0, &update)).await;
                            }
                        }
                        if flags & FLAG_FIN != 0 {
                            if let Some(mut writer) = writers.remove(&stream) {
                                let _ = writer.shutdown().await;
                            }
                        }
                    }
                }
            }
        }
    }
    if !out.raw {
        let _ = out
            .tx
            .send(ws_frame(OP_CLOSE, &1000u16.to_be_bytes()))
            .await;
    }
}

/// The pod's port to the client: DATA frames on the data stream, then FIN on both streams.
async fn pump(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    data_stream: u32,
    error_stream: u32,
    out: Out,
) {
    let mut block = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut block).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !send_spdy(&out, Spdy::data(data_stream, 0, &block[..n])).await {
                    return;
                }
            }
        }
    }
    let _ = send_spdy(&out, Spdy::data(data_stream, FLAG_FIN, &[])).await;
    let _ = send_spdy(&out, Spdy::data(error_stream, FLAG_FIN, &[])).await;
}
