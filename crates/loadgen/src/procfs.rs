//! What the loadgen reads about processes from `/proc`: CPU time (utime +
//! stime) of the measured servers (optionally of a whole process tree, for
//! PostgreSQL's postmaster and backends), resident memory, whole-machine busy
//! and steal time, and the open-file limit.
// libc's sysconf, getrlimit and setrlimit have no safe wrapper in std; each
// call has its SAFETY comment.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs;

/// A process to measure, from `--pids name:PID[:tree]`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Target {
    pub name: String,
    pub pid: u32,
    /// Sum the CPU of the process and all its descendants.
    pub tree: bool,
}

impl Target {
    /// Servers are every target but the helpers (`redis*`, `pg*`, `postgres*`):
    /// only servers count in "server CPU per delivery".
    pub fn is_server(&self) -> bool {
        let n = self.name.to_ascii_lowercase();
        !(n.starts_with("redis") || n.starts_with("pg") || n.starts_with("postgres"))
    }
}

/// Parses `name:PID[:tree],...` (a bare PID is named `server`, then `server2`...).
pub fn parse_targets(spec: &str) -> anyhow::Result<Vec<Target>> {
    let mut out: Vec<Target> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let fields: Vec<&str> = part.split(':').collect();
        let (name, pid, mode) = match fields.as_slice() {
            [pid] => {
                let name = if out.is_empty() {
                    "server".to_owned()
                } else {
                    format!("server{}", out.len() + 1)
                };
                (name, *pid, None)
            }
            [name, pid] => ((*name).to_owned(), *pid, None),
            [name, pid, mode] => ((*name).to_owned(), *pid, Some(*mode)),
            _ => anyhow::bail!("bad --pids entry {part:?}: expected name:PID[:tree]"),
        };
        let pid: u32 = pid
            .parse()
            .map_err(|_| anyhow::anyhow!("bad pid in --pids entry {part:?}"))?;
        let tree = match mode {
            None => false,
            Some("tree") => true,
            Some(m) => anyhow::bail!("bad mode {m:?} in --pids entry {part:?} (only `tree`)"),
        };
        out.push(Target { name, pid, tree });
    }
    Ok(out)
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

/// Fields after the command name of a `/proc/<pid>/stat` line (the name may
/// contain spaces and parentheses, so split after the last `)`).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let end = stat.rfind(')')?;
    Some(stat.get(end + 2..)?.split(' ').collect())
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = stat_fields(&s)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// utime + stime of a process and every descendant alive now.
pub fn tree_ticks(root: u32) -> Option<u64> {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(f) = stat_fields(&s) else { continue };
        let (Some(ppid), Some(u), Some(st)) = (
            f.get(1).and_then(|v| v.parse::<u32>().ok()),
            f.get(11).and_then(|v| v.parse::<u64>().ok()),
            f.get(12).and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        ticks.insert(pid, u + st);
        kids.entry(ppid).or_default().push(pid);
    }
    ticks.get(&root)?;
    let mut sum = 0;
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        sum += ticks.get(&p).copied().unwrap_or(0);
        if let Some(k) = kids.get(&p) {
            stack.extend(k);
        }
    }
    Some(sum)
}

pub fn target_ticks(t: &Target) -> Option<u64> {
    if t.tree {
        tree_ticks(t.pid)
    } else {
        cpu_ticks(t.pid)
    }
}

/// Resident set size (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn self_pid() -> u32 {
    std::process::id()
}

/// Whole-machine CPU counters from the first line of `/proc/stat`.
#[derive(Clone, Copy, Default)]
pub struct SysCpu {
    pub total: u64,
    pub idle: u64,
    pub steal: u64,
}

pub fn sys_cpu() -> SysCpu {
    let Ok(s) = fs::read_to_string("/proc/stat") else {
        return SysCpu::default();
    };
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return SysCpu::default();
    }
    SysCpu {
        total: v.iter().sum(),
        idle: v[3] + v[4],
        steal: v[7],
    }
}

pub fn ncpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The open-file limit after trying to make room for `needed` descriptors:
/// the soft limit goes up to the hard one, and the hard one up to `needed`
/// if the process may (CAP_SYS_RESOURCE). Returns (soft, hard, note).
pub fn raise_nofile(needed: u64) -> (u64, u64, String) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (0, 0, "getrlimit failed".into());
    }
    let mut note = String::new();
    if lim.rlim_max < needed {
        let want = libc::rlimit {
            rlim_cur: needed,
            rlim_max: needed,
        };
        // SAFETY: `want` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            note = format!("raised the hard limit to {needed}");
            lim = want;
        } else {
            note = format!(
                "could not raise the hard limit {} to {needed} ({}); run as root with CAP_SYS_RESOURCE or `ulimit -Hn` first",
                lim.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (lim.rlim_cur, lim.rlim_max, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_targets("A:10,B:11,redis:12,pg:13:tree").unwrap_or_default();
        assert_eq!(t.len(), 4);
        assert!(t[0].is_server() && t[1].is_server());
        assert!(!t[2].is_server() && !t[3].is_server());
        assert!(t[3].tree);
        let bare = parse_targets("42").unwrap_or_default();
        assert_eq!(bare[0].name, "server");
        assert!(parse_targets("a:b").is_err());
        assert!(parse_targets("a:1:x").is_err());
    }

    #[test]
    fn reads_itself() {
        assert!(cpu_ticks(self_pid()).is_some());
        assert!(rss_kib(self_pid()).unwrap_or(0) > 0);
        assert!(tree_ticks(self_pid()).is_some());
        assert!(sys_cpu().total > 0);
        let f = stat_fields("1 (a) b) c) S 0 1 2").unwrap_or_default();
        assert_eq!(f.first(), Some(&"S"));
    }
}
