//! What every scenario shares: the resolved options, the token minter, the
//! measured processes, the progress line, measurement windows (deliveries,
//! latency, CPU of each process from /proc), and the partial results that the
//! watchdog writes out if a run has to be aborted.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::Common;
use crate::http::HttpStats;
use crate::procfs::{self, SysCpu, Target};
use crate::stats::{HistSnapshot, Latency, Shared};
use crate::token::Minter;

/// The run's context.
pub struct Ctx {
    pub opt: Common,
    pub targets: Vec<Target>,
    pub minter: Minter,
    pub tck: f64,
    pub progress: Arc<Progress>,
    /// Results so far (written as they are if the watchdog fires).
    pub result: Mutex<Map<String, Value>>,
    /// Source addresses to spread clients over (empty: let the kernel choose).
    pub sources: Mutex<Vec<IpAddr>>,
}

impl Ctx {
    pub fn new(opt: Common, targets: Vec<Target>) -> anyhow::Result<Self> {
        let minter = Minter::new(opt.token_secret.as_deref(), opt.token_ttl)?;
        let progress = Arc::new(Progress::new(!opt.quiet));
        Ok(Self {
            opt,
            targets,
            minter,
            tck: procfs::clk_tck(),
            progress,
            result: Mutex::new(Map::new()),
            sources: Mutex::new(Vec::new()),
        })
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.opt.host, port)
    }

    pub fn pub_addr(&self) -> SocketAddr {
        self.addr(
            self.opt
                .pub_port
                .unwrap_or_else(|| self.opt.ports.first().copied().unwrap_or(3000)),
        )
    }

    /// The user id of client `i` (`prefix` + index, or index mod --users).
    pub fn user_of(&self, prefix: &str, i: u64) -> String {
        let n = self.opt.users.filter(|u| *u > 0).map_or(i, |u| i % u);
        format!("{prefix}{n}")
    }

    /// Decides the source addresses for `total` clients.
    pub fn plan_sources(&self, total: u64) {
        let n = if self.opt.source_ips > 0 {
            u64::from(self.opt.source_ips)
        } else if total > self.opt.per_ip {
            total.div_ceil(self.opt.per_ip.max(1))
        } else {
            0
        };
        let ips: Vec<IpAddr> = (0..n.min(250))
            .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k as u8)))
            .collect();
        if !ips.is_empty() {
            log(&format!(
                "spreading client source addresses over 127.0.0.2..127.0.0.{}",
                1 + ips.len()
            ));
        }
        *self.sources.lock().unwrap_or_else(|e| e.into_inner()) = ips;
    }

    pub fn source_for(&self, i: u64) -> Option<IpAddr> {
        let s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_empty() {
            None
        } else {
            Some(s[(i % s.len() as u64) as usize])
        }
    }

    pub fn set(&self, key: &str, value: impl Serialize) {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        self.result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), v);
    }

    pub fn push(&self, key: &str, value: impl Serialize) {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
        match r
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(vec![]))
        {
            Value::Array(a) => a.push(v),
            other => *other = Value::Array(vec![v]),
        }
    }

    pub fn result(&self) -> Map<String, Value> {
        self.result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counters, CPU ticks and machine times now.
    pub fn snap(&self, shared: &Shared, http: Option<&HttpStats>) -> Snap {
        Snap {
            at: Instant::now(),
            ticks: self.targets.iter().map(procfs::target_ticks).collect(),
            self_ticks: procfs::cpu_ticks(procfs::self_pid()),
            sys: procfs::sys_cpu(),
            delivered: shared
                .groups
                .iter()
                .map(|g| g.delivered.load(Relaxed))
                .collect(),
            sent: shared.sent.load(Relaxed),
            other: shared.other_events.load(Relaxed),
            errors: shared.error_events.load(Relaxed),
            acks: shared.acks.load(Relaxed),
            ack_failures: shared.ack_failures.load(Relaxed),
            closed: shared.closed.load(Relaxed),
            http_sent: http.map_or(0, |h| h.sent.load(Relaxed)),
            http_errors: http.map_or(0, |h| h.errors.load(Relaxed)),
        }
    }

    /// A measured window: resets the histograms, waits `dur` (showing progress),
    /// and returns what happened in between.
    pub async fn measure(
        &self,
        phase: &str,
        shared: &Shared,
        http: Option<&HttpStats>,
        dur: Duration,
    ) -> Window {
        shared.reset_hists();
        let a = self.snap(shared, http);
        self.progress.phase(phase, Some(dur));
        tokio::time::sleep(dur).await;
        let b = self.snap(shared, http);
        self.window(phase, shared, &a, &b)
    }

    /// What happened between two snapshots (latency: the histograms as they are now).
    pub fn window(&self, phase: &str, shared: &Shared, a: &Snap, b: &Snap) -> Window {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let per_s = |x: u64| round1(x as f64 / secs);
        let mut all = HistSnapshot::default();
        let mut groups = Vec::new();
        let mut delivered = 0;
        for (i, g) in shared.groups.iter().enumerate() {
            let h = g.hist.snapshot();
            all.merge(&h);
            let d = b.delivered[i].saturating_sub(a.delivered[i]);
            delivered += d;
            groups.push(GroupWindow {
                name: g.name.clone(),
                clients: g.clients.load(Relaxed),
                delivered_per_s: per_s(d),
                latency: h.summary(),
            });
        }
        let mut cpu_pct = BTreeMap::new();
        let mut server_ticks: Option<u64> = None;
        let mut tracked = 0.0;
        for (i, t) in self.targets.iter().enumerate() {
            let d = match (a.ticks[i], b.ticks[i]) {
                (Some(x), Some(y)) => Some(y.saturating_sub(x)),
                _ => None,
            };
            let pct = d.map(|d| round1(d as f64 / self.tck / secs * 100.0));
            if let Some(p) = pct {
                tracked += p;
            }
            if t.is_server() {
                if let Some(d) = d {
                    server_ticks = Some(server_ticks.unwrap_or(0) + d);
                }
            }
            cpu_pct.insert(t.name.clone(), pct);
        }
        let loadgen = match (a.self_ticks, b.self_ticks) {
            (Some(x), Some(y)) => {
                Some(round1(y.saturating_sub(x) as f64 / self.tck / secs * 100.0))
            }
            _ => None,
        };
        tracked += loadgen.unwrap_or(0.0);
        let dt = b.sys.total.saturating_sub(a.sys.total).max(1) as f64;
        let busy = 1.0 - b.sys.idle.saturating_sub(a.sys.idle) as f64 / dt;
        let ncpu = procfs::ncpu() as f64;
        Window {
            phase: phase.to_owned(),
            window_s: round3(secs),
            delivered,
            delivered_per_s: per_s(delivered),
            expected_per_s: None,
            published_per_s: None,
            sent_per_s: per_s(b.sent.saturating_sub(a.sent)),
            latency: all.summary(),
            groups,
            server_cpu_pct: server_ticks.map(|t| round1(t as f64 / self.tck / secs * 100.0)),
            server_cpu_us_per_delivery: server_ticks
                .filter(|_| delivered > 0)
                .map(|t| round2(t as f64 / self.tck * 1e6 / delivered as f64)),
            cpu_pct,
            loadgen_cpu_pct: loadgen,
            machine_busy_pct: round1(busy * 100.0),
            untracked_cpu_pct: round1(busy * ncpu * 100.0 - tracked),
            steal_pct: round1(b.sys.steal.saturating_sub(a.sys.steal) as f64 / dt * 100.0),
            other_events: b.other.saturating_sub(a.other),
            error_events: b.errors.saturating_sub(a.errors),
            acks_per_s: per_s(b.acks.saturating_sub(a.acks)),
            ack_failures: b.ack_failures.saturating_sub(a.ack_failures),
            closed: b.closed.saturating_sub(a.closed),
            publish_errors: b.http_errors.saturating_sub(a.http_errors),
            undelivered: None,
            drain_ms: None,
        }
    }
}

