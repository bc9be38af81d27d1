//! A small WebSocket server API for any application on hyper or axum, on the
//! same framing as the Engine.IO WebSocket transport (`engine/frames.rs`).
//!
//! Why it is here: Switchboard had two WebSocket implementations, this
//! crate's framing for Socket.IO and tokio-tungstenite for collaborative
//! editing, with two sets of limits, close handling and memory costs (an idle
//! tungstenite connection kept 4 KiB read and write buffers). Now both use one
//! implementation, and an idle connection holds its socket and two empty
//! `Vec`s. Nothing here knows Engine.IO.
//!
//! Use: [`Upgrade::from_request`] checks the upgrade request (and takes
//! hyper's upgrade handle), [`Upgrade::response`] is the `101` answer, and
//! [`Upgrade::accept`], awaited in a task of its own once that answer is on
//! its way, yields the [`WebSocket`].
//!
//! ```no_run
//! use switchboard_socketio::ws::{Incoming, Upgrade};
//!
//! async fn echo(mut request: http::Request<()>) -> http::Response<http_body_util::Full<bytes::Bytes>> {
//!     let Some(upgrade) = Upgrade::from_request(&mut request) else {
//!         return http::Response::builder().status(400).body(Default::default()).unwrap();
//!     };
//!     let response = upgrade.response();
//!     tokio::spawn(async move {
//!         let Ok(mut ws) = upgrade.accept(64 * 1024).await else { return };
//!         while let Some(Ok(message)) = ws.recv().await {
//!             let sent = match message {
//!                 Incoming::Binary(data) => ws.send_binary(&[data]).await,
//!                 Incoming::Ping(payload) => ws.pong(&payload).await,
//!                 Incoming::Close => break,
//!                 _ => Ok(()),
//!             };
//!             if sent.is_err() {
//!                 return;
//!             }
//!         }
//!         ws.close(1000, "", std::time::Duration::from_secs(1)).await;
//!     });
//!     response
//! }
//! ```
//!
//! Pings are not answered behind the caller's back: [`WebSocket::recv`] never
//! writes, so that it can sit in a `select!` and be dropped at any time
//! without cutting a frame in half. The caller answers [`Incoming::Ping`]
//! with [`WebSocket::pong`]. No extensions are negotiated.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub use crate::engine::frames::{close_code, Incoming, ReadError, WsError};
use crate::engine::frames::{Reader, WsConn};
use crate::engine::packet::Frame;

/// How long [`WebSocket::close`] keeps reading away input after the close
/// handshake before it gives up waiting for the peer to close the connection.
const DRAIN_PAUSE: Duration = Duration::from_millis(200);

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455, 4.2.2).
pub fn accept_key(key: &str) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// The `Sec-WebSocket-Key` of a valid WebSocket upgrade request
/// (`Upgrade: websocket`, `Sec-WebSocket-Version: 13`).
pub fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let has = |name: header::HeaderName, value: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(value)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return None;
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// The `101 Switching Protocols` answer to an upgrade request with this key.
pub fn switching_protocols(key: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&accept_key(key)) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

/// A checked WebSocket upgrade request, not answered yet.
pub struct Upgrade {
    key: String,
    on_upgrade: OnUpgrade,
}

impl Upgrade {
    /// The upgrade of `request`, if it is a valid WebSocket upgrade request
    /// served by hyper (which left its upgrade handle in the extensions).
    pub fn from_request<B>(request: &mut Request<B>) -> Option<Self> {
        let key = websocket_key(request.headers())?;
        let on_upgrade = request.extensions_mut().remove::<OnUpgrade>()?;
        Some(Self { key, on_upgrade })
    }

    /// The `101` answer, which must be sent before [`Upgrade::accept`] completes.
    pub fn response(&self) -> Response<Full<Bytes>> {
        switching_protocols(&self.key)
    }

    /// Waits for hyper to hand over the connection. Messages larger than
    /// `max_message` bytes (fragments joined) are refused with
    /// [`WsError::TooBig`].
    pub async fn accept(self, max_message: usize) -> hyper::Result<WebSocket> {
        let upgraded = self.on_upgrade.await?;
        // Served by hyper's HTTP/1 connection over a `TokioIo<TcpStream>` (as
        // Switchboard serves), the connection comes back as the plain TCP
        // stream: an allocation and an indirection less per read and write.
        Ok(match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let io = Io::Tcp(parts.io.into_inner());
                WebSocket::with_received(io, max_message, parts.read_buf.to_vec())
            }
            Err(upgraded) => WebSocket::new(Io::Upgraded(TokioIo::new(upgraded)), max_message),
        })
    }
}

