//! `fanout` and `cluster`: clients in one room, a publisher posting to the
//! HTTP API (`POST /api/publish`, not persisted). First saturation (closed
//! loop: at most `--window` messages not yet delivered to every client), then
//! fixed rates (open loop), draining the backlog between rates. `cluster`
//! spreads the clients over the nodes of `--ports` and publishes on
//! `--pub-port` (default: the first), so the other node's latency is the
//! far-side latency of the broker path.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::{
    await_clients, publish_sweep, settle, sio_env, spawn_sio, window_problems, window_table,
    Outcome, Sweep, Tasks,
};
use crate::cli::FanoutArgs;
use crate::ctx::Ctx;
use crate::http::Publisher;
use crate::sio::Plan;
use crate::stats::{stamp_now, Shared};

pub async fn run(ctx: &Arc<Ctx>, a: &FanoutArgs, cluster: bool) -> anyhow::Result<Outcome> {
    let ports = ctx.opt.ports.clone();
    if cluster && ports.len() < 2 {
        bail!("cluster needs two nodes: --ports A,B");
    }
    let pub_port = ctx.pub_addr().port();
    let names: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if cluster {
                let node = (b'A' + i as u8) as char;
                let side = if *p == pub_port { "pub" } else { "far" };
                format!("{node} :{p} {side}")
            } else {
                format!(":{p}")
            }
        })
        .collect();
    let shared = Arc::new(Shared::new(names));
    ctx.progress.watch(&shared);
    let env = sio_env(ctx, &shared, String::new(), false);
    let dialect = ctx.opt.dialect;
    let pad = "x".repeat(a.msg_bytes.saturating_sub(dialect.fanout_fixed_len()));
    ctx.set("clients_requested", a.clients);
    ctx.set("msg_bytes", a.msg_bytes);
    ctx.set("room", &a.room);
    ctx.plan_sources(a.clients);

    let mut tasks = Tasks::new();
    for i in 0..a.clients {
        let g = (i % ports.len() as u64) as usize;
        let user = ctx.user_of("", i);
        let token = ctx.minter.token(&user, &[a.room.as_str()])?;
        let plan = Plan {
            addr: ctx.addr(ports[g]),
            source: ctx.source_for(i),
            token,
            room: a.room.clone(),
            group: g,
            // every Nth client of each node
            sample: a.sample_every > 0 && (i / ports.len() as u64) % a.sample_every == 0,
            chat: None,
        };
        spawn_sio(&mut tasks, plan, &env);
    }
    let none = || "no client connected".to_owned();
    let (ok, mut problems) =
        match await_clients(ctx, &shared, a.clients, "connect", "clients", none).await {
            Ok(connected) => connected,
            Err(outcome) => return Ok(outcome),
        };
    settle(ctx, &shared, Duration::from_secs(60)).await;

    let mut publisher = Publisher::new(
        ctx.pub_addr(),
        dialect.publish_path(),
        ctx.opt.api_key.as_deref(),
    );
    publisher.warm().await?;
    let room = a.room.clone();
    let body = move || {
        dialect
            .publish_body(&room, &format!("{}{}", stamp_now(), pad))
            .into_bytes()
    };
    let receivers = || {
        shared
            .groups
            .iter()
            .map(|g| g.clients.load(Relaxed))
            .sum::<u64>() as f64
    };
    let sweep = Sweep {
        saturation: !a.no_saturation,
        window: a.window,
        pipeline: a.pipeline,
        rates: &a.rate,
        drain: a.drain,
        unit: "msg",
    };
    let windows = publish_sweep(ctx, &shared, &mut publisher, &sweep, receivers, body).await;
    ctx.set("publisher_statuses", publisher.stats.statuses());
    if let Some(e) = publisher.stats.first_error() {
        ctx.set("publisher_first_error", &e);
        problems.push(format!("publisher: {e}"));
    }
    window_problems(&windows, &mut problems);
    let title = if cluster {
        format!(
            "cluster: {ok} clients in one room over {} nodes, publisher on :{pub_port} ({} dialect)",
            ports.len(),
            dialect_name(ctx)
        )
    } else {
        format!(
            "fanout: {ok} clients in one room, {}-byte packets ({} dialect)",
            a.msg_bytes,
            dialect_name(ctx)
        )
    };
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

pub fn dialect_name(ctx: &Ctx) -> &'static str {
    match ctx.opt.dialect {
        crate::sio::Dialect::Contract => "contract",
        crate::sio::Dialect::Legacy => "legacy",
    }
}
