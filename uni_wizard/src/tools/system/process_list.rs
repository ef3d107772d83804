//! `process_list`: the processes of this host, from `/proc` — pid, parent, name, user, state,
//! threads, CPU %, resident memory, start time and command line; filtered, sorted, top N.
//!
//! Nothing is spawned: each process is `/proc/<pid>/{stat,status,cmdline}`, user names come
//! from `/etc/passwd` (a user known only through NSS, e.g. LDAP, is shown by number), and the
//! reading runs on tokio's blocking pool. A process that exits while it is being read is left
//! out. Each file format has a pure parser below, tested on recorded text.
//!
//! # CPU %
//!
//! Like `top`, not like `ps`: the share of one CPU a process used during a short window.
//! Two snapshots of `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks)
//! are taken `sample_ms` apart, and
//!
//! ```text
//! cpu_percent = 100 × (ticks₂ − ticks₁) / clock_ticks_per_second / elapsed_seconds
//! ```
//!
//! where `elapsed_seconds` is the monotonic time between the starts of the two snapshots. A
//! process that started inside the window counts all its ticks. 100 means one whole CPU, so a
//! busy multi-threaded process can exceed 100. A tick is 10 ms on Linux, so with the default
//! 200 ms window the figure moves in steps of 5 points; a longer window is finer.
//! `sample_ms: 0` skips the window and reports the lifetime average instead
//! (`100 × ticks / clock_ticks_per_second / seconds since the process started`), as `ps` does.
//!
//! The clock tick rate is `AT_CLKTCK` from `/proc/self/auxv` (what `sysconf(_SC_CLK_TCK)`
//! returns), falling back to Linux's `USER_HZ` of 100.
//!
//! # Memory
//!
//! `rss_bytes` is `VmRSS` of `/proc/<pid>/status` × 1024 (the kernel's kB are KiB); kernel
//! threads have none and show 0.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::tools::{ToolContext, TypedTool};

/// Longest sampling window a call may ask for.
pub const SAMPLE_MS_MAX: u64 = 2000;
/// Most processes one call may return.
pub const TOP_MAX: usize = 10_000;
/// Command lines are cut at this many characters.
pub const CMDLINE_MAX_CHARS: usize = 4096;

/// Bytes of `/proc/<pid>/cmdline` read: enough for [`CMDLINE_MAX_CHARS`] characters of any
/// width (a character is at most 4 bytes, an invalid byte becomes one character).
const CMDLINE_READ_MAX: u64 = (CMDLINE_MAX_CHARS * 4) as u64;

/// `AT_CLKTCK` in the auxiliary vector.
const AT_CLKTCK: usize = 17;

/// Linux's `USER_HZ`, the tick rate of `/proc` times on every mainstream architecture.
const USER_HZ: u64 = 100;

/// Arguments of `process_list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Keep processes whose name or command line contains this (case-sensitive).
    #[serde(default)]
    pub filter: Option<String>,
    /// Keep processes whose effective user has this name or numeric id.
    #[serde(default)]
    pub user: Option<String>,
    /// Order of the result.
    #[serde(default)]
    pub sort_by: SortBy,
    /// Most processes returned, after sorting.
    #[serde(default = "default_top")]
    pub top: usize,
    /// CPU sampling window in milliseconds; 0 reports lifetime averages.
    #[serde(default = "default_sample_ms")]
    pub sample_ms: u64,
}

impl Default for Input {
    fn default() -> Input {
        Input { filter: None, user: None, sort_by: SortBy::Cpu, top: default_top(), sample_ms: default_sample_ms() }
    }
}

fn default_top() -> usize {
    50
}

fn default_sample_ms() -> u64 {
    200
}

/// How the result is ordered; ties go to the lower pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// Highest CPU % first.
    #[default]
    Cpu,
    /// Largest resident memory first.
    Rss,
    /// Lowest pid first.
    Pid,
    /// By name, A to Z.
    Name,
}

