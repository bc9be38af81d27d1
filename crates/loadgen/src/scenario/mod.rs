//! The scenarios, and what they share: spawning client tasks and waiting for
//! their handshakes, waiting for the join-time event flood to settle, the
//! publisher loops (closed-loop saturation, open-loop fixed rates), and the
//! result table.

pub mod chat;
pub mod collab;
pub mod fanout;
pub mod memory;
pub mod sse;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::ctx::{log, round1, Ctx, Window};
use crate::http::Publisher;
use crate::sio::{self, Env, Plan};
use crate::stats::Shared;

/// What a scenario hands back to `main`.
pub struct Outcome {
    /// The table printed at the end.
    pub table: String,
    /// Deliveries over all measured windows.
    pub delivered: u64,
    /// The scenario exists to deliver something (all but `memory`).
    pub needs_delivery: bool,
    pub connected: u64,
    /// Errors worth a non-zero exit (failed clients, error events, failed publishes).
    pub problems: Vec<String>,
}

/// Client tasks of a scenario; aborted (their sockets closed) when dropped.
pub struct Tasks {
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    pub fn new() -> Self {
        Self {
            handles: Vec::new(),
        }
    }

    pub fn spawn(&mut self, f: impl Future<Output = ()> + Send + 'static) {
        self.handles.push(tokio::spawn(f));
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

/// The environment of Socket.IO clients.
pub fn sio_env(ctx: &Ctx, shared: &Arc<Shared>, pad: String, msg_ack: bool) -> Arc<Env> {
    Arc::new(Env {
        shared: shared.clone(),
        dialect: ctx.opt.dialect,
        gate: Arc::new(Semaphore::new(ctx.opt.concurrency.max(1))),
        handshake_timeout: Duration::from_secs_f64(ctx.opt.connect_timeout.max(0.1)),
        pad,
        msg_ack,
    })
}

pub fn spawn_sio(tasks: &mut Tasks, plan: Plan, env: &Arc<Env>) {
    tasks.spawn(sio::run(plan, env.clone()));
}

/// Waits for `expected` clients (`noun`: "clients", "streams"...) to connect
/// and records how many did. The problems so far come back with the count;
/// when none connected, the outcome to report instead (table from `none`).
pub async fn await_clients(
    ctx: &Ctx,
    shared: &Shared,
    expected: u64,
    phase: &str,
    noun: &str,
    none: impl FnOnce() -> String,
) -> Result<(u64, Vec<String>), Outcome> {
    let (ok, failed, secs) = wait_connected(ctx, shared, expected, phase).await;
    ctx.set(noun, ok);
    ctx.set("failed", failed);
    ctx.set("connect_s", round1(secs));
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!(
            "{failed} {noun} failed: {:?}",
            shared.error_reasons()
        ));
    }
    if ok == 0 {
        return Err(Outcome {
            table: none(),
            delivered: 0,
            needs_delivery: true,
            connected: 0,
            problems,
        });
    }
    Ok((ok, problems))
}

