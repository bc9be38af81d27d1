//! Settings: `switchboard.toml`, then `SWITCHBOARD_*` environment variables,
//! then command-line flags, each overriding the one before. Every setting is
//! declared once, in the `settings!` list below (help text, file key and flag,
//! type, default, environment variable); [`Settings`] is what the server runs
//! with, and `check` its validation. The macro is in `config/macros.rs`, the
//! value types (durations, lists) in `config/values.rs`. Secrets are checked
//! apart, by [`Settings::check_jwt_secret`] and [`Settings::check_api_keys`]:
//! `serve --dev` makes up the missing ones first (`app.rs`).

#[macro_use]
mod macros;
#[cfg(test)]
mod tests;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use self::values::{List, Micros, Millis, Secs};

/// The flags of `serve` and `token`, each with its environment variable.
#[derive(Args, Debug, Default, Clone)]
pub struct SettingArgs {
    /// Configuration file (TOML); missing is fine unless named explicitly.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub layer: Layer,
}

settings! {
    /// One source of settings: flags and environment (clap), or
    /// `switchboard.toml` (serde). Unset is `None`.
    pub struct Layer => Settings {
        /// Address to listen on (host:port). Default 127.0.0.1:3000.
        bind: String = "127.0.0.1:3000", env "SWITCHBOARD_BIND";
        /// HS256 secret of user tokens, at least 16 bytes.
        jwt_secret: String, env "SWITCHBOARD_JWT_SECRET", hide_env_values = true;
        /// PEM file of an RS256 public key; tokens signed with its private key are accepted too.
        jwt_public_key_file: PathBuf, env "SWITCHBOARD_JWT_PUBLIC_KEY_FILE";
        /// Key of server-to-server calls (`Authorization: Bearer <key>`), at least 16
        /// bytes; several separated by commas (any one is accepted) to rotate keys.
        api_key: String, env "SWITCHBOARD_API_KEY", hide_env_values = true;
        /// `sqlite://path` (default sqlite://switchboard.db) or `postgres://...`.
        database_url: String = "sqlite://switchboard.db", env "SWITCHBOARD_DATABASE_URL";
        /// `memory` (default), `redis://host:port[/db]` to join other nodes through
        /// one Redis, or `redis-cluster://host:port,host:port,...` (seed nodes) to
        /// join them through a Redis Cluster (7.0 or later) with sharded pub/sub.
        broker: String = "memory", env "SWITCHBOARD_BROKER";
        /// Prefix of every Redis channel and key, so deployments can share one Redis
        /// (or one Redis Cluster; keep `{` out of it there, or it becomes a hash tag
        /// and puts every channel on one shard). Default `switchboard:`.
        redis_prefix: String = "switchboard:", env "SWITCHBOARD_REDIS_PREFIX";
        /// Origins allowed by CORS, comma-separated; `*` for any. Default: none.
        cors_origins: List = "", env "SWITCHBOARD_CORS_ORIGINS";
        /// Longest chat message, in characters. Default 5000.
        max_message_chars: usize = 5000, env "SWITCHBOARD_MAX_MESSAGE_CHARS";
        /// Largest Engine.IO message or polling body, in bytes. Default 1000000.
        max_payload: usize = 1000000, env "SWITCHBOARD_MAX_PAYLOAD";
        /// Events a connection may send per second. Default 50.
        events_per_second: u32 = 50, env "SWITCHBOARD_EVENTS_PER_SECOND";
        /// Socket.IO connections one user may have open on a node. Default 50.
        max_connections_per_user: usize = 50, env "SWITCHBOARD_MAX_CONNECTIONS_PER_USER";
        /// Workspaces one connection may be in at once. Default 100.
        max_rooms_per_connection: usize = 100, env "SWITCHBOARD_MAX_ROOMS_PER_CONNECTION";
        /// Connection-state recovery window, in seconds. Default 120.
        recovery_window_secs -> recovery_window: Secs = 120,
            env "SWITCHBOARD_RECOVERY_WINDOW_SECS";
        /// Interval of the `:ping` comments on notification streams, in milliseconds. Default 30000.
        sse_ping_interval_ms -> sse_ping_interval: Millis = 30000,
            env "SWITCHBOARD_SSE_PING_INTERVAL_MS";
        /// Notification streams one user may hold open at once. Default 10.
        max_streams_per_user: usize = 10, env "SWITCHBOARD_MAX_STREAMS_PER_USER";
        /// Longest hold of a notification long-poll, in seconds. Default 30.
        max_poll_secs: u64 = 30, env "SWITCHBOARD_MAX_POLL_SECS";
        /// Largest `data` of a notification, in bytes of JSON. Default 16384.
        max_notification_bytes: usize = 16384, env "SWITCHBOARD_MAX_NOTIFICATION_BYTES";
        /// Presence entries expire this long after their last refresh, in milliseconds. Default 30000.
        presence_ttl_ms -> presence_ttl: Millis = 30000, env "SWITCHBOARD_PRESENCE_TTL_MS";
        /// A typing state ends this long after its last `typing_start`, in milliseconds. Default 6000.
        typing_timeout_ms -> typing_timeout: Millis = 6000, env "SWITCHBOARD_TYPING_TIMEOUT_MS";
        /// Typing events a connection may send per second; the rest are dropped. Default 5.
        typing_events_per_second: u32 = 5, env "SWITCHBOARD_TYPING_EVENTS_PER_SECOND";
        /// Seconds a shutdown (SIGTERM) waits for requests and streams to end. Default 10.
        shutdown_timeout_secs -> shutdown_timeout: Secs = 10,
            env "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS";
        /// Engine.IO ping interval, in milliseconds. Default 25000.
        ping_interval_ms -> ping_interval: Millis = 25000, env "SWITCHBOARD_PING_INTERVAL_MS";
        /// Engine.IO ping timeout, in milliseconds. Default 20000.
        ping_timeout_ms -> ping_timeout: Millis = 20000, env "SWITCHBOARD_PING_TIMEOUT_MS";
        /// A WebSocket under sustained load (more than one write per four of these
        /// intervals for a while) waits out the rest of it before its next write, so
        /// that frames arriving meanwhile go out together, in microseconds. 0 writes
        /// at once. Default 2000.
        ws_write_coalesce_us -> ws_write_coalesce: Micros = 2000,
            env "SWITCHBOARD_WS_WRITE_COALESCE_US";
        /// Log lines: `text` (default; colours only on a terminal) or `json` (one
        /// object per line).
        log_format: String = "text", env "SWITCHBOARD_LOG_FORMAT";
    }
    collab: CollabLimits {
        /// Largest collaborative-editing update (one WebSocket message), in bytes. Default 1048576.
        collab_max_update_bytes -> max_update_bytes: usize = 1048576,
            env "SWITCHBOARD_COLLAB_MAX_UPDATE_BYTES";
        /// Largest collaborative document, in bytes of stored updates. Default 16777216.
        collab_max_document_bytes -> max_document_bytes: usize = 16777216,
            env "SWITCHBOARD_COLLAB_MAX_DOCUMENT_BYTES";
        /// Clients of one document on one node. Default 256.
        collab_max_clients -> max_clients: usize = 256, env "SWITCHBOARD_COLLAB_MAX_CLIENTS";
        /// A document with no client is unloaded from memory this long after its last client left, in seconds. Default 30.
        collab_unload_secs -> unload_after: Secs = 30, env "SWITCHBOARD_COLLAB_UNLOAD_SECS";
        /// Past this many logged updates, a document's log is compacted into a snapshot. Default 500.
        collab_compact_updates -> compact_updates: usize = 500,
            env "SWITCHBOARD_COLLAB_COMPACT_UPDATES";
        /// Versions of each document kept, one per compaction (its snapshot), for the document API to list and restore; 0 keeps none. Default 10.
        collab_versions_kept -> versions_kept: u32 = 10,
            env "SWITCHBOARD_COLLAB_VERSIONS_KEPT";
    }
}

