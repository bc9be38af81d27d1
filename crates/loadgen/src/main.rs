//! `switchboard-loadgen`: a load generator for Switchboard and for the Node
//! Socket.IO reference server, cheap enough not to be the bottleneck.
//!
//! Clients are tokio tasks speaking hand-rolled Engine.IO/Socket.IO framing
//! over tokio-tungstenite (WebSocket transport only), hand-written HTTP/1.1
//! (publisher, SSE) and hand-encoded y-websocket/Yjs frames. Nothing received
//! is JSON-parsed: frames are counted by their first bytes and the publisher's
//! timestamp (`~t<µs>`) is found with a byte search. Server CPU and memory come
//! from /proc of the processes given with `--pids`.
//!
//! Scenarios: `memory`, `fanout`, `chat`, `cluster`, `sse`, `collab`; see
//! `switchboard-loadgen --help` and BENCHMARKS.md at the repository root.

mod cli;
mod ctx;
mod http;
mod procfs;
mod scenario;
mod sio;
mod stats;
mod token;
mod yws;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};

use crate::cli::{Cli, Scenario};
use crate::ctx::{log, Ctx};
use crate::scenario::Outcome;

/// Exit statuses.
const EXIT_NOTHING: u8 = 1;
const EXIT_WATCHDOG: u8 = 2;
const EXIT_ERRORS: u8 = 3;
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    stats::start_clock();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            log(&format!("error: {e:#}"));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Clients the scenario opens (for the open-file limit and the watchdog).
fn planned_clients(s: &Scenario) -> u64 {
    match s {
        Scenario::Memory(a) => a.steps.iter().copied().max().unwrap_or(0),
        Scenario::Fanout(a) | Scenario::Cluster(a) => a.clients,
        Scenario::Chat(a) => a.clients,
        Scenario::Sse(a) => a.streams,
        Scenario::Collab(a) => a.docs * a.editors,
    }
}

