//! `memory`: idle clients joined to one room, added in steps (`--steps`), or
//! with `--collab-docs N` idle y-websocket clients spread over N documents;
//! after each step and a settle time, the RSS of every measured process
//! (/proc/PID/status VmRSS) and the KiB per connection against the first
//! step. Past `--per-ip` clients the source addresses are spread over
//! 127.0.0.2, 127.0.0.3, ... so that 100,000 connections fit in the ephemeral
//! port range; the open-file limit is raised as far as the process may.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use super::fanout::dialect_name;
use super::{collab, settle, sio_env, spawn_sio, wait_connected, Outcome, Tasks};
use crate::cli::MemoryArgs;
use crate::ctx::{log, round1, Ctx};
use crate::procfs;
use crate::sio::Plan;
use crate::stats::Shared;

#[derive(Serialize, Clone)]
struct Row {
    clients: u64,
    failed: u64,
    /// Connections closed by the server so far.
    closed: u64,
    connect_s: f64,
    connects_per_s: f64,
    rss_kib: BTreeMap<String, Option<u64>>,
    /// (RSS - RSS at the first step) / (clients - clients at the first step).
    kib_per_conn: BTreeMap<String, Option<f64>>,
    /// Against the previous step.
    marginal_kib_per_conn: BTreeMap<String, Option<f64>>,
    loadgen_rss_kib: Option<u64>,
}