/// Everything the server runs with, defaults applied. Each field comes from
/// the entry of the same name (or `-> field`) above; the compiler checks that
/// they match one to one.
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
    pub log_format: String,
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
    pub versions_kept: u32,
}

const DEFAULT_CONFIG_FILE: &str = "switchboard.toml";

/// The shortest JWT secret or API key accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

impl Settings {
    /// Merges flags/environment (already in `args`) over the file over the defaults.
    pub fn load(args: &SettingArgs) -> anyhow::Result<Self> {
        let file = read_file(args.config.as_deref())?;
        let settings = args.layer.clone().over(file);
        settings.check()?;
        Ok(settings)
    }

    /// The API keys a server-to-server call may carry: `api_key` split at
    /// commas, trimmed; an empty one is never among them.
    pub fn api_keys(&self) -> impl Iterator<Item = &str> {
        self.api_key
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
    }

    /// The JWT secret, if it is set and at least [`MIN_SECRET_BYTES`] long;
    /// else a one-line reason naming the setting.
    pub fn check_jwt_secret(&self) -> anyhow::Result<&str> {
        match self.jwt_secret.as_deref() {
            None => bail!("SWITCHBOARD_JWT_SECRET is not set (--jwt-secret, jwt_secret in switchboard.toml; at least {MIN_SECRET_BYTES} bytes)"),
            Some(secret) if secret.len() < MIN_SECRET_BYTES => bail!(
                "SWITCHBOARD_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (it has {})",
                secret.len()
            ),
            Some(secret) => Ok(secret),
        }
    }

    /// Unset is fine (the server-to-server calls are then all refused); set,
    /// every comma-separated key must have at least [`MIN_SECRET_BYTES`].
    pub fn check_api_keys(&self) -> anyhow::Result<()> {
        let Some(keys) = self.api_key.as_deref() else {
            return Ok(());
        };
        for (i, key) in keys.split(',').map(str::trim).enumerate() {
            if key.len() < MIN_SECRET_BYTES {
                bail!(
                    "SWITCHBOARD_API_KEY must be at least {MIN_SECRET_BYTES} bytes, each key of a comma-separated list too (key {} has {})",
                    i + 1,
                    key.len()
                );
            }
        }
        Ok(())
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.log_format != "text" && self.log_format != "json" {
            bail!(
                "unsupported log_format {:?}: use `text` or `json`",
                self.log_format
            );
        }
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
        // The broker crate is the one place that knows broker URLs.
        switchboard_broker::validate_url(&self.broker)?;
        Ok(())
    }
}

fn read_file(path: Option<&Path>) -> anyhow::Result<Layer> {
    let (path, explicit) = match path {
        Some(p) => (p, true),
        None => (Path::new(DEFAULT_CONFIG_FILE), false),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Layer::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
