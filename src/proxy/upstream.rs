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
//!   ALPN, with kubegate's own HTTP/2 client ([`multiplex`]). An open watch then costs a
//!   stream, not a TLS connection. An API server takes a limited number of streams on a
//!   connection (kube-apiserver: 1,000), and a request past it would wait for one to
//!   end. So the pool holds several connections, counts the requests open on each
//!   ([`WatchLease`], held by the response body until the watch ends) and sends a new
//!   one on the first connection with streams to spare: at most
//!   `clusters.watch_streams_per_connection` (900 by default), and at most what the
//!   server announced (`SETTINGS_MAX_CONCURRENT_STREAMS`) once its connection is open
//!   (requests that came while it was opening and are past that move on).
//!
//! Small answers go over HTTP/2 too. A GET (a `get` or a `list`) whose last answer on
//! this worker was at most [`SMALL_ANSWER`] bytes is sent on a stream of the same pool,
//! and so is the first `get` of one object (an object is seldom larger; a list often is):
//! many requests then share one TLS connection, and what several of them send, or are
//! answered, leaves in one write and arrives in one read (kubegate alone in its default
//! configuration against bench-peers' fake API server, oha at 32 connections: about a
//! fifth more 1 KiB lists per second at a sixth less CPU each than over HTTP/1.1; the
//! bench-peers figures next to nginx are in the README). A large answer is slower over
//! HTTP/2 (one connection, 16 KiB frames, flow control: a 1 MiB list at half the rate and
//! a third more CPU), so every other request stays on HTTP/1.1, and a path whose answer
//! grew past [`SMALL_ANSWER`] goes back to it. Which paths answered small, and which
//! large, is kept per cluster and worker ([`SmallAnswers`], at most [`SMALL_PATHS`],
//! forgotten all at once when full).
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
use awc::Client;
use futures_util::future::LocalBoxFuture;
use kubegate_actors::network::Network;
use kubegate_actors::registry::ClusterProxy;
use kubegate_actors::ClusterKey;
use std::net::SocketAddr;

use super::read_ahead::ReadAhead;
use super::{dial, multiplex};

/// The receive window of each HTTP/2 stream towards an API server: what a watch whose
/// reader stopped may hold in kubegate's memory (h2's default).
pub const STREAM_WINDOW: u32 = 64 * 1024;

/// The most streams an API server allows on one HTTP/2 connection that the connection
/// window is sized for (kube-apiserver's limit).
const MAX_STREAMS: u32 = 1000;

/// The largest answer whose path is sent over HTTP/2 the next time (one stream window:
/// such an answer never waits for the window to open).
pub const SMALL_ANSWER: u64 = STREAM_WINDOW as u64;

/// Paths remembered per cluster and worker as answering small.
const SMALL_PATHS: usize = 4096;

/// The paths (with their query) of one cluster that were answered on this worker, by
/// hash, and whether their last answer was small (at most [`SMALL_ANSWER`] bytes). Two
/// paths that share a hash share a transport, nothing more.
#[derive(Default)]
pub struct SmallAnswers {
    paths: RefCell<foldhash::HashMap<u64, bool>>,
    hasher: foldhash::fast::RandomState,
}

impl SmallAnswers {
    /// The key of a request to `path_and_query`.
    pub fn key(&self, path_and_query: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(path_and_query)
    }

    /// Whether the last answer to `key` was small; `None`: not answered yet (or
    /// forgotten).
    fn small(&self, key: u64) -> Option<bool> {
        self.paths.borrow().get(&key).copied()
    }

