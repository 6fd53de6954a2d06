//! The tunnel's client towards the API server: a new connection (through the SSRF guard,
//! with the cluster's TLS settings, ALPN `http/1.1`), then hyper's HTTP/1.1 client sends
//! the upgrade request and reads the answer; `hyper::upgrade::on` hands over the
//! connection after a 101. awc cannot carry this: its WebSocket client forces
//! `Upgrade: websocket`, and kubectl's port-forward and older exec speak SPDY.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use bytes::{Bytes, BytesMut};
use kubegate_actors::registry::ClusterProxy;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::proxy::dial::{self, server_name, Target};
use crate::proxy::path::ProxyPath;
use crate::proxy::Upstreams;
use crate::status::StatusError;

/// The longest body of a refused upgrade relayed to the client (a `Status`, normally).
pub(super) const MAX_REFUSAL_BYTES: usize = 1024 * 1024;

/// A connection to an API server, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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

/// Connects to the API server: resolve (refusing denied networks), TCP, TLS
/// ([`crate::proxy::dial`]).
pub(super) async fn connect(
    proxy: &ClusterProxy,
    target: &Target,
    upstreams: &Upstreams,
) -> Result<Box<dyn Io>, OpenError> {
    let name = server_name(proxy);
    let connecting = async {
        let stream = dial::tcp(target, &upstreams.rules.denied_networks)
            .await
            .map_err(|e| OpenError::Unreachable(name.clone(), e))?;
        if !target.tls {
            return Ok(Box::new(stream) as Box<dyn Io>);
        }
        let tls = dial::tls(proxy.tls.clone(), target, stream)
            .await
            .map_err(|e| OpenError::Unreachable(name.clone(), e))?;
        Ok(Box::new(tls) as Box<dyn Io>)
    };
    match tokio::time::timeout(upstreams.clients.connect_timeout, connecting).await {
        Ok(result) => result,
        Err(_) => Err(OpenError::ConnectTimeout(name)),
    }
}

/// The upgrade request sent to the API server: the client's headers less the hop-by-hop
/// and credential ones ([`crate::proxy::headers`]), then kubegate's credentials and
/// impersonation.
pub(super) fn request(
    req: &HttpRequest,
    path: &ProxyPath,
    target: &Target,
    upgrade: &HeaderValue,
    authorization: Option<&str>,
    impersonation: &[(HeaderName, HeaderValue)],
) -> Result<http::Request<http_body_util::Empty<Bytes>>, String> {
    let mut uri = format!("{}{}", target.base_path, path.k8s_path);
    if let Some(query) = req.uri().query() {
        uri.push('?');
        uri.push_str(query);
    }
    let mut out = http::Request::builder()
        .method(req.method().as_str())
        .uri(uri)
        .header("Host", target.authority.as_str())
        .header("Connection", "Upgrade")
        .header("Upgrade", upgrade.as_bytes());
    let listed = super::super::headers::connection_listed(req.headers());
    for (name, value) in req.headers() {
        if super::super::headers::dropped_from_request(name)
            || listed.iter().any(|l| l == name.as_str())
        {
            continue;
        }
        out = out.header(name.as_str(), value.as_bytes());
    }
    let forwarded_for = super::super::headers::forwarded_for(req);
    if !forwarded_for.is_empty() {
        out = out.header("X-Forwarded-For", forwarded_for);
    }
    if let Some(authorization) = authorization {
        out = out.header("Authorization", authorization);
    }
    for (name, value) in impersonation {
        out = out.header(name.as_str(), value.as_bytes());
    }
    out.body(http_body_util::Empty::new())
        .map_err(|e| format!("the request cannot be made: {e}"))
}

/// The API server's answer: its status and headers (as actix-web's types), and either
/// the upgraded connection (101) or the body of a refusal.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    response: http::Response<hyper::body::Incoming>,
}

/// Sends `request` on `io` with hyper's HTTP/1.1 client (its connection task runs on
/// this worker until the upgrade hands the connection over) and reads the answer head.
pub(super) async fn send(
    io: Box<dyn Io>,
    request: http::Request<http_body_util::Empty<Bytes>>,
) -> Result<Answer, String> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("the connection failed: {e}"))?;
    actix_rt::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            log::debug!("upgrade connection to the API server: {e}");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the answer is not HTTP/1.1: {e}"))?;
    let status = StatusCode::from_u16(response.status().as_u16())
        .map_err(|_| "the answer has no valid status".to_string())?;
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        let name = HeaderName::from_bytes(name.as_str().as_bytes())
            .map_err(|_| format!("the answer has a bad header name {name}"))?;
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| format!("the answer has a bad value for {name}"))?;
        headers.append(name, value);
    }
    Ok(Answer {
        status,
        headers,
        response,
    })
}

impl Answer {
    /// The connection after a 101, with whatever the API server sent past the head.
    pub(super) async fn upgraded(self) -> Result<Box<dyn Io>, String> {
        let upgraded = hyper::upgrade::on(self.response)
            .await
            .map_err(|e| format!("the upgrade failed: {e}"))?;
        Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)))
    }

    /// The body of a refused upgrade, at most [`MAX_REFUSAL_BYTES`]; a longer one is cut
    /// there.
    pub(super) async fn refusal_body(self) -> Result<Bytes, String> {
        use http_body_util::BodyExt as _;
        let mut body = self.response.into_body();
        let mut out = BytesMut::new();
        while out.len() < MAX_REFUSAL_BYTES {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(format!("reading the answer: {e}")),
            }
        }
        out.truncate(MAX_REFUSAL_BYTES);
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let target = dial::target("https://api.example:6443/base").unwrap();
        let sent = request(
            &req,
            &path,
            &target,
            &HeaderValue::from_static("websocket"),
            Some("Bearer cluster-token"),
            &[(
                HeaderName::from_static("impersonate-user"),
                HeaderValue::from_static("github:alice"),
            )],
        )
        .unwrap();
        // the head as hyper writes it
        let mut head = format!("{} {} HTTP/1.1\r\n", sent.method(), sent.uri());
        for (name, value) in sent.headers() {
            head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
        }
        head.push_str("\r\n");
        assert!(head.starts_with(
            "GET /base/api/v1/namespaces/d/pods/p/exec?command=ls HTTP/1.1\r\nhost: api.example:6443\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
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
