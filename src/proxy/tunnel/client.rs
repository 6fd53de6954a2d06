//! The tunnel's own HTTP/1.1 client: a new connection to the API server (through the
//! SSRF guard, with the cluster's TLS settings, ALPN `http/1.1`), the upgrade request's
//! head written by hand, and the answer's head read back. Moved here as it was; an open
//! issue replaces it with a maintained client.

/// The longest response head accepted from the API server.
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{StatusCode, Uri};
use actix_web::HttpRequest;
use bytes::{Bytes, BytesMut};
use kubegate_actors::registry::ClusterProxy;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::proxy::path::ProxyPath;
use crate::proxy::Upstreams;
use crate::status::StatusError;

pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The longest body of a refused upgrade relayed to the client (a `Status`, normally).
pub(super) const MAX_REFUSAL_BYTES: usize = 1024 * 1024;

/// A connection to an API server, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Where the API server is, from its URL.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    tls: bool,
    /// Host to resolve and to check the certificate against (no brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// A path the URL has before the Kubernetes path (`/k8s/clusters/c-1`), else empty.
    base_path: String,
}

pub(super) fn target(server: &str) -> Result<Target, String> {
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
pub(super) enum OpenError {
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
    /// The `Status` the client gets.
    pub(super) fn status(&self) -> StatusError {
        match self {
            OpenError::ConnectTimeout(_) | OpenError::AnswerTimeout(_) => {
                StatusError::gateway_timeout(self.to_string())
            }
            _ => StatusError::bad_gateway(self.to_string()),
        }
    }
}

/// The name the errors give the API server.
pub(super) fn server_name(proxy: &ClusterProxy) -> String {
    format!(
        "the API server of cluster \"{}\" ({})",
        proxy.name, proxy.server
    )
}

/// Connects to the API server: resolve (refusing denied networks), TCP, TLS.
pub(super) async fn connect(
    proxy: &ClusterProxy,
    target: &Target,
    upstreams: &Upstreams,
) -> Result<Box<dyn Io>, OpenError> {
    let name = server_name(proxy);
    let connecting = async {
        let addrs = crate::proxy::upstream::resolve_guarded(
            &target.host,
            target.port,
            &upstreams.rules.denied_networks,
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
    match tokio::time::timeout(upstreams.connect_timeout, connecting).await {
        Ok(result) => result,
        Err(_) => Err(OpenError::ConnectTimeout(name)),
    }
}

/// The request head sent to the API server.
pub(super) fn request_head(
    req: &HttpRequest,
    path: &ProxyPath,
    target: &Target,
    upgrade: &HeaderValue,
    authorization: Option<&str>,
    impersonation: &[(HeaderName, HeaderValue)],
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
    let listed = super::super::headers::connection_listed(req.headers());
    for (name, value) in req.headers() {
        if super::super::headers::dropped_from_request(name)
            || listed.iter().any(|l| l == name.as_str())
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let forwarded_for = super::super::headers::forwarded_for(req);
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
    for (name, value) in impersonation {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The API server's answer head.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    /// Bytes read past the head: the start of the stream (101) or of the body.
    pub(super) rest: BytesMut,
}

/// Reads the answer head (at most [`MAX_HEAD_BYTES`]).
pub(super) async fn read_answer(io: &mut Box<dyn Io>) -> Result<Answer, String> {
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
pub(super) async fn read_refusal_body(
    io: &mut Box<dyn Io>,
    answer: &mut Answer,
) -> Result<Bytes, String> {
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

pub(super) async fn read_more(io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<usize, String> {
    buf.reserve(8192);
    io.read_buf(buf)
        .await
        .map_err(|e| format!("reading the answer: {e}"))
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
            &[(
                HeaderName::from_static("impersonate-user"),
                HeaderValue::from_static("github:alice"),
            )],
        ))
        .unwrap();
        assert!(head.starts_with(
            "GET /base/api/v1/namespaces/d/pods/p/exec?command=ls HTTP/1.1\r\nHost: api.example:6443\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        ), "{head}");
        let lower = head.to_ascii_lowercase();
        for gone in [
            "user-token",
            "cookie",
            "impersonate-user: admin",
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
            "impersonate-user: github:alice\r\n",
        ] {
            assert!(lower.contains(kept), "{kept} not in {head}");
        }
        assert!(head.ends_with("\r\n\r\n"));
    }
}
