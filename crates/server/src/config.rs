//! Settings: `switchboard.toml`, then `SWITCHBOARD_*` environment variables,
//! then command-line flags, each overriding the one before. Flags and
//! environment variables are read by clap (`cli.rs`); this file merges them
//! with the file and the defaults into one [`Settings`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

/// Settings that have a flag, an environment variable and a file key.
#[derive(Args, Debug, Default, Clone)]
pub struct SettingArgs {
    /// Configuration file (TOML); missing is fine unless named explicitly.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (host:port). Default 127.0.0.1:3000.
    #[arg(long, env = "SWITCHBOARD_BIND")]
    pub bind: Option<String>,
    /// HS256 secret of user tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file of an RS256 public key; tokens signed with its private key are accepted too.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Key of server-to-server calls (`Authorization: Bearer <key>`).
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// `sqlite://path` (default sqlite://switchboard.db) or `postgres://...`.
    #[arg(long, env = "SWITCHBOARD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// `memory` (default), `redis://host:port[/db]` to join other nodes through
    /// one Redis, or `redis-cluster://host:port,host:port,...` (seed nodes) to
    /// join them through a Redis Cluster (7.0 or later) with sharded pub/sub.
    #[arg(long, env = "SWITCHBOARD_BROKER")]
    pub broker: Option<String>,
    /// Prefix of every Redis channel and key, so deployments can share one Redis
    /// (or one Redis Cluster; keep `{` out of it there, or it becomes a hash tag
    /// and puts every channel on one shard). Default `switchboard:`.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Origins allowed by CORS, comma-separated; `*` for any. Default: none.
    #[arg(long, env = "SWITCHBOARD_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Longest chat message, in characters. Default 5000.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_CHARS")]
    pub max_message_chars: Option<usize>,
    /// Largest Engine.IO message or polling body, in bytes. Default 1000000.
    #[arg(long, env = "SWITCHBOARD_MAX_PAYLOAD")]
    pub max_payload: Option<usize>,
    /// Events a connection may send per second. Default 50.
    #[arg(long, env = "SWITCHBOARD_EVENTS_PER_SECOND")]
    pub events_per_second: Option<u32>,
    /// Socket.IO connections one user may have open on a node. Default 50.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// Workspaces one connection may be in at once. Default 100.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS_PER_CONNECTION")]
    pub max_rooms_per_connection: Option<usize>,
    /// Connection-state recovery window, in seconds. Default 120.
    #[arg(long, env = "SWITCHBOARD_RECOVERY_WINDOW_SECS")]
    pub recovery_window_secs: Option<u64>,
    /// Interval of the `:ping` comments on notification streams, in milliseconds. Default 30000.
    #[arg(long, env = "SWITCHBOARD_SSE_PING_INTERVAL_MS")]
    pub sse_ping_interval_ms: Option<u64>,
    /// Notification streams one user may hold open at once. Default 10.
    #[arg(long, env = "SWITCHBOARD_MAX_STREAMS_PER_USER")]
    pub max_streams_per_user: Option<usize>,
    /// Longest hold of a notification long-poll, in seconds. Default 30.
    #[arg(long, env = "SWITCHBOARD_MAX_POLL_SECS")]
    pub max_poll_secs: Option<u64>,
    /// Largest `data` of a notification, in bytes of JSON. Default 16384.
    #[arg(long, env = "SWITCHBOARD_MAX_NOTIFICATION_BYTES")]
    pub max_notification_bytes: Option<usize>,
    /// Presence entries expire this long after their last refresh, in milliseconds. Default 30000.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_TTL_MS")]
    pub presence_ttl_ms: Option<u64>,
    /// A typing state ends this long after its last `typing_start`, in milliseconds. Default 6000.
    #[arg(long, env = "SWITCHBOARD_TYPING_TIMEOUT_MS")]
    pub typing_timeout_ms: Option<u64>,
    /// Typing events a connection may send per second; the rest are dropped. Default 5.
    #[arg(long, env = "SWITCHBOARD_TYPING_EVENTS_PER_SECOND")]
    pub typing_events_per_second: Option<u32>,
    /// Seconds a shutdown (SIGTERM) waits for requests and streams to end. Default 10.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Largest collaborative-editing update (one WebSocket message), in bytes. Default 1048576.
    #[arg(long, env = "SWITCHBOARD_COLLAB_MAX_UPDATE_BYTES")]
    pub collab_max_update_bytes: Option<usize>,
    /// Largest collaborative document, in bytes of stored updates. Default 16777216.
    #[arg(long, env = "SWITCHBOARD_COLLAB_MAX_DOCUMENT_BYTES")]
    pub collab_max_document_bytes: Option<usize>,
    /// Clients of one document on one node. Default 256.
    #[arg(long, env = "SWITCHBOARD_COLLAB_MAX_CLIENTS")]
    pub collab_max_clients: Option<usize>,
    /// A document with no client is unloaded from memory this long after its last client left, in seconds. Default 30.
    #[arg(long, env = "SWITCHBOARD_COLLAB_UNLOAD_SECS")]
    pub collab_unload_secs: Option<u64>,
    /// Past this many logged updates, a document's log is compacted into a snapshot. Default 500.
    #[arg(long, env = "SWITCHBOARD_COLLAB_COMPACT_UPDATES")]
    pub collab_compact_updates: Option<usize>,
    /// Engine.IO ping interval, in milliseconds. Default 25000.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Engine.IO ping timeout, in milliseconds. Default 20000.
    #[arg(long, env = "SWITCHBOARD_PING_TIMEOUT_MS")]
    pub ping_timeout_ms: Option<u64>,
    /// A WebSocket under sustained load (more than one write per four of these
    /// intervals for a while) waits out the rest of it before its next write, so
    /// that frames arriving meanwhile go out together, in microseconds. 0 writes
    /// at once. Default 2000.
    #[arg(long, env = "SWITCHBOARD_WS_WRITE_COALESCE_US")]
    pub ws_write_coalesce_us: Option<u64>,
}

