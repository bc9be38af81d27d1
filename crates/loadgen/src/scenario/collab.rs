//! `collab`: `--docs` documents with `--editors` editors each over the
//! y-websocket protocol (`/collab/{workspace}/{doc}?token=`). Each editor
//! syncs (step 1 with an empty state vector; the server's step 1 is answered
//! with an empty step 2), then types `--edit-rate` times per second: a
//! hand-encoded Yjs v1 update appending `~t<µs>|` after its own previous
//! insertion. A delivery is an update from another editor reaching an editor;
//! latency comes from the timestamps in the update's text (byte search).
//! Document names carry a per-run nonce, so stored documents of earlier runs
//! (whose clocks the fresh editors would collide with) are never reused.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::Message;

use super::{
    await_clients, drain, log_window, settle, window_problems, window_table, Outcome, Tasks,
};
use crate::cli::CollabArgs;
use crate::ctx::{round1, Ctx};
use crate::sio::{tcp_connect, ws_config, ClientError, Ws};
use crate::stats::{now_us, stamp_now, stamps, Shared};
use crate::yws::{self, Kind};

struct Editor {
    addr: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
    path: String,
    client: u64,
    group: usize,
    first_at: Instant,
    period: Duration,
    root: String,
}

pub async fn run(ctx: &Arc<Ctx>, a: &CollabArgs) -> anyhow::Result<Outcome> {
    if a.editors == 0 || a.docs == 0 || a.edit_rate <= 0.0 {
        bail!("--docs, --editors and --edit-rate must be positive");
    }
    let ports = ctx.opt.ports.clone();
    let names = ports.iter().map(|p| format!(":{p}")).collect();
    let shared = Arc::new(Shared::new(names));
    ctx.progress.watch(&shared);
    let total = a.docs * a.editors;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
        ^ (u64::from(std::process::id()) << 40);
    let run_id = format!("{:x}", nonce & 0xffff_ffff_ffff);
    ctx.set("docs", a.docs);
    ctx.set("editors_per_doc", a.editors);
    ctx.set("edit_rate", a.edit_rate);
    ctx.set("doc_prefix", format!("d{run_id}-"));
    ctx.plan_sources(total);
    let gate = Arc::new(Semaphore::new(ctx.opt.concurrency.max(1)));
    let timeout = Duration::from_secs_f64(ctx.opt.connect_timeout.max(0.1));
    let period = Duration::from_secs_f64(1.0 / a.edit_rate);
    let t0 = Instant::now();
    // Yjs client ids are 32-bit; make them distinct within the run
    let client_base = (nonce as u32 as u64) & 0x3fff_ffff;
    let mut tasks = Tasks::new();
    for i in 0..total {
        let doc = format!("d{run_id}-{}", i / a.editors);
        let g = (i % ports.len() as u64) as usize;
        let user = ctx.user_of("e", i);
        let token = ctx.minter.token(&user, &[a.workspace.as_str()])?;
        let editor = Editor {
            addr: ctx.addr(ports[g]),
            source: ctx.source_for(i),
            path: format!("/collab/{}/{doc}?token={token}", a.workspace),
            client: (client_base + i) & 0xffff_ffff,
            group: g,
            first_at: t0 + period.mul_f64(i as f64 / total as f64),
            period,
            root: a.root.clone(),
        };
        let (shared, gate) = (shared.clone(), gate.clone());
        tasks.spawn(async move {
            let ws = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                tokio::time::timeout(timeout, connect(&editor)).await
            };
            let ws = match ws {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    shared.note_error(&e.to_string());
                    shared.connect_failed.fetch_add(1, Relaxed);
                    return;
                }
                Err(_) => {
                    shared.note_error("collab handshake timed out");
                    shared.connect_failed.fetch_add(1, Relaxed);
                    return;
                }
            };
            shared.connected.fetch_add(1, Relaxed);
            if let Some(g) = shared.groups.get(editor.group) {
                g.clients.fetch_add(1, Relaxed);
            }
            let why = edit(ws, &editor, &shared).await;
            shared.closed.fetch_add(1, Relaxed);
            if let Some(g) = shared.groups.get(editor.group) {
                g.clients.fetch_sub(1, Relaxed);
            }
            shared.note_error(&why.to_string());
        });
    }
    let none = || {
        format!(
            "collab: no editor could connect ({:?}); is /collab implemented?",
            shared.error_reasons()
        )
    };
    let (ok, mut problems) =
        match await_clients(ctx, &shared, total, "connect editors", "editors", none).await {
            Ok(connected) => connected,
            Err(outcome) => return Ok(outcome),
        };
    settle(ctx, &shared, Duration::from_secs(10)).await;
    let warmup = Duration::from_secs_f64(ctx.opt.warmup.max(0.0));
    let dur = Duration::from_secs_f64(ctx.opt.duration.max(0.1));
    let sent0 = shared.sent.load(Relaxed);
    let base = shared.delivered();
    shared.sending.store(true, Relaxed);
    ctx.progress.phase("warmup", Some(warmup));
    tokio::time::sleep(warmup).await;
    let mut w = ctx.measure("collab", &shared, None, dur).await;
    shared.sending.store(false, Relaxed);
    let others = (a.editors - 1) as f64;
    w.phase = format!("{} docs x {} @ {}/s", a.docs, a.editors, a.edit_rate);
    w.expected_per_s = Some(round1(w.sent_per_s * others));
    ctx.progress.phase("drain", None);
    let sent = shared.sent.load(Relaxed) - sent0;
    let (missing, waited) = drain(
        &shared,
        base,
        sent * (a.editors - 1),
        Duration::from_secs(10),
    )
    .await;
    w.drain_ms = Some(waited);
    if missing > 0 {
        w.undelivered = Some(missing);
    }
    log_window(&w);
    ctx.set("echoes_counted_as_other_events", true);
    ctx.push("windows", &w);
    let windows = vec![w];
    window_problems(&windows, &mut problems);
    let delivered = windows.iter().map(|w| w.delivered).sum();
    let title = format!(
        "collab: {} documents x {} editors, {} updates/s each (y-websocket)",
        a.docs, a.editors, a.edit_rate
    );
    drop(tasks);
    Ok(Outcome {
        table: window_table(&title, &windows),
        delivered,
        needs_delivery: true,
        connected: ok,
        problems,
    })
}

