//! A minimal HTTP/1.1 client, written by hand because a general client costs
//! more CPU than what is being measured: a pipelined keep-alive publisher
//! (`POST /api/publish`, `POST /api/notifications`) whose responses are parsed
//! just enough to count statuses (`Content-Length` or chunked bodies), and a
//! Server-Sent Events reader (chunked transfer decoding, events split on blank
//! lines, no JSON parsing).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use crate::sio::tcp_connect;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response: {0}")]
    Bad(String),
    #[error("status {0}: {1}")]
    Status(u16, String),
    #[error("connection closed")]
    Closed,
}

/// A complete response at the start of `buf`: its status and length.
pub fn parse_response(buf: &[u8]) -> Result<Option<(u16, usize)>, HttpError> {
    let Some(h) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Bad("response head too large".into()));
        }
        return Ok(None);
    };
    let head = &buf[..h];
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| head.starts_with(b"HTTP/1."))
        .ok_or_else(|| Bad::line(head))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = Some(
                value
                    .parse()
                    .map_err(|_| HttpError::Bad(format!("content-length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    let body = h + 4;
    let end = if chunked {
        match chunked_end(buf, body)? {
            Some(end) => end,
            None => return Ok(None),
        }
    } else {
        body + length.unwrap_or(0)
    };
    Ok((buf.len() >= end).then_some((status, end)))
}

struct Bad;
impl Bad {
    fn line(head: &[u8]) -> HttpError {
        let first = head.split(|&b| b == b'\r').next().unwrap_or(b"");
        HttpError::Bad(String::from_utf8_lossy(&first[..first.len().min(80)]).into_owned())
    }
}

/// End of a chunked body that starts at `p`, if it is all there.
fn chunked_end(buf: &[u8], mut p: usize) -> Result<Option<usize>, HttpError> {
    loop {
        let Some(nl) = memchr::memmem::find(&buf[p.min(buf.len())..], b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[p..p + nl];
        let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size = usize::from_str_radix(std::str::from_utf8(hex).unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Bad("bad chunk size".into()))?;
        p += nl + 2;
        if size == 0 {
            // no trailers: the final CRLF
            return Ok((buf.len() >= p + 2).then_some(p + 2));
        }
        p = p
            .checked_add(size)
            .and_then(|p| p.checked_add(2))
            .ok_or_else(|| HttpError::Bad("chunk too large".into()))?;
        if buf.len() < p {
            return Ok(None);
        }
    }
}

/// Counters of a publisher.
#[derive(Default)]
pub struct HttpStats {
    pub sent: AtomicU64,
    pub responses: AtomicU64,
    /// Non-2xx responses, and requests lost with their connection.
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    pub statuses: Mutex<BTreeMap<u16, u64>>,
}

impl HttpStats {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(what);
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Conn {
    write: OwnedWriteHalf,
    inflight: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

/// Pipelined `POST`s on one keep-alive connection (reconnecting when the
/// server closes it, e.g. Node's 5 s keep-alive timeout between phases).
pub struct Publisher {
    addr: SocketAddr,
    head: String,
    conn: Option<Conn>,
    pub stats: Arc<HttpStats>,
}

impl Publisher {
    pub fn new(addr: SocketAddr, path: &str, api_key: Option<&str>) -> Self {
        let auth = api_key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        Self {
            addr,
            head: format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: "
            ),
            conn: None,
            stats: Arc::new(HttpStats::default()),
        }
    }

    /// Requests sent on the current connection and not answered yet.
    pub fn inflight(&self) -> u64 {
        self.conn
            .as_ref()
            .filter(|c| !c.closed.load(Relaxed))
            .map_or(0, |c| c.inflight.load(Relaxed))
    }

    async fn connect(&mut self) -> Result<(), HttpError> {
        let stream = tcp_connect(self.addr, None).await?;
        let (mut read, write) = stream.into_split();
        let inflight = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let stats = self.stats.clone();
        let (rin, rclosed) = (inflight.clone(), closed.clone());
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
            let mut chunk = vec![0u8; 16 * 1024];
            let why = 'read: loop {
                match read.read(&mut chunk).await {
                    Ok(0) => break 'read "closed by the server".to_owned(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => break 'read e.to_string(),
                }
                let mut used = 0;
                loop {
                    match parse_response(&buf[used..]) {
                        Ok(Some((status, len))) => {
                            stats.responses.fetch_add(1, Relaxed);
                            *stats
                                .statuses
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(status)
                                .or_default() += 1;
                            if !(200..300).contains(&status) {
                                let body = &buf[used..used + len];
                                let text = String::from_utf8_lossy(&body[..body.len().min(300)])
                                    .replace("\r\n", " | ");
                                stats.error(text);
                            }
                            let _ = rin.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
                            used += len;
                        }
                        Ok(None) => break,
                        Err(e) => break 'read e.to_string(),
                    }
                }
                buf.drain(..used);
            };
            rclosed.store(true, Relaxed);
            let lost = rin.swap(0, Relaxed);
            for _ in 0..lost {
                stats.error(format!("request lost: {why}"));
            }
        });
        self.conn = Some(Conn {
            write,
            inflight,
            closed,
        });
        Ok(())
    }

    /// Sends one request (without waiting for its response).
    pub async fn post(&mut self, body: &[u8]) -> Result<(), HttpError> {
        if self.conn.as_ref().is_none_or(|c| c.closed.load(Relaxed)) {
            if self.conn.is_some() {
                self.stats.reconnects.fetch_add(1, Relaxed);
            }
            self.connect().await?;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(HttpError::Closed);
        };
        let mut req = Vec::with_capacity(self.head.len() + 8 + body.len());
        req.extend_from_slice(self.head.as_bytes());
        req.extend_from_slice(body.len().to_string().as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body);
        conn.inflight.fetch_add(1, Relaxed);
        if let Err(e) = conn.write.write_all(&req).await {
            conn.closed.store(true, Relaxed);
            self.stats.error(format!("write: {e}"));
            return Err(e.into());
        }
        self.stats.sent.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Opens the connection now, so the first measured request does not pay for it.
    pub async fn warm(&mut self) -> Result<(), HttpError> {
        if self.conn.as_ref().is_none_or(|c| c.closed.load(Relaxed)) {
            self.connect().await?;
        }
        Ok(())
    }
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Default)]
pub struct Dechunker {
    state: Chunk,
    size: u64,
    in_ext: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Chunk {
    #[default]
    Size,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    Done,
}

impl Dechunker {
    /// Appends the body bytes in `input` to `out`; true once the last chunk is read.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                Chunk::Size => {
                    let c = input[i];
                    i += 1;
                    match c {
                        b'\r' => self.state = Chunk::SizeLf,
                        b';' => self.in_ext = true,
                        _ if self.in_ext => {}
                        _ => {
                            let d = (c as char)
                                .to_digit(16)
                                .ok_or_else(|| HttpError::Bad("bad chunk size".into()))?;
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(d)))
                                .ok_or_else(|| HttpError::Bad("chunk too large".into()))?;
                        }
                    }
                }
                Chunk::SizeLf => {
                    if input[i] != b'\n' {
                        return Err(HttpError::Bad("bad chunk line".into()));
                    }
                    i += 1;
                    self.state = if self.size == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Data(self.size)
                    };
                    self.size = 0;
                    self.in_ext = false;
                }
                Chunk::Data(rem) => {
                    let n = (input.len() - i).min(rem as usize);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let rem = rem - n as u64;
                    self.state = if rem == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(rem)
                    };
                }
                Chunk::DataCr | Chunk::DataLf => {
                    let want = if self.state == Chunk::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if input[i] != want {
                        return Err(HttpError::Bad("bad chunk end".into()));
                    }
                    i += 1;
                    self.state = if self.state == Chunk::DataCr {
                        Chunk::DataLf
                    } else {
                        Chunk::Size
                    };
                }
                Chunk::Done => return Ok(true),
            }
        }
        Ok(self.state == Chunk::Done)
    }
}

