//! A raw Socket.IO client over Engine.IO v4 long-polling, for in-process tests:
//! one HTTP/1.1 request per TCP connection, packets split on the record
//! separator. It reads only when asked to, so a test can play a stalled reader.

use std::collections::VecDeque;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A Socket.IO packet the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// An event: its name, its arguments.
    Event(String, Vec<Value>),
    /// The answer to the client's event with this ack id.
    Ack(u64, Vec<Value>),
    /// Anything else (CONNECT answers, pings, ...), as sent.
    Other(String),
}

/// One Socket.IO client on the main namespace.
pub struct PollingClient {
    addr: SocketAddr,
    engine_sid: String,
    sid: String,
    next_ack: u64,
    received: VecDeque<Packet>,
}

impl PollingClient {
    /// Opens an Engine.IO session and connects to `/` with `{ token }`.
    pub async fn connect(addr: SocketAddr, token: &str) -> Self {
        let open = request(addr, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        let open: Value =
            serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("json");
        let engine_sid = open["sid"].as_str().expect("sid").to_owned();
        let mut client = Self {
            addr,
            engine_sid,
            sid: String::new(),
            next_ack: 0,
            received: VecDeque::new(),
        };
        client
            .post(&format!("40{}", serde_json::json!({ "token": token })))
            .await;
        loop {
            let body = client.get().await;
            if let Some(rest) = body.split('\u{1e}').find_map(|p| p.strip_prefix("40")) {
                let connected: Value = serde_json::from_str(rest).expect("connect answer");
                client.sid = connected["sid"].as_str().expect("socket sid").to_owned();
                return client;
            }
            assert!(
                !body.starts_with("44"),
                "connection refused by the server: {body}"
            );
        }
    }

    /// The Socket.IO socket id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Sends an event with an ack id; returns the ack id.
    pub async fn emit(&mut self, event: &str, data: Value) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        let packet = format!("42{id}{}", serde_json::json!([event, data]));
        self.post(&packet).await;
        id
    }

    /// Sends an event and reads until its ack arrives (keeping what came before).
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        let id = self.emit(event, data).await;
        self.ack(id).await
    }

    /// Reads until the ack `id` arrives; the packets read meanwhile stay queued.
    pub async fn ack(&mut self, id: u64) -> Value {
        let mut seen = 0;
        loop {
            while seen < self.received.len() {
                if let Packet::Ack(ack, args) = &self.received[seen] {
                    if *ack == id {
                        let args = args.clone();
                        self.received.remove(seen);
                        return args.into_iter().next().unwrap_or(Value::Null);
                    }
                }
                seen += 1;
            }
            self.read().await;
        }
    }

    /// Takes the events named `name` read so far, in order; other packets stay.
    pub fn take_events(&mut self, name: &str) -> Vec<Vec<Value>> {
        let mut taken = Vec::new();
        self.received.retain(|packet| match packet {
            Packet::Event(event, args) if event == name => {
                taken.push(args.clone());
                false
            }
            _ => true,
        });
        taken
    }

    /// One long-poll: waits for the server's next frames and queues them.
    pub async fn read(&mut self) {
        let body = self.get().await;
        for raw in body.split('\u{1e}') {
            if raw == "2" {
                self.post("3").await;
                continue;
            }
            self.received.push_back(parse(raw));
        }
    }

    async fn get(&self) -> String {
        let path = format!(
            "/socket.io/?EIO=4&transport=polling&sid={}",
            self.engine_sid
        );
        request(self.addr, "GET", &path, "").await
    }

    async fn post(&self, body: &str) {
        let path = format!(
            "/socket.io/?EIO=4&transport=polling&sid={}",
            self.engine_sid
        );
        let answer = request(self.addr, "POST", &path, body).await;
        assert_eq!(answer, "ok", "a polling POST was refused");
    }
}

fn parse(raw: &str) -> Packet {
    let Some(rest) = raw.strip_prefix('4') else {
        return Packet::Other(raw.to_owned());
    };
    let (kind, rest) = rest.split_at(rest.len().min(1));
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, json) = rest.split_at(digits);
    let args: Vec<Value> = match serde_json::from_str(json) {
        Ok(Value::Array(args)) => args,
        _ => return Packet::Other(raw.to_owned()),
    };
    match (kind, id.parse::<u64>()) {
        ("2", _) => {
            let mut args = args.into_iter();
            let name = args
                .next()
                .and_then(|n| n.as_str().map(str::to_owned))
                .unwrap_or_default();
            Packet::Event(name, args.collect())
        }
        ("3", Ok(id)) => Packet::Ack(id, args),
        _ => Packet::Other(raw.to_owned()),
    }
}

/// One HTTP/1.1 request on its own connection; the response body as text.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(body.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{method} {path} answered {head}"
    );
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
