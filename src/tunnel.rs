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
//!    from then on bytes are copied both ways until either side closes, with no more than
//!    [`WINDOW`] bytes read ahead per direction (plus actix-web's own request buffer of
//!    32 KiB). Anything else goes back as it came, and the client's connection is closed:
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
//! (`kubegate_upgraded_sessions`, [`crate::metrics::UpgradedSession`]).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{StatusCode, Uri, Version};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use kubegate_actors::auditor::AuditDecision;
use kubegate_actors::registry::ClusterProxy;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};

use crate::audit::AuditContext;
use crate::path::ProxyPath;
use crate::server::AppState;
use crate::status::StatusError;

/// Bytes read from one side before they are written to the other: the most a session
/// holds per direction (beside actix-web's request buffer and the sockets' own).
pub const WINDOW: usize = 64 * 1024;
/// The longest response head accepted from the API server.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The longest body of a refused upgrade relayed to the client (a `Status`, normally).
const MAX_REFUSAL_BYTES: usize = 1024 * 1024;
/// How long the API server may take to answer an upgrade once connected (it may have to
/// reach the kubelet first).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to an API server, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Where the API server is, from its URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Host to resolve and to check the certificate against (no brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// A path the URL has before the Kubernetes path (`/k8s/clusters/c-1`), else empty.
    base_path: String,
}

fn target(server: &str) -> Result<Target, String> {
    let uri: Uri = server
        .parse()
        .map_err(|e| format!("the API server URL {server} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("the API server URL {server} is not http(s)")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("the API server URL {server} has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Target {
        tls,
        host,
        port,
        authority: authority.as_str().to_string(),
        base_path: uri.path().trim_end_matches('/').to_string(),
    })
}

/// Why the tunnel could not be opened; becomes the `Status` the client gets.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("{0} did not accept a connection in time")]
    ConnectTimeout(String),
    #[error("{0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("{0} did not answer the upgrade in time")]
    AnswerTimeout(String),
    #[error("{0} broke off the upgrade: {1}")]
    Broken(String, String),
}

impl OpenError {
    fn status(&self) -> StatusError {
        match self {
            OpenError::ConnectTimeout(_) | OpenError::AnswerTimeout(_) => {
                StatusError::gateway_timeout(self.to_string())
            }
            _ => StatusError::bad_gateway(self.to_string()),
        }
    }
}

/// The name the errors give the API server.
fn server_name(proxy: &ClusterProxy) -> String {
    format!(
        "the API server of cluster \"{}\" ({})",
        proxy.name, proxy.server
    )
}