/// The connection under an accepted [`WebSocket`].
pub enum Io {
    /// The TCP stream itself, taken back from hyper.
    Tcp(TcpStream),
    /// Hyper's connection, when it was not served over a plain `TcpStream`.
    Upgraded(TokioIo<hyper::upgrade::Upgraded>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Io::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Io::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_flush(cx),
            Io::Upgraded(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Io::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// The server side of one WebSocket connection.
pub struct WebSocket<S = Io> {
    conn: WsConn<S>,
    /// The peer broke the protocol: what it sends next is not framed.
    failed: bool,
    /// The peer sent its close frame.
    peer_closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// A WebSocket over a connection whose handshake is done.
    pub fn new(io: S, max_message: usize) -> Self {
        Self::with_received(io, max_message, Vec::new())
    }

    /// Likewise, with bytes already read from the connection after the handshake.
    pub fn with_received(io: S, max_message: usize, received: Vec<u8>) -> Self {
        Self {
            conn: WsConn::new(io, Reader::with_pending(max_message, received)),
            failed: false,
            peer_closed: false,
        }
    }

    /// The next message or control frame; `None` once the peer closed the
    /// connection. After an error, close with [`WsError::close_code`] (or
    /// just drop the connection on [`ReadError::Io`]). Cancel-safe, and
    /// never writes: answer [`Incoming::Ping`] with [`WebSocket::pong`].
    pub async fn recv(&mut self) -> Option<Result<Incoming, ReadError>> {
        let next = self.conn.next().await;
        match &next {
            Some(Err(_)) => self.failed = true,
            Some(Ok(Incoming::Close)) => self.peer_closed = true,
            _ => {}
        }
        next
    }

    /// Sends text and binary messages with one `write` where the socket takes
    /// them all. Not cancel-safe: a write dropped halfway leaves half a frame.
    pub async fn send(&mut self, messages: &[Frame]) -> io::Result<()> {
        self.conn.send_all(messages).await
    }

    /// Sends binary messages, with one `write` where the socket takes them all.
    pub async fn send_binary(&mut self, messages: &[Bytes]) -> io::Result<()> {
        let frames: Vec<Frame> = messages.iter().cloned().map(Frame::Binary).collect();
        self.conn.send_all(&frames).await
    }

    /// Sends a ping (payload cut to 125 bytes); the answer is an [`Incoming::Pong`].
    pub async fn ping(&mut self, payload: &[u8]) -> io::Result<()> {
        self.conn.send_ping(payload).await
    }

    /// Answers an [`Incoming::Ping`] with its payload.
    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.conn.send_pong(payload).await
    }

    /// Closes with `code` and `reason` (cut to fit a control frame), taking
    /// at most `linger`: sends the close frame, waits for the peer's (unless
    /// it came already or the peer broke the protocol), ends the sending
    /// side, then reads away whatever still arrives (such as the rest of a
    /// refused oversized message) until the peer closes or pauses for
    /// 200 ms, so that the socket is not closed with unread data: that would
    /// send a reset, which can destroy the close frame before the peer reads it.
    pub async fn close(&mut self, code: u16, reason: &str, linger: Duration) {
        let wait_for_peer = !self.failed && !self.peer_closed;
        let closing = async {
            if self.conn.send_close(code, reason).await.is_err() {
                return;
            }
            if wait_for_peer {
                while let Some(Ok(message)) = self.conn.next().await {
                    if message == Incoming::Close {
                        break;
                    }
                }
            }
            let io = self.conn.io_mut();
            let _ = io.shutdown().await;
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) = tokio::time::timeout(DRAIN_PAUSE, io.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(linger, closing).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frames::client_frame;

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_requests_are_checked() {
        let request = |upgrade: &str, version: &str| {
            Request::builder()
                .header(header::UPGRADE, upgrade)
                .header(header::SEC_WEBSOCKET_VERSION, version)
                .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
                .body(())
                .unwrap()
        };
        let key = Some("dGhlIHNhbXBsZSBub25jZQ==".to_owned());
        assert_eq!(websocket_key(request("WebSocket", "13").headers()), key);
        assert_eq!(websocket_key(request("h2c", "13").headers()), None);
        assert_eq!(websocket_key(request("websocket", "8").headers()), None);
        // Not served by hyper: no upgrade handle.
        assert!(Upgrade::from_request(&mut request("websocket", "13")).is_none());
        let response = switching_protocols("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    async fn read_some(io: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let n = io.read(&mut buf).await.unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn messages_pings_and_a_clean_close() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut ws = WebSocket::new(server, 100);
        client
            .write_all(&client_frame(true, 0x2, b"\x00\x01"))
            .await
            .unwrap();
        client
            .write_all(&client_frame(true, 0x9, b"p"))
            .await
            .unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Incoming::Binary(Bytes::from_static(b"\x00\x01"))
        );
        let Incoming::Ping(payload) = ws.recv().await.unwrap().unwrap() else {
            panic!("expected a ping");
        };
        ws.pong(&payload).await.unwrap();
        assert_eq!(read_some(&mut client).await, b"\x8a\x01p");
        ws.send_binary(&[Bytes::from_static(b"a"), Bytes::from_static(b"b")])
            .await
            .unwrap();
        assert_eq!(read_some(&mut client).await, b"\x82\x01a\x82\x01b");
        ws.ping(b"").await.unwrap();
        assert_eq!(read_some(&mut client).await, b"\x89\x00");

        // The peer closes first: the answer goes out at once, then EOF.
        client
            .write_all(&client_frame(true, 0x8, b"\x03\xe8"))
            .await
            .unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Incoming::Close);
        let closing = tokio::spawn(async move {
            ws.close(1000, "", Duration::from_secs(5)).await;
        });
        assert_eq!(read_some(&mut client).await, b"\x88\x02\x03\xe8");
        assert_eq!(read_some(&mut client).await, b"", "then the server's FIN");
        drop(client);
        closing.await.unwrap();
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_with_1009_and_its_rest_read_away() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut ws = WebSocket::new(server, 10);
        let big = client_frame(true, 0x2, &[7; 5000]);
        client.write_all(&big[..100]).await.unwrap();
        let Some(Err(ReadError::Ws(e))) = ws.recv().await else {
            panic!("expected a refusal");
        };
        assert_eq!(e.close_code(), close_code::TOO_BIG);
        let closing = tokio::spawn(async move {
            ws.close(e.close_code(), "message too large", Duration::from_secs(5))
                .await;
        });
        // The rest of the message still arrives; the server reads it away.
        client.write_all(&big[100..]).await.unwrap();
        let frame = read_some(&mut client).await;
        assert_eq!(&frame[..4], &[0x88, 19, 0x03, 0xf1]);
        assert_eq!(&frame[4..], b"message too large");
        drop(client);
        closing.await.unwrap();
    }
}
