//! HTTP clients towards the clusters' API servers, one per cluster per worker thread.
//!
//! `awc::Client` is not `Send`, so each actix-web worker keeps its own, built from the
//! registry's thread-safe [`ClusterProxy`] and rebuilt when the registry replaces or
//! evicts that instance (its generation changes).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_tls::connect::{Connector as TcpConnector, Resolve, Resolver};
use awc::Client;
use futures_util::future::LocalBoxFuture;
use kubegate_actors::network::{denied_by, Network};
use kubegate_actors::registry::ClusterProxy;
use kubegate_actors::ClusterKey;
use std::net::SocketAddr;

thread_local! {
    static CLIENTS: RefCell<HashMap<ClusterKey, (Arc<ClusterProxy>, Client)>> = RefCell::new(HashMap::new());
}

/// This worker's client for a usable (not evicted, not expired) instance of `key`.
pub fn cached(key: ClusterKey) -> Option<(Arc<ClusterProxy>, Client)> {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        match clients.get(&key) {
            Some((proxy, client)) if proxy.is_usable() => Some((proxy.clone(), client.clone())),
            Some(_) => {
                clients.remove(&key);
                None
            }
            None => None,
        }
    })
}

/// Resolves host names, refusing addresses in denied ranges: checked at every connection,
/// so a name that resolves elsewhere later is still caught.
struct GuardedResolver {
    denied: Arc<Vec<Network>>,
}

impl Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move { Ok(resolve_guarded(host, port, &self.denied).await?) })
    }
}

/// Resolves `host`, keeping only the addresses outside `denied` (the SSRF guard of every
/// connection to an API server: awc's through [`GuardedResolver`], the upgrade tunnel's
/// in [`crate::proxy::tunnel`]). Fails when every address is denied.
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

/// This worker's client for `proxy`, built now if the worker has none for this generation.
pub fn client_for(
    proxy: &Arc<ClusterProxy>,
    connect_timeout: Duration,
    denied: &Arc<Vec<Network>>,
) -> Client {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some((known, client)) = clients.get(&proxy.key) {
            if known.generation == proxy.generation {
                return client.clone();
            }
        }
        let resolver = Resolver::custom(GuardedResolver {
            denied: denied.clone(),
        });
        let connector = awc::Connector::new()
            .connector(TcpConnector::new(resolver).service())
            .rustls_0_23(proxy.tls.clone())
            .timeout(connect_timeout)
            // watches hold a connection each: no cap on connections per cluster
            .limit(0);
        let client = Client::builder()
            .connector(connector)
            // no overall timeout: it would cut long watches (the connect timeout stays)
            .disable_timeout()
            .disable_redirects()
            .no_default_headers()
            .finish();
        clients.insert(proxy.key, (proxy.clone(), client.clone()));
        client
    })
}