/// Waits until `total` clients have connected or failed (or nothing moved for
/// longer than a handshake may take). Returns (connected, failed, seconds).
pub async fn wait_connected(
    ctx: &Ctx,
    shared: &Shared,
    total: u64,
    label: &str,
) -> (u64, u64, f64) {
    ctx.progress.phase(label, None);
    let t0 = Instant::now();
    let stall = Duration::from_secs_f64(ctx.opt.connect_timeout + 5.0);
    let mut last = (0, Instant::now());
    loop {
        let ok = shared.connected.load(Relaxed);
        let failed = shared.connect_failed.load(Relaxed);
        if ok + failed >= total {
            break;
        }
        if ok + failed != last.0 {
            last = (ok + failed, Instant::now());
        } else if last.1.elapsed() > stall {
            log(&format!(
                "connecting stalled at {} of {total}; going on",
                ok + failed
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (ok, failed) = (
        shared.connected.load(Relaxed),
        shared.connect_failed.load(Relaxed),
    );
    log(&format!(
        "{label}: {ok} connected, {failed} failed in {secs:.1} s ({:.0}/s){}",
        ok as f64 / secs.max(1e-3),
        if failed > 0 {
            format!(" reasons {:?}", shared.error_reasons())
        } else {
            String::new()
        }
    ));
    (ok, failed, secs)
}

/// Waits (at most `max`) until no event arrives for 500 ms: Switchboard
/// announces every join to the room (`presence_join`), N²/2 frames for N users.
pub async fn settle(ctx: &Ctx, shared: &Shared, max: Duration) {
    ctx.progress.phase("settle", None);
    let t0 = Instant::now();
    let count = || shared.other_events.load(Relaxed) + shared.delivered();
    let mut last = count();
    let mut quiet_since = Instant::now();
    while t0.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
}

/// Closed loop: keeps at most `window` messages not yet delivered to every
/// receiver (and at most `pipeline` requests unanswered) until `stop`.
/// `per_msg` is how many deliveries one message makes.
pub async fn pump_saturation(
    publisher: &mut Publisher,
    shared: &Shared,
    per_msg: impl Fn() -> f64,
    window: u64,
    pipeline: u64,
    mut body: impl FnMut() -> Vec<u8>,
    stop: &AtomicBool,
) -> u64 {
    let base = shared.delivered();
    let mut sent: u64 = 0;
    while !stop.load(Relaxed) {
        let done = shared.delivered().saturating_sub(base) as f64 / per_msg().max(1.0);
        let mut budget = window as f64 - (sent as f64 - done);
        while budget >= 1.0 && publisher.inflight() < pipeline && !stop.load(Relaxed) {
            if publisher.post(&body()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                break;
            }
            sent += 1;
            budget -= 1.0;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    sent
}

/// Open loop: `rate` messages per second until `stop`. Returns how many were sent.
pub async fn pump_rate(
    publisher: &mut Publisher,
    rate: f64,
    mut body: impl FnMut() -> Vec<u8>,
    stop: &AtomicBool,
) -> u64 {
    let t0 = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    while !stop.load(Relaxed) {
        tick.tick().await;
        let due = (t0.elapsed().as_secs_f64() * rate) as u64;
        let mut burst = 0;
        while sent < due && burst < 1000 {
            if publisher.post(&body()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent += 1;
            burst += 1;
        }
    }
    sent
}

/// The phases of a publishing scenario (fan-out, SSE): a saturation window,
/// then one window per fixed rate.
pub struct Sweep<'a> {
    pub saturation: bool,
    /// Items published but not yet delivered everywhere, at saturation.
    pub window: u64,
    /// Requests unanswered at once, at saturation.
    pub pipeline: u64,
    pub rates: &'a [f64],
    /// Seconds a rate may take to deliver everything after its window.
    pub drain: f64,
    /// What one published item is called in phase names ("msg", "notif").
    pub unit: &'a str,
}

/// Runs a sweep with `publisher`, measuring one window per phase. `per_item`
/// is how many deliveries one published item makes. The rate sweep stops at
/// the first rate whose deliveries do not drain.
pub async fn publish_sweep(
    ctx: &Ctx,
    shared: &Shared,
    publisher: &mut Publisher,
    sweep: &Sweep<'_>,
    per_item: impl Fn() -> f64 + Copy,
    body: impl FnMut() -> Vec<u8> + Clone,
) -> Vec<Window> {
    let warmup = Duration::from_secs_f64(ctx.opt.warmup.max(0.0));
    let dur = Duration::from_secs_f64(ctx.opt.duration.max(0.1));
    let mut windows: Vec<Window> = Vec::new();

    if sweep.saturation {
        let stop = AtomicBool::new(false);
        let http = publisher.stats.clone();
        let (_, mut w) = tokio::join!(
            pump_saturation(
                publisher,
                shared,
                per_item,
                sweep.window,
                sweep.pipeline,
                body.clone(),
                &stop
            ),
            async {
                ctx.progress.phase("saturation warmup", Some(warmup));
                tokio::time::sleep(warmup).await;
                let a0 = ctx.snap(shared, Some(&http));
                let mut w = ctx.measure("saturation", shared, Some(&http), dur).await;
                let b0 = ctx.snap(shared, Some(&http));
                stop.store(true, Relaxed);
                w.published_per_s = Some(round1(
                    b0.http_sent().saturating_sub(a0.http_sent()) as f64 / w.window_s,
                ));
                w
            }
        );
        w.phase = format!("saturation (window {})", sweep.window);
        log_window(&w);
        ctx.push("windows", &w);
        windows.push(w);
        // let the window drain
        let base = shared.delivered();
        let _ = drain(shared, base, u64::MAX, Duration::from_millis(1500)).await;
    }

    let mut rates = sweep.rates.to_vec();
    rates.sort_by(f64::total_cmp);
    for rate in rates.into_iter().filter(|r| *r > 0.0) {
        let stop = AtomicBool::new(false);
        let http = publisher.stats.clone();
        let base = shared.delivered();
        let r_now = per_item();
        let (sent, mut w) = tokio::join!(pump_rate(publisher, rate, body.clone(), &stop), async {
            let wu = warmup.min(Duration::from_secs(1));
            ctx.progress
                .phase(&format!("rate {rate}/s warmup"), Some(wu));
            tokio::time::sleep(wu).await;
            let a0 = ctx.snap(shared, Some(&http));
            let mut w = ctx
                .measure(&format!("rate {rate}/s"), shared, Some(&http), dur)
                .await;
            let b0 = ctx.snap(shared, Some(&http));
            stop.store(true, Relaxed);
            w.published_per_s = Some(round1(
                b0.http_sent().saturating_sub(a0.http_sent()) as f64 / w.window_s,
            ));
            w
        });
        w.phase = format!("{rate} {}/s", sweep.unit);
        w.expected_per_s = Some(round1(rate * r_now));
        ctx.progress.phase(&format!("drain {rate}/s"), None);
        let (missing, waited) = drain(
            shared,
            base,
            (sent as f64 * r_now) as u64,
            Duration::from_secs_f64(sweep.drain.max(0.0)),
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
            log(&format!(
                "not drained after {:.0} s: {missing} deliveries missing; stopping the rate sweep",
                sweep.drain
            ));
            break;
        }
    }
    windows
}

/// Waits (at most `max`) until `expected` deliveries were made since `base`.
/// Returns the deliveries still missing and the time waited.
pub async fn drain(shared: &Shared, base: u64, expected: u64, max: Duration) -> (u64, u64) {
    let t0 = Instant::now();
    loop {
        let got = shared.delivered().saturating_sub(base);
        if got >= expected || t0.elapsed() >= max {
            return (
                expected.saturating_sub(got),
                t0.elapsed().as_millis() as u64,
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One log line per measured window.
pub fn log_window(w: &Window) {
    let groups = if w.groups.len() > 1 {
        w.groups
            .iter()
            .map(|g| {
                format!(
                    " | {}: {} clients {:.0}/s p50 {} p99 {}",
                    g.name,
                    g.clients,
                    g.delivered_per_s,
                    ms(g.latency.p50_ms),
                    ms(g.latency.p99_ms)
                )
            })
            .collect::<String>()
    } else {
        String::new()
    };
    log(&format!(
        "{}: {:.0} deliveries/s{} p50 {} p99 {} p99.9 {} ms, server CPU {}% ({} us/delivery), loadgen {}%, machine {}% busy{}",
        w.phase,
        w.delivered_per_s,
        w.expected_per_s
            .map(|e| format!(" (expected {e:.0})"))
            .unwrap_or_default(),
        ms(w.latency.p50_ms),
        ms(w.latency.p99_ms),
        ms(w.latency.p999_ms),
        opt(w.server_cpu_pct),
        opt(w.server_cpu_us_per_delivery),
        opt(w.loadgen_cpu_pct),
        w.machine_busy_pct,
        groups
    ));
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v}"))
}

/// The table of a delivery scenario: one row per window (and per group when
/// clients are spread over several nodes).
pub fn window_table(title: &str, windows: &[Window]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{title}");
    let _ = writeln!(
        t,
        "{:<22} {:>8} {:>13} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9}",
        "phase",
        "clients",
        "deliveries/s",
        "expected/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "srv CPU%",
        "us/delivery",
        "lg CPU%"
    );
    for w in windows {
        let clients: u64 = w.groups.iter().map(|g| g.clients).sum();
        let _ = writeln!(
            t,
            "{:<22} {:>8} {:>13.0} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9}",
            w.phase,
            clients,
            w.delivered_per_s,
            w.expected_per_s
                .map_or_else(|| "-".into(), |e| format!("{e:.0}")),
            ms(w.latency.p50_ms),
            ms(w.latency.p99_ms),
            ms(w.latency.p999_ms),
            ms(w.latency.max_ms),
            opt(w.server_cpu_pct),
            opt(w.server_cpu_us_per_delivery),
            opt(w.loadgen_cpu_pct),
        );
        if w.groups.len() > 1 {
            for g in &w.groups {
                let _ = writeln!(
                    t,
                    "{:<22} {:>8} {:>13.0} {:>13} {:>8} {:>8} {:>8} {:>8}",
                    format!("  {}", g.name),
                    g.clients,
                    g.delivered_per_s,
                    "",
                    ms(g.latency.p50_ms),
                    ms(g.latency.p99_ms),
                    ms(g.latency.p999_ms),
                    ms(g.latency.max_ms),
                );
            }
        }
    }
    let cpus: Vec<String> = windows
        .first()
        .map(|w| w.cpu_pct.keys().cloned().collect())
        .unwrap_or_default();
    if !cpus.is_empty() {
        let _ = writeln!(t, "CPU % of one core per process:");
        for w in windows {
            let parts: Vec<String> = w
                .cpu_pct
                .iter()
                .map(|(k, v)| format!("{k} {}", opt(*v)))
                .collect();
            let _ = writeln!(
                t,
                "  {:<20} {}, loadgen {}, machine busy {}%, untracked {}%, steal {}%",
                w.phase,
                parts.join(", "),
                opt(w.loadgen_cpu_pct),
                w.machine_busy_pct,
                w.untracked_cpu_pct,
                w.steal_pct
            );
        }
    }
    t
}

/// Problems of a set of windows, for the exit status.
pub fn window_problems(windows: &[Window], problems: &mut Vec<String>) {
    for w in windows {
        if w.error_events > 0 {
            problems.push(format!("{}: {} error events", w.phase, w.error_events));
        }
        if w.ack_failures > 0 {
            problems.push(format!("{}: {} failed acks", w.phase, w.ack_failures));
        }
        if w.publish_errors > 0 {
            problems.push(format!(
                "{}: {} failed publishes",
                w.phase, w.publish_errors
            ));
        }
        if w.closed > 0 {
            problems.push(format!("{}: {} connections closed", w.phase, w.closed));
        }
    }
}
