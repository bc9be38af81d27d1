//! RFC 6455 framing, server side, for the Engine.IO WebSocket transport and
//! for applications (through the crate's `ws` module): the
//! frame parser and message assembly ([`Reader`], pure, fuzzed), the frame
//! encoder, and [`WsConn`], which reads messages from and writes frames to one
//! upgraded connection. The HTTP upgrade itself and the session loop live in
//! `websocket.rs`; Engine.IO packets in `packet.rs`.
//!
//! Hand-written, not tokio-tungstenite, for the memory an idle connection holds.
//! Measured with heaptrack at 5,000 idle Socket.IO connections, tungstenite kept
//! per connection a 1 KiB read buffer (it reads at most `read_buffer_size` bytes
//! per `read`, so a smaller one costs a syscall per chunk of every large frame),
//! its write buffer (about 110 B after the first frame), two waker proxies (128 B)
//! and about 350 B of protocol state inside the connection's task: some 1.6 KiB
//! of the 5.4 KiB an idle connection cost, where the target is 3.2. Here an idle
//! connection holds its socket and two empty `Vec`s: reads go through a buffer on
//! the stack of the polling thread, and only a frame that arrives in pieces is
//! kept on the heap until it is complete; frames to send are encoded into one
//! buffer per write that is freed after it.
//!
//! Supported: text, binary, fragmented messages, ping (answered with pong), pong,
//! close. Not supported: extensions (no `permessage-deflate` is negotiated, so any
//! RSV bit is a protocol error).

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::packet::{Frame, Utf8Bytes};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Bytes read per `read` call, into a buffer on the stack.
const READ_CHUNK: usize = 16 * 1024;

/// Close codes (RFC 6455, section 7.4.1) that the framing itself uses.
pub mod close_code {
    /// The connection did what it was for.
    pub const NORMAL: u16 = 1000;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL: u16 = 1002;
    /// A message that is not what its type says (a text message that is not UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// A message against the endpoint's policy.
    pub const POLICY: u16 = 1008;
    /// A message larger than the limit.
    pub const TOO_BIG: u16 = 1009;
}

/// A complete message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (fragments joined), checked to be UTF-8.
    Text(Utf8Bytes),
    /// A binary message (fragments joined).
    Binary(Bytes),
    /// A ping, with its payload for the pong that answers it.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The peer's close frame (its code and reason are not kept).
    Close,
}

/// The client broke the protocol; the connection closes with [`WsError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// Frames that RFC 6455 forbids (what was wrong, for logs).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A message or frame larger than the limit.
    #[error("message larger than the limit")]
    TooBig,
    /// A text message that is not UTF-8.
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
}

impl WsError {
    /// The close code that tells the peer what it did wrong.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::Protocol(_) => close_code::PROTOCOL,
            WsError::TooBig => close_code::TOO_BIG,
            WsError::InvalidUtf8 => close_code::INVALID_DATA,
        }
    }
}

/// Reading failed: the socket, or the client's frames.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer broke the protocol or a limit.
    #[error(transparent)]
    Ws(#[from] WsError),
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header length, mask included.
    size: usize,
    payload: usize,
}

/// Parses the frame header at the start of `buf`; `None` if it is not all there yet.
fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(WsError::Protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("unmasked frame from a client"));
    }
    let (declared, len_size): (u64, usize) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 8),
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    if opcode >= OP_CLOSE && (!fin || declared > 125) {
        return Err(WsError::Protocol("fragmented or oversized control frame"));
    }
    let payload = usize::try_from(declared).map_err(|_| WsError::TooBig)?;
    if payload > max_payload {
        return Err(WsError::TooBig);
    }
    let size = 2 + len_size + 4;
    let Some(mask) = buf.get(size - 4..size) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        size,
        payload,
    }))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// The first frame of `buf` if it is complete: its header and masked payload.
fn split_frame(buf: &[u8], max_payload: usize) -> Result<Option<(Header, &[u8])>, WsError> {
    let Some(header) = parse_header(buf, max_payload)? else {
        return Ok(None);
    };
    Ok(buf
        .get(header.size..header.size + header.payload)
        .map(|payload| (header, payload)))
}

/// Turns received bytes into messages: parses frames, unmasks them, joins
/// fragments, checks limits and UTF-8. Holds nothing between complete frames.
#[derive(Debug)]
pub struct Reader {
    max_payload: usize,
    /// Received bytes not yet parsed (a frame not complete yet). Empty, with no
    /// allocation, between frames.
    pending: Vec<u8>,
    fragments: Fragments,
}

