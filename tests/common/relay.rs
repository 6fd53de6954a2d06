//! A TCP relay in front of a server, whose connections the test can cut: what an API
//! server (or a load balancer before it) does when it closes a connection that was idle.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

/// Relays every connection to 127.0.0.1:`port` on to its target, byte for byte.
pub struct Relay {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<Mutex<usize>>,
}

impl Relay {
    /// Listens on 127.0.0.1:0 and relays to `target`.
    ///
    /// # Panics
    /// When it cannot bind.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (kept, counted) = (open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                *counted.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                {
                    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                    kept.push(client.try_clone().unwrap());
                    kept.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay {
            addr,
            open,
            accepted,
        }
    }

    /// Where it listens, as `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The connections it has relayed so far.
    pub fn connections(&self) -> usize {
        *self.accepted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes every connection it relays, both ways, at once (no TLS close, no HTTP/2
    /// `GOAWAY`: the sockets just end).
    pub fn cut(&self) {
        for stream in self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` on a thread until either ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
