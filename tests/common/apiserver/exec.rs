//! exec and attach in the API server stand-in, as kube-apiserver v1.32 speaks them to
//! kubectl v1.32:
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
//!
//! Over a SPDY/3.1 upgrade (`v4.channel.k8s.io`) the same commands run with one SPDY stream
//! per `streamType` instead of channels ([`run_command_spdy`]).
//!
//! What is not faithful: there is no TTY (resize messages are read and ignored), no
//! kubelet and no container runtime.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web;
use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::sync::mpsc;

use super::spdy::{
    send_spdy, Out, Spdy, SpdyFrame, FLAG_FIN, GOAWAY, PING, RST_STREAM, SYN_STREAM,
};
use super::websocket::{ws_frame, WsInput, WsMessage, OP_BINARY, OP_CLOSE};

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
    /// `sh -c 'sleep S; echo TEXT'`: TEXT on stdout after S seconds (a session that
    /// lasts long enough for a terminal's first resize).
    SleepEcho(Duration, String),
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
                // sleep S; echo TEXT
                if let Some((sleep, echo)) = script.split_once(';') {
                    if let (Some(secs), Some(text)) = (
                        sleep
                            .trim()
                            .strip_prefix("sleep ")
                            .and_then(|s| s.trim().parse::<f64>().ok()),
                        echo.trim().strip_prefix("echo "),
                    ) {
                        return Command::SleepEcho(Duration::from_secs_f64(secs), text.to_string());
                    }
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
            Command::SleepEcho(pause, text) => {
                tokio::time::sleep(*pause).await;
                write(STDOUT, format!("{text}\n").into_bytes()).await;
                Ok(0)
            }
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
pub(super) async fn run_command(
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
pub(super) struct Wants {
    pub(super) stdin: bool,
    pub(super) stdout: bool,
    pub(super) stderr: bool,
    pub(super) tty: bool,
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
pub(super) async fn run_command_spdy(
    command: Command,
    wants: Wants,
    payload: web::Payload,
    out: Out,
) {
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