/// Connects to the API server: resolve (refusing denied networks), TCP, TLS.
async fn connect(
    proxy: &ClusterProxy,
    target: &Target,
    state: &AppState,
) -> Result<Box<dyn Io>, OpenError> {
    let name = server_name(proxy);
    let connecting = async {
        let addrs = crate::upstream::resolve_guarded(
            &target.host,
            target.port,
            &state.rules.denied_networks,
        )
        .await
        .map_err(|e| OpenError::Unreachable(name.clone(), e))?;
        let mut last = format!("{} resolves to no address", target.host);
        let mut stream = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        let stream = stream.ok_or_else(|| OpenError::Unreachable(name.clone(), last))?;
        let _ = stream.set_nodelay(true);
        if !target.tls {
            return Ok(Box::new(stream) as Box<dyn Io>);
        }
        let server = ServerName::try_from(target.host.clone())
            .map_err(|e| OpenError::Unreachable(name.clone(), format!("bad host name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(proxy.tls.clone())
            .connect(server, stream)
            .await
            .map_err(|e| OpenError::Unreachable(name.clone(), format!("TLS: {e}")))?;
        Ok(Box::new(tls) as Box<dyn Io>)
    };
    match tokio::time::timeout(state.connect_timeout, connecting).await {
        Ok(result) => result,
        Err(_) => Err(OpenError::ConnectTimeout(name)),
    }
}

/// The request head sent to the API server.
fn request_head(
    req: &HttpRequest,
    path: &ProxyPath,
    target: &Target,
    upgrade: &HeaderValue,
    authorization: Option<&str>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(1024);
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.base_path.as_bytes());
    head.extend_from_slice(path.k8s_path.as_bytes());
    if let Some(query) = req.uri().query() {
        head.push(b'?');
        head.extend_from_slice(query.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(target.authority.as_bytes());
    head.extend_from_slice(b"\r\nConnection: Upgrade\r\nUpgrade: ");
    head.extend_from_slice(upgrade.as_bytes());
    head.extend_from_slice(b"\r\n");
    let listed = crate::proxy::connection_listed(req.headers());
    for (name, value) in req.headers() {
        if crate::proxy::is_dropped_request_header(name)
            || listed.iter().any(|l| l == name.as_str())
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let forwarded_for = crate::proxy::forwarded_for(req);
    if !forwarded_for.is_empty() {
        head.extend_from_slice(b"X-Forwarded-For: ");
        head.extend_from_slice(forwarded_for.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(authorization) = authorization {
        head.extend_from_slice(b"Authorization: ");
        head.extend_from_slice(authorization.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The API server's answer head.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// Bytes read past the head: the start of the stream (101) or of the body.
    rest: BytesMut,
}

/// Reads the answer head (at most [`MAX_HEAD_BYTES`]).
async fn read_answer(io: &mut Box<dyn Io>) -> Result<Answer, String> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = StatusCode::from_u16(response.code.unwrap_or(0))
                    .map_err(|_| "the answer has no valid status".to_string())?;
                let mut map = HeaderMap::new();
                for h in response.headers.iter() {
                    let name = HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| format!("the answer has a bad header name {:?}", h.name))?;
                    let value = HeaderValue::from_bytes(h.value)
                        .map_err(|_| format!("the answer has a bad value for {}", h.name))?;
                    map.append(name, value);
                }
                let rest = buf.split_off(len);
                return Ok(Answer {
                    status,
                    headers: map,
                    rest,
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("the answer is not HTTP/1.1: {e}")),
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(format!(
                "the answer head is longer than {MAX_HEAD_BYTES} bytes"
            ));
        }
        buf.reserve(4096);
        let n = io
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the connection closed before an answer".to_string());
        }
    }
}

/// Reads the body of a refused upgrade (Content-Length, chunked, or to the end), at most
/// [`MAX_REFUSAL_BYTES`]; a longer one is cut there.
async fn read_refusal_body(io: &mut Box<dyn Io>, answer: &mut Answer) -> Result<Bytes, String> {
    let length = answer
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = answer
        .headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut buf = std::mem::take(&mut answer.rest);
    let bodiless = answer.status == StatusCode::NO_CONTENT
        || answer.status == StatusCode::NOT_MODIFIED
        || answer.status.is_informational();
    if bodiless {
        return Ok(Bytes::new());
    }
    if chunked {
        let mut body = BytesMut::new();
        loop {
            match httparse::parse_chunk_size(&buf) {
                Ok(httparse::Status::Complete((start, size))) => {
                    let size = usize::try_from(size).unwrap_or(usize::MAX);
                    if size == 0 {
                        return Ok(body.freeze());
                    }
                    if body.len() + size > MAX_REFUSAL_BYTES {
                        return Ok(body.freeze());
                    }
                    if buf.len() >= start + size + 2 {
                        body.extend_from_slice(&buf[start..start + size]);
                        let _ = buf.split_to(start + size + 2);
                        continue;
                    }
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err("the answer's chunked body is malformed".into()),
            }
            if read_more(io, &mut buf).await? == 0 {
                return Ok(body.freeze());
            }
        }
    }
    let want = length.unwrap_or(MAX_REFUSAL_BYTES).min(MAX_REFUSAL_BYTES);
    while buf.len() < want {
        if read_more(io, &mut buf).await? == 0 {
            break;
        }
    }
    buf.truncate(want);
    Ok(buf.freeze())
}

async fn read_more(io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<usize, String> {
    buf.reserve(8192);
    io.read_buf(buf)
        .await
        .map_err(|e| format!("reading the answer: {e}"))
}

/// Response headers never passed back from the API server: the connection's own.
fn is_connection_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "content-length"
    )
}

/// Serves an admitted upgrade request (see the module documentation).
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    mut audit: AuditContext,
    proxy: Arc<ClusterProxy>,
    path: ProxyPath,
) -> HttpResponse {
    let refuse = |mut audit: AuditContext, error: StatusError, decision: AuditDecision| {
        audit.event.decision = decision;
        audit.event.error = Some(error.message.clone());
        audit.event.ended = Some("not upgraded".into());
        let bytes_out = error.body().len() as u64;
        audit.finish(&state.auditor, error.code.as_u16(), 0, bytes_out);
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

    let target = match target(&proxy.server) {
        Ok(t) => t,
        Err(e) => return refuse(audit, StatusError::bad_gateway(e), AuditDecision::Error),
    };
    let mut io = match connect(&proxy, &target, &state).await {
        Ok(io) => io,
        Err(e) => {
            log::warn!("upgrade {} to {}: {e}", audit.event.request_id, proxy.key);
            return refuse(audit, e.status(), AuditDecision::Error);
        }
    };
    let head = request_head(&req, &path, &target, &upgrade, proxy.authorization_header());
    let exchange = async {
        io.write_all(&head)
            .await
            .map_err(|e| format!("writing the request: {e}"))?;
        io.flush()
            .await
            .map_err(|e| format!("writing the request: {e}"))?;
        read_answer(&mut io).await
    };
    let mut answer = match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
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
        let body =
            match tokio::time::timeout(ANSWER_TIMEOUT, read_refusal_body(&mut io, &mut answer))
                .await
            {
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
        drop(io);
        let mut builder = HttpResponse::build(answer.status);
        for (name, value) in &answer.headers {
            if !is_connection_header(name) && name != header::UPGRADE {
                builder.append_header((name.clone(), value.clone()));
            }
        }
        audit.event.ended = Some("upgrade refused by the API server".into());
        audit.finish(&state.auditor, answer.status.as_u16(), 0, body.len() as u64);
        let mut response = builder.body(body);
        close_after(&mut response);
        return response;
    }

    // 101: one stream both ways from here
    let mut builder = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in &answer.headers {
        if !is_connection_header(name) {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    let (reader, writer) = tokio::io::split(io);
    let session = Rc::new(Session {
        to_server: Cell::new(0),
        client_done: Cell::new(false),
        failure: std::cell::RefCell::new(None),
    });
    let uploader = actix_rt::spawn(upload(payload, writer, session.clone()));
    let downstream = Downstream {
        reader,
        first: Some(answer.rest.freeze()).filter(|b| !b.is_empty()),
        buf: BytesMut::new(),
        to_client: 0,
        server_done: false,
        session,
        _open: crate::metrics::UpgradedSession::start(),
        uploader: Some(uploader),
        audit: Some((audit, state.auditor.clone())),
    };
    let mut response = builder.streaming(downstream);
    if !answer.headers.contains_key(header::CONTENT_TYPE) {
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
        // what has come, up to WINDOW bytes, written at once
        match payload.next().await {
            Some(Ok(bytes)) => batch.extend_from_slice(&bytes),
            // the client's connection broke: the response side sees it too
            Some(Err(_)) => return,
            None => break,
        }
        while batch.len() < WINDOW {
            match payload.next().now_or_never() {
                Some(Some(Ok(bytes))) => batch.extend_from_slice(&bytes),
                Some(Some(Err(_))) => return,
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        // flushed each time: over TLS, what `write_all` accepted may still sit in rustls's
        // buffer when the socket was full, and nothing else would send it (the last
        // keystrokes of a session would wait for the next ones)
        let written = async {
            writer.write_all(&batch).await?;
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
            .set(session.to_server.get() + batch.len() as u64);
        batch.clear();
    }
    session.client_done.set(true);
    // the client is done sending: so is kubegate, towards the API server
    let _ = writer.shutdown().await;
}

/// API server to client: the body of the 101 answer. Records the session's audit event
/// when dropped: after the API server closed, or when the client went away.
struct Downstream {
    reader: ReadHalf<Box<dyn Io>>,
    first: Option<Bytes>,
    buf: BytesMut,
    to_client: u64,
    server_done: bool,
    session: Rc<Session>,
    /// Counts the session in `kubegate_upgraded_sessions` while it is open.
    _open: crate::metrics::UpgradedSession,
    uploader: Option<actix_rt::task::JoinHandle<()>>,
    audit: Option<(
        AuditContext,
        actix::Recipient<kubegate_actors::auditor::RecordBatch>,
    )>,
}

impl Stream for Downstream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            this.to_client += first.len() as u64;
            return Poll::Ready(Some(Ok(first)));
        }
        if this.server_done {
            return Poll::Ready(None);
        }
        if this.buf.len() < WINDOW {
            // zeroed once per session; each read copies out only what came
            this.buf.resize(WINDOW, 0);
        }
        let mut read = ReadBuf::new(&mut this.buf[..]);
        match Pin::new(&mut this.reader).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    this.server_done = true;
                    return Poll::Ready(None);
                }
                let chunk = Bytes::copy_from_slice(read.filled());
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
            if failure.is_some() {
                audit.event.error = failure;
            }
            audit.finish(&auditor, 101, self.session.to_server.get(), self.to_client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            target("https://10.0.0.1:6443").unwrap(),
            Target {
                tls: true,
                host: "10.0.0.1".into(),
                port: 6443,
                authority: "10.0.0.1:6443".into(),
                base_path: String::new()
            }
        );
        let t = target("https://[::1]/k8s/clusters/c-1/").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.base_path.as_str()
            ),
            ("::1", 443, "[::1]", "/k8s/clusters/c-1")
        );
        assert_eq!(target("http://api.example").unwrap().port, 80);
        assert!(target("ftp://x").is_err());
    }

    #[test]
    fn the_head_carries_kubegates_credentials_only() {
        let req = actix_web::test::TestRequest::get()
            .uri("/pipeline/api/v1/orgs/1/clusters/2/proxy/api/v1/namespaces/d/pods/p/exec?command=ls")
            .insert_header(("Authorization", "Bearer user-token"))
            .insert_header(("Cookie", "session=s"))
            .insert_header(("Impersonate-User", "admin"))
            .insert_header(("X-Remote-User", "admin"))
            .insert_header(("Connection", "Upgrade, X-Secret"))
            .insert_header(("X-Secret", "hop"))
            .insert_header(("Upgrade", "websocket"))
            .insert_header(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="))
            .insert_header(("Sec-WebSocket-Protocol", "v5.channel.k8s.io"))
            .peer_addr("192.0.2.7:5000".parse().unwrap())
            .to_http_request();
        let path = ProxyPath::parse(req.path()).unwrap();
        let target = target("https://api.example:6443/base").unwrap();
        let head = String::from_utf8(request_head(
            &req,
            &path,
            &target,
            &HeaderValue::from_static("websocket"),
            Some("Bearer cluster-token"),
        ))
        .unwrap();
        assert!(head.starts_with(
            "GET /base/api/v1/namespaces/d/pods/p/exec?command=ls HTTP/1.1\r\nHost: api.example:6443\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        ), "{head}");
        let lower = head.to_ascii_lowercase();
        for gone in [
            "user-token",
            "cookie",
            "impersonate",
            "x-remote",
            "x-secret",
        ] {
            assert!(!lower.contains(gone), "{gone} in {head}");
        }
        for kept in [
            "sec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n",
            "sec-websocket-protocol: v5.channel.k8s.io\r\n",
            "x-forwarded-for: 192.0.2.7\r\n",
            "authorization: bearer cluster-token\r\n",
        ] {
            assert!(lower.contains(kept), "{kept} not in {head}");
        }
        assert!(head.ends_with("\r\n\r\n"));
    }
}
