//! HTTP clients towards the clusters' API servers, one per cluster per worker thread.
//!
//! `awc::Client` is not `Send`, so each actix-web worker keeps its own, built from the
//! registry's thread-safe [`ClusterProxy`] and rebuilt when the registry replaces or
//! evicts that instance (its generation changes).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use awc::Client;
use kubegate_actors::cluster::ClusterProxy;
use kubegate_actors::ClusterKey;

thread_local! {
    static CLIENTS: RefCell<HashMap<ClusterKey, (Arc<ClusterProxy>, Client)>> = RefCell::new(HashMap::new());
}

/// This worker's client for a live (not evicted) instance of `key`, if it has one.
pub fn cached(key: ClusterKey) -> Option<(Arc<ClusterProxy>, Client)> {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        match clients.get(&key) {
            Some((proxy, client)) if !proxy.is_evicted() => Some((proxy.clone(), client.clone())),
            Some(_) => {
                clients.remove(&key);
                None
            }
            None => None,
        }
    })
}

/// This worker's client for `proxy`, built now if the worker has none for this generation.
pub fn client_for(proxy: &Arc<ClusterProxy>, connect_timeout: Duration) -> Client {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some((known, client)) = clients.get(&proxy.key) {
            if known.generation == proxy.generation {
                return client.clone();
            }
        }
        let connector = awc::Connector::new()
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
