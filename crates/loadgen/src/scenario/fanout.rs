//! `fanout` and `cluster`: clients in one room, a publisher posting to the
//! HTTP API (`POST /api/publish`, not persisted). First saturation (closed
//! loop: at most `--window` messages not yet delivered to every client), then
//! fixed rates (open loop), draining the backlog between rates. `cluster`
//! spreads the clients over the nodes of `--ports` and publishes on
//! `--pub-port` (default: the first), so the other node's latency is the
//! far-side latency of the broker path.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::{
    drain, log_window, pump_rate, pump_saturation, settle, sio_env, spawn_sio, wait_connected,
    window_problems, window_table, Outcome, Tasks,
};
use crate::cli::FanoutArgs;
use crate::ctx::{round1, Ctx, Window};
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
    let (ok, failed, secs) = wait_connected(ctx, &shared, a.clients, "connect").await;
    ctx.set("clients", ok);
    ctx.set("failed", failed);
    ctx.set("connect_s", round1(secs));
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!(
            "{failed} clients failed: {:?}",
            shared.error_reasons()
        ));
    }
    if ok == 0 {
        return Ok(Outcome {
            table: "no client connected".into(),
            delivered: 0,
            needs_delivery: true,
            connected: 0,
            problems,
        });
    }
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
    let warmup = Duration::from_secs_f64(ctx.opt.warmup.max(0.0));
    let dur = Duration::from_secs_f64(ctx.opt.duration.max(0.1));
    let mut windows: Vec<Window> = Vec::new();

    if !a.no_saturation {
        let stop = AtomicBool::new(false);
        let http = publisher.stats.clone();
        let (_, mut w) = tokio::join!(
            pump_saturation(
                &mut publisher,
                &shared,
                receivers,
                a.window,
                a.pipeline,
                body.clone(),
                &stop
            ),
            async {
                ctx.progress.phase("saturation warmup", Some(warmup));
                tokio::time::sleep(warmup).await;
                let a0 = ctx.snap(&shared, Some(&http));
                let mut w = ctx.measure("saturation", &shared, Some(&http), dur).await;
                let b0 = ctx.snap(&shared, Some(&http));
                stop.store(true, Relaxed);
                w.published_per_s = Some(round1(
                    b0.http_sent().saturating_sub(a0.http_sent()) as f64 / w.window_s,
                ));
                w
            }
        );
        w.phase = format!("saturation (window {})", a.window);
        log_window(&w);
        ctx.push("windows", &w);
        windows.push(w);
        // let the window drain
        let base = shared.delivered();
        let _ = drain(&shared, base, u64::MAX, Duration::from_millis(1500)).await;
    }

    let mut rates = a.rate.clone();
    rates.sort_by(f64::total_cmp);
    for rate in rates.into_iter().filter(|r| *r > 0.0) {
        let stop = AtomicBool::new(false);
        let http = publisher.stats.clone();
        let base = shared.delivered();
        let r_now = receivers();
        let (sent, mut w) = tokio::join!(
            pump_rate(&mut publisher, rate, body.clone(), &stop),
            async {
                let wu = warmup.min(Duration::from_secs(1));
                ctx.progress
                    .phase(&format!("rate {rate}/s warmup"), Some(wu));
                tokio::time::sleep(wu).await;
                let a0 = ctx.snap(&shared, Some(&http));
                let mut w = ctx
                    .measure(&format!("rate {rate}/s"), &shared, Some(&http), dur)
                    .await;
                let b0 = ctx.snap(&shared, Some(&http));
                stop.store(true, Relaxed);
                w.published_per_s = Some(round1(
                    b0.http_sent().saturating_sub(a0.http_sent()) as f64 / w.window_s,
                ));
                w
            }
        );
        w.phase = format!("{rate} msg/s");
        w.expected_per_s = Some(round1(rate * r_now));
        ctx.progress.phase(&format!("drain {rate}/s"), None);
        let (missing, waited) = drain(
            &shared,
            base,
            (sent as f64 * r_now) as u64,
            Duration::from_secs_f64(a.drain.max(0.0)),
        )
        .await;
        w.drain_ms = Some(waited);
        if missing > 0 {
            w.undelivered = Some(missing);
        }
        log_window(&w);
        ctx.push("windows", &w);
        windows.push(w);
        if missing > 0 {
            crate::ctx::log(&format!(
                "not drained after {:.0} s: {missing} deliveries missing; stopping the rate sweep",
                a.drain
            ));
            break;
        }
    }
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