/// The same settings as they appear in `switchboard.toml`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    bind: Option<String>,
    jwt_secret: Option<String>,
    jwt_public_key_file: Option<PathBuf>,
    api_key: Option<String>,
    database_url: Option<String>,
    broker: Option<String>,
    redis_prefix: Option<String>,
    cors_origins: Option<Vec<String>>,
    max_message_chars: Option<usize>,
    max_payload: Option<usize>,
    events_per_second: Option<u32>,
    max_rooms_per_connection: Option<usize>,
    recovery_window_secs: Option<u64>,
    ping_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
    ws_write_coalesce_us: Option<u64>,
    sse_ping_interval_ms: Option<u64>,
    max_streams_per_user: Option<usize>,
    max_poll_secs: Option<u64>,
    max_notification_bytes: Option<usize>,
    presence_ttl_ms: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    max_connections_per_user: Option<usize>,
    typing_timeout_ms: Option<u64>,
    typing_events_per_second: Option<u32>,
    collab_max_update_bytes: Option<usize>,
    collab_max_document_bytes: Option<usize>,
    collab_max_clients: Option<usize>,
    collab_unload_secs: Option<u64>,
    collab_compact_updates: Option<usize>,
}

/// Everything the server runs with, defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: String,
    pub jwt_secret: Option<String>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub api_key: Option<String>,
    pub database_url: String,
    pub broker: String,
    pub redis_prefix: String,
    pub cors_origins: Vec<String>,
    pub max_message_chars: usize,
    pub max_payload: usize,
    pub events_per_second: u32,
    pub max_rooms_per_connection: usize,
    pub recovery_window: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub ws_write_coalesce: Duration,
    pub sse_ping_interval: Duration,
    pub max_streams_per_user: usize,
    pub max_poll_secs: u64,
    pub max_notification_bytes: usize,
    pub presence_ttl: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections_per_user: usize,
    pub typing_timeout: Duration,
    pub typing_events_per_second: u32,
    pub collab: CollabLimits,
}

/// The limits of collaborative editing.
#[derive(Debug, Clone)]
pub struct CollabLimits {
    pub max_update_bytes: usize,
    pub max_document_bytes: usize,
    pub max_clients: usize,
    pub unload_after: Duration,
    pub compact_updates: usize,
}

const DEFAULT_CONFIG_FILE: &str = "switchboard.toml";

