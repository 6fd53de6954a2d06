//! An HTTP/2-only server that allows few streams per connection, as a proxy before an API
//! server may (Go's HTTP/2 server allows 250 by default, kube-apiserver 1,000). It answers
//! every request like a watch: `200`, one `ADDED` event line, and the stream kept open
//! until the client resets it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// The event every answer carries.
pub const EVENT: &str =
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\"}}}\n";

/// A running server (on its own thread, for the test's life).
pub struct LimitedH2 {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open_streams: Arc<AtomicUsize>,
}

impl LimitedH2 {
    /// Serves HTTP/2 (ALPN `h2` alone) with `tls` on 127.0.0.1:0, at most `max_streams`
    /// concurrent streams per connection.
    ///
    /// # Panics
    /// When it cannot bind.
    pub fn start(tls: rustls::ServerConfig, max_streams: u32) -> LimitedH2 {
        LimitedH2::start_slow(tls, max_streams, std::time::Duration::ZERO)
    }

    /// As [`LimitedH2::start`], each connection waiting `delay` before its TLS handshake
    /// (so its `SETTINGS` come that much later).
    ///
    /// # Panics
    /// When it cannot bind.
    pub fn start_slow(
        mut tls: rustls::ServerConfig,
        max_streams: u32,
        delay: std::time::Duration,
    ) -> LimitedH2 {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let connections = Arc::new(AtomicUsize::new(0));
        let open_streams = Arc::new(AtomicUsize::new(0));
        let (counted, streams) = (connections.clone(), open_streams.clone());
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the HTTP/2 server");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the HTTP/2 server");
                let _ = bound_tx.send(listener.local_addr().unwrap());
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::Relaxed);
                    let (acceptor, streams) = (acceptor.clone(), streams.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut connection) = h2::server::Builder::new()
                            .max_concurrent_streams(max_streams)
                            .handshake::<_, Bytes>(tls)
                            .await
                        else {
                            return;
                        };
                        while let Some(Ok((_request, mut respond))) = connection.accept().await {
                            let streams = streams.clone();
                            tokio::spawn(async move {
                                let head = http02::Response::builder()
                                    .status(200)
                                    .header("content-type", "application/json")
                                    .body(())
                                    .unwrap();
                                let Ok(mut body) = respond.send_response(head, false) else {
                                    return;
                                };
                                streams.fetch_add(1, Ordering::Relaxed);
                                let _ = body.send_data(Bytes::from_static(EVENT.as_bytes()), false);
                                // open until the client resets it
                                let _ = std::future::poll_fn(|cx| body.poll_reset(cx)).await;
                                streams.fetch_sub(1, Ordering::Relaxed);
                            });
                        }
                    });
                }
            });
        });
        let addr = bound_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the HTTP/2 server did not start");
        LimitedH2 {
            addr,
            connections,
            open_streams,
        }
    }

    /// Where it listens, as `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The streams it is answering now.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Relaxed)
    }
}