impl Reader {
    /// A reader refusing messages larger than `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload,
            pending: Vec::new(),
            fragments: None,
        }
    }

    /// Bytes received before the reader took over (after the HTTP upgrade request).
    pub fn with_pending(max_payload: usize, pending: Vec<u8>) -> Self {
        Self {
            pending,
            ..Self::new(max_payload)
        }
    }

    /// Takes in bytes just read and returns the first message they complete;
    /// what follows it stays pending for [`Reader::next_pending`].
    pub fn push(&mut self, fresh: &[u8]) -> Result<Option<Incoming>, WsError> {
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(fresh);
            return self.next_pending();
        }
        // Fast path: parse straight from the caller's buffer, copy only the rest.
        let mut offset = 0;
        while let Some((header, payload)) = split_frame(&fresh[offset..], self.max_payload)? {
            offset += header.size + header.payload;
            if let Some(message) =
                on_frame(&mut self.fragments, self.max_payload, &header, payload)?
            {
                self.pending.extend_from_slice(&fresh[offset..]);
                return Ok(Some(message));
            }
        }
        self.pending.extend_from_slice(&fresh[offset..]);
        Ok(None)
    }

    /// The next message from bytes already received, if they hold a complete one.
    pub fn next_pending(&mut self) -> Result<Option<Incoming>, WsError> {
        let mut offset = 0;
        let mut found = None;
        while let Some((header, payload)) = split_frame(&self.pending[offset..], self.max_payload)?
        {
            offset += header.size + header.payload;
            if let Some(message) =
                on_frame(&mut self.fragments, self.max_payload, &header, payload)?
            {
                found = Some(message);
                break;
            }
        }
        if offset == self.pending.len() {
            self.pending = Vec::new();
        } else {
            self.pending.drain(..offset);
        }
        Ok(found)
    }
}

/// A fragmented message being received: its opcode and data so far.
type Fragments = Option<Box<(u8, Vec<u8>)>>;

/// Handles one complete frame: the message it completes, if any.
fn on_frame(
    fragments: &mut Fragments,
    max_payload: usize,
    header: &Header,
    masked: &[u8],
) -> Result<Option<Incoming>, WsError> {
    let mut payload = masked.to_vec();
    unmask(&mut payload, header.mask);
    Ok(match header.opcode {
        OP_PING => Some(Incoming::Ping(Bytes::from(payload))),
        OP_PONG => Some(Incoming::Pong),
        OP_CLOSE => Some(Incoming::Close),
        OP_TEXT | OP_BINARY if fragments.is_some() => {
            return Err(WsError::Protocol("new message inside a fragmented one"))
        }
        OP_TEXT | OP_BINARY if header.fin => Some(complete(header.opcode, payload)?),
        OP_TEXT | OP_BINARY => {
            *fragments = Some(Box::new((header.opcode, payload)));
            None
        }
        _ => continuation(fragments, max_payload, header.fin, &payload)?,
    })
}

fn continuation(
    fragments: &mut Fragments,
    max_payload: usize,
    fin: bool,
    payload: &[u8],
) -> Result<Option<Incoming>, WsError> {
    let Some(so_far) = fragments.as_mut() else {
        return Err(WsError::Protocol("continuation frame without a message"));
    };
    if so_far.1.len() + payload.len() > max_payload {
        return Err(WsError::TooBig);
    }
    so_far.1.extend_from_slice(payload);
    if !fin {
        return Ok(None);
    }
    match fragments.take() {
        Some(done) => {
            let (opcode, data) = *done;
            complete(opcode, data).map(Some)
        }
        None => Ok(None),
    }
}

fn complete(opcode: u8, data: Vec<u8>) -> Result<Incoming, WsError> {
    let data = Bytes::from(data);
    if opcode == OP_TEXT {
        Utf8Bytes::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| WsError::InvalidUtf8)
    } else {
        Ok(Incoming::Binary(data))
    }
}

/// Appends one unmasked server frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends an Engine.IO frame as a WebSocket text or binary frame.
pub fn encode_engine_frame(out: &mut Vec<u8>, frame: &Frame) {
    match frame {
        Frame::Text(text) => encode_frame(out, OP_TEXT, text.as_bytes()),
        Frame::Binary(data) => encode_frame(out, OP_BINARY, data),
    }
}

/// A close frame with `code` and a short reason.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // A control frame's payload is at most 125 bytes.
    let reason = reason.get(..reason.len().min(123)).unwrap_or_default();
    payload.extend_from_slice(reason.as_bytes());
    let mut out = Vec::with_capacity(payload.len() + 2);
    encode_frame(&mut out, OP_CLOSE, &payload);
    out
}

