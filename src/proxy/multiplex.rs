//! kubegate's own HTTP/2 client towards an API server, for the requests that share a
//! connection ([`crate::proxy::upstream`]'s pool: watches, and GETs that answered small).
//!
//! awc carried them before. Its pool checks a connection out and back in for every
//! request, and its request builder, header conversions and response head cost about as
//! much again (kubegate alone at 1 KiB and 32 connections: about 4 % of the CPU, in a
//! `perf` profile). Here each [`Line`] holds one connection's `h2` handle: a request
//! is one `http::Request` built with its headers in place, sent on a clone of that handle,
//! and its answer's body read straight from its stream.
//!
//! A connection is opened by the first request that needs it ([`dial`]: the SSRF guard,
//! TCP without Nagle's algorithm, TLS read ahead, ALPN `h2`); the requests that come
//! meanwhile wait for it, then share it. It stays open however long it is idle (the API
//! server closes it when it wants to: `GOAWAY`, or the socket). The connection's task
//! keeps the server's stream limit (`SETTINGS_MAX_CONCURRENT_STREAMS`) where the pool
//! sees it ([`Line::max_streams`]): a proxy before the API server may allow fewer
//! streams than kube-apiserver's 1,000 (Go's HTTP/2 server: 250), and a request past
//! that limit would wait for a stream to end. A new connection is ready once the server
//! has answered a `PING` sent with the preface: its `SETTINGS` came before, so the limit
//! is known before the first request goes out. A bodiless request that fails on a
//! connection that had carried requests before (the server closed it while it was idle)
//! is sent once more, on a new connection.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use kubegate_actors::network::Network;

use super::dial::{self, Target};

/// Why a request could not be sent, or its answer's head not read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection within the connect timeout.
    #[error("did not accept a connection in time")]
    ConnectTimeout,
    /// No connection: the address, TCP or TLS failed.
    #[error("is unreachable: {0}")]
    Unreachable(String),
    /// The API server does not speak HTTP/2 (ALPN).
    #[error("does not speak HTTP/2")]
    NotHttp2,
    /// The connection or the stream failed.
    #[error("failed: {0}")]
    Http2(#[from] h2::Error),
}

/// How a [`Line`] opens its connection to one API server.
pub struct Dialer {
    /// The cluster's TLS settings, with ALPN `h2` first.
    pub tls: Arc<rustls::ClientConfig>,
    /// Where the API server is.
    pub target: Target,
    /// The SSRF guard.
    pub denied: Arc<Vec<Network>>,
    /// TCP, TLS and the HTTP/2 preface, at most this long.
    pub connect_timeout: Duration,
    /// Each stream's receive window.
    pub stream_window: u32,
    /// The connection's receive window.
    pub connection_window: u32,
}

impl Dialer {
    /// A new HTTP/2 connection, its task spawned on this worker.
    async fn open(&self) -> Result<(SendRequest<Bytes>, Watched), Error> {
        let connecting = async {
            let tcp = dial::tcp(&self.target, &self.denied)
                .await
                .map_err(Error::Unreachable)?;
            let tls = dial::tls(self.tls.clone(), &self.target, tcp)
                .await
                .map_err(Error::Unreachable)?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(Error::NotHttp2);
            }
            let mut builder = h2::client::Builder::new();
            builder
                .initial_window_size(self.stream_window)
                .initial_connection_window_size(self.connection_window)
                .enable_push(false);
            Ok(builder.handshake::<_, Bytes>(tls).await?)
        };
        let opened = async {
            let (sender, mut connection) = connecting.await?;
            let mut ping = connection.ping_pong();
            let watched = Watched::default();
            let seen = watched.clone();
            let server = self.target.authority.clone();
            actix_rt::spawn(async move {
                let ended = std::future::poll_fn(|cx| {
                    let polled = Pin::new(&mut connection).poll(cx);
                    // the server's SETTINGS may change it at any time
                    seen.max_streams
                        .set(connection.max_concurrent_send_streams());
                    polled
                })
                .await;
                if let Err(e) = ended {
                    log::debug!("the HTTP/2 connection to {server} ended: {e}");
                }
                seen.closed.set(true);
            });
            // the server's SETTINGS come before its answer to a PING: once it is here,
            // its stream limit is known, before any request is sent
            if let Some(ping) = ping.as_mut() {
                ping.ping(h2::Ping::opaque()).await?;
            }
            Ok((sender, watched))
        };
        tokio::time::timeout(self.connect_timeout, opened)
            .await
            .map_err(|_| Error::ConnectTimeout)?
    }
}