pub async fn run(ctx: &Arc<Ctx>, a: &MemoryArgs) -> anyhow::Result<Outcome> {
    let ports = ctx.opt.ports.clone();
    let names = ports.iter().map(|p| format!(":{p}")).collect();
    let shared = Arc::new(Shared::new(names));
    ctx.progress.watch(&shared);
    let env = sio_env(ctx, &shared, String::new(), false);
    let mut steps = a.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    let total = steps.last().copied().unwrap_or(0);
    ctx.set("steps", &steps);
    ctx.set("room", &a.room);
    let prefix = collab::run_prefix();
    if a.collab_docs > 0 {
        ctx.set("collab_docs", a.collab_docs);
        ctx.set("doc_prefix", &prefix);
    }
    let gate = Arc::new(Semaphore::new(ctx.opt.concurrency.max(1)));
    ctx.plan_sources(total);

    let mut tasks = Tasks::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut have: u64 = 0;
    let mut problems = Vec::new();
    for &target in &steps {
        let (mut connect_s, mut rate) = (0.0, 0.0);
        if target > have {
            for i in have..target {
                if a.collab_docs > 0 {
                    let doc = (i, a.collab_docs);
                    collab::spawn_idle(
                        &mut tasks,
                        ctx,
                        &shared,
                        &gate,
                        doc,
                        &a.workspace,
                        &prefix,
                    )?;
                    continue;
                }
                let g = (i % ports.len() as u64) as usize;
                let user = ctx.user_of("", i);
                let token = ctx.minter.token(&user, &[a.room.as_str()])?;
                let plan = Plan {
                    addr: ctx.addr(ports[g]),
                    source: ctx.source_for(i),
                    token,
                    room: a.room.clone(),
                    group: g,
                    sample: false,
                    chat: None,
                };
                spawn_sio(&mut tasks, plan, &env);
            }
            let before = shared.connected.load(Relaxed);
            let (ok, _failed, secs) =
                wait_connected(ctx, &shared, target, &format!("connect {target}")).await;
            connect_s = round1(secs);
            rate = round1(ok.saturating_sub(before) as f64 / secs.max(1e-3));
            have = target;
            settle(ctx, &shared, Duration::from_secs(120)).await;
        }
        ctx.progress
            .phase(&format!("settle {target}"), Some(secs(a.settle)));
        tokio::time::sleep(secs(a.settle)).await;
        let rss: BTreeMap<String, Option<u64>> = ctx
            .targets
            .iter()
            .map(|t| (t.name.clone(), procfs::rss_kib(t.pid)))
            .collect();
        let clients = shared.connected.load(Relaxed) - shared.closed.load(Relaxed);
        let per = |base: Option<&Row>| -> BTreeMap<String, Option<f64>> {
            rss.iter()
                .map(|(k, v)| {
                    let val = base.and_then(|b| {
                        let b_rss = b.rss_kib.get(k).copied().flatten()?;
                        let v = (*v)?;
                        (clients > b.clients).then(|| {
                            round1((v as f64 - b_rss as f64) / (clients - b.clients) as f64)
                        })
                    });
                    (k.clone(), val)
                })
                .collect()
        };
        let row = Row {
            clients,
            failed: shared.connect_failed.load(Relaxed),
            closed: shared.closed.load(Relaxed),
            connect_s,
            connects_per_s: rate,
            kib_per_conn: per(rows.first()),
            marginal_kib_per_conn: per(rows.last()),
            rss_kib: rss,
            loadgen_rss_kib: procfs::rss_kib(procfs::self_pid()),
        };
        let show = |m: &BTreeMap<String, Option<f64>>| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", v.map_or("-".into(), |v| format!("{v:.1}"))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rss_mib: BTreeMap<String, Option<f64>> = row
            .rss_kib
            .iter()
            .map(|(k, v)| (k.clone(), v.map(|v| v as f64 / 1024.0)))
            .collect();
        log(&format!(
            "{} clients: RSS MiB {}; KiB/conn {} (marginal {}); loadgen {:.1} MiB",
            row.clients,
            show(&rss_mib),
            show(&row.kib_per_conn),
            show(&row.marginal_kib_per_conn),
            row.loadgen_rss_kib.unwrap_or(0) as f64 / 1024.0
        ));
        ctx.push("rows", &row);
        rows.push(row);
    }
    let failed = shared.connect_failed.load(Relaxed);
    let closed = shared.closed.load(Relaxed);
    if failed > 0 {
        problems.push(format!(
            "{failed} clients failed: {:?}",
            shared.error_reasons()
        ));
    }
    if closed > 0 {
        problems.push(format!("{closed} connections were closed by the server"));
    }
    ctx.set("tasks", tasks.len());
    let connected = shared.connected.load(Relaxed);
    let mut t = String::new();
    if a.collab_docs > 0 {
        let _ = writeln!(
            t,
            "memory: idle collab clients over {} documents (y-websocket)",
            a.collab_docs
        );
    } else {
        let _ = writeln!(
            t,
            "memory: idle clients joined to one room ({} dialect)",
            dialect_name(ctx)
        );
    }
    let _ = writeln!(
        t,
        "{:>9} {:>7} {:>10}  {:<28} {:<22} {:<22} {:>12}",
        "clients",
        "failed",
        "connect/s",
        "RSS MiB",
        "KiB/conn vs first",
        "KiB/conn marginal",
        "loadgen MiB"
    );
    for r in &rows {
        let fmt_mib = |m: &BTreeMap<String, Option<u64>>| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "{k} {}",
                        v.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1024.0))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fmt_f = |m: &BTreeMap<String, Option<f64>>| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", v.map_or("-".into(), |v| format!("{v:.1}"))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            t,
            "{:>9} {:>7} {:>10}  {:<28} {:<22} {:<22} {:>12}",
            r.clients,
            r.failed,
            if r.connects_per_s > 0.0 {
                format!("{:.0}", r.connects_per_s)
            } else {
                "-".into()
            },
            fmt_mib(&r.rss_kib),
            fmt_f(&r.kib_per_conn),
            fmt_f(&r.marginal_kib_per_conn),
            r.loadgen_rss_kib
                .map_or("-".into(), |v| format!("{:.1}", v as f64 / 1024.0)),
        );
    }
    drop(tasks);
    Ok(Outcome {
        table: t,
        delivered: 0,
        needs_delivery: false,
        connected,
        problems,
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
