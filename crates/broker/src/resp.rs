//! A minimal RESP2 reader for the cluster broker's subscription connections.
//!
//! A connection in (sharded) subscribe mode receives only a few shapes of
//! replies: arrays of bulk strings and integers (`smessage`, `ssubscribe`,
//! `sunsubscribe`, `pong`), and simple strings or errors. This reader parses
//! exactly those, with bounded line, bulk and array sizes, and reports
//! anything else as a protocol error (the connection is then dropped and
//! opened again). It holds no state between frames, so a frame is read by one
//! task and never cancelled half-way.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest header line (`*3`, `$42`, `-MOVED 12 host:port`, ...).
const MAX_LINE: u64 = 64 * 1024;
/// Largest bulk string: Redis' own default limit (`proto-max-bulk-len`).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// Longest array: push messages have three items.
const MAX_ARRAY: usize = 64;

/// One item of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
}

/// A reply: a single item or a flat array of items.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Item(Item),
    Array(Vec<Item>),
}

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

/// Reads the next frame.
pub async fn read_frame<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Frame, RespError> {
    let line = read_line(reader).await?;
    match line.split_first() {
        Some((b'*', count)) => {
            let count = parse_int(count)?;
            if count < 0 {
                return Ok(Frame::Array(Vec::new()));
            }
            let count = usize::try_from(count).map_err(|_| RespError::Protocol("array length"))?;
            if count > MAX_ARRAY {
                return Err(RespError::Protocol("array too long"));
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let line = read_line(reader).await?;
                items.push(read_item(reader, &line).await?);
            }
            Ok(Frame::Array(items))
        }
        _ => Ok(Frame::Item(read_item(reader, &line).await?)),
    }
}

async fn read_item<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &[u8],
) -> Result<Item, RespError> {
    let Some((&kind, rest)) = line.split_first() else {
        return Err(RespError::Protocol("empty line"));
    };
    match kind {
        b'+' => Ok(Item::Simple(String::from_utf8_lossy(rest).into_owned())),
        b'-' => Ok(Item::Error(String::from_utf8_lossy(rest).into_owned())),
        b':' => Ok(Item::Int(parse_int(rest)?)),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Item::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Protocol("bulk length"))?;
            if len > MAX_BULK {
                return Err(RespError::Protocol("bulk string too long"));
            }
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data).await.map_err(eof_is_closed)?;
            if !data.ends_with(b"\r\n") {
                return Err(RespError::Protocol("bulk string not ended by CRLF"));
            }
            data.truncate(len);
            Ok(Item::Bulk(Some(data)))
        }
        b'*' => Err(RespError::Protocol("nested array")),
        _ => Err(RespError::Protocol("unknown reply type")),
    }
}

/// A line without its CRLF.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, RespError> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Err(RespError::Closed);
    }
    if !line.ends_with(b"\r\n") {
        return Err(if line.len() as u64 >= MAX_LINE {
            RespError::Protocol("line too long")
        } else {
            RespError::Closed
        });
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(digits: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::Protocol("not an integer"))
}

fn eof_is_closed(e: std::io::Error) -> RespError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        RespError::Closed
    } else {
        RespError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8]) -> Vec<Result<Frame, String>> {
        let mut reader = tokio::io::BufReader::new(input);
        let mut out = Vec::new();
        loop {
            match read_frame(&mut reader).await {
                Ok(frame) => out.push(Ok(frame)),
                Err(RespError::Closed) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    fn bulk(s: &str) -> Item {
        Item::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[tokio::test]
    async fn pubsub_replies_are_read() {
        let input = b"*3\r\n$10\r\nssubscribe\r\n$2\r\nch\r\n:1\r\n\
                      *3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhe\r\nl\r\n\
                      -MOVED 3999 127.0.0.1:6381\r\n+OK\r\n$-1\r\n";
        assert_eq!(
            frames(input).await,
            vec![
                Ok(Frame::Array(vec![
                    bulk("ssubscribe"),
                    bulk("ch"),
                    Item::Int(1)
                ])),
                Ok(Frame::Array(vec![
                    bulk("smessage"),
                    bulk("ch"),
                    bulk("he\r\nl")
                ])),
                Ok(Frame::Item(Item::Error("MOVED 3999 127.0.0.1:6381".into()))),
                Ok(Frame::Item(Item::Simple("OK".into()))),
                Ok(Frame::Item(Item::Bulk(None))),
            ]
        );
    }

    #[tokio::test]
    async fn malformed_input_is_an_error_not_a_panic() {
        for input in [
            &b"*1\r\n*1\r\n:1\r\n"[..],
            b"$5\r\nabc\r\n",
            b"$3\r\nabcXY",
            b":x\r\n",
            b"?\r\n",
            b"*99999\r\n",
            b"$99999999999999\r\n",
            b"\r\n",
        ] {
            let got = frames(input).await;
            assert!(
                got.iter().all(|f| f.is_err()),
                "{:?} gave {got:?}",
                String::from_utf8_lossy(input)
            );
        }
        // A truncated frame is a closed connection.
        assert!(frames(b"*3\r\n$8\r\nsmess").await.is_empty());
    }
}
