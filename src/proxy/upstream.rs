//! HTTP clients towards the clusters' API servers, one set per cluster per worker thread.
//!
//! `awc::Client` is not `Send`, so each actix-web worker keeps its own, built from the
//! registry's thread-safe [`ClusterProxy`] and rebuilt when the registry replaces or
//! evicts that instance (its generation changes).
//!
//! Two kinds of client per cluster:
//!
//! - the **plain** client speaks HTTP/1.1 with keep-alive: lists, gets, writes, and
//!   watches when the API server does not offer HTTP/2;
//! - the **watch pool** carries watches over HTTP/2 when the API server offers `h2` by
//!   ALPN. An open watch then costs a stream, not a TLS connection. awc multiplexes every
//!   request of one client on one HTTP/2 connection and never opens a second one when that
//!   connection is at the server's stream limit (kube-apiserver allows 1,000): the next
//!   watch would wait forever. So the pool holds several clients, each with its own
//!   connection, counts the watches open on each ([`WatchLease`], held by the response
//!   body until the watch ends) and sends a new watch on the first one with streams to
//!   spare (`clusters.watch_streams_per_connection`, 900 by default).
//!
//! Small answers go over HTTP/2 too. A GET (a `get` or a `list`) whose last answer on
//! this worker was at most [`SMALL_ANSWER`] bytes is sent on a stream of the same pool:
//! many requests then share one TLS connection, and what several of them send, or are
//! answered, leaves in one write and arrives in one read (kubegate alone in its default
//! configuration against bench-peers' fake API server, oha at 32 connections: about a
//! fifth more 1 KiB lists per second at a sixth less CPU each than over HTTP/1.1; the
//! bench-peers figures next to nginx are in the README). A large answer is slower over
//! HTTP/2 (one connection, 16 KiB frames, flow control: a 1 MiB list at half the rate and
//! a third more CPU), so every other request stays on HTTP/1.1, and a path whose answer
//! grew past [`SMALL_ANSWER`] goes back to it. Which paths answered small is kept per
//! cluster and worker ([`SmallAnswers`], at most [`SMALL_PATHS`], forgotten all at once
//! when full).
//!
//! HTTP/2 flow control: with h2's default windows (64 KiB per stream and per connection),
//! one watch whose reader stops would stop every watch on its connection once its data
//! filled the connection's window. Each stream gets [`STREAM_WINDOW`] bytes, and the
//! connection a window that covers every stream at its limit, so a stalled reader only
//! ever holds up its own stream.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_tls::connect::{Connector as TcpConnector, Resolve, Resolver};
use awc::http::Version;
use awc::Client;
use futures_util::future::LocalBoxFuture;
use kubegate_actors::network::{denied_by, Network};
use kubegate_actors::registry::ClusterProxy;
use kubegate_actors::ClusterKey;
use std::net::SocketAddr;

use super::read_ahead::ReadAhead;

/// The receive window of each HTTP/2 stream towards an API server: what a watch whose
/// reader stopped may hold in kubegate's memory (h2's default).
pub const STREAM_WINDOW: u32 = 64 * 1024;

/// The most streams an API server allows on one HTTP/2 connection that the connection
/// window is sized for (kube-apiserver's limit).
const MAX_STREAMS: u32 = 1000;

