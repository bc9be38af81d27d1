//! Micro-benchmark of the protocol layer: server memory per idle WebSocket
//! connection, and server CPU per delivered broadcast frame.
//!
//! `cargo run --release --example microbench -- [connections] [broadcasts]`
//! (defaults 5000 and 200). It starts itself again as the server process, so the
//! server's RSS and CPU (read from /proc) contain nothing of the clients. Each
//! client connects over WebSocket, authenticates in its CONNECT (the server checks
//! the token) and is put in one room; then the server broadcasts ~100-byte events
//! to that room and the clients count them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_socketio::{
    BoxFuture, ConnectError, ConnectRequest, Connected, Event, Handler, Socket, SocketIo,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const ROOM: &str = "bench";

struct BenchHandler;

impl Handler for BenchHandler {
    fn connect<'a>(
        &'a self,
        socket: &'a Socket,
        request: ConnectRequest,
    ) -> BoxFuture<'a, Result<Connected, ConnectError>> {
        Box::pin(async move {
            if request.auth.get("token").and_then(Value::as_str) != Some("bench-token") {
                return Err(ConnectError::new("Authentication failed"));
            }
            socket.join(ROOM);
            Ok(Connected::Fresh)
        })
    }

    fn event(&self, _socket: &Socket, _event: Event) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--server") {
        return serve();
    }
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let broadcasts: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(drive(connections, broadcasts))
}

/// The server process: Socket.IO on `/socket.io/`, and `POST /broadcast?n=N`.
fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let io = SocketIo::builder().namespace("/", BenchHandler).build();
        let ns = io.namespace("/").ok_or("no namespace")?;
        let app = axum::Router::new()
            .route_service("/socket.io/", io.service())
            .route(
                "/broadcast",
                axum::routing::post(move |q: axum::extract::Query<std::collections::HashMap<String, u64>>| {
                    let ns = ns.clone();
                    async move {
                        let n = q.get("n").copied().unwrap_or(1);
                        let mut sent = 0;
                        for i in 0..n {
                            let body = json!({ "workspaceId": "bench", "seq": i, "content": "a message of about a hundred bytes, give or take" });
                            sent += ns.to(ROOM).emit("message", &body).unwrap_or(0);
                        }
                        sent.to_string()
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        axum::serve(listener, app).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

async fn drive(connections: usize, broadcasts: u64) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut server = tokio::process::Command::new(exe)
        .arg("--server")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = server.id().ok_or("server has no pid")?;
    let mut stdout = server.stdout.take().ok_or("no stdout")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).await? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let port: u16 = String::from_utf8(line)?.trim().parse()?;

    let received = Arc::new(AtomicU64::new(0));
    // One connection first, so the baseline includes the runtime's warm-up.
    let mut clients = vec![connect(port, received.clone()).await?];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid)?;
    let started = Instant::now();
    for _ in 1..connections {
        clients.push(connect(port, received.clone()).await?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid)?;
    let per_conn = (rss_after - rss_before) as f64 / (connections - 1) as f64;

    let cpu_before = cpu_ticks(pid)?;
    let http = reqwest_like_post(port, &format!("/broadcast?n={broadcasts}")).await?;
    let expected = broadcasts * connections as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_ticks_used = cpu_ticks(pid)? - cpu_before;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_broadcast = rss_kib(pid)?;
    let got = received.load(Ordering::Relaxed);
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_us_per_delivery = cpu_ticks_used as f64 / ticks_per_sec * 1e6 / got.max(1) as f64;

    println!("connections            {connections} (connected in {connect_secs:.1} s)");
    println!("server RSS             {rss_before} KiB -> {rss_after} KiB");
    println!("memory per connection  {per_conn:.2} KiB");
    println!("broadcast              {broadcasts} events to {connections} sockets: server queued {http}, clients got {got} of {expected}");
    println!(
        "server CPU             {:.2} s",
        cpu_ticks_used as f64 / ticks_per_sec
    );
    println!("CPU per delivery       {cpu_us_per_delivery:.3} us");
    println!(
        "after the broadcast    {:.2} KiB per connection (buffers the burst left allocated)",
        (rss_after_broadcast - rss_before) as f64 / (connections - 1) as f64
    );
    drop(clients);
    let _ = server.kill().await;
    if got != expected {
        return Err(format!("lost deliveries: {got} of {expected}").into());
    }
    Ok(())
}

/// Connects one client, joins the room through CONNECT, and counts `message` events.
async fn connect(
    port: u16,
    received: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>, Box<dyn std::error::Error>> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let request = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await? == 0 {
            return Err("closed during handshake".into());
        }
        head.push(b[0]);
    }
    let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let _open = ws.next().await.ok_or("no open packet")??;
    ws.send(Message::text(r#"40{"token":"bench-token"}"#))
        .await?;
    match ws.next().await.ok_or("no connect answer")?? {
        Message::Text(t) if t.starts_with("40") => {}
        other => return Err(format!("refused: {other:?}").into()),
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                if t.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                } else if t.starts_with("42") {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }))
}

async fn reqwest_like_post(port: u16, path: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await?;
    Ok(resp
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_owned())
}

fn rss_kib(pid: u32) -> Result<i64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit(')').next().ok_or("bad stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    Ok(fields.get(11).ok_or("no utime")?.parse::<u64>()?
        + fields.get(12).ok_or("no stime")?.parse::<u64>()?)
}
