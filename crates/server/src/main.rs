//! The `switchboard` command: `serve` runs the server, `token` mints a user
//! token with the configured secret. Everything else lives in the modules:
//! `config` (settings), `app` (wiring), `realtime` (Socket.IO: chat, presence,
//! typing), `notify` (per-user notification fan-out), `collab` (collaborative
//! editing over y-websocket), `http` (REST, SSE and the upgrades).

mod access;
mod app;
mod collab;
mod config;
mod http;
mod notify;
mod realtime;
#[cfg(test)]
mod testing;

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use switchboard_core::Authenticator;

use crate::config::{SettingArgs, Settings};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A self-hosted real-time server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        #[command(flatten)]
        settings: SettingArgs,
        /// Development mode: a random JWT secret and API key unless set, and demo
        /// user tokens printed on start.
        #[arg(long)]
        dev: bool,
    },
    /// Prints a user token signed with the configured secret.
    Token {
        #[command(flatten)]
        settings: SettingArgs,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// A workspace the token grants; repeat for several.
        #[arg(long = "workspace")]
        workspaces: Vec<String>,
        /// Display name (`name` claim).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime: seconds, or a number with s, m, h or d. Default 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

/// A failure is one line on stderr (the causes joined with `: `, no backtrace
/// whatever `RUST_BACKTRACE` says) and exit status 1.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { settings, dev } => {
            let settings = Settings::load(&settings)?;
            init_logs(&settings);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(app::serve(settings, dev))
        }
        Command::Token {
            settings,
            sub,
            workspaces,
            name,
            ttl,
        } => {
            let settings = Settings::load(&settings)?;
            let secret = match settings.check_jwt_secret() {
                Ok(secret) => secret,
                Err(e) => bail!("{e}; refusing to sign a token"),
            };
            let auth = Authenticator::new(secret.as_bytes(), None)?;
            let ttl = parse_duration(&ttl)?;
            println!(
                "{}",
                auth.mint(&sub, name.as_deref(), &workspaces, ttl.as_secs())?
            );
            Ok(())
        }
    }
}

/// Log lines to stdout, filtered by `RUST_LOG` (default `info`): text, with
/// colours only when stdout is a terminal, or one JSON object per line.
fn init_logs(settings: &Settings) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if settings.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stdout().is_terminal()).init();
    }
}

/// `90`, `90s`, `15m`, `1h`, `7d`.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("bad duration {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("bad duration unit in {text:?}: use s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_durations() {
        assert_eq!(super::parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(super::parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(super::parse_duration("1h").unwrap().as_secs(), 3600);
        assert!(super::parse_duration("1y").is_err());
        assert!(super::parse_duration("h").is_err());
    }
}