/// One upgraded WebSocket connection, server side.
pub struct WsConn<S> {
    io: S,
    reader: Reader,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsConn<S> {
    /// A connection whose handshake is done, read through `reader`.
    pub fn new(io: S, reader: Reader) -> Self {
        Self { io, reader }
    }

    /// The next message; `None` when the client closed the TCP connection.
    pub async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, ReadError>>> {
        match self.reader.next_pending() {
            Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
            Ok(None) => {}
            Err(e) => return Poll::Ready(Some(Err(e.into()))),
        }
        loop {
            // On the stack: an idle connection keeps no read buffer. Left
            // uninitialised (`ReadBuf` tracks what was written): zeroing 16 KiB
            // per read showed up as `memset` in the profile.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                return Poll::Ready(Some(Err(e.into())));
            }
            if buf.filled().is_empty() {
                return Poll::Ready(None);
            }
            match self.reader.push(buf.filled()) {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// Writes these frames with one `write` where the socket takes them all.
    pub async fn send_all(&mut self, frames: &[Frame]) -> io::Result<()> {
        let size = frames.iter().map(|f| frame_len(f) + 10).sum();
        let mut out = Vec::with_capacity(size);
        for frame in frames {
            encode_engine_frame(&mut out, frame);
        }
        self.io.write_all(&out).await
    }

    /// Writes one text message.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let mut out = Vec::with_capacity(text.len() + 10);
        encode_frame(&mut out, OP_TEXT, text.as_bytes());
        self.io.write_all(&out).await
    }

    /// Answers a ping with its payload.
    pub async fn send_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_control(OP_PONG, payload).await
    }

    /// Sends a ping (payload cut to 125 bytes).
    pub async fn send_ping(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_control(OP_PING, payload).await
    }

    /// A control frame; the payload is cut to the 125 bytes one may carry.
    async fn send_control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let payload = &payload[..payload.len().min(125)];
        let mut out = Vec::with_capacity(payload.len() + 2);
        encode_frame(&mut out, opcode, payload);
        self.io.write_all(&out).await
    }

    /// Sends a close frame and nothing else.
    pub async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.io.write_all(&close_frame(code, reason)).await
    }

    /// The connection itself, for what follows the close handshake.
    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Sends a close frame, then waits up to `linger` for the client's close or EOF.
    pub async fn close(&mut self, code: u16, reason: &str, linger: Duration) {
        let handshake = async {
            if self.send_close(code, reason).await.is_err() {
                return;
            }
            while let Some(Ok(message)) = self.next().await {
                if message == Incoming::Close {
                    break;
                }
            }
            let _ = self.io.shutdown().await;
        };
        let _ = tokio::time::timeout(linger, handshake).await;
    }
}

fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Text(t) => t.len(),
        Frame::Binary(b) => b.len(),
    }
}