/// Result of `process_list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// The processes, sorted, at most `top`.
    pub processes: Vec<Process>,
    /// How many processes matched the filters (before `top` was applied).
    pub matched: usize,
    /// How many processes were read.
    pub scanned: usize,
    /// The order used.
    pub sort_by: SortBy,
    /// The CPU sampling window used; 0 when CPU % is a lifetime average.
    pub sample_ms: u64,
}

/// One process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Parent's process id (0 for the kernel's own).
    pub ppid: u32,
    /// The kernel's name for it (`comm`, at most 15 bytes).
    pub name: String,
    /// Effective user: name from `/etc/passwd`, else the number.
    pub user: String,
    /// Effective user id.
    pub uid: u32,
    /// One letter, as `ps` shows it: R running, S sleeping, D disk sleep, Z zombie, T stopped,
    /// t tracing stop, X dead, I idle.
    pub state: String,
    /// Threads in the process.
    pub threads: u64,
    /// Share of one CPU, in percent (see the module docs for the formula).
    pub cpu_percent: f64,
    /// CPU time used since it started (user + system), in seconds.
    pub cpu_time_secs: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// When it started, in seconds since the Unix epoch.
    pub start_time_unix: u64,
    /// Arguments joined by spaces, cut at 4096 characters; empty for kernel threads.
    pub cmdline: String,
}

/// The `process_list` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessList;

impl TypedTool for ProcessList {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "process_list",
            category: Category::System,
            description: "Processes from /proc: pid, name, user, state, threads, CPU %, RSS, start time and command line; filter, sort, top N.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "filter": {
                        "type": "string", "minLength": 1, "maxLength": 256,
                        "description": "Keep processes whose name or command line contains this (case-sensitive)."
                    },
                    "user": {
                        "type": "string", "minLength": 1, "maxLength": 64,
                        "description": "Keep processes whose effective user has this name or numeric id."
                    },
                    "sort_by": {
                        "type": "string", "enum": ["cpu", "rss", "pid", "name"], "default": "cpu",
                        "description": "cpu and rss: highest first; pid and name: ascending."
                    },
                    "top": {"type": "integer", "minimum": 1, "maximum": TOP_MAX, "default": 50},
                    "sample_ms": {
                        "type": "integer", "minimum": 0, "maximum": SAMPLE_MS_MAX, "default": 200,
                        "description": "CPU sampling window; 0 reports lifetime averages as ps does."
                    }
                },
                "additionalProperties": false
            }),
            output_schema: output_schema(),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(10),
            dry_run: false,
            content_guard: false,
        }
    }

    async fn run(_ctx: &ToolContext, input: Input) -> Result<Output> {
        collect(Sources::host(), input).await
    }
}

fn output_schema() -> Value {
    let count = json!({"type": "integer", "minimum": 0});
    json!({
        "type": "object",
        "properties": {
            "processes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "pid": {"type": "integer", "minimum": 1},
                        "ppid": count,
                        "name": {"type": "string"},
                        "user": {"type": "string", "minLength": 1},
                        "uid": count,
                        "state": {"type": "string", "minLength": 1, "maxLength": 1},
                        "threads": count,
                        "cpu_percent": {"type": "number", "minimum": 0},
                        "cpu_time_secs": {"type": "number", "minimum": 0},
                        "rss_bytes": count,
                        "start_time_unix": count,
                        "cmdline": {"type": "string", "maxLength": CMDLINE_MAX_CHARS}
                    },
                    "required": [
                        "pid", "ppid", "name", "user", "uid", "state", "threads", "cpu_percent",
                        "cpu_time_secs", "rss_bytes", "start_time_unix", "cmdline"
                    ],
                    "additionalProperties": false
                }
            },
            "matched": count,
            "scanned": count,
            "sort_by": {"type": "string", "enum": ["cpu", "rss", "pid", "name"]},
            "sample_ms": {"type": "integer", "minimum": 0, "maximum": SAMPLE_MS_MAX}
        },
        "required": ["processes", "matched", "scanned", "sort_by", "sample_ms"],
        "additionalProperties": false
    })
}

