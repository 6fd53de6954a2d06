//! The upgrade path: `kubectl exec`, `attach`, `port-forward` and every other request
//! that asks for `Connection: Upgrade`, joined to the cluster's API server as one
//! two-way byte stream.
//!
//! The request has been admitted already (path, authentication, authorization as the
//! verb `connect`, cluster lookup: [`crate::proxy`]). Here:
//!
//! 1. a new connection to the API server, through the same SSRF guard and connect timeout
//!    as every other request, and over TLS with the cluster's [`ClusterProxy`] settings
//!    (ALPN `http/1.1`: upgrades do not exist in HTTP/2);
//! 2. the request head, written by hand: the client's headers (its `Upgrade` and
//!    `Sec-WebSocket-*` ones included, so that the subprotocol is negotiated between
//!    kubectl and the API server, unchanged) less its credentials, with kubegate's;
//! 3. the API server's answer. `101 Switching Protocols` goes back with its headers, and
//!    from then on bytes are copied both ways until either side closes: at most
//!    [`WINDOW`] bytes read from the API server ahead of the client, and towards the API
//!    server one batch of the client's chunks, gathered until it reaches [`WINDOW`] (so
//!    [`WINDOW`] plus the chunk that crossed it), beside actix-web's own request buffer.
//!    Anything else goes back as it came, and the client's connection is closed:
//!    no request may follow a refused upgrade on the same connection (CVE-2018-1002105).
//!    The connection to the API server is used for this one request only, and dropped.
//!
//! actix-web hands every byte after the head of a request carrying `Upgrade: websocket`
//! to the request's payload, and writes the streaming body of a `101` answer to such a
//! request without any framing: that is the client half of the tunnel. Upstream
//! actix-http does so for WebSocket only (the bytes after a SPDY/3.1 upgrade would be
//! parsed as more requests, and a `101` body chunked); kubegate's patched copy
//! (`vendor/actix-http`, `KUBEGATE-PATCH.md`) does it for `Upgrade: SPDY/...` too, which
//! older kubectl, or `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, uses. Other upgrades are
//! refused with a clear `Status` (after authorization, so a member still learns only that
//! they may not); `h2c` is not an upgrade kubegate takes up ([`crate::proxy`]).
//!
//! Each session is one audit event, recorded when it ends: status 101, duration, bytes
//! each way, and how it ended (`ended`). `/metrics` shows the sessions open now
//! (`kubegate_upgraded_sessions_open`, [`crate::metrics::UpgradedSession`]).

mod client;
pub mod record;

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::http::header;
use actix_web::http::{StatusCode, Version};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use kubegate_actors::auditor::AuditDecision;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use super::dial::{server_name, target};
use crate::gate::audit::AuditContext;
use crate::gate::Gate;
use crate::proxy::{Authorized, Upstreams};
use crate::status::StatusError;
use client::{connect, request, send, Io, OpenError, MAX_REFUSAL_BYTES};

