//! HTTP long-polling: the handshake, the held GET that returns queued packets,
//! and the POST that carries the client's packets.
//!
//! Error statuses follow the Engine.IO protocol suite: an unknown, closed or
//! upgraded sid, a second concurrent GET, or an undecodable body all get 400.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::packet::{decode_payload, encode_payload, Frame};
use super::session::{CloseReason, Transport, Upgrade};
use super::{error_response, respond, EngineHandler, EngineInner, EngineResponse, SessionRef};
use crate::timer::lock;

const TEXT: &str = "text/plain; charset=UTF-8";

/// How long a GET during an upgrade waits for the upgrade to complete.
const UPGRADE_GRACE: Duration = Duration::from_millis(10);

enum Ready {
    Body(String),
    /// The upgrade was probed: answer with a noop unless it completes at once.
    Upgrading,
    /// The session moved to WebSocket while this GET was held.
    Upgraded,
}

impl<H: EngineHandler> EngineInner<H> {
    pub(super) fn polling_handshake(self: &Arc<Self>) -> EngineResponse {
        let session = self.open(Transport::Polling);
        respond(
            StatusCode::OK,
            TEXT,
            self.handshake(session.sid(), &["websocket"]),
        )
    }

    pub(super) async fn polling<B>(
        self: Arc<Self>,
        req: Request<B>,
        session: SessionRef<H>,
    ) -> EngineResponse
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if session.transport() != Transport::Polling || self.heartbeat_expired(&session) {
            return error_response(3, "Bad request");
        }
        match *req.method() {
            Method::GET => self.poll(session).await,
            Method::POST if session.is_closed() => error_response(1, "Session ID unknown"),
            Method::POST => self.push(req, session).await,
            _ => error_response(2, "Bad handshake method"),
        }
    }

    /// GET: answers at once with what is queued, else holds until something is.
    async fn poll(&self, session: SessionRef<H>) -> EngineResponse {
        let overlap = {
            let mut inner = lock(&session.inner);
            if let Some(reason) = inner.closed {
                // A session that closed while no GET was held tells the next GET
                // how it ended, once; then its sid is unknown. A ping timeout
                // leaves nothing to tell: the client is presumed gone.
                let last =
                    (reason != CloseReason::PingTimeout).then(|| final_payload(&mut inner, reason));
                drop(inner);
                self.forget(&session);
                return match last {
                    Some(body) => respond(StatusCode::OK, TEXT, body),
                    None => error_response(1, "Session ID unknown"),
                };
            }
            std::mem::replace(&mut inner.polling_get, true)
        };
        if overlap {
            self.close(&session, CloseReason::PollingOverlap);
            return error_response(3, "Bad request");
        }
        // Clears the flag even if the client goes away and this future is dropped.
        let _guard = PollGuard(&session);
        loop {
            let notified = session.wake.notified();
            match self.poll_ready(&session) {
                Some(Ready::Body(body)) => return respond(StatusCode::OK, TEXT, body),
                Some(Ready::Upgrading) => return self.poll_during_upgrade(&session).await,
                Some(Ready::Upgraded) => return error_response(3, "Bad request"),
                None => notified.await,
            }
        }
    }

    /// A GET while an upgrade is probed ends with a noop, unless the client's `5`
    /// (often in the same TCP segment as its `2probe`) completes the upgrade within
    /// a moment: then polling is over and the GET gets 400, as with Node.js.
    async fn poll_during_upgrade(&self, session: &SessionRef<H>) -> EngineResponse {
        tokio::time::sleep(UPGRADE_GRACE).await;
        match session.transport() {
            Transport::WebSocket => error_response(3, "Bad request"),
            Transport::Polling => respond(StatusCode::OK, TEXT, Frame::NOOP),
        }
    }

    /// The body of a GET if it can be answered now.
    fn poll_ready(&self, session: &SessionRef<H>) -> Option<Ready> {
        let mut inner = lock(&session.inner);
        if let Some(reason) = inner.closed {
            let body = final_payload(&mut inner, reason);
            drop(inner);
            self.forget(session);
            return Some(Ready::Body(body));
        }
        if inner.transport == Transport::WebSocket {
            return Some(Ready::Upgraded);
        }
        // While an upgrade is under way, queued packets wait for the WebSocket.
        match inner.upgrade {
            Upgrade::Probed => return Some(Ready::Upgrading),
            Upgrade::Started => return None,
            Upgrade::None => {}
        }
        if inner.outbox.is_empty() {
            return None;
        }
        let body = encode_payload(&inner.outbox);
        inner.outbox = Default::default();
        Some(Ready::Body(body))
    }

    /// POST: decodes the client's packets and hands them over in order.
    async fn push<B>(&self, req: Request<B>, session: SessionRef<H>) -> EngineResponse
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match Limited::new(req.into_body(), self.config.max_payload)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                self.close(&session, CloseReason::TransportError);
                return respond(StatusCode::PAYLOAD_TOO_LARGE, TEXT, "Payload Too Large");
            }
        };
        let Ok(packets) = decode_payload(body) else {
            self.close(&session, CloseReason::InvalidPacket);
            return error_response(3, "Bad request");
        };
        for packet in packets {
            if !self.on_packet(&session, packet).await {
                break;
            }
        }
        respond(StatusCode::OK, "text/html", "ok")
    }
}

/// What is still queued, then how the session ended: a noop after the client's
/// own close, a close packet after any other.
fn final_payload(inner: &mut super::session::Inner, reason: CloseReason) -> String {
    let last = match reason {
        CloseReason::ClientClose => Frame::NOOP,
        _ => Frame::CLOSE,
    };
    inner.outbox.push_back(Frame::text_static(last));
    let body = encode_payload(&inner.outbox);
    inner.outbox.clear();
    body
}

struct PollGuard<'a, S: super::SessionState>(&'a super::Session<S>);

impl<S: super::SessionState> Drop for PollGuard<'_, S> {
    fn drop(&mut self) {
        lock(&self.0.inner).polling_get = false;
    }
}