/// Counters at one instant.
pub struct Snap {
    at: Instant,
    ticks: Vec<Option<u64>>,
    self_ticks: Option<u64>,
    sys: SysCpu,
    delivered: Vec<u64>,
    sent: u64,
    other: u64,
    errors: u64,
    acks: u64,
    ack_failures: u64,
    closed: u64,
    http_sent: u64,
    http_errors: u64,
}

impl Snap {
    pub fn http_sent(&self) -> u64 {
        self.http_sent
    }
}

/// One measured window of a phase.
#[derive(Serialize, Clone, Debug)]
pub struct Window {
    pub phase: String,
    pub window_s: f64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// What every client should have received per second (fixed rates).
    pub expected_per_s: Option<f64>,
    /// Messages published (publisher) per second.
    pub published_per_s: Option<f64>,
    /// Messages sent by clients per second (chat, collab).
    pub sent_per_s: f64,
    pub latency: Latency,
    /// Per target port (cluster: node A, node B).
    pub groups: Vec<GroupWindow>,
    /// CPU of each measured process, % of one core.
    pub cpu_pct: BTreeMap<String, Option<f64>>,
    /// Sum over the server processes (helpers excluded).
    pub server_cpu_pct: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub loadgen_cpu_pct: Option<f64>,
    /// Whole machine, % of all cores.
    pub machine_busy_pct: f64,
    /// CPU used by processes not measured (other jobs, kernel threads), % of one core.
    pub untracked_cpu_pct: f64,
    pub steal_pct: f64,
    pub other_events: u64,
    pub error_events: u64,
    pub acks_per_s: f64,
    pub ack_failures: u64,
    pub closed: u64,
    pub publish_errors: u64,
    /// Deliveries still missing after the drain (fixed rates).
    pub undelivered: Option<u64>,
    pub drain_ms: Option<u64>,
}