    /// The request of `key` was answered whole, in `bytes`, or grew past
    /// [`SMALL_ANSWER`] with `bytes` so far.
    pub fn answered(&self, key: u64, bytes: u64) {
        let mut paths = self.paths.borrow_mut();
        if paths.len() >= SMALL_PATHS && !paths.contains_key(&key) {
            paths.clear();
        }
        paths.insert(key, bytes <= SMALL_ANSWER);
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
    /// A stream on a pooled HTTP/2 connection for a watch; `None`: the plain client (the
    /// API server speaks HTTP/1.1 only, or the pool is off).
    pub fn for_watch(&self) -> Option<WatchLease> {
        self.watches.lease()
    }

    /// A stream for a GET that is not a watch, when its path (`key`,
    /// [`SmallAnswers::key`]) answered small the last time, or, for the `get` of one
    /// object (`object`), when it has not been answered yet; `None`: the plain client.
    pub fn for_get(&self, key: u64, object: bool) -> Option<WatchLease> {
        if self.small.small(key).unwrap_or(object) {
            self.for_watch()
        } else {
            None
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
        Box::pin(async move { Ok(dial::resolve_guarded(host, port, &self.denied).await?) })
    }
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

/// One connection of a watch pool, and how many requests are open on it.
struct Slot {
    line: multiplex::Line,
    open: Cell<usize>,
}

/// The HTTP/2 connections for watches to one cluster, on this worker.
struct WatchPool {
    /// How its connections are opened; `None`: the API server speaks HTTP/1.1 only (its
    /// URL is not `https`, or it answered ALPN without `h2`), or the pool is off: watches
    /// go on the plain client.
    dialer: Option<multiplex::Dialer>,
    limit: usize,
    slots: RefCell<Vec<Rc<Slot>>>,
    /// Set once the API server was found not to speak HTTP/2.
    http1_only: Cell<bool>,
}

impl WatchPool {
    fn new(proxy: &ClusterProxy, settings: &ClientSettings) -> WatchPool {
        let mut tls = (*proxy.tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let dialer = dial::target(&proxy.server)
            .ok()
            .filter(|t| t.tls && settings.watch_streams_per_connection > 0)
            .map(|target| multiplex::Dialer {
                tls: Arc::new(tls),
                target,
                denied: settings.denied.clone(),
                connect_timeout: settings.connect_timeout,
                stream_window: STREAM_WINDOW,
                // every stream stalled at once still leaves the connection open for the others
                connection_window: STREAM_WINDOW * MAX_STREAMS,
            });
        WatchPool {
            dialer,
            limit: settings.watch_streams_per_connection,
            slots: RefCell::new(Vec::new()),
            http1_only: Cell::new(false),
        }
    }

    /// A stream on the first connection with one to spare (a new one when none has).
    fn lease(self: &Rc<Self>) -> Option<WatchLease> {
        if self.dialer.is_none() || self.http1_only.get() {
            return None;
        }
        Some(WatchLease {
            pool: self.clone(),
            slot: self.take_slot(),
        })
    }

    /// The first connection with a stream to spare (a new one when none has), counting
    /// one more on it.
    fn take_slot(&self) -> Rc<Slot> {
        let mut slots = self.slots.borrow_mut();
        // at most as many as the server allows on the connection, once it has said
        let slot = match slots.iter().find(|s| s.open.get() < self.room(s)) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Rc::new(Slot {
                    line: multiplex::Line::default(),
                    open: Cell::new(0),
                });
                slots.push(slot.clone());
                slot
            }
        };
        slot.open.set(slot.open.get() + 1);
        slot
    }

    /// How many requests `slot` may have open at once.
    fn room(&self, slot: &Slot) -> usize {
        self.limit.min(slot.line.max_streams())
    }
}

/// One request's stream on a pooled HTTP/2 connection, counted until dropped (with the
/// response body: a watch holds it until it ends).
pub struct WatchLease {
    pool: Rc<WatchPool>,
    slot: Rc<Slot>,
}

impl WatchLease {
    /// Sends the bodiless request `build` makes on this lease's connection and waits for
    /// its answer's head; `None`: the API server does not speak HTTP/2, and this request
    /// (and every later one) goes on the plain client.
    ///
    /// Leases taken before a connection is open count on it up to the pool's limit; once
    /// it is open and the server has said how many streams it allows, those past that
    /// move to another connection, one at a time, until the rest fit (else they would
    /// wait for a stream to end: for idle watches, forever).
    pub async fn send(
        &mut self,
        build: impl Fn() -> http02::Request<()>,
    ) -> Result<Option<http02::Response<multiplex::Body>>, multiplex::Error> {
        let pool = self.pool.clone();
        let Some(dialer) = &pool.dialer else {
            return Ok(None);
        };
        let sent = async {
            loop {
                // a live connection's limit is known already
                if !self.slot.line.is_live() {
                    self.slot.line.open(dialer).await?;
                }
                if self.slot.open.get() <= pool.room(&self.slot) {
                    break;
                }
                self.slot.open.set(self.slot.open.get() - 1);
                self.slot = pool.take_slot();
            }
            self.slot.line.send(dialer, build).await
        };
        match sent.await {
            Err(multiplex::Error::NotHttp2) => {
                log::info!("the API server does not offer HTTP/2 (ALPN): watches stay on HTTP/1.1");
                pool.http1_only.set(true);
                Ok(None)
            }
            other => other.map(Some),
        }
    }
}

impl Drop for WatchLease {
    fn drop(&mut self) {
        self.slot.open.set(self.slot.open.get().saturating_sub(1));
    }
}