/// What a connection's task tells its [`Line`].
#[derive(Clone)]
struct Watched {
    /// Set once the connection has ended.
    closed: Rc<Cell<bool>>,
    /// The most streams the server lets this connection have open at once (its
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; unbounded until it says).
    max_streams: Rc<Cell<usize>>,
}

impl Default for Watched {
    fn default() -> Watched {
        Watched {
            closed: Rc::new(Cell::new(false)),
            max_streams: Rc::new(Cell::new(usize::MAX)),
        }
    }
}

/// One HTTP/2 connection of a pool, opened when first needed and again after it ended.
#[derive(Default)]
pub struct Line {
    open: RefCell<Option<Open>>,
    opening: tokio::sync::Mutex<()>,
    opened: Cell<u64>,
}

/// A connection a [`Line`] holds.
struct Open {
    /// Which of the line's connections this is.
    id: u64,
    sender: SendRequest<Bytes>,
    watched: Watched,
}

impl Line {
    /// Sends the bodiless request `build` makes on this line's connection (opened now if
    /// it has none) and waits for its answer's head.
    pub async fn send(
        &self,
        dialer: &Dialer,
        build: impl Fn() -> http02::Request<()>,
    ) -> Result<http02::Response<Body>, Error> {
        let mut again = false;
        loop {
            let (id, sender, fresh) = self.sender(dialer).await?;
            let answer = async {
                let (answer, _) = sender.ready().await?.send_request(build(), true)?;
                answer.await
            }
            .await;
            match answer {
                Ok(answer) => return Ok(answer.map(Body)),
                Err(e) => {
                    // a stream refused or reset leaves the connection to the others
                    if !e.is_reset() {
                        self.forget(id);
                    }
                    if fresh || again {
                        return Err(Error::Http2(e));
                    }
                    log::debug!("a request failed on a pooled HTTP/2 connection ({e}); sent again");
                    again = true;
                }
            }
        }
    }

    /// The connection, opened now if the line has none: its id, its handle, and whether
    /// it was opened for this request (or while this request waited).
    async fn sender(&self, dialer: &Dialer) -> Result<(u64, SendRequest<Bytes>, bool), Error> {
        if let Some(open) = self.live() {
            return Ok((open.0, open.1, false));
        }
        let _opening = self.opening.lock().await;
        if let Some(open) = self.live() {
            return Ok((open.0, open.1, true));
        }
        // boxed: opening (TCP, TLS, the preface) is a large future, and held inline it
        // would make every request's future that much larger, copied as it is moved
        let (sender, watched) = Box::pin(dialer.open()).await?;
        let id = self.opened.get() + 1;
        self.opened.set(id);
        *self.open.borrow_mut() = Some(Open {
            id,
            sender: sender.clone(),
            watched,
        });
        Ok((id, sender, true))
    }

    /// Opens this line's connection if it has none, and learns the server's stream limit
    /// ([`Line::max_streams`]).
    pub async fn open(&self, dialer: &Dialer) -> Result<(), Error> {
        self.sender(dialer).await.map(|_| ())
    }

    /// Whether the line has a connection that has not ended (without cloning its handle).
    pub fn is_live(&self) -> bool {
        self.open
            .borrow()
            .as_ref()
            .is_some_and(|o| !o.watched.closed.get())
    }

    /// The connection's id and handle, unless it has none or it ended.
    fn live(&self) -> Option<(u64, SendRequest<Bytes>)> {
        let open = self.open.borrow();
        open.as_ref()
            .filter(|o| !o.watched.closed.get())
            .map(|o| (o.id, o.sender.clone()))
    }

    /// The most streams the server lets this line's connection have open at once, as
    /// far as it has said (`usize::MAX` before it has, or while there is no connection).
    pub fn max_streams(&self) -> usize {
        let open = self.open.borrow();
        open.as_ref()
            .filter(|o| !o.watched.closed.get())
            .map_or(usize::MAX, |o| o.watched.max_streams.get())
    }

    /// Lets go of connection `id` (failed), unless another has replaced it already.
    fn forget(&self, id: u64) {
        let mut open = self.open.borrow_mut();
        if open.as_ref().is_some_and(|o| o.id == id) {
            *open = None;
        }
    }
}

/// An answer's body, read from its HTTP/2 stream; what is read is given back to the
/// stream's window at once (the window bounds what waits in kubegate, not what the
/// client has yet to read).
pub struct Body(h2::RecvStream);

impl futures_util::Stream for Body {
    type Item = Result<Bytes, h2::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let data = ready!(self.0.poll_data(cx));
        if let Some(Ok(chunk)) = &data {
            let _ = self.0.flow_control().release_capacity(chunk.len());
        }
        Poll::Ready(data)
    }
}