/// Where the facts are read from: the host's `/proc` and `/etc/passwd`, or a test tree.
#[derive(Debug, Clone)]
struct Sources {
    proc: PathBuf,
    passwd: PathBuf,
}

impl Sources {
    fn host() -> Sources {
        Sources { proc: PathBuf::from("/proc"), passwd: PathBuf::from("/etc/passwd") }
    }
}

/// Takes the samples, reads everything, filters, sorts and cuts.
async fn collect(src: Sources, input: Input) -> Result<Output> {
    let sample_ms = input.sample_ms.min(SAMPLE_MS_MAX);
    let first = if sample_ms > 0 {
        let s = src.clone();
        let sample = blocking(move || cpu_sample(&s.proc)).await?;
        tokio::time::sleep(Duration::from_millis(sample_ms)).await;
        Some(sample)
    } else {
        None
    };
    let snap = blocking(move || snapshot(&src)).await?;

    let scanned = snap.procs.len();
    let mut processes: Vec<Process> = snap
        .procs
        .into_iter()
        .map(|raw| {
            let ticks = raw.stat.utime.saturating_add(raw.stat.stime);
            let cpu_percent = match &first {
                Some(first) => {
                    let before = first
                        .ticks
                        .get(&raw.stat.pid)
                        .filter(|(start, _)| *start == raw.stat.start_ticks) // not a reused pid
                        .map_or(0, |(_, t)| *t);
                    let elapsed = snap.taken.saturating_duration_since(first.taken).as_secs_f64();
                    cpu_percent(ticks.saturating_sub(before), snap.clk_tck, elapsed)
                }
                None => {
                    let age = snap.uptime_secs - raw.stat.start_ticks as f64 / snap.clk_tck as f64;
                    cpu_percent(ticks, snap.clk_tck, age)
                }
            };
            let user = snap.users.get(&raw.status.euid).cloned().unwrap_or_else(|| raw.status.euid.to_string());
            Process {
                pid: raw.stat.pid,
                ppid: raw.stat.ppid,
                name: raw.stat.comm,
                user,
                uid: raw.status.euid,
                state: raw.stat.state.to_string(),
                threads: raw.stat.threads,
                cpu_percent,
                cpu_time_secs: ticks as f64 / snap.clk_tck as f64,
                rss_bytes: raw.status.rss_bytes,
                start_time_unix: snap.btime.saturating_add(raw.stat.start_ticks / snap.clk_tck),
                cmdline: raw.cmdline,
            }
        })
        .filter(|p| {
            let by_text = input.filter.as_deref().is_none_or(|f| p.name.contains(f) || p.cmdline.contains(f));
            let by_user = input.user.as_deref().is_none_or(|u| p.user == u || p.uid.to_string() == u);
            by_text && by_user
        })
        .collect();
    let matched = processes.len();
    sort(&mut processes, input.sort_by);
    processes.truncate(input.top.clamp(1, TOP_MAX));
    Ok(Output { processes, matched, scanned, sort_by: input.sort_by, sample_ms })
}

/// Orders processes; ties go to the lower pid so the order is stable across calls.
fn sort(processes: &mut [Process], by: SortBy) {
    processes.sort_by(|a, b| {
        let primary = match by {
            SortBy::Cpu => b.cpu_percent.total_cmp(&a.cpu_percent),
            SortBy::Rss => b.rss_bytes.cmp(&a.rss_bytes),
            SortBy::Pid => std::cmp::Ordering::Equal,
            SortBy::Name => a.name.cmp(&b.name),
        };
        primary.then(a.pid.cmp(&b.pid))
    });
}

/// `100 × ticks / clk_tck / elapsed`, rounded to one decimal; 0 for an empty window.
fn cpu_percent(ticks: u64, clk_tck: u64, elapsed_secs: f64) -> f64 {
    if elapsed_secs <= 0.0 || clk_tck == 0 || !elapsed_secs.is_finite() {
        return 0.0;
    }
    let pct = 100.0 * ticks as f64 / clk_tck as f64 / elapsed_secs;
    (pct * 10.0).round() / 10.0
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorCode::ToolFailed, format!("process_list: reader task failed: {e}")))?
}