#[derive(Serialize, Clone, Debug)]
pub struct GroupWindow {
    pub name: String,
    pub clients: u64,
    pub delivered_per_s: f64,
    pub latency: Latency,
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A log line on stderr (ends the progress line first).
pub fn log(msg: &str) {
    let mut e = std::io::stderr().lock();
    let clear = if e.is_terminal() { "\r\x1b[K" } else { "" };
    let _ = writeln!(e, "{clear}[loadgen {}] {msg}", clock());
}

fn clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let day = (s / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3600,
        (day / 60) % 60,
        day % 60,
        s % 1000
    )
}

/// The progress line on stderr: a bar on a terminal, a line every 5 s otherwise.
pub struct Progress {
    enabled: bool,
    tty: bool,
    state: Mutex<PhaseState>,
    shared: Mutex<Option<Arc<Shared>>>,
}

struct PhaseState {
    name: String,
    start: Instant,
    dur: Option<Duration>,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(PhaseState {
                name: "start".into(),
                start: Instant::now(),
                dur: None,
            }),
            shared: Mutex::new(None),
        }
    }

    /// The counters the line shows.
    pub fn watch(&self, shared: &Arc<Shared>) {
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
    }

    pub fn phase(&self, name: &str, dur: Option<Duration>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.name = name.to_owned();
        s.start = Instant::now();
        s.dur = dur;
    }

    /// Draws the line until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        if !self.enabled {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let every = if me.tty {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(every).await;
                let cur = me.shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(sh) = cur else { continue };
                let d = sh.delivered();
                let now = Instant::now();
                let rate = d.saturating_sub(last.1) as f64
                    / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, d);
                let line = me.line(&sh, rate);
                let mut e = std::io::stderr().lock();
                if me.tty {
                    let _ = write!(e, "\r{line}\x1b[K");
                } else {
                    let _ = writeln!(e, "[loadgen {}] {line}", clock());
                }
                let _ = e.flush();
            }
        });
    }

    fn line(&self, sh: &Shared, rate: f64) -> String {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let el = s.start.elapsed().as_secs_f64();
        let bar = match s.dur {
            Some(d) if d.as_secs_f64() > 0.0 => {
                let f = (el / d.as_secs_f64()).clamp(0.0, 1.0);
                let n = (f * 24.0).round() as usize;
                format!(
                    "[{}{}] {:>5.1}/{:.1}s",
                    "#".repeat(n),
                    ".".repeat(24 - n),
                    el,
                    d.as_secs_f64()
                )
            }
            _ => format!("{el:>6.1}s"),
        };
        format!(
            "{:<16} {bar}  clients {} failed {} closed {}  deliveries/s {:.0}",
            s.name,
            sh.connected.load(Relaxed),
            sh.connect_failed.load(Relaxed),
            sh.closed.load(Relaxed),
            rate
        )
    }
}