impl Settings {
    /// Merges flags/environment (already in `args`) over the file over the defaults.
    pub fn load(args: &SettingArgs) -> anyhow::Result<Self> {
        let file = read_file(args.config.as_deref())?;
        let cors = args
            .cors_origins
            .as_deref()
            .map(|s| {
                s.split(',')
                    .map(|o| o.trim().to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .or(file.cors_origins)
            .unwrap_or_default();
        let settings = Settings {
            bind: pick(&args.bind, file.bind, "127.0.0.1:3000".to_owned()),
            jwt_secret: args.jwt_secret.clone().or(file.jwt_secret),
            jwt_public_key_file: args
                .jwt_public_key_file
                .clone()
                .or(file.jwt_public_key_file),
            api_key: args.api_key.clone().or(file.api_key),
            database_url: pick(
                &args.database_url,
                file.database_url,
                "sqlite://switchboard.db".to_owned(),
            ),
            broker: pick(&args.broker, file.broker, "memory".to_owned()),
            redis_prefix: pick(
                &args.redis_prefix,
                file.redis_prefix,
                "switchboard:".to_owned(),
            ),
            cors_origins: cors,
            max_message_chars: pick(&args.max_message_chars, file.max_message_chars, 5000),
            max_payload: pick(&args.max_payload, file.max_payload, 1_000_000),
            events_per_second: pick(&args.events_per_second, file.events_per_second, 50),
            max_rooms_per_connection: pick(
                &args.max_rooms_per_connection,
                file.max_rooms_per_connection,
                100,
            ),
            recovery_window: Duration::from_secs(pick(
                &args.recovery_window_secs,
                file.recovery_window_secs,
                120,
            )),
            ping_interval: Duration::from_millis(pick(
                &args.ping_interval_ms,
                file.ping_interval_ms,
                25_000,
            )),
            ping_timeout: Duration::from_millis(pick(
                &args.ping_timeout_ms,
                file.ping_timeout_ms,
                20_000,
            )),
            ws_write_coalesce: Duration::from_micros(pick(
                &args.ws_write_coalesce_us,
                file.ws_write_coalesce_us,
                2_000,
            )),
            sse_ping_interval: Duration::from_millis(pick(
                &args.sse_ping_interval_ms,
                file.sse_ping_interval_ms,
                30_000,
            )),
            max_streams_per_user: pick(&args.max_streams_per_user, file.max_streams_per_user, 10),
            max_poll_secs: pick(&args.max_poll_secs, file.max_poll_secs, 30),
            max_notification_bytes: pick(
                &args.max_notification_bytes,
                file.max_notification_bytes,
                16 * 1024,
            ),
            presence_ttl: Duration::from_millis(pick(
                &args.presence_ttl_ms,
                file.presence_ttl_ms,
                30_000,
            )),
            typing_timeout: Duration::from_millis(pick(
                &args.typing_timeout_ms,
                file.typing_timeout_ms,
                6_000,
            )),
            shutdown_timeout: Duration::from_secs(pick(
                &args.shutdown_timeout_secs,
                file.shutdown_timeout_secs,
                10,
            )),
            max_connections_per_user: pick(
                &args.max_connections_per_user,
                file.max_connections_per_user,
                50,
            ),
            typing_events_per_second: pick(
                &args.typing_events_per_second,
                file.typing_events_per_second,
                5,
            ),
            collab: CollabLimits {
                max_update_bytes: pick(
                    &args.collab_max_update_bytes,
                    file.collab_max_update_bytes,
                    1 << 20,
                ),
                max_document_bytes: pick(
                    &args.collab_max_document_bytes,
                    file.collab_max_document_bytes,
                    16 << 20,
                ),
                max_clients: pick(&args.collab_max_clients, file.collab_max_clients, 256),
                unload_after: Duration::from_secs(pick(
                    &args.collab_unload_secs,
                    file.collab_unload_secs,
                    30,
                )),
                compact_updates: pick(
                    &args.collab_compact_updates,
                    file.collab_compact_updates,
                    500,
                ),
            },
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.presence_ttl.as_millis() < 300
            || self.typing_timeout.is_zero()
            || self.typing_events_per_second == 0
        {
            bail!("presence_ttl_ms must be at least 300; typing_timeout_ms and typing_events_per_second positive");
        }
        let collab = &self.collab;
        if collab.max_update_bytes < 1024
            || collab.max_document_bytes < collab.max_update_bytes
            || collab.max_clients == 0
            || collab.compact_updates == 0
        {
            bail!("collab_max_update_bytes must be at least 1024 and at most collab_max_document_bytes; collab_max_clients and collab_compact_updates positive");
        }
        if self.max_message_chars == 0 || self.max_payload < 1024 || self.events_per_second == 0 {
            bail!("max_message_chars and events_per_second must be positive, max_payload at least 1024");
        }
        if self.ping_interval.is_zero()
            || self.ping_timeout.is_zero()
            || self.sse_ping_interval.is_zero()
        {
            bail!("ping_interval_ms, ping_timeout_ms and sse_ping_interval_ms must be positive");
        }
        if self.broker != "memory"
            && !self.broker.starts_with("redis://")
            && !self.broker.starts_with("redis-cluster://")
        {
            bail!(
                "unsupported broker {:?}: use `memory`, `redis://host:port` or `redis-cluster://host:port,host:port,...`",
                self.broker
            );
        }
        Ok(())
    }
}

fn pick<T: Clone>(flag_or_env: &Option<T>, file: Option<T>, default: T) -> T {
    flag_or_env.clone().or(file).unwrap_or(default)
}

fn read_file(path: Option<&Path>) -> anyhow::Result<FileSettings> {
    let (path, explicit) = match path {
        Some(p) => (p, true),
        None => (Path::new(DEFAULT_CONFIG_FILE), false),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(FileSettings::default())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("switchboard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:4000\"\nmax_message_chars = 10\ncors_origins = [\"http://a\"]\n",
        )
        .unwrap();
        let args = SettingArgs {
            config: Some(file.clone()),
            max_message_chars: Some(20),
            ..Default::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.bind, "127.0.0.1:4000");
        assert_eq!(s.max_message_chars, 20);
        assert_eq!(s.cors_origins, vec!["http://a"]);
        assert_eq!(s.database_url, "sqlite://switchboard.db");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        assert!(Settings::load(&args).is_err());
    }
}
