//! Counters and latency histograms shared by every client task.
//!
//! Everything here is lock-free on the hot path: a delivery is one relaxed
//! atomic add, and a latency sample is three more (bucket, count, sum) plus a
//! `fetch_max`. The histogram is log-linear in microseconds: exact below 128 µs,
//! then 64 sub-buckets per power of two (at most 1.6 % relative error), the same
//! kind of precision as the Node reference's `lib/hist.js`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const LINEAR: u64 = 2 * SUB;
/// Largest power of two tracked (2^40 µs is about 12 days).
const MAX_EXP: u32 = 40;
const BUCKETS: usize = (LINEAR + (MAX_EXP as u64 - SUB_BITS as u64) * SUB) as usize;

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = (63 - v.leading_zeros()).min(MAX_EXP);
    let shift = e - SUB_BITS;
    let m = ((v >> shift) - SUB).min(SUB - 1);
    (LINEAR + u64::from(e - SUB_BITS - 1) * SUB + m) as usize
}

/// The largest value that falls in bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let k = i - LINEAR;
    let e = k / SUB + u64::from(SUB_BITS) + 1;
    let m = k % SUB + SUB;
    ((m + 1) << (e - u64::from(SUB_BITS))) - 1
}

/// A concurrent latency histogram (microseconds).
pub struct Hist {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Hist {
    pub fn record(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(us, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    /// Empties it (samples recorded concurrently may land either side).
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.sum.store(0, Relaxed);
        self.max.store(0, Relaxed);
    }

    pub fn snapshot(&self) -> HistSnapshot {
        HistSnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            count: self.count.load(Relaxed),
            sum: self.sum.load(Relaxed),
            max: self.max.load(Relaxed),
        }
    }
}

/// A copy of a histogram, mergeable with others.
#[derive(Clone)]
pub struct HistSnapshot {
    buckets: Vec<u64>,
    count: u64,
    sum: u64,
    max: u64,
}

impl Default for HistSnapshot {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl HistSnapshot {
    pub fn merge(&mut self, other: &HistSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value (µs) at quantile `q`: the upper edge of the bucket holding it.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let target = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Some(bucket_upper(i).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn summary(&self) -> Latency {
        let ms = |v: Option<u64>| v.map(|us| (us as f64 / 10.0).round() / 100.0);
        Latency {
            samples: self.count,
            mean_ms: (self.count > 0)
                .then(|| (self.sum as f64 / self.count as f64 / 10.0).round() / 100.0),
            p50_ms: ms(self.quantile(0.5)),
            p90_ms: ms(self.quantile(0.9)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms((self.count > 0).then_some(self.max)),
        }
    }
}

/// Latency quantiles of a window, in milliseconds (two decimals).
#[derive(Serialize, Clone, Debug, Default)]
pub struct Latency {
    pub samples: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The clients of one target (a server port), counted apart so that the far
/// node of a cluster has its own latency.
pub struct Group {
    pub name: String,
    pub clients: AtomicU64,
    pub delivered: AtomicU64,
    pub hist: Hist,
}

impl Group {
    pub fn new(name: String) -> Self {
        Self {
            name,
            clients: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            hist: Hist::default(),
        }
    }
}

/// Counters of a whole run.
#[derive(Default)]
pub struct Shared {
    pub groups: Vec<Group>,
    /// Clients whose handshake (and join) succeeded, and those that failed.
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Connections that ended after a successful handshake.
    pub closed: AtomicU64,
    /// Events other than the counted one (`joined`, `presence_join`, ...), of which `error`.
    pub other_events: AtomicU64,
    pub error_events: AtomicU64,
    /// Acks of client messages, and those with `"ok":false`.
    pub acks: AtomicU64,
    pub ack_failures: AtomicU64,
    /// Messages sent by clients (chat, collab).
    pub sent: AtomicU64,
    /// Frames that could not be written by a client.
    pub send_errors: AtomicU64,
    /// Clients send (chat, collab) only while this is set.
    pub sending: AtomicBool,
    /// Why clients failed or closed, by reason.
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn new(group_names: Vec<String>) -> Self {
        Self {
            groups: group_names.into_iter().map(Group::new).collect(),
            ..Self::default()
        }
    }

    pub fn note_error(&self, reason: &str) {
        let mut reason = reason.to_owned();
        if reason.len() > 100 {
            let mut cut = 100;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(reason).or_default() += 1;
    }

    pub fn delivered(&self) -> u64 {
        self.groups.iter().map(|g| g.delivered.load(Relaxed)).sum()
    }

    pub fn reset_hists(&self) {
        for g in &self.groups {
            g.hist.reset();
        }
    }

    pub fn error_reasons(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the clock all timestamps are relative to (call once, early).
pub fn start_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// Microseconds since the loadgen's epoch: the timestamps put into payloads.
/// The publisher and every receiver are tasks of this one process, so they
/// share the epoch.
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Finds the marker `~t<digits>` in a frame and returns the digits' value.
pub fn find_stamp(frame: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(frame, b"~t")?;
    parse_digits(&frame[at + 2..])
}

/// Every `~t<digits>` marker in a frame (Yjs updates may carry several edits).
pub fn stamps(frame: &[u8]) -> impl Iterator<Item = u64> + '_ {
    memchr::memmem::find_iter(frame, b"~t").filter_map(move |at| parse_digits(&frame[at + 2..]))
}

fn parse_digits(s: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in s.iter().take(19) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + u64::from(c - b'0');
        n += 1;
    }
    (n > 0).then_some(v)
}

/// The `~t` marker for now, zero-padded to 13 digits so that packet sizes do
/// not depend on how long the loadgen has been running.
pub fn stamp_now() -> String {
    format!("~t{:013}|", now_us())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            5,
            127,
            128,
            129,
            200,
            1000,
            4095,
            4096,
            1 << 20,
            1 << 35,
        ] {
            let i = bucket_of(v);
            assert!(i >= last, "bucket of {v}");
            last = i;
            let up = bucket_upper(i);
            assert!(up >= v, "upper {up} < {v}");
            assert!(
                up as f64 <= v as f64 * 1.016 + 1.0,
                "upper {up} too far from {v}"
            );
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let h = Hist::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.snapshot();
        let p50 = s.quantile(0.5).unwrap_or(0);
        assert!((495..=510).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99).unwrap_or(0);
        assert!((985..=1000).contains(&p99), "{p99}");
        assert_eq!(s.quantile(1.0), Some(1000));
        assert_eq!(HistSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn stamps_are_found_without_parsing_json() {
        let f = br#"42["message",{"id":7,"workspaceId":"r1","userId":"3","content":"~t0000000012345|xx"},"7"]"#;
        assert_eq!(find_stamp(f), Some(12345));
        assert_eq!(find_stamp(b"42[\"joined\",{}]"), None);
        assert_eq!(find_stamp(b"~t"), None);
        let two = b"..~t12|..~t0034|";
        assert_eq!(stamps(two).collect::<Vec<_>>(), vec![12, 34]);
        assert_eq!(stamp_now().len(), 2 + 13 + 1);
    }
}