/// The first snapshot: each process's start time and CPU ticks, by pid.
struct CpuSample {
    taken: Instant,
    ticks: HashMap<u32, (u64, u64)>,
}

fn cpu_sample(proc: &Path) -> Result<CpuSample> {
    let taken = Instant::now();
    let mut ticks = HashMap::new();
    for pid in pids(proc)? {
        if let Some(stat) =
            std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok().and_then(|t| parse_stat(&t))
        {
            ticks.insert(pid, (stat.start_ticks, stat.utime.saturating_add(stat.stime)));
        }
    }
    Ok(CpuSample { taken, ticks })
}

/// The second snapshot: everything about every process, plus the host facts to interpret it.
struct Snapshot {
    taken: Instant,
    clk_tck: u64,
    btime: u64,
    uptime_secs: f64,
    users: HashMap<u32, String>,
    procs: Vec<RawProcess>,
}

struct RawProcess {
    stat: Stat,
    status: StatusInfo,
    cmdline: String,
}

fn snapshot(src: &Sources) -> Result<Snapshot> {
    let taken = Instant::now();
    let proc = &src.proc;
    let pid_list = pids(proc)?;
    let clk_tck = std::fs::read(proc.join("self/auxv")).ok().and_then(|b| parse_auxv_clk_tck(&b)).unwrap_or(USER_HZ);
    let btime = parse_btime(&read_host_file(&proc.join("stat"))?).ok_or_else(|| unparsable("stat", "btime"))?;
    let uptime_secs = read_host_file(&proc.join("uptime"))?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| unparsable("uptime", "seconds since boot"))?;
    let users = std::fs::read_to_string(&src.passwd).map(|t| parse_passwd(&t)).unwrap_or_default();
    let procs = pid_list.into_iter().filter_map(|pid| read_process(&proc.join(pid.to_string()))).collect();
    Ok(Snapshot { taken, clk_tck, btime, uptime_secs, users, procs })
}

/// Reads one process; `None` when it vanished (or cannot be read) part-way.
fn read_process(dir: &Path) -> Option<RawProcess> {
    let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let status = parse_status(&std::fs::read_to_string(dir.join("status")).ok()?)?;
    let mut raw = Vec::new();
    std::fs::File::open(dir.join("cmdline")).ok()?.take(CMDLINE_READ_MAX).read_to_end(&mut raw).ok()?;
    Some(RawProcess { stat, status, cmdline: join_cmdline(&raw) })
}

/// The numeric entries of `/proc`, ascending.
///
/// A missing `/proc` is E3007: this host cannot run the tool.
fn pids(proc: &Path) -> Result<Vec<u32>> {
    let entries = std::fs::read_dir(proc).map_err(|e| {
        let err = Error::from_io(format!("process_list: listing {}", proc.display()), &e);
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(ErrorCode::Unsupported, format!("process_list needs Linux /proc: {} is missing", proc.display()))
                .with_details(err.details)
        } else {
            err
        }
    })?;
    let mut pids: Vec<u32> =
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter(|&p| p > 0).collect();
    pids.sort_unstable();
    Ok(pids)
}

fn read_host_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let err = Error::from_io(format!("process_list: reading {}", path.display()), &e);
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(ErrorCode::Unsupported, format!("process_list needs Linux /proc: {} is missing", path.display()))
                .with_details(err.details)
        } else {
            err
        }
    })
}

fn unparsable(file: &str, what: &str) -> Error {
    Error::new(ErrorCode::ToolFailed, format!("process_list: /proc/{file} has no {what}"))
        .with_details(json!({ "file": format!("/proc/{file}") }))
}

