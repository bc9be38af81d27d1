//! Command line: options shared by every scenario (target, credentials,
//! measured processes, timing, output) and one subcommand per scenario.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::sio::Dialect;

/// Load generator for Switchboard and the Node Socket.IO reference (`--dialect contract`).
///
/// Loopback only. Every scenario has a duration and a watchdog and stops by itself;
/// it prints a progress bar on stderr, a table on stdout, and with `--json FILE`
/// the full results. Exit status: 0 ok, 1 nothing delivered or no client
/// connected, 2 watchdog, 3 errors (failed clients, error events, failed
/// publishes; `--allow-errors` turns them into warnings), 64 usage.
#[derive(Parser, Debug)]
#[command(name = "switchboard-loadgen", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server address (must be a loopback address).
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Server port(s), comma-separated; clients are spread over them (cluster: node A, node B).
    #[arg(long, global = true, value_delimiter = ',', default_value = "3000")]
    pub ports: Vec<u16>,
    /// Port the publisher posts to (default: the first of --ports).
    #[arg(long, global = true)]
    pub pub_port: Option<u16>,
    /// Processes to measure: `name:PID[:tree],...` (CPU from /proc/PID/stat, RSS from
    /// /proc/PID/status). `:tree` adds all descendants (PostgreSQL). Names starting with
    /// `redis`, `pg` or `postgres` are helpers, not counted in server CPU per delivery.
    #[arg(long, global = true, env = "LOADGEN_PIDS")]
    pub pids: Option<String>,
    /// Event names and endpoints: `contract` (Switchboard's DESIGN.md; the Node reference
    /// speaks it too) or `legacy` (the Node reference's original join/room protocol).
    #[arg(long, global = true, value_enum, default_value = "contract")]
    pub dialect: Dialect,
    /// HS256 secret: every client gets its own JWT {sub, workspaces, exp}. Without it
    /// the user id is sent as a plain token.
    #[arg(
        long,
        global = true,
        env = "LOADGEN_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,
    /// Lifetime of minted tokens, seconds.
    #[arg(long, global = true, default_value_t = 7200)]
    pub token_ttl: u64,
    /// API key of the publisher (`Authorization: Bearer`).
    #[arg(long, global = true, env = "LOADGEN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Distinct user ids; client i is user `i mod USERS` (default: one user per client).
    /// Fewer users means fewer presence announcements on join (Switchboard), but each
    /// user then needs SWITCHBOARD_MAX_CONNECTIONS_PER_USER >= its connections.
    #[arg(long, global = true)]
    pub users: Option<u64>,
    /// Measured window of each phase, seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before each measured window, seconds.
    #[arg(long, global = true, default_value_t = 2.0)]
    pub warmup: f64,
    /// Watchdog: abort (exit 2, partial results written) after this many seconds.
    /// Default: the scenario's planned time plus connect time and 60 s.
    #[arg(long, global = true)]
    pub max_s: Option<f64>,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Label stored in the JSON (e.g. the server's name).
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// Runtime threads of the loadgen (0: one per CPU; 1: a single-threaded runtime,
    /// the cheapest per message, but one broadcast to 1,000 clients is then read serially).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    /// Handshakes in progress at once.
    #[arg(long, global = true, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds a client may take to connect and join.
    #[arg(long, global = true, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Spread client source addresses over this many addresses 127.0.0.2, 127.0.0.3, ...
    /// (0: automatic, only when there are more clients than --per-ip).
    #[arg(long, global = true, default_value_t = 0)]
    pub source_ips: u32,
    /// Clients per source address when spreading automatically (one address has
    /// about 28,000 ephemeral ports).
    #[arg(long, global = true, default_value_t = 20_000)]
    pub per_ip: u64,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Exit 0 even if clients failed or errors were counted.
    #[arg(long, global = true)]
    pub allow_errors: bool,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Idle clients joined to one room (or editing documents, --collab-docs), added in
    /// steps: server RSS and KiB per connection.
    Memory(MemoryArgs),
    /// Clients in one room, publisher POSTs to the API: saturation and fixed rates.
    Fanout(FanoutArgs),
    /// Rooms of clients that each send `message` events (persisted by the server).
    Chat(ChatArgs),
    /// Fan-out over two nodes (--ports A,B): clients split, publisher on A, latency per node.
    Cluster(FanoutArgs),
    /// Notification streams (SSE), notifications POSTed through the API.
    Sse(SseArgs),
    /// Documents edited over y-websocket (`/collab/{workspace}/{doc}`).
    Collab(CollabArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Total idle clients at each step.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,5000,10000")]
    pub steps: Vec<u64>,
    /// Seconds to wait after each step before reading RSS.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Room every client joins.
    #[arg(long, default_value = "idle")]
    pub room: String,
    /// Idle collaborative-editing clients instead of Socket.IO ones, spread
    /// round-robin over this many documents (`/collab/{--workspace}/...`;
    /// each document takes at most 256 clients per node by default).
    #[arg(long, default_value_t = 0)]
    pub collab_docs: u64,
    /// Workspace of the documents, with --collab-docs.
    #[arg(long, default_value = "collab")]
    pub workspace: String,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Clients in the room (split evenly over --ports).
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// Fixed publish rates into the room, messages per second.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100")]
    pub rate: Vec<f64>,
    /// Saturation: at most this many messages not yet delivered to every client.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Requests in flight on the publisher's connection.
    #[arg(long, default_value_t = 16)]
    pub pipeline: u64,
    /// Size of the Socket.IO packet the clients receive (as bench.js --msg-bytes).
    #[arg(long, default_value_t = 100)]
    pub msg_bytes: usize,
    /// Latency is recorded on every Nth client.
    #[arg(long, default_value_t = 10)]
    pub sample_every: u64,
    /// Skip the saturation phase.
    #[arg(long)]
    pub no_saturation: bool,
    /// Longest wait for the backlog to drain between rates, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub drain: f64,
    /// Room name.
    #[arg(long, default_value = "fan")]
    pub room: String,
}

#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// Clients (rooms of --room-size).
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    #[arg(long, default_value_t = 10)]
    pub room_size: u64,
    /// Messages per second each client sends.
    #[arg(long, default_value_t = 1.0)]
    pub client_rate: f64,
    /// Messages ask for an ack (counted: acks/s, ack failures).
    #[arg(long)]
    pub msg_ack: bool,
    /// Packet size, as in fan-out (the server adds id, userId, createdAt).
    #[arg(long, default_value_t = 100)]
    pub msg_bytes: usize,
}

#[derive(Args, Debug, Clone)]
pub struct SseArgs {
    /// Notification streams (one user each unless --users).
    #[arg(long, default_value_t = 1000)]
    pub streams: u64,
    /// Fixed notification rates, per second (spread round-robin over the users).
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    pub rate: Vec<f64>,
    /// Saturation: at most this many notifications not yet delivered.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    #[arg(long, default_value_t = 32)]
    pub pipeline: u64,
    #[arg(long)]
    pub no_saturation: bool,
    #[arg(long, default_value_t = 15.0)]
    pub drain: f64,
}

#[derive(Args, Debug, Clone)]
pub struct CollabArgs {
    /// Documents.
    #[arg(long, default_value_t = 100)]
    pub docs: u64,
    /// Editors per document.
    #[arg(long, default_value_t = 10)]
    pub editors: u64,
    /// Updates per second each editor sends.
    #[arg(long, default_value_t = 1.0)]
    pub edit_rate: f64,
    /// Workspace of the documents.
    #[arg(long, default_value = "collab")]
    pub workspace: String,
    /// Name of the root Y.Text the editors type into.
    #[arg(long, default_value = "text")]
    pub root: String,
}
