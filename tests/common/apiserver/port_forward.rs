//! port-forward in the API server stand-in, as kube-apiserver v1.32 speaks it to kubectl
//! v1.32:
//!
//! - `pods/portforward`: the `SPDY/3.1+portforward.k8s.io` subprotocol, SPDY/3.1 frames
//!   carried in binary WebSocket messages, as kubectl 1.31+ sends them. Each forwarded
//!   connection is two SPDY streams with the headers `streamType` (`data` or `error`),
//!   `port` and `requestID`; the stand-in replies to both and joins the data stream to a
//!   TCP connection to `127.0.0.1:{port}` (the "pod's port": tests start a server there).
//!
//! The SPDY framing is in `spdy`; the same session runs after a plain SPDY/3.1 upgrade
//! (`portforward.k8s.io`), the frames then following the 101 directly.
//!
//! What is not faithful: there is no kubelet and no container runtime: the "pod's port" is
//! `127.0.0.1:{port}` on the test's machine, whatever the pod.

use std::collections::HashMap;

use actix_web::web;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spdy::{
    send_spdy, stream_id, Out, Spdy, SpdyFrame, FLAG_FIN, GOAWAY, PING, RST_STREAM, SYN_STREAM,
    WINDOW_UPDATE,
};
use super::websocket::{ws_frame, WsInput, WsMessage, OP_CLOSE};

/// One forwarded connection: the error stream and the data stream of a `requestID`.
#[derive(Default)]
struct Forward {
    error_stream: Option<u32>,
    data_stream: Option<u32>,
    port: u16,
}

/// The port-forward session: SPDY, over the WebSocket or (a SPDY upgrade) as it is.
pub(super) async fn port_forward(pod: String, payload: web::Payload, out: Out) {
    let mut input = WsInput::new(payload, out.tx.clone(), out.raw);
    let mut spdy = Spdy::new();
    let mut buf = BytesMut::new();
    let mut forwards: HashMap<String, Forward> = HashMap::new();
    let mut writers: HashMap<u32, tokio::net::tcp::OwnedWriteHalf> = HashMap::new();
    'session: loop {
        let message = match input.next().await {
            WsMessage::Data(m) => m,
            WsMessage::Close => break,
        };
        buf.extend_from_slice(&message);
        while let Some(frame) = Spdy::frame(&mut buf) {
            match frame {
                SpdyFrame::Control {
                    kind: SYN_STREAM,
                    data,
                    ..
                } if data.len() >= 10 => {
                    let (stream, headers) = match spdy.open(&out, &data).await {
                        Ok(opened) => opened,
                        Err(why) => {
                            if let Some(e) = why {
                                log::error!("port-forward {pod}: {e}");
                            }
                            break 'session;
                        }
                    };
                    let request = headers.get("requestid").cloned().unwrap_or_default();
                    let port: u16 = headers
                        .get("port")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    let forward = forwards.entry(request).or_default();
                    forward.port = port;
                    match headers.get("streamtype").map(String::as_str) {
                        Some("error") => forward.error_stream = Some(stream),
                        Some("data") => forward.data_stream = Some(stream),
                        _ => {}
                    }
                    if let (Some(error_stream), Some(data_stream)) =
                        (forward.error_stream, forward.data_stream)
                    {
                        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                            Ok(conn) => {
                                let (reader, writer) = conn.into_split();
                                writers.insert(data_stream, writer);
                                actix_rt::spawn(pump(
                                    reader,
                                    data_stream,
                                    error_stream,
                                    out.clone(),
                                ));
                            }
                            Err(e) => {
                                let text = format!("error forwarding port {port} to pod {pod}, uid : failed to connect to localhost:{port} inside namespace: {e}");
                                let _ =
                                    send_spdy(&out, Spdy::data(error_stream, 0, text.as_bytes()))
                                        .await;
                                let _ =
                                    send_spdy(&out, Spdy::data(error_stream, FLAG_FIN, &[])).await;
                                let _ =
                                    send_spdy(&out, Spdy::data(data_stream, FLAG_FIN, &[])).await;
                            }
                        }
                    }
                }
                SpdyFrame::Control {
                    kind: PING, data, ..
                } => {
                    if !send_spdy(&out, Spdy::control(PING, 0, &data)).await {
                        break 'session;
                    }
                }
                SpdyFrame::Control {
                    kind: RST_STREAM,
                    data,
                    ..
                } if data.len() >= 4 => {
                    writers.remove(&stream_id(&data));
                }
                SpdyFrame::Control { kind: GOAWAY, .. } => break 'session,
                SpdyFrame::Control { .. } => {}
                SpdyFrame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(writer) = writers.get_mut(&stream) {
                        if !data.is_empty() {
                            if writer.write_all(&data).await.is_err() {
                                writers.remove(&stream);
                            } else {
                                let mut update = stream.to_be_bytes().to_vec();
                                update.extend_from_slice(&(data.len() as u32).to_be_bytes());
                                let _ =
                                    send_spdy(&out, Spdy::control(WINDOW_UPDATE, 0, &update)).await;
                            }
                        }
                        if flags & FLAG_FIN != 0 {
                            if let Some(mut writer) = writers.remove(&stream) {
                                let _ = writer.shutdown().await;
                            }
                        }
                    }
                }
            }
        }
    }
    if !out.raw {
        let _ = out
            .tx
            .send(ws_frame(OP_CLOSE, &1000u16.to_be_bytes()))
            .await;
    }
}

/// The pod's port to the client: DATA frames on the data stream, then FIN on both streams.
async fn pump(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    data_stream: u32,
    error_stream: u32,
    out: Out,
) {
    let mut block = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut block).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !send_spdy(&out, Spdy::data(data_stream, 0, &block[..n])).await {
                    return;
                }
            }
        }
    }
    let _ = send_spdy(&out, Spdy::data(data_stream, FLAG_FIN, &[])).await;
    let _ = send_spdy(&out, Spdy::data(error_stream, FLAG_FIN, &[])).await;
}