/// The fields of `/proc/<pid>/stat` this tool uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pid: u32,
    comm: String,
    state: char,
    ppid: u32,
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)). The name (field 2) is in parentheses and may itself
/// contain spaces and `)`, so it runs from the first `(` to the **last** `)`; the numbered
/// fields after it are split on whitespace: state (3), ppid (4), utime (14), stime (15),
/// num_threads (20), starttime (22, ticks since boot).
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let num = |n: usize| field(n)?.parse::<u64>().ok();
    Some(Stat {
        pid: text[..open].trim().parse().ok()?,
        comm: text[open + 1..close].to_owned(),
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        utime: num(14)?,
        stime: num(15)?,
        threads: num(20)?,
        start_ticks: num(22)?,
    })
}

/// The fields of `/proc/<pid>/status` this tool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusInfo {
    /// The effective uid: the second of the four `Uid:` columns (real, effective, saved, fs).
    euid: u32,
    /// `VmRSS` in bytes; 0 when absent (kernel threads, zombies).
    rss_bytes: u64,
}

/// Parses `/proc/<pid>/status`; `None` without a well-formed `Uid:` line.
pub(crate) fn parse_status(text: &str) -> Option<StatusInfo> {
    let mut euid = None;
    let mut rss_bytes = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            euid = Some(v.split_whitespace().nth(1)?.parse().ok()?);
        } else if let Some(v) = line.strip_prefix("VmRSS:") {
            let mut parts = v.split_whitespace();
            let n: u64 = parts.next()?.parse().ok()?;
            rss_bytes = match parts.next() {
                Some("kB") => n.saturating_mul(1024),
                _ => return None,
            };
        }
    }
    Some(StatusInfo { euid: euid?, rss_bytes })
}

