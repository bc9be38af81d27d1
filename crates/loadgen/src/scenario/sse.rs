//! `sse`: notification streams (`GET /api/notifications/stream?token=`, one
//! user each unless `--users`), and notifications POSTed through the API
//! (`POST /api/notifications {userId, type, data}`, persisted by the server,
//! then delivered), round-robin over the users. Saturation (at most
//! `--window` notifications not yet delivered), then fixed rates. The stream
//! is read with a chunked decoder and split on blank lines; a notification is
//! recognised by the `~t` timestamp in its data, without parsing the JSON.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::{
    await_clients, publish_sweep, settle, window_problems, window_table, Outcome, Sweep, Tasks,
};
use crate::cli::SseArgs;
use crate::ctx::Ctx;
use crate::http::{open_sse, Dechunker, HttpError, Publisher, SseSplitter};
use crate::sio::q;
use crate::stats::{find_stamp, now_us, stamp_now, Shared};

pub async fn run(ctx: &Arc<Ctx>, a: &SseArgs) -> anyhow::Result<Outcome> {
    let ports = ctx.opt.ports.clone();
    let names = ports.iter().map(|p| format!(":{p}")).collect();
    let shared = Arc::new(Shared::new(names));
    ctx.progress.watch(&shared);
    let users = ctx
        .opt
        .users
        .filter(|u| *u > 0)
        .unwrap_or(a.streams)
        .min(a.streams)
        .max(1);
    ctx.set("streams_requested", a.streams);
    ctx.set("users", users);
    ctx.plan_sources(a.streams);
    let gate = Arc::new(Semaphore::new(ctx.opt.concurrency.max(1)));
    let timeout = Duration::from_secs_f64(ctx.opt.connect_timeout.max(0.1));
    let mut tasks = Tasks::new();
    for i in 0..a.streams {
        let g = (i % ports.len() as u64) as usize;
        let user = ctx.user_of("n", i);
        let token = ctx.minter.token(&user, &[])?;
        let path = format!("/api/notifications/stream?token={token}");
        let addr = ctx.addr(ports[g]);
        let source = ctx.source_for(i);
        let (shared, gate) = (shared.clone(), gate.clone());
        tasks.spawn(async move {
            let conn = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                tokio::time::timeout(timeout, open_sse(addr, source, &path)).await
            };
            let conn = match conn {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    shared.note_error(&e.to_string());
                    shared.connect_failed.fetch_add(1, Relaxed);
                    return;
                }
                Err(_) => {
                    shared.note_error("stream open timed out");
                    shared.connect_failed.fetch_add(1, Relaxed);
                    return;
                }
            };
            shared.connected.fetch_add(1, Relaxed);
            if let Some(gr) = shared.groups.get(g) {
                gr.clients.fetch_add(1, Relaxed);
            }
            let why = read_stream(conn, &shared, g).await;
            shared.closed.fetch_add(1, Relaxed);
            if let Some(gr) = shared.groups.get(g) {
                gr.clients.fetch_sub(1, Relaxed);
            }
            shared.note_error(&why.to_string());
        });
    }
    let none = || "no stream opened".to_owned();
    let (ok, mut problems) =
        match await_clients(ctx, &shared, a.streams, "open streams", "streams", none).await {
            Ok(connected) => connected,
            Err(outcome) => return Ok(outcome),
        };
    settle(ctx, &shared, Duration::from_secs(10)).await;

    let mut publisher = Publisher::new(
        ctx.pub_addr(),
        "/api/notifications",
        ctx.opt.api_key.as_deref(),
    );
    publisher.warm().await?;
    let user_ids: Vec<String> = (0..users).map(|k| ctx.user_of("n", k)).collect();
    let mut next = 0usize;
    let body = move || {
        let user = &user_ids[next % user_ids.len()];
        next = next.wrapping_add(1);
        format!(
            r#"{{"userId":{},"type":"bench","data":{{"t":"{}"}}}}"#,
            q(user),
            stamp_now()
        )
        .into_bytes()
    };
    // deliveries per notification: the streams of one user
    let per_user = || {
        (shared
            .groups
            .iter()
            .map(|g| g.clients.load(Relaxed))
            .sum::<u64>() as f64
            / users as f64)
            .max(1.0)
    };
    let sweep = Sweep {
        saturation: !a.no_saturation,
        window: a.window,
        pipeline: a.pipeline,
        rates: &a.rate,
        drain: a.drain,
        unit: "notif",
    };
    let windows = publish_sweep(ctx, &shared, &mut publisher, &sweep, per_user, body).await;
    ctx.set("publisher_statuses", publisher.stats.statuses());
    if let Some(e) = publisher.stats.first_error() {
        ctx.set("publisher_first_error", &e);
        problems.push(format!("publisher: {e}"));
    }
    window_problems(&windows, &mut problems);
    let delivered = windows.iter().map(|w| w.delivered).sum();
    let title = format!("sse: {ok} notification streams of {users} users, notifications POSTed");
    drop(tasks);
    Ok(Outcome {
        table: window_table(&title, &windows),
        delivered,
        needs_delivery: true,
        connected: ok,
        problems,
    })
}

/// Reads a stream until it ends, counting notifications.
async fn read_stream(conn: crate::http::SseStream, shared: &Shared, group: usize) -> HttpError {
    let crate::http::SseStream {
        mut stream,
        chunked,
        rest,
    } = conn;
    let mut dechunker = Dechunker::default();
    let mut splitter = SseSplitter::default();
    let mut body = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 4096];
    let mut on_event = |e: &[u8]| {
        if e.first() == Some(&b':') {
            return;
        }
        if memchr::memmem::find(e, br#""type":"connected""#).is_some() {
            shared.other_events.fetch_add(1, Relaxed);
        } else if let Some(t) = find_stamp(e) {
            if let Some(g) = shared.groups.get(group) {
                g.delivered.fetch_add(1, Relaxed);
                g.hist.record(now_us().saturating_sub(t));
            }
        } else {
            shared.other_events.fetch_add(1, Relaxed);
        }
    };
    let mut input: &[u8] = &rest;
    loop {
        if chunked {
            body.clear();
            match dechunker.feed(input, &mut body) {
                Ok(done) => {
                    if let Err(e) = splitter.feed(&body, &mut on_event) {
                        return e;
                    }
                    if done {
                        return HttpError::Closed;
                    }
                }
                Err(e) => return e,
            }
        } else if let Err(e) = splitter.feed(input, &mut on_event) {
            return e;
        }
        match stream.read(&mut buf).await {
            Ok(0) => return HttpError::Closed,
            Ok(n) => input = &buf[..n],
            Err(e) => return e.into(),
        }
    }
}
