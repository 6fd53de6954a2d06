//! exec, attach and port-forward in the API server stand-in, over WebSocket as
//! kube-apiserver v1.32 speaks them to kubectl v1.32.
//!
//! This module answers the upgrade and negotiates the protocol; the sessions live in
//! `exec` (`pods/exec` and `pods/attach`: the channel protocol `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`, the client's first choice winning), `port_forward`
//! (`pods/portforward`: `SPDY/3.1+portforward.k8s.io`), `websocket` (the framing) and
//! `spdy` (SPDY/3.1 framing).
//!
//! The same over a plain SPDY/3.1 upgrade (kubectl before 1.30/1.31, or
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` / `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`):
//! the protocol is negotiated with `X-Stream-Protocol-Version` (`v4.channel.k8s.io`,
//! `portforward.k8s.io`) and the SPDY frames follow the 101 directly. exec and attach
//! then use one SPDY stream per `streamType` (error, stdin, stdout, stderr, resize)
//! instead of channels. (actix-http hands a handler the bytes after a SPDY upgrade only
//! with kubegate's patch, `vendor/actix-http/KUBEGATE-PATCH.md`, which the stand-in,
//! built in the same workspace, gets too.)
//!
//! What is not faithful: there is no TTY (resize messages are read and ignored), no
//! kubelet and no container runtime.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::exec::{run_command, run_command_spdy, Command, Wants};
use super::media_types::query_pairs;
use super::port_forward::port_forward;
use super::responses::status_response;
use super::spdy::Out;

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
    status_response(code, reason, message, None)
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
    let query = query_pairs(req.query_string());
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