/// Bytes read from one side before they are written to the other: the most a session
/// holds per direction (beside actix-web's request buffer and the sockets' own).
pub const WINDOW: usize = 64 * 1024;
/// Serves an admitted upgrade request (see the module documentation).
pub(super) async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    gate: web::Data<Gate>,
    upstreams: web::Data<Upstreams>,
    mut audit: AuditContext,
    authorized: Authorized,
) -> HttpResponse {
    let Authorized {
        path,
        proxy,
        impersonation,
        ..
    } = authorized;
    let refuse = |mut audit: AuditContext, error: StatusError, decision: AuditDecision| {
        audit.event.decision = decision;
        audit.event.error = Some(error.message.clone());
        audit.event.ended = Some("not upgraded".into());
        let bytes_out = error.body().len() as u64;
        audit.finish(gate.auditor(), error.code.as_u16(), 0, bytes_out);
        refused(&req, error.response())
    };
    if req.version() != Version::HTTP_11 {
        let error = StatusError::bad_request(format!(
            "upgrades need HTTP/1.1; this request came over {:?}",
            req.version()
        ));
        return refuse(audit, error, AuditDecision::Deny);
    }
    let Some(upgrade) = req.headers().get(header::UPGRADE).cloned() else {
        let error = StatusError::bad_request(
            "the request asks for an upgrade (Connection: Upgrade) but names no protocol in an Upgrade header",
        );
        return refuse(audit, error, AuditDecision::Deny);
    };
    if !streams_after_head(&req) {
        let error = StatusError::bad_request(format!(
            "kubegate carries WebSocket and SPDY/3.1 upgrades, not {}",
            String::from_utf8_lossy(upgrade.as_bytes())
        ));
        return refuse(audit, error, AuditDecision::Deny);
    }

    // a session that must be recorded and cannot be does not start
    let mut recorder = None;
    if record::wanted(
        proxy.record_sessions,
        &audit.event.attributes.subresource,
        req.uri().query().unwrap_or(""),
    ) {
        let title = format!(
            "{} {} {}/{} in cluster {} of org {}",
            audit.event.user,
            audit.event.attributes.subresource,
            audit.event.attributes.namespace,
            audit.event.attributes.name,
            path.cluster,
            path.org
        );
        let id = audit.event.request_id.clone();
        match record::Recorder::start(&upstreams.recordings, path.org, &id, &title) {
            Ok(r) => recorder = Some(r),
            Err(e) => {
                log::error!("session {id} cannot be recorded: {e}");
                let error = StatusError::unavailable(format!(
                    "this cluster records sessions, and this one cannot be recorded ({e}); it was not started"
                ));
                return refuse(audit, error, AuditDecision::Error);
            }
        }
    }

    let target = match target(&proxy.server) {
        Ok(t) => t,
        Err(e) => return refuse(audit, StatusError::bad_gateway(e), AuditDecision::Error),
    };
    let io = match connect(&proxy, &target, &upstreams).await {
        Ok(io) => io,
        Err(e) => {
            log::warn!("upgrade {} to {}: {e}", audit.event.request_id, proxy.key);
            return refuse(audit, e.status(), AuditDecision::Error);
        }
    };
    let sent = match request(
        &req,
        &path,
        &target,
        &upgrade,
        proxy.authorization_header(),
        impersonation.headers(),
    ) {
        Ok(sent) => sent,
        Err(e) => return refuse(audit, StatusError::bad_request(e), AuditDecision::Deny),
    };
    let answer = match tokio::time::timeout(upstreams.upgrade_timeout, send(io, sent)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            let error = OpenError::Broken(server_name(&proxy), e);
            log::warn!(
                "upgrade {} to {}: {error}",
                audit.event.request_id,
                proxy.key
            );
            return refuse(audit, error.status(), AuditDecision::Error);
        }
        Err(_) => {
            let error = OpenError::AnswerTimeout(server_name(&proxy));
            return refuse(audit, error.status(), AuditDecision::Error);
        }
    };

    if answer.status != StatusCode::SWITCHING_PROTOCOLS {
        // relayed as it came, then the connection is closed (CVE-2018-1002105)
        let (status, headers) = (answer.status, answer.headers.clone());
        let body =
            match tokio::time::timeout(upstreams.upgrade_timeout, answer.refusal_body()).await {
                Ok(Ok(body)) => body,
                Ok(Err(e)) => {
                    let error = OpenError::Broken(server_name(&proxy), e);
                    return refuse(audit, error.status(), AuditDecision::Error);
                }
                Err(_) => {
                    let error = OpenError::AnswerTimeout(server_name(&proxy));
                    return refuse(audit, error.status(), AuditDecision::Error);
                }
            };
        let mut builder = HttpResponse::build(status);
        for (name, value) in &headers {
            if !super::headers::dropped_from_upgrade_answer(name) && name != header::UPGRADE {
                builder.append_header((name.clone(), value.clone()));
            }
        }
        audit.event.ended = Some("upgrade refused by the API server".into());
        audit.finish(gate.auditor(), status.as_u16(), 0, body.len() as u64);
        let mut response = builder.body(body);
        close_after(&mut response);
        return response;
    }

    // 101: one stream both ways from here
    let mut builder = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in &answer.headers {
        if !super::headers::dropped_from_upgrade_answer(name) {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    if let Some(recorder) = &mut recorder {
        let subprotocol = answer
            .headers
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        let upgrade = upgrade.to_str().unwrap_or_default();
        recorder.protocol(record::Protocol::of(upgrade, subprotocol));
    }
    // the recording goes on on a thread of its own, beside the tunnel
    let (recording, up, down) = match recorder.map(record::background::Background::spawn) {
        None => (None, None, None),
        Some(Ok((recording, up, down))) => (Some(recording), Some(up), Some(down)),
        Some(Err(e)) => {
            log::error!(
                "session {} cannot be recorded: no recorder thread: {e}",
                audit.event.request_id
            );
            let error = StatusError::unavailable(format!(
                "this cluster records sessions, and this one cannot be recorded (no recorder thread: {e}); it was not started"
            ));
            return refuse(audit, error, AuditDecision::Error);
        }
    };
    let headers = answer.headers.clone();
    let io = match tokio::time::timeout(upstreams.upgrade_timeout, answer.upgraded()).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => {
            let error = OpenError::Broken(server_name(&proxy), e);
            return refuse(audit, error.status(), AuditDecision::Error);
        }
        Err(_) => {
            let error = OpenError::AnswerTimeout(server_name(&proxy));
            return refuse(audit, error.status(), AuditDecision::Error);
        }
    };
    let (reader, writer) = tokio::io::split(io);
    let session = Rc::new(Session {
        to_server: Cell::new(0),
        client_done: Cell::new(false),
        failure: std::cell::RefCell::new(None),
        recorder: std::cell::RefCell::new(up),
    });
    let uploader = actix_rt::spawn(upload(payload, writer, session.clone()));
    let downstream = Downstream {
        reader,
        buf: BytesMut::new(),
        to_client: 0,
        server_done: false,
        session,
        recorder: down,
        recording,
        _open: crate::metrics::UpgradedSession::start(),
        uploader: Some(uploader),
        audit: Some((audit, gate.auditor().clone())),
    };
    let mut response = builder.streaming(downstream);
    if !headers.contains_key(header::CONTENT_TYPE) {
        // actix-web's default for a streaming body; a 101 has none
        response.headers_mut().remove(header::CONTENT_TYPE);
    }
    // an upgrade, not a response with an unread request body: without this, actix-web
    // would answer `Connection: close, upgrade`, and Go's HTTP client (kubectl) drops a
    // `Connection` header that says `close`, failing the WebSocket handshake
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Upgrade);
    response
}

