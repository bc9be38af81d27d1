//! The accept loop: every TCP connection served with hyper's HTTP/1.1 server,
//! upgrades on, `TCP_NODELAY` set; a graceful stop that lets open requests end.
//! Routes live in `mod.rs`; what happens after a WebSocket upgrade lives in the
//! Socket.IO layer and `collab.rs`.
//!
//! Written here instead of `axum::serve` for two measured reasons:
//! - `axum::serve` goes through hyper-util's protocol-sniffing connection, which
//!   wraps the socket in a private type. An upgraded WebSocket then cannot be
//!   taken back as the plain `TcpStream`, so every read and write of every
//!   Socket.IO connection went through hyper's boxed `Upgraded` (an extra
//!   allocation held per connection, and `Rewind::poll_read` in the profile of
//!   the chat benchmark). With hyper's HTTP/1 connection the Socket.IO layer gets
//!   the `TcpStream` itself.
//! - `TCP_NODELAY`: without it a small frame written while the previous one is
//!   unacknowledged waits for the peer's delayed ACK (up to 40 ms on Linux).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest request head (request line and headers), in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `stop` completes, then waits for the
/// open HTTP connections to finish (upgraded connections are on their own by then).
pub async fn serve(listener: TcpListener, router: Router, stop: impl Future<Output = ()>) {
    // Every connection task holds a receiver: `closed()` is when all have ended.
    let (stopping, stop_signal) = watch::channel(());
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    on_accept_error(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        serve_connection(stop_signal.clone(), tcp, router.clone());
    }
    drop(listener);
    drop(stop_signal);
    let _ = stopping.send(());
    stopping.closed().await;
}

/// One connection's task. On the stop signal hyper finishes the request in
/// flight and closes the connection instead of keeping it alive.
fn serve_connection(mut stop_signal: watch::Receiver<()>, tcp: TcpStream, router: Router) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY failed");
    }
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        // Request heads larger than this get 431; bodies are streamed and
        // limited per endpoint. Without it hyper's read buffer (about 400 KB)
        // took a 100 KB header.
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::spawn(async move {
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            _ = stop_signal.changed() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "http connection ended with an error");
        }
    });
}

/// Errors of one connection are its own; others (out of file descriptors, say)
/// get a pause so that the loop does not spin.
async fn on_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; pausing for 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
