//! `chat`: rooms of `--room-size` clients, each client sending
//! `--client-rate` `message` events per second (persisted by the server before
//! it is broadcast to every member, the sender included). Sends are spread
//! evenly in time over the clients. Measured: deliveries, latency over all
//! receivers, server CPU (and acks with `--msg-ack`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::fanout::dialect_name;
use super::{
    await_clients, drain, log_window, settle, sio_env, spawn_sio, window_problems, window_table,
    Outcome, Tasks,
};
use crate::cli::ChatArgs;
use crate::ctx::{round1, Ctx};
use crate::sio::{ChatPlan, Plan};
use crate::stats::Shared;

pub async fn run(ctx: &Arc<Ctx>, a: &ChatArgs) -> anyhow::Result<Outcome> {
    if a.room_size == 0 || a.client_rate <= 0.0 {
        bail!("--room-size and --client-rate must be positive");
    }
    let ports = ctx.opt.ports.clone();
    let names = ports.iter().map(|p| format!(":{p}")).collect();
    let shared = Arc::new(Shared::new(names));
    ctx.progress.watch(&shared);
    let dialect = ctx.opt.dialect;
    let pad = "x".repeat(a.msg_bytes.saturating_sub(dialect.fanout_fixed_len()));
    let env = sio_env(ctx, &shared, pad, a.msg_ack);
    let rooms = a.clients.div_ceil(a.room_size);
    ctx.set("clients_requested", a.clients);
    ctx.set("room_size", a.room_size);
    ctx.set("rooms", rooms);
    ctx.set("client_rate", a.client_rate);
    ctx.set("msg_ack", a.msg_ack);
    ctx.plan_sources(a.clients);

    let period = Duration::from_secs_f64(1.0 / a.client_rate);
    let t0 = Instant::now();
    let mut tasks = Tasks::new();
    for i in 0..a.clients {
        let g = (i % ports.len() as u64) as usize;
        let room = format!("r{}", i / a.room_size);
        let user = ctx.user_of("", i);
        let token = ctx.minter.token(&user, &[room.as_str()])?;
        let offset = period.mul_f64(i as f64 / a.clients.max(1) as f64);
        let plan = Plan {
            addr: ctx.addr(ports[g]),
            source: ctx.source_for(i),
            token,
            room,
            group: g,
            sample: true,
            chat: Some(ChatPlan {
                first_at: t0 + offset,
                period,
            }),
        };
        spawn_sio(&mut tasks, plan, &env);
    }
    let none = || "no client connected".to_owned();
    let (ok, mut problems) =
        match await_clients(ctx, &shared, a.clients, "connect", "clients", none).await {
            Ok(connected) => connected,
            Err(outcome) => return Ok(outcome),
        };
    settle(ctx, &shared, Duration::from_secs(30)).await;

    let warmup = Duration::from_secs_f64(ctx.opt.warmup.max(0.0));
    let dur = Duration::from_secs_f64(ctx.opt.duration.max(0.1));
    let sent0 = shared.sent.load(Relaxed);
    let base = shared.delivered();
    shared.sending.store(true, Relaxed);
    ctx.progress.phase("warmup", Some(warmup));
    tokio::time::sleep(warmup).await;
    let mut w = ctx.measure("chat", &shared, None, dur).await;
    shared.sending.store(false, Relaxed);
    w.phase = format!("{} rooms x {} @ {}/s", rooms, a.room_size, a.client_rate);
    w.expected_per_s = Some(round1(w.sent_per_s * a.room_size as f64));
    // every sent message should reach its whole room
    ctx.progress.phase("drain", None);
    let sent = shared.sent.load(Relaxed) - sent0;
    let expected = sent * a.room_size.min(ok);
    let (missing, waited) = drain(&shared, base, expected, Duration::from_secs(10)).await;
    w.drain_ms = Some(waited);
    if missing > 0 {
        w.undelivered = Some(missing);
    }
    log_window(&w);
    if a.msg_ack {
        crate::ctx::log(&format!(
            "acks {}/s, failed {}",
            w.acks_per_s, w.ack_failures
        ));
    }
    ctx.push("windows", &w);
    let windows = vec![w];
    window_problems(&windows, &mut problems);
    let title = format!(
        "chat: {ok} clients in {rooms} rooms of {}, {} msg/s each{} ({} dialect)",
        a.room_size,
        a.client_rate,
        if a.msg_ack { ", acked" } else { "" },
        dialect_name(ctx)
    );
    let delivered = windows.iter().map(|w| w.delivered).sum();
    drop(tasks);
    Ok(Outcome {
        table: window_table(&title, &windows),
        delivered,
        needs_delivery: true,
        connected: ok,
        problems,
    })
}