/// Whether actix-web hands what follows the head of `req` to its payload, and writes a
/// `101` body unframed: for `Upgrade: websocket`, and for `Upgrade: SPDY/...` with the
/// patch in `vendor/actix-http` (`KUBEGATE-PATCH.md`).
fn streams_after_head(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .is_some_and(|v| {
            v.eq_ignore_ascii_case("websocket")
                || v.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("SPDY/"))
        })
}

/// Marks a response so that actix-web closes the connection after it.
fn close_after(response: &mut HttpResponse) {
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
}

/// The answer to an upgrade request that is not upgraded, closing the connection after
/// it whatever the client sent behind the request (CVE-2018-1002105).
///
/// For a WebSocket or SPDY upgrade, actix-web reads everything after the request head as
/// its payload, so `Connection: close` suffices. For any other upgrade it parses what
/// follows as further requests, and serves a pipelined one even after a response that
/// says `Connection: close`. So the body of such an answer, once written and flushed,
/// ends in an error: actix-web then drops the connection instead of reading on.
pub fn refused(req: &HttpRequest, mut response: HttpResponse) -> HttpResponse {
    close_after(&mut response);
    if streams_after_head(req) {
        return response;
    }
    let (response, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes_limited(body, MAX_REFUSAL_BYTES)
        .now_or_never()
        .and_then(|r| r.ok())
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let len = bytes.len() as u64;
    response.set_body(actix_web::body::BoxBody::new(
        actix_web::body::SizedStream::new(len, LastWords::new(bytes)),
    ))
}

/// A body that, after its bytes, ends the connection (see [`refused`]).
struct LastWords {
    bytes: Option<Bytes>,
    flushed: bool,
}

impl LastWords {
    fn new(bytes: Bytes) -> LastWords {
        LastWords {
            bytes: Some(bytes),
            flushed: false,
        }
    }
}

impl Stream for LastWords {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(bytes) = self.bytes.take() {
            return Poll::Ready(Some(Ok(bytes)));
        }
        if !self.flushed {
            // once more round the dispatcher, which writes what it has meanwhile
            self.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(std::io::Error::other(
            "connection closed after a refused upgrade",
        ))))
    }
}

/// What both directions of a session share.
struct Session {
    to_server: Cell<u64>,
    /// The client ended its side (EOF) before the server ended its.
    client_done: Cell<bool>,
    failure: std::cell::RefCell<Option<String>>,
    /// The way to the session's recorder for what the client sends, when its cluster
    /// records sessions.
    recorder: std::cell::RefCell<Option<record::background::Sender>>,
}