/// An HTTP/2 connection a watch pool keeps, however long it is idle or old: closing it
/// is the server's call (awc closes one that failed). awc would otherwise drop a
/// connection past its keep-alive (15 s since its last new request) or lifetime (75 s),
/// which makes it send a stray request on it and, failing that, abort every watch on it.
const H2_KEEP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The largest answer whose path is sent over HTTP/2 the next time (one stream window:
/// such an answer never waits for the window to open).
pub const SMALL_ANSWER: u64 = STREAM_WINDOW as u64;

/// Paths remembered per cluster and worker as answering small.
const SMALL_PATHS: usize = 4096;

/// The paths (with their query) of one cluster whose last answer on this worker was at
/// most [`SMALL_ANSWER`] bytes, by hash (two paths that share a hash share a transport,
/// nothing more).
#[derive(Default)]
pub struct SmallAnswers {
    paths: RefCell<foldhash::HashSet<u64>>,
    hasher: foldhash::fast::RandomState,
}

impl SmallAnswers {
    /// The key of a request to `path_and_query`.
    pub fn key(&self, path_and_query: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(path_and_query)
    }

    fn contains(&self, key: u64) -> bool {
        self.paths.borrow().contains(&key)
    }

    /// The request of `key` was answered whole, in `bytes`.
    pub fn answered(&self, key: u64, bytes: u64) {
        let mut paths = self.paths.borrow_mut();
        if bytes > SMALL_ANSWER {
            paths.remove(&key);
            return;
        }
        if paths.len() >= SMALL_PATHS && !paths.contains(&key) {
            paths.clear();
        }
        paths.insert(key);
    }
}

/// How this worker reaches one cluster.
#[derive(Clone)]
pub struct Upstream {
    /// The cluster's proxy instance this was built from.
    pub proxy: Arc<ClusterProxy>,
    /// HTTP/1.1 with keep-alive: everything but watches on an HTTP/2 API server.
    pub plain: Client,
    watches: Rc<WatchPool>,
    /// The paths that answered small, sent over HTTP/2 when the API server speaks it.
    pub small: Rc<SmallAnswers>,
}

impl Upstream {
    /// Where to send a watch: a pool client with a lease on one of its streams, or (the
    /// API server speaks HTTP/1.1 only, or the pool is off) the plain client.
    pub fn for_watch(&self) -> (Client, Option<WatchLease>) {
        match self.watches.lease() {
            Some(lease) => (lease.slot.client.clone(), Some(lease)),
            None => (self.plain.clone(), None),
        }
    }

    /// Where to send a GET that is not a watch: as a watch when its path (`key`,
    /// [`SmallAnswers::key`]) answered small the last time, else the plain client.
    pub fn for_get(&self, key: u64) -> (Client, Option<WatchLease>) {
        if self.small.contains(key) {
            self.for_watch()
        } else {
            (self.plain.clone(), None)
        }
    }
}

thread_local! {
    static CLIENTS: RefCell<HashMap<ClusterKey, Upstream>> = RefCell::new(HashMap::new());
}

/// This worker's clients for a usable (not evicted, not expired) instance of `key`.
pub fn cached(key: ClusterKey) -> Option<Upstream> {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        match clients.get(&key) {
            Some(found) if found.proxy.is_usable() => Some(found.clone()),
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

/// How clients towards the API servers are built.
#[derive(Clone)]
pub struct ClientSettings {
    /// TCP and TLS connect timeout.
    pub connect_timeout: Duration,
    /// The SSRF guard.
    pub denied: Arc<Vec<Network>>,
    /// Watches per HTTP/2 connection; 0: watches over HTTP/1.1 only.
    pub watch_streams_per_connection: usize,
}

/// A TCP connection to an API server, as actix-tls opens it, read ahead of its TLS layer
/// ([`ReadAhead`]).
type TcpConnection = actix_tls::connect::Connection<awc::http::Uri, ReadAhead>;

/// actix-tls's TCP connector, with Nagle's algorithm turned off on each connection, as
/// Go's clients and kube-apiserver do: with it, the small writes of an HTTP/2
/// connection's start (preface, settings, their acknowledgements) could wait for the
/// peer's delayed acknowledgement, 40 ms on Linux, and the first request on a new
/// connection with them. Each connection is read ahead ([`ReadAhead`]): one `recv` per
/// 64 KiB instead of one per 4 KiB that rustls asks for.
#[derive(Clone)]
struct NoDelayConnector(actix_tls::connect::ConnectorService);

impl actix_web::dev::Service<actix_tls::connect::ConnectInfo<awc::http::Uri>> for NoDelayConnector {
    type Response = TcpConnection;
    type Error = actix_tls::connect::ConnectError;
    type Future = LocalBoxFuture<'static, Result<TcpConnection, Self::Error>>;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        actix_web::dev::Service::<actix_tls::connect::ConnectInfo<awc::http::Uri>>::poll_ready(
            &self.0, cx,
        )
    }

    fn call(&self, to: actix_tls::connect::ConnectInfo<awc::http::Uri>) -> Self::Future {
        let connecting = self.0.call(to);
        Box::pin(async move {
            let connection = connecting.await?;
            let _ = connection.io_ref().set_nodelay(true);
            let (io, connection) = connection.replace_io(());
            Ok(connection.replace_io(ReadAhead::new(io)).1)
        })
    }
}

/// A connector to an API server with the SSRF guard and the connect timeout.
fn connector(
    tls: Arc<rustls::ClientConfig>,
    settings: &ClientSettings,
) -> awc::Connector<NoDelayConnector> {
    let resolver = Resolver::custom(GuardedResolver {
        denied: settings.denied.clone(),
    });
    awc::Connector::new()
        .connector(NoDelayConnector(TcpConnector::new(resolver).service()))
        .rustls_0_23(tls)
        .timeout(settings.connect_timeout)
}

/// This worker's clients for `proxy`, built now if the worker has none for this generation.
pub fn client_for(proxy: &Arc<ClusterProxy>, settings: &ClientSettings) -> Upstream {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some(known) = clients.get(&proxy.key) {
            if known.proxy.generation == proxy.generation {
                return known.clone();
            }
        }
        let plain = Client::builder()
            // watches over HTTP/1.1 hold a connection each: no cap on connections
            .connector(connector(proxy.tls.clone(), settings).limit(0))
            // no overall timeout: it would cut long watches (the connect timeout stays)
            .disable_timeout()
            .disable_redirects()
            .no_default_headers()
            .finish();
        let upstream = Upstream {
            proxy: proxy.clone(),
            plain,
            watches: Rc::new(WatchPool::new(proxy, settings)),
            small: Rc::new(SmallAnswers::default()),
        };
        clients.insert(proxy.key, upstream.clone());
        upstream
    })
}

