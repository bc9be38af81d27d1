//! One Engine.IO session: its id, its bounded outgoing queue, its transport and
//! heartbeat state, and how it closes.
//!
//! A session does not own a socket or a task. The transport that is active (the
//! WebSocket driver, or the HTTP long-polling requests) drains the queue; the shared
//! heartbeat timers of the engine ping it. The per-session state of the layer above
//! (Socket.IO) lives in `state`, in the same allocation.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::packet::Frame;
use crate::timer::lock;

/// A random, URL-safe identifier of 20 characters (120 bits), stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; 20]);

impl Sid {
    /// A new sid from 15 random bytes (OS entropy), base64url-encoded without padding.
    pub fn random() -> Self {
        let mut raw = [0u8; 15];
        // getrandom fails only if the OS has no entropy source at all, which we
        // cannot run without; fall back to the clock so ids stay unique, not secret.
        if getrandom::fill(&mut raw).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            raw[..15].copy_from_slice(&nanos.to_le_bytes()[..15]);
        }
        let mut out = [0u8; 20];
        use base64::Engine as _;
        // 15 bytes encode to exactly 20 characters, so this cannot fail.
        let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(raw, &mut out);
        Sid(out)
    }

    /// Parses a sid sent by a client; anything but 20 URL-safe characters is no sid of ours.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; 20] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    /// The 20 characters of the sid, as sent on the wire.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

/// The transport a session currently uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling: GETs receive frames, POSTs send them.
    Polling,
    /// A WebSocket, opened directly or upgraded from polling.
    WebSocket,
}

impl Transport {
    /// The name used in the `transport` query parameter and the handshake.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close packet.
    ClientClose,
    /// The connection dropped (TCP closed, WebSocket close frame).
    TransportClose,
    /// The transport failed (I/O error, frame over the size limit).
    TransportError,
    /// No pong within `ping_timeout` after a ping.
    PingTimeout,
    /// Two long-polling GETs at once.
    PollingOverlap,
    /// A packet that does not parse.
    InvalidPacket,
    /// The outgoing queue overflowed: the client does not read fast enough.
    SlowConsumer,
    /// The server (the application) closed it.
    ServerClose,
}

/// The session was closed or its queue is full; the frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// The frames would take the queue past its limit (`max_queued_frames`).
    #[error("outgoing queue full")]
    Full,
}

/// What the layer above keeps per session, and is told when the session ends.
pub trait SessionState: Send + Sync + Sized + 'static {
    /// Called exactly once, when the session closes for any reason.
    fn on_close(&self, _session: &Session<Self>, _reason: CloseReason) {}
}

impl SessionState for () {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upgrade {
    None,
    /// A WebSocket with this sid was accepted; waiting for `2probe`.
    Started,
    /// `3probe` was sent; waiting for `5`. Polling GETs are answered with a noop.
    Probed,
}

pub(crate) struct Inner {
    pub(crate) outbox: VecDeque<Frame>,
    pub(crate) transport: Transport,
    pub(crate) upgrade: Upgrade,
    pub(crate) closed: Option<CloseReason>,
    /// Bumped by every pong, so a timer entry from an older ping is recognised as stale.
    pub(crate) heartbeat: u32,
    /// Set while a ping waits for its pong.
    pub(crate) pong_deadline: Option<Instant>,
    /// A long-polling GET is waiting on this session.
    pub(crate) polling_get: bool,
}

/// One Engine.IO session. `S` is the state of the layer above.
pub struct Session<S> {
    sid: Sid,
    max_queue: usize,
    pub(crate) inner: Mutex<Inner>,
    /// Wakes the one consumer of the queue (WebSocket driver or polling GET).
    pub(crate) wake: Notify,
    /// Wakes a WebSocket driver blocked on a write when the session closes.
    pub(crate) closing: Notify,
    state: S,
}

impl<S: SessionState> Session<S> {
    pub(crate) fn new(transport: Transport, max_queue: usize, state: S) -> Self {
        Self {
            sid: Sid::random(),
            max_queue,
            inner: Mutex::new(Inner {
                outbox: VecDeque::new(),
                transport,
                upgrade: Upgrade::None,
                closed: None,
                heartbeat: 0,
                pong_deadline: None,
                polling_get: false,
            }),
            wake: Notify::new(),
            closing: Notify::new(),
            state,
        }
    }

    /// The Engine.IO session id, fixed for the session's life.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The state of the layer above.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The transport in use now; it changes from polling to WebSocket on an upgrade.
    pub fn transport(&self) -> Transport {
        lock(&self.inner).transport
    }

    /// Whether the session has been closed (for any reason).
    pub fn is_closed(&self) -> bool {
        lock(&self.inner).closed.is_some()
    }

    /// Queues one frame.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all(std::iter::once(frame), 1)
    }

    /// Queues `count` frames that must go out together and in order (an event and
    /// its binary attachments). On `Full` the caller closes the session with
    /// [`CloseReason::SlowConsumer`], outside any lock of its own.
    pub fn send_all(
        &self,
        frames: impl Iterator<Item = Frame>,
        count: usize,
    ) -> Result<(), SendError> {
        {
            let mut inner = lock(&self.inner);
            if inner.closed.is_some() {
                return Err(SendError::Closed);
            }
            if inner.outbox.len() + count > self.max_queue {
                return Err(SendError::Full);
            }
            inner.outbox.extend(frames);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Ends the session. Returns false if it was already closed.
    pub fn close(&self, reason: CloseReason) -> bool {
        {
            let mut inner = lock(&self.inner);
            if inner.closed.is_some() {
                return false;
            }
            inner.closed = Some(reason);
        }
        tracing::debug!(sid = %self.sid, ?reason, "engine session closed");
        self.wake.notify_one();
        self.closing.notify_waiters();
        self.state.on_close(self, reason);
        true
    }

    /// Frames queued now, and the most that may be queued.
    pub fn queued(&self) -> (usize, usize) {
        (lock(&self.inner).outbox.len(), self.max_queue)
    }

    /// Takes every queued frame, for the WebSocket driver. The queue is left
    /// with no allocation: an idle session holds no buffer.
    pub(crate) fn take_all(&self) -> Vec<Frame> {
        Vec::from(std::mem::take(&mut lock(&self.inner).outbox))
    }
}
