//! HTTP/1.1 by hand, over a plain socket to kubegate: what a client library would not
//! send or would hide (pipelined requests, upgrades, when the connection closes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A connection to `url` (`http://ADDR`), with a 10 s read timeout.
pub fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the peer closes (or 10 s pass); returns what came and whether it closed.
pub fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return (out, false)
            }
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Reads one response head (up to the blank line); returns it and what followed.
pub fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = out.split_off(at + 4);
            return (String::from_utf8_lossy(&out).into_owned(), rest);
        }
        let n = s.read(&mut buf).expect("a response head");
        assert!(
            n > 0,
            "closed before a head: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

/// Writes all of `bytes`.
pub fn write(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).unwrap();
}

/// Sends `request` over a new connection to `url` and reads until the peer closes it
/// (or 10 s pass): what came and whether it closed.
pub fn exchange(url: &str, request: &[u8]) -> (Vec<u8>, bool) {
    let mut s = connect(url);
    write(&mut s, request);
    read_to_close(&mut s)
}