/// Client to API server: the request payload (every byte after the request head).
async fn upload(
    mut payload: web::Payload,
    mut writer: WriteHalf<Box<dyn Io>>,
    session: Rc<Session>,
) {
    let mut batch = BytesMut::new();
    let mut ended = false;
    while !ended {
        // what has come, up to WINDOW bytes, written at once: a chunk that came alone is
        // written as it is, several are joined
        let mut chunk = match payload.next().await {
            Some(Ok(bytes)) => bytes,
            // the client's connection broke: the response side sees it too
            Some(Err(_)) => return,
            None => break,
        };
        while batch.len().max(chunk.len()) < WINDOW {
            match payload.next().now_or_never() {
                Some(Some(Ok(bytes))) => {
                    if batch.is_empty() {
                        batch.extend_from_slice(&chunk);
                    }
                    batch.extend_from_slice(&bytes);
                }
                Some(Some(Err(_))) => return,
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        if !batch.is_empty() {
            chunk = batch.split().freeze();
        }
        if session.recorder.borrow().is_some() {
            // room in the recorder's queue first: a recording misses no byte
            std::future::poll_fn(|cx| match session.recorder.borrow_mut().as_mut() {
                Some(recorder) => recorder.poll_ready(cx),
                None => Poll::Ready(()),
            })
            .await;
            if let Some(recorder) = session.recorder.borrow_mut().as_mut() {
                recorder.send(chunk.clone());
            }
        }
        // flushed each time: over TLS, what `write_all` accepted may still sit in rustls's
        // buffer when the socket was full, and nothing else would send it (the last
        // keystrokes of a session would wait for the next ones)
        let written = async {
            writer.write_all(&chunk).await?;
            writer.flush().await
        };
        if let Err(e) = written.await {
            session
                .failure
                .borrow_mut()
                .get_or_insert(format!("writing to the API server: {e}"));
            return;
        }
        session
            .to_server
            .set(session.to_server.get() + chunk.len() as u64);
    }
    session.client_done.set(true);
    // the client is done sending: so is kubegate, towards the API server
    let _ = writer.shutdown().await;
}

/// API server to client: the body of the 101 answer. Records the session's audit event
/// when dropped: after the API server closed, or when the client went away.
struct Downstream {
    reader: ReadHalf<Box<dyn Io>>,
    buf: BytesMut,
    to_client: u64,
    server_done: bool,
    session: Rc<Session>,
    /// The way to the session's recorder for what the API server sends.
    recorder: Option<record::background::Sender>,
    /// The session's recorder, when its cluster records sessions.
    recording: Option<record::background::Background>,
    /// Counts the session in `kubegate_upgraded_sessions_open` while it is open.
    _open: crate::metrics::UpgradedSession,
    uploader: Option<actix_rt::task::JoinHandle<()>>,
    audit: Option<(AuditContext, crate::gate::audit::AuditTrail)>,
}

impl Stream for Downstream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.server_done {
            return Poll::Ready(None);
        }
        if let Some(recorder) = &mut this.recorder {
            // room in the recorder's queue before the next read: a recording misses no byte
            std::task::ready!(recorder.poll_ready(cx));
        }
        if this.buf.capacity() < WINDOW / 2 {
            // room for the next read; the chunks already sent keep the memory they fill
            this.buf.reserve(WINDOW);
        }
        // read straight into the chunk that goes on to the client: no copy
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.reader), cx, &mut this.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(n)) => {
                if n == 0 {
                    this.server_done = true;
                    return Poll::Ready(None);
                }
                let chunk = this.buf.split().freeze();
                if let Some(recorder) = &mut this.recorder {
                    recorder.send(chunk.clone());
                }
                this.to_client += n as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Err(e)) => {
                this.session
                    .failure
                    .borrow_mut()
                    .get_or_insert(format!("reading from the API server: {e}"));
                this.server_done = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        if let Some(uploader) = self.uploader.take() {
            uploader.abort();
        }
        if let Some((mut audit, auditor)) = self.audit.take() {
            let failure = self.session.failure.borrow_mut().take();
            let ended = match (&failure, self.server_done, self.session.client_done.get()) {
                (Some(_), _, _) => "broken",
                (None, true, true) => "client closed",
                (None, true, false) => "server closed",
                (None, false, _) => "client went away",
            };
            audit.event.ended = Some(ended.to_string());
            // both ways to the recorder closed: it records what is queued and ends
            self.recorder = None;
            self.session.recorder.borrow_mut().take();
            if let Some(recording) = self.recording.take() {
                audit.event.recording = Some(recording.finish());
            }
            if failure.is_some() {
                audit.event.error = failure;
            }
            // the session is over: a failure here has no answer left to change
            let _ = audit.complete(&auditor, 101, self.session.to_server.get(), self.to_client);
        }
    }
}