/// A client frame (for tests): the server encoding, masked with a fixed key.
#[cfg(test)]
pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut masked = payload.to_vec();
    unmask(&mut masked, mask);
    let mut out = Vec::new();
    encode_frame(&mut out, opcode, &masked);
    let header = out.len() - masked.len();
    if !fin {
        out[0] &= 0x7f;
    }
    out[1] |= 0x80;
    out.splice(header..header, mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client frames back to back, as one read may bring them.
    fn client_stream(frames: &[(bool, u8, &[u8])]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|&(fin, opcode, payload)| client_frame(fin, opcode, payload))
            .collect()
    }

    fn text(s: &str) -> Incoming {
        Incoming::Text(Utf8Bytes::from_utf8(Bytes::copy_from_slice(s.as_bytes())).unwrap())
    }

    #[test]
    fn one_frame_per_push() {
        let mut r = Reader::new(1000);
        assert_eq!(
            r.push(&client_frame(true, OP_TEXT, b"42[\"a\"]")).unwrap(),
            Some(text("42[\"a\"]"))
        );
        assert_eq!(r.pending.capacity(), 0, "nothing is kept between frames");
        assert_eq!(
            r.push(&client_frame(true, OP_BINARY, &[1, 2, 3])).unwrap(),
            Some(Incoming::Binary(Bytes::from_static(&[1, 2, 3])))
        );
    }

    #[test]
    fn several_frames_in_one_read_come_out_one_by_one() {
        let mut r = Reader::new(1000);
        let bytes = client_stream(&[
            (true, OP_TEXT, b"2"),
            (true, OP_PING, b"hi"),
            (true, OP_TEXT, b"3"),
        ]);
        assert_eq!(r.push(&bytes).unwrap(), Some(text("2")));
        assert_eq!(
            r.next_pending().unwrap(),
            Some(Incoming::Ping(Bytes::from_static(b"hi")))
        );
        assert_eq!(r.next_pending().unwrap(), Some(text("3")));
        assert_eq!(r.next_pending().unwrap(), None);
        assert_eq!(r.pending.capacity(), 0);
    }

    #[test]
    fn a_frame_split_at_every_byte_is_reassembled() {
        let payload = "x".repeat(70_000);
        let bytes = client_frame(true, OP_TEXT, payload.as_bytes());
        for split in [1, 2, 3, 5, 9, 13, 14, 100, bytes.len() - 1] {
            let mut r = Reader::new(100_000);
            assert_eq!(r.push(&bytes[..split]).unwrap(), None, "split at {split}");
            assert_eq!(
                r.push(&bytes[split..]).unwrap(),
                Some(text(&payload)),
                "split at {split}"
            );
        }
        let mut r = Reader::new(100_000);
        let mut got = None;
        for b in &bytes {
            if let Some(m) = r.push(std::slice::from_ref(b)).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(text(&payload)));
    }

    #[test]
    fn fragments_are_joined_and_controls_may_come_between() {
        let mut r = Reader::new(1000);
        let bytes = client_stream(&[
            (false, OP_TEXT, b"4he"),
            (true, OP_PING, b""),
            (false, OP_CONTINUATION, b"ll"),
            (true, OP_CONTINUATION, b"o"),
        ]);
        assert_eq!(r.push(&bytes).unwrap(), Some(Incoming::Ping(Bytes::new())));
        assert_eq!(r.next_pending().unwrap(), Some(text("4hello")));
    }

    #[test]
    fn limits_and_protocol_errors() {
        let mut r = Reader::new(10);
        assert_eq!(
            r.push(&client_frame(true, OP_TEXT, &[b'a'; 11])),
            Err(WsError::TooBig)
        );
        // Declared length alone is enough to refuse, before any payload arrives.
        assert_eq!(
            Reader::new(10).push(&[
                0x81,
                0x80 | 127,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff
            ]),
            Err(WsError::TooBig)
        );
        let mut r = Reader::new(10);
        assert_eq!(
            r.push(&client_frame(false, OP_TEXT, b"123456")).unwrap(),
            None
        );
        assert_eq!(
            r.push(&client_frame(true, OP_CONTINUATION, b"123456")),
            Err(WsError::TooBig)
        );

        let unmasked = [0x81, 0x01, b'a'];
        assert!(matches!(
            Reader::new(10).push(&unmasked),
            Err(WsError::Protocol(_))
        ));
        let rsv = client_frame(true, OP_TEXT | 0x40, b"a");
        assert!(matches!(
            Reader::new(10).push(&rsv),
            Err(WsError::Protocol(_))
        ));
        let opcode = client_frame(true, 0x3, b"a");
        assert!(matches!(
            Reader::new(10).push(&opcode),
            Err(WsError::Protocol(_))
        ));
        let split_ping = client_frame(false, OP_PING, b"a");
        assert!(matches!(
            Reader::new(10).push(&split_ping),
            Err(WsError::Protocol(_))
        ));
        let orphan = client_frame(true, OP_CONTINUATION, b"a");
        assert!(matches!(
            Reader::new(10).push(&orphan),
            Err(WsError::Protocol(_))
        ));
        let nested = client_stream(&[(false, OP_TEXT, b"a"), (true, OP_TEXT, b"b")]);
        assert!(matches!(
            Reader::new(10).push(&nested),
            Err(WsError::Protocol(_))
        ));
        assert_eq!(
            Reader::new(10).push(&client_frame(true, OP_TEXT, &[0xff, 0xfe])),
            Err(WsError::InvalidUtf8)
        );
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        assert_eq!(WsError::TooBig.close_code(), 1009);
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode_frame(&mut out, OP_BINARY, &vec![7; len]);
            assert_eq!(out.len(), header + len, "payload {len}");
            assert_eq!(out[0], 0x82);
        }
        let close = close_frame(1008, "Session ID unknown");
        assert_eq!(&close[..4], &[0x88, 20, 0x03, 0xf0]);
    }

    #[tokio::test]
    async fn a_connection_reads_messages_and_writes_frames() {
        let (client, server) = tokio::io::duplex(64);
        let mut conn = WsConn::new(server, Reader::new(1 << 20));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let big = "y".repeat(5000);
        let sent = client_frame(true, OP_TEXT, big.as_bytes());
        let writer = tokio::spawn(async move { client_write.write_all(&sent).await });
        assert_eq!(conn.next().await.unwrap().unwrap(), text(&big));
        writer.await.unwrap().unwrap();

        let frames = [
            Frame::text_static("3"),
            Frame::Binary(Bytes::from_static(b"\x01")),
        ];
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 6];
            tokio::io::AsyncReadExt::read_exact(&mut client_read, &mut got)
                .await
                .map(|_| got)
        });
        conn.send_all(&frames).await.unwrap();
        assert_eq!(
            reader.await.unwrap().unwrap(),
            vec![0x81, 1, b'3', 0x82, 1, 1]
        );
    }
}