/// Uid to user name from `/etc/passwd` text; the first entry for a uid wins, as with
/// `getpwuid(3)`.
pub(crate) fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>()
            && !name.is_empty()
        {
            users.entry(uid).or_insert_with(|| name.to_owned());
        }
    }
    users
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
pub(crate) fn parse_btime(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// `AT_CLKTCK` from the auxiliary vector (`/proc/self/auxv`: native-endian word pairs, ended
/// by `AT_NULL`).
pub(crate) fn parse_auxv_clk_tck(bytes: &[u8]) -> Option<u64> {
    const W: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| b.try_into().ok().map(usize::from_ne_bytes);
    for pair in bytes.chunks_exact(2 * W) {
        match word(&pair[..W])? {
            0 => return None,
            AT_CLKTCK => return word(&pair[W..]).map(|v| v as u64).filter(|&v| v > 0),
            _ => {}
        }
    }
    None
}

/// NUL-separated arguments joined by spaces (invalid UTF-8 replaced), cut at
/// [`CMDLINE_MAX_CHARS`] characters.
pub(crate) fn join_cmdline(raw: &[u8]) -> String {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&raw[..end]).replace('\0', " ");
    match text.char_indices().nth(CMDLINE_MAX_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;

    /// Recorded from `/proc/self/stat` of `cat` on Linux 6.x.
    const STAT_CAT: &str = "5096 (cat) R 5094 5094 27536 0 -1 4194304 98 0 0 0 7 3 0 0 20 0 1 0 419667 3133440 363 \
        18446744073709551615 94231761981440 94231762001321 140724404804608 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";

    /// Proves the recorded stat line parses to the right fields.
    #[test]
    fn stat_parses_recorded_line() {
        let s = parse_stat(STAT_CAT).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 5096,
                comm: "cat".into(),
                state: 'R',
                ppid: 5094,
                utime: 7,
                stime: 3,
                threads: 1,
                start_ticks: 419_667
            }
        );
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 13 0 0 18446744073709551615 0";
        assert_eq!(parse_stat(kthread).unwrap().ppid, 0);
    }

    /// Proves a name with spaces and parentheses is read up to the last `)`, so the fields
    /// after it stay in place, and truncated lines are refused.
    #[test]
    fn stat_name_with_spaces_and_parens() {
        let line = STAT_CAT.replacen("(cat)", "(a) b) (c d)", 1);
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.comm, "a) b) (c d");
        assert_eq!((s.state, s.ppid, s.utime, s.start_ticks), ('R', 5094, 7, 419_667));
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat(") 1 (x"), None);
    }

    /// Proves status yields the effective uid and VmRSS in bytes, 0 without VmRSS (kernel
    /// threads), and nothing without a Uid line.
    #[test]
    fn status_parses_uid_and_rss() {
        let user = "Name:\tgrep\nState:\tR (running)\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
            VmPeak:\t    6428 kB\nVmRSS:\t    1972 kB\nThreads:\t1\n";
        assert_eq!(parse_status(user), Some(StatusInfo { euid: 0, rss_bytes: 1972 * 1024 }));
        let kthread = "Name:\tkthreadd\nState:\tS (sleeping)\nUid:\t0\t0\t0\t0\nThreads:\t1\n";
        assert_eq!(parse_status(kthread), Some(StatusInfo { euid: 0, rss_bytes: 0 }));
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(parse_status("Uid:\tx\n"), None);
    }

    /// Proves passwd parsing maps uids to the first name, skipping comments and junk.
    #[test]
    fn passwd_maps_uids() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\ntoor:x:0:0::/:/bin/sh\n\
            nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        let u = parse_passwd(text);
        assert_eq!(u.len(), 2);
        assert_eq!(u[&0], "root");
        assert_eq!(u[&65534], "nobody");
    }

    /// Proves btime and AT_CLKTCK are found, and an auxv without it (or ended early) gives none.
    #[test]
    fn btime_and_clock_ticks() {
        assert_eq!(parse_btime("cpu  1 2 3\nintr 5\nbtime 1795318126\nprocesses 9\n"), Some(1_795_318_126));
        assert_eq!(parse_btime("cpu 1\n"), None);
        let aux = |pairs: &[(usize, usize)]| -> Vec<u8> {
            pairs.iter().flat_map(|(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()].concat()).collect()
        };
        assert_eq!(parse_auxv_clk_tck(&aux(&[(33, 7), (6, 4096), (17, 100), (0, 0)])), Some(100));
        assert_eq!(parse_auxv_clk_tck(&aux(&[(6, 4096), (0, 0), (17, 100)])), None);
        assert_eq!(parse_auxv_clk_tck(&[1, 2, 3]), None);
        let live = std::fs::read("/proc/self/auxv").unwrap();
        assert_eq!(parse_auxv_clk_tck(&live), Some(USER_HZ), "Linux's USER_HZ");
    }

    /// Proves NULs become spaces, the trailing NUL goes, and long lines are cut at 4096 chars.
    #[test]
    fn cmdline_is_joined_and_cut() {
        assert_eq!(join_cmdline(b"sleep\x0030\x00"), "sleep 30");
        assert_eq!(join_cmdline(b""), "");
        assert_eq!(join_cmdline(b"\x00\x00"), "");
        let long: Vec<u8> = "é".repeat(5000).into_bytes();
        let cut = join_cmdline(&long);
        assert_eq!(cut.chars().count(), CMDLINE_MAX_CHARS);
        assert_eq!(join_cmdline(&[0xff, 0, b'a']), "\u{fffd} a");
    }

    /// Proves the CPU formula: 20 ticks at 100 Hz in 0.2 s is one whole CPU; empty windows are 0.
    #[test]
    fn cpu_percent_formula() {
        assert_eq!(cpu_percent(20, 100, 0.2), 100.0);
        assert_eq!(cpu_percent(1, 100, 0.2), 5.0);
        assert_eq!(cpu_percent(50, 100, 0.2), 250.0);
        assert_eq!(cpu_percent(3, 100, 1.0), 3.0);
        assert_eq!(cpu_percent(5, 100, 0.0), 0.0);
        assert_eq!(cpu_percent(5, 0, 1.0), 0.0);
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Builds a fake `/proc` with two processes and one that vanished (a directory, no files).
    fn fake_proc(dir: &Path) -> Sources {
        let proc = dir.join("proc");
        write(&proc.join("stat"), "cpu 1 2 3\nbtime 1000\n");
        write(&proc.join("uptime"), "500.00 900.00\n");
        let line = |pid: u32, comm: &str, utime: u64, start: u64| {
            format!("{pid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 3 0 {start} 0 0 0")
        };
        write(&proc.join("10/stat"), &line(10, "web server", 4000, 10_000));
        write(&proc.join("10/status"), "Uid:\t33\t33\t33\t33\nVmRSS:\t 2048 kB\n");
        write(&proc.join("10/cmdline"), "/usr/sbin/web\0--port\08080\0");
        write(&proc.join("20/stat"), &line(20, "kworker/0:1", 0, 200));
        write(&proc.join("20/status"), "Uid:\t0\t0\t0\t0\n");
        write(&proc.join("20/cmdline"), "");
        std::fs::create_dir_all(proc.join("30")).unwrap();
        write(&proc.join("self/auxv"), "");
        write(&proc.join("not-a-pid/stat"), "x");
        let passwd = dir.join("passwd");
        write(&passwd, "root:x:0:0::/:/bin/sh\n");
        Sources { proc, passwd }
    }

    /// Proves the whole reading on a fake `/proc`: a vanished process is skipped, unknown
    /// users are numeric, lifetime CPU %, start time from btime, filters, sorting and top.
    #[tokio::test]
    async fn reads_a_fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let src = fake_proc(dir.path());
        let out = collect(src.clone(), Input { sample_ms: 0, ..Input::default() }).await.unwrap();
        assert_eq!((out.scanned, out.matched), (2, 2));
        let web = &out.processes[0];
        assert_eq!((web.pid, web.name.as_str(), web.user.as_str(), web.uid), (10, "web server", "33", 33));
        assert_eq!(web.cmdline, "/usr/sbin/web --port 8080");
        assert_eq!((web.rss_bytes, web.threads, web.state.as_str()), (2048 * 1024, 3, "S"));
        // 40 s of CPU over 400 s of life (uptime 500 s, started at tick 10 000 = 100 s).
        assert_eq!((web.cpu_time_secs, web.cpu_percent), (40.0, 10.0));
        assert_eq!(web.start_time_unix, 1100);
        assert_eq!(out.processes[1].user, "root");

        let by = |input: Input| collect(src.clone(), Input { sample_ms: 0, ..input });
        let f = by(Input { filter: Some("kworker".into()), ..Input::default() }).await.unwrap();
        assert_eq!(f.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [20]);
        let f = by(Input { filter: Some("--port".into()), ..Input::default() }).await.unwrap();
        assert_eq!(f.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [10]);
        let f = by(Input { user: Some("root".into()), ..Input::default() }).await.unwrap();
        assert_eq!(f.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [20]);
        let f = by(Input { user: Some("33".into()), ..Input::default() }).await.unwrap();
        assert_eq!(f.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [10]);
        let f = by(Input { sort_by: SortBy::Name, top: 1, ..Input::default() }).await.unwrap();
        assert_eq!((f.processes.len(), f.matched, f.processes[0].pid), (1, 2, 20));
    }

    /// Proves a sampled run on a tree that does not change reports 0 % CPU for everyone.
    #[tokio::test]
    async fn sampled_cpu_of_an_idle_tree_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let out = collect(fake_proc(dir.path()), Input { sample_ms: 10, ..Input::default() }).await.unwrap();
        assert_eq!(out.sample_ms, 10);
        assert!(out.processes.iter().all(|p| p.cpu_percent == 0.0), "{:?}", out.processes);
    }

    /// Proves a host without `/proc` is E3007 (unsupported).
    #[tokio::test]
    async fn missing_proc_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let src = Sources { proc: dir.path().join("proc"), passwd: dir.path().join("passwd") };
        let err = collect(src, Input::default()).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported, "{err}");
    }
}