/// Longest event kept while waiting for its blank line.
const MAX_EVENT: usize = 1 << 20;

/// Splits an event stream into events (the text between blank lines).
#[derive(Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
}

impl SseSplitter {
    /// Calls `on_event` for each complete event; an event longer than 1 MiB is an error.
    pub fn feed(&mut self, data: &[u8], mut on_event: impl FnMut(&[u8])) -> Result<(), HttpError> {
        if self.buf.len() + data.len() > MAX_EVENT {
            return Err(HttpError::Bad("event longer than 1 MiB".into()));
        }
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(at) = memchr::memmem::find(&self.buf[start..], b"\n\n") {
            on_event(&self.buf[start..start + at]);
            start += at + 2;
        }
        self.buf.drain(..start);
        Ok(())
    }
}

/// An open event stream: the connection, whether its body is chunked, and
/// the body bytes read with the head.
pub struct SseStream {
    pub stream: TcpStream,
    pub chunked: bool,
    pub rest: Vec<u8>,
}

/// `GET path` and reads the response head; anything but 200 is an error.
pub async fn open_sse(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
) -> Result<SseStream, HttpError> {
    let mut stream = tcp_connect(addr, source).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let h = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(h) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break h;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Bad("response head too large".into()));
        }
    };
    let head = String::from_utf8_lossy(&buf[..h]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Bad::line(head.as_bytes()))?;
    if status != 200 {
        let body = String::from_utf8_lossy(&buf[h + 4..]);
        return Err(HttpError::Status(
            status,
            body.chars().take(200).collect::<String>(),
        ));
    }
    let lower = head.to_ascii_lowercase();
    let chunked = lower.contains("transfer-encoding: chunked");
    Ok(SseStream {
        stream,
        chunked,
        rest: buf[h + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\ndate: x\r\n\r\nHTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!";
        let (s, n) = parse_response(r).ok().flatten().unwrap_or((0, 0));
        assert_eq!(s, 202);
        let (s2, n2) = parse_response(&r[n..]).ok().flatten().unwrap_or((0, 0));
        assert_eq!((s2, n + n2), (401, r.len()));
        assert!(matches!(parse_response(&r[..20]), Ok(None)));
        assert!(matches!(parse_response(&r[n..r.len() - 1]), Ok(None)));
        let c = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nX";
        assert_eq!(parse_response(c).ok().flatten(), Some((201, c.len() - 1)));
        assert!(matches!(parse_response(&c[..c.len() - 3]), Ok(None)));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn dechunks_in_pieces() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let a = d.feed(&body[..split], &mut out);
            let b = d.feed(&body[split..], &mut out);
            assert!(a.is_ok() && matches!(b, Ok(true)), "split {split}");
            assert_eq!(out, b"hello, world");
        }
        let mut d = Dechunker::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn splits_events() {
        let mut s = SseSplitter::default();
        let mut got = Vec::new();
        let r = s.feed(b"data: {\"type\":\"connected\"}\n\nid: 1\ndata: {", |e| {
            got.push(e.to_vec())
        });
        assert!(r.is_ok());
        let r = s.feed(b"}\n\n:ping\n\n", |e| got.push(e.to_vec()));
        assert!(r.is_ok());
        assert!(s.feed(&vec![b'x'; MAX_EVENT + 1], |_| {}).is_err());
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], b"id: 1\ndata: {}");
        assert_eq!(got[2], b":ping");
    }
}