/// Seconds the scenario is planned to take, without connecting.
fn planned_secs(cli: &Cli) -> f64 {
    let c = &cli.common;
    let phase = c.duration + c.warmup;
    match &cli.scenario {
        Scenario::Memory(a) => a.steps.len() as f64 * (a.settle + 5.0),
        Scenario::Fanout(a) | Scenario::Cluster(a) => {
            let sat = if a.no_saturation { 0.0 } else { phase + 2.0 };
            sat + a.rate.len() as f64 * (c.duration + 1.0 + a.drain)
        }
        Scenario::Chat(_) | Scenario::Collab(_) => phase + 10.0,
        Scenario::Sse(a) => {
            let sat = if a.no_saturation { 0.0 } else { phase + 2.0 };
            sat + a.rate.len() as f64 * (c.duration + 1.0 + a.drain)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let c = &cli.common;
    if !c.host.is_loopback() {
        bail!("--host must be a loopback address (this load generator is for loopback only)");
    }
    if c.ports.is_empty() {
        bail!("--ports is empty");
    }
    let targets = match &c.pids {
        Some(p) => procfs::parse_targets(p)?,
        None => Vec::new(),
    };
    for t in &targets {
        if procfs::cpu_ticks(t.pid).is_none() {
            bail!("process {} ({}) not found in /proc", t.pid, t.name);
        }
    }
    let clients = planned_clients(&cli.scenario);
    let (soft, hard, note) = procfs::raise_nofile(clients + 256);
    if !note.is_empty() {
        log(&note);
    }
    if soft < clients + 64 {
        log(&format!(
            "open-file limit {soft} (hard {hard}) is below the {clients} clients planned: expect failures"
        ));
    }
    let connect_budget = clients as f64 / 100.0 + c.connect_timeout;
    let max_s = c
        .max_s
        .unwrap_or_else(|| planned_secs(&cli) + connect_budget + 60.0);
    let threads = if c.threads == 0 {
        procfs::ncpu()
    } else {
        c.threads
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;

    let scenario_name = match &cli.scenario {
        Scenario::Memory(_) => "memory",
        Scenario::Fanout(_) => "fanout",
        Scenario::Chat(_) => "chat",
        Scenario::Cluster(_) => "cluster",
        Scenario::Sse(_) => "sse",
        Scenario::Collab(_) => "collab",
    };
    let ctx = Arc::new(Ctx::new(c.clone(), targets.clone())?);
    ctx.set("scenario", scenario_name);
    ctx.set(
        "label",
        c.label.clone().unwrap_or_else(|| scenario_name.into()),
    );
    ctx.set("dialect", c.dialect);
    ctx.set(
        "auth",
        if c.token_secret.is_some() {
            "jwt"
        } else {
            "plain"
        },
    );
    ctx.set("ports", &c.ports);
    ctx.set("pub_port", ctx.pub_addr().port());
    ctx.set("targets", &targets);
    ctx.set("loadgen_threads", threads);
    ctx.set(
        "nofile",
        json!({ "soft": soft, "hard": hard, "note": note }),
    );
    ctx.set("ncpu", procfs::ncpu());
    ctx.set("duration_s", c.duration);
    ctx.set(
        "started_at",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    // Last resort if the runtime itself is stuck: a thread that ends the process.
    {
        let ctx = ctx.clone();
        let json_path = c.json.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(max_s + 15.0));
            log("watchdog thread: the runtime did not stop; exiting");
            write_partial(&ctx, json_path.as_deref(), "watchdog (runtime stuck)");
            std::process::exit(i32::from(EXIT_WATCHDOG));
        });
    }

    let outcome = rt.block_on(async {
        ctx.progress.spawn();
        let work = async {
            match &cli.scenario {
                Scenario::Memory(a) => scenario::memory::run(&ctx, a).await,
                Scenario::Fanout(a) => scenario::fanout::run(&ctx, a, false).await,
                Scenario::Cluster(a) => scenario::fanout::run(&ctx, a, true).await,
                Scenario::Chat(a) => scenario::chat::run(&ctx, a).await,
                Scenario::Sse(a) => scenario::sse::run(&ctx, a).await,
                Scenario::Collab(a) => scenario::collab::run(&ctx, a).await,
            }
        };
        tokio::select! {
            r = work => Some(r),
            () = tokio::time::sleep(Duration::from_secs_f64(max_s)) => None,
            () = interrupted() => {
                log("interrupted");
                write_partial(&ctx, c.json.as_deref(), "interrupted");
                std::process::exit(130);
            }
        }
    });
    let outcome = match outcome {
        None => {
            log(&format!("watchdog: exceeded {max_s:.0} s, aborting"));
            write_partial(&ctx, c.json.as_deref(), &format!("watchdog {max_s:.0}s"));
            return Ok(ExitCode::from(EXIT_WATCHDOG));
        }
        Some(r) => r?,
    };
    // the clients' sockets close with the runtime
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(finish(&ctx, c, outcome))
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut a), Ok(mut b)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = a.recv() => {}
                _ = b.recv() => {}
            }
            return;
        }
    }
    std::future::pending::<()>().await;
}

fn write_partial(ctx: &Ctx, path: Option<&std::path::Path>, why: &str) {
    let mut r = ctx.result();
    r.insert("aborted".into(), Value::from(why));
    if let Some(p) = path {
        if let Err(e) = write_json(p, &Value::Object(r)) {
            log(&format!("writing {}: {e}", p.display()));
        }
    }
}

fn write_json(path: &std::path::Path, v: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n")?;
    Ok(())
}

fn finish(ctx: &Ctx, c: &cli::Common, o: Outcome) -> ExitCode {
    let mut problems = o.problems;
    let nothing = if o.connected == 0 {
        Some("no client connected")
    } else if o.needs_delivery && o.delivered == 0 {
        Some("nothing was delivered")
    } else {
        None
    };
    let mut r = ctx.result();
    r.insert("delivered".into(), Value::from(o.delivered));
    r.insert("problems".into(), json!(problems));
    r.insert(
        "ok".into(),
        Value::from(nothing.is_none() && problems.is_empty()),
    );
    if let Some(p) = &c.json {
        if let Err(e) = write_json(p, &Value::Object(r)) {
            log(&format!("writing {}: {e:#}", p.display()));
            problems.push("could not write the JSON".into());
        }
    }
    println!("{}", o.table);
    if let Some(why) = nothing {
        log(&format!("FAILED: {why}"));
        return ExitCode::from(EXIT_NOTHING);
    }
    if !problems.is_empty() {
        for p in &problems {
            log(&format!("problem: {p}"));
        }
        if !c.allow_errors {
            return ExitCode::from(EXIT_ERRORS);
        }
    }
    ExitCode::SUCCESS
}