/// A per-run prefix of document names: stored documents of earlier runs
/// (whose clocks fresh editors would collide with) are never reused.
pub fn run_prefix() -> String {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
        ^ (u64::from(std::process::id()) << 40);
    format!("d{:x}-", nonce & 0xffff_ffff_ffff)
}

/// Client `i` of the `memory` scenario's collab mode: syncs document
/// `i % docs` (of `workspace`, names starting with `prefix`), then only reads
/// (tungstenite answers the server's pings while it does) until closed.
pub fn spawn_idle(
    tasks: &mut Tasks,
    ctx: &Ctx,
    shared: &Arc<Shared>,
    gate: &Arc<Semaphore>,
    (i, docs): (u64, u64),
    workspace: &str,
    prefix: &str,
) -> anyhow::Result<()> {
    let ports = &ctx.opt.ports;
    let g = (i % ports.len() as u64) as usize;
    let user = ctx.user_of("e", i);
    let token = ctx.minter.token(&user, &[workspace])?;
    let editor = Editor {
        addr: ctx.addr(ports[g]),
        source: ctx.source_for(i),
        path: format!(
            "/collab/{workspace}/{prefix}{}?token={token}",
            i % docs.max(1)
        ),
        client: i,
        group: g,
        first_at: Instant::now(),
        period: Duration::from_secs(1),
        root: String::new(),
    };
    let timeout = Duration::from_secs_f64(ctx.opt.connect_timeout.max(0.1));
    let (shared, gate) = (shared.clone(), gate.clone());
    tasks.spawn(async move {
        let ws = {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            tokio::time::timeout(timeout, connect(&editor)).await
        };
        let mut ws = match ws {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                shared.note_error(&e.to_string());
                shared.connect_failed.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                shared.note_error("collab handshake timed out");
                shared.connect_failed.fetch_add(1, Relaxed);
                return;
            }
        };
        shared.connected.fetch_add(1, Relaxed);
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.note_error(&e.to_string());
                    break;
                }
            }
        }
        shared.closed.fetch_add(1, Relaxed);
    });
    Ok(())
}

/// WebSocket upgrade, then sync: our step 1 out, until the server's step 2 is in.
async fn connect(e: &Editor) -> Result<Ws, ClientError> {
    let stream = tcp_connect(e.addr, e.source).await?;
    let url = format!("ws://{}{}", e.addr, e.path);
    let (mut ws, _) = client_async_with_config(url, stream, Some(ws_config())).await?;
    ws.send(Message::binary(yws::sync_step1_empty())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => match yws::kind(&b) {
                Kind::Step1 => {
                    ws.send(Message::binary(yws::sync_step2(&yws::empty_update())))
                        .await?;
                }
                Kind::Step2 => return Ok(ws),
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

async fn edit(mut ws: Ws, e: &Editor, shared: &Shared) -> ClientError {
    let mut tick = tokio::time::interval_at(e.first_at, e.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut clock: u64 = 0;
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => match yws::kind(&b) {
                    Kind::Update => {
                        if yws::first_client(&b) == Some(e.client) {
                            shared.other_events.fetch_add(1, Relaxed);
                            continue;
                        }
                        if let Some(g) = shared.groups.get(e.group) {
                            let now = now_us();
                            let mut n = 0;
                            for t in stamps(&b) {
                                g.hist.record(now.saturating_sub(t));
                                n += 1;
                            }
                            g.delivered.fetch_add(n.max(1), Relaxed);
                        }
                    }
                    Kind::Step1 => {
                        if let Err(err) = ws
                            .send(Message::binary(yws::sync_step2(&yws::empty_update())))
                            .await
                        {
                            return err.into();
                        }
                    }
                    _ => {
                        shared.other_events.fetch_add(1, Relaxed);
                    }
                },
                Some(Ok(Message::Close(_))) | None => return ClientError::Closed,
                Some(Ok(_)) => {}
                Some(Err(err)) => return err.into(),
            },
            _ = tick.tick() => {
                if !shared.sending.load(Relaxed) {
                    continue;
                }
                let text = stamp_now();
                let update = yws::text_insert_update(e.client, clock, &e.root, &text);
                clock += text.len() as u64;
                match ws.send(Message::binary(yws::sync_update(&update))).await {
                    Ok(()) => {
                        shared.sent.fetch_add(1, Relaxed);
                    }
                    Err(err) => {
                        shared.send_errors.fetch_add(1, Relaxed);
                        return err.into();
                    }
                }
            }
        }
    }
}
