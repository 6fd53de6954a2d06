//! Connections to API servers that kubegate opens itself (the upgrade tunnel's, and the
//! HTTP/2 connections of [`crate::proxy::multiplex`]): the address through the SSRF guard
//! ([`resolve_guarded`]), TCP without Nagle's algorithm, and TLS read ahead
//! ([`ReadAhead`]).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::Uri;
use kubegate_actors::network::{denied_by, Network};
use kubegate_actors::registry::ClusterProxy;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::read_ahead::ReadAhead;

/// Where the API server is, from its URL.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// Host to resolve and to check the certificate against (no brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header.
    pub authority: String,
    /// A path the URL has before the Kubernetes path (`/k8s/clusters/c-1`), else empty.
    pub base_path: String,
}

pub fn target(server: &str) -> Result<Target, String> {
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

/// The name the errors give the API server.
pub fn server_name(proxy: &ClusterProxy) -> String {
    format!(
        "the API server of cluster \"{}\" ({})",
        proxy.name, proxy.server
    )
}

/// Resolves `host`, keeping only the addresses outside `denied` (the SSRF guard of every
/// connection to an API server: awc's through `upstream::GuardedResolver`, and [`tcp`]'s for
/// the upgrade tunnel and the HTTP/2 client). Fails when every address is denied.
pub async fn resolve_guarded(
    host: &str,
    port: u16,
    denied: &[Network],
) -> Result<Vec<SocketAddr>, String> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let allowed: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| denied_by(denied, a.ip()).is_none())
        .collect();
    if allowed.is_empty() && !found.is_empty() {
        let range = denied_by(denied, found[0].ip())
            .map(|n| n.to_string())
            .unwrap_or_default();
        return Err(format!(
            "{host} resolves to {} in the denied network {range} (clusters.denied_networks)",
            found[0].ip()
        ));
    }
    Ok(allowed)
}

/// A TCP connection to `target`, to the first of its allowed addresses that accepts one
/// (none in a `denied` network), with Nagle's algorithm off.
pub async fn tcp(target: &Target, denied: &[Network]) -> Result<TcpStream, String> {
    let addrs = resolve_guarded(&target.host, target.port, denied).await?;
    let mut last = format!("{} resolves to no address", target.host);
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// TLS over `stream` with `config` (the cluster's CA, client certificate and ALPN),
/// the certificate checked against `target`'s host; the socket read ahead of rustls.
pub async fn tls(
    config: Arc<rustls::ClientConfig>,
    target: &Target,
    stream: TcpStream,
) -> Result<TlsStream<ReadAhead>, String> {
    let server =
        ServerName::try_from(target.host.clone()).map_err(|e| format!("bad host name: {e}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(server, ReadAhead::new(stream))
        .await
        .map_err(|e| format!("TLS: {e}"))
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
}