/// One pool client: its own HTTP/2 connection, and how many watches are open on it.
struct Slot {
    client: Client,
    open: Cell<usize>,
    /// Whether a request has gone through this client's connection, which is then in
    /// awc's pool. Until then, requests wait for the first one ([`WatchLease::opening`]):
    /// awc opens a connection for every request that finds none idle, so a burst of new
    /// watches would otherwise open a connection each.
    connected: Cell<bool>,
    opening: Arc<tokio::sync::Mutex<()>>,
}

/// The HTTP/2 clients for watches to one cluster, on this worker.
struct WatchPool {
    tls: Arc<rustls::ClientConfig>,
    settings: ClientSettings,
    slots: RefCell<Vec<Rc<Slot>>>,
    /// `Some(false)` once the API server answered a watch over HTTP/1.1: it does not
    /// speak HTTP/2, watches go on the plain client as they always did.
    http2: Cell<Option<bool>>,
}

impl WatchPool {
    fn new(proxy: &ClusterProxy, settings: &ClientSettings) -> WatchPool {
        let mut tls = (*proxy.tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http2 = (settings.watch_streams_per_connection == 0
            || !proxy.server.starts_with("https://"))
        .then_some(false);
        WatchPool {
            tls: Arc::new(tls),
            settings: settings.clone(),
            slots: RefCell::new(Vec::new()),
            http2: Cell::new(http2),
        }
    }

    fn new_slot(&self) -> Rc<Slot> {
        let per_stream = STREAM_WINDOW;
        let connector = connector(self.tls.clone(), &self.settings)
            .initial_window_size(per_stream)
            // every stream stalled at once still leaves the connection open for the others
            .initial_connection_window_size(per_stream * MAX_STREAMS)
            .conn_keep_alive(H2_KEEP)
            .conn_lifetime(H2_KEEP)
            .limit(0);
        let client = Client::builder()
            .connector(connector)
            .disable_timeout()
            .disable_redirects()
            .no_default_headers()
            .finish();
        Rc::new(Slot {
            client,
            open: Cell::new(0),
            connected: Cell::new(false),
            opening: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// A stream on the first client with one to spare (a new client when none has).
    fn lease(self: &Rc<Self>) -> Option<WatchLease> {
        if self.http2.get() == Some(false) {
            return None;
        }
        let limit = self.settings.watch_streams_per_connection;
        let mut slots = self.slots.borrow_mut();
        let slot = match slots.iter().find(|s| s.open.get() < limit) {
            Some(slot) => slot.clone(),
            None => {
                let slot = self.new_slot();
                slots.push(slot.clone());
                slot
            }
        };
        slot.open.set(slot.open.get() + 1);
        Some(WatchLease {
            pool: self.clone(),
            slot,
        })
    }
}

/// One watch's stream on a pool client, counted until dropped (with the response body).
pub struct WatchLease {
    pool: Rc<WatchPool>,
    slot: Rc<Slot>,
}

impl WatchLease {
    /// Held while the first request on a client opens its connection: the requests
    /// that come meanwhile wait for it, then share that connection.
    pub async fn opening(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        if self.slot.connected.get() {
            return None;
        }
        let guard = self.slot.opening.clone().lock_owned().await;
        (!self.slot.connected.get()).then_some(guard)
    }

    /// What the request sent on this lease found: an answer over `version`, or (`None`)
    /// an error, after which the next request finds out about the connection afresh.
    pub fn answered(&self, version: Option<Version>) {
        match version {
            Some(Version::HTTP_2) => {
                self.pool.http2.set(Some(true));
                self.slot.connected.set(true);
            }
            Some(_) => {
                log::info!(
                    "the API server answered a watch over HTTP/1.1: watches stay on HTTP/1.1"
                );
                self.pool.http2.set(Some(false));
                self.slot.connected.set(true);
            }
            None => self.slot.connected.set(false),
        }
    }

    /// Whether the connection this lease is on had carried a request before.
    pub fn was_connected(&self) -> bool {
        self.slot.connected.get()
    }
}

impl Drop for WatchLease {
    fn drop(&mut self) {
        self.slot.open.set(self.slot.open.get().saturating_sub(1));
    }
}
