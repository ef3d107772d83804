//! `system_info`: facts about this host — name, OS, kernel, uptime, load, CPU, memory, disks.
//!
//! Everything comes from `/proc`, `/etc/os-release`, `uname(2)` and `statvfs(2)`; nothing is
//! spawned. The reading is blocking file I/O, so it runs on tokio's blocking pool. Each
//! `/proc` format has its own pure parser below, tested on recorded text, so a kernel that
//! words a file differently is caught by a unit test rather than in production.
//!
//! Linux only: on a host without `/proc` the tool fails with E3007 (unsupported).
//!
//! A mount that hangs `statvfs` (a dead NFS server) holds one blocking-pool thread until the
//! kernel gives up; the call itself still ends at its timeout. Pass `include_disks: false` to
//! skip the mounts entirely.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::contract::{Annotations, Category, ContractSpec, Risk};
use crate::error::{Error, ErrorCode, Result};
use crate::tools::{ToolContext, TypedTool};

/// Arguments of `system_info`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Whether to list mounted filesystems (one `statvfs` per mount).
    #[serde(default = "default_true")]
    pub include_disks: bool,
}

impl Default for Input {
    fn default() -> Input {
        Input { include_disks: true }
    }
}

fn default_true() -> bool {
    true
}

/// Result of `system_info`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// The host name (`uname -n`).
    pub hostname: String,
    /// `PRETTY_NAME` from `/etc/os-release`, or `"unknown"`.
    pub os: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The machine architecture (`uname -m`), e.g. `x86_64`.
    pub arch: String,
    /// Seconds since boot, from `/proc/uptime`.
    pub uptime_secs: f64,
    /// Load averages, from `/proc/loadavg`.
    pub load: Load,
    /// Processors.
    pub cpu: Cpu,
    /// Physical memory, from `/proc/meminfo`.
    pub memory: Memory,
    /// Swap, from `/proc/meminfo`.
    pub swap: Swap,
    /// Real filesystems, one per device; empty when `include_disks` is false.
    pub disks: Vec<Disk>,
}

/// The 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Load {
    /// Over the last minute.
    pub one: f64,
    /// Over the last five minutes.
    pub five: f64,
    /// Over the last fifteen minutes.
    pub fifteen: f64,
}

/// Processors as the kernel lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// Logical CPUs online: the `processor` entries of `/proc/cpuinfo`.
    pub count: u64,
    /// The first `model name` (or the architecture's equivalent), or `"unknown"`.
    pub model: String,
}

/// Physical memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable`: what can be allocated without swapping.
    pub available_bytes: u64,
    /// `total_bytes - available_bytes`.
    pub used_bytes: u64,
}

/// Swap space in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Swap {
    /// `SwapTotal`.
    pub total_bytes: u64,
    /// `SwapFree`.
    pub free_bytes: u64,
}

/// One mounted filesystem, sized as `df` sizes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Where it is mounted.
    pub mount: String,
    /// Filesystem type, e.g. `ext4`.
    pub fs_type: String,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Free to unprivileged users.
    pub available_bytes: u64,
    /// In use (total minus all free blocks, including the root reserve).
    pub used_bytes: u64,
}

/// The `system_info` tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemInfo;

impl TypedTool for SystemInfo {
    type Input = Input;
    type Output = Output;

    fn spec() -> ContractSpec {
        ContractSpec {
            name: "system_info",
            category: Category::System,
            description: "Host facts: hostname, OS, kernel, architecture, uptime, load, CPU, memory, swap and disks.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "include_disks": {
                        "type": "boolean",
                        "default": true,
                        "description": "List mounted filesystems with their sizes."
                    }
                },
                "additionalProperties": false
            }),
            output_schema: output_schema(),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
            risk: Risk::Low,
            default_timeout: Duration::from_secs(5),
            dry_run: false,
            content_guard: false,
        }
    }

    async fn run(_ctx: &ToolContext, input: Input) -> Result<Output> {
        tokio::task::spawn_blocking(move || collect(Path::new("/"), input.include_disks))
            .await
            .map_err(|e| Error::new(ErrorCode::ToolFailed, format!("system_info: reader task failed: {e}")))?
    }
}

fn output_schema() -> Value {
    let bytes = json!({"type": "integer", "minimum": 0});
    let load = json!({"type": "number", "minimum": 0});
    json!({
        "type": "object",
        "properties": {
            "hostname": {"type": "string", "description": "uname -n"},
            "os": {"type": "string", "description": "PRETTY_NAME from /etc/os-release, or \"unknown\""},
            "kernel": {"type": "string", "description": "uname -r"},
            "arch": {"type": "string", "description": "uname -m"},
            "uptime_secs": {"type": "number", "minimum": 0},
            "load": {
                "type": "object",
                "properties": {"one": load, "five": load, "fifteen": load},
                "required": ["one", "five", "fifteen"],
                "additionalProperties": false
            },
            "cpu": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 1, "description": "logical CPUs online"},
                    "model": {"type": "string"}
                },
                "required": ["count", "model"],
                "additionalProperties": false
            },
            "memory": {
                "type": "object",
                "properties": {"total_bytes": bytes, "available_bytes": bytes, "used_bytes": bytes},
                "required": ["total_bytes", "available_bytes", "used_bytes"],
                "additionalProperties": false
            },
            "swap": {
                "type": "object",
                "properties": {"total_bytes": bytes, "free_bytes": bytes},
                "required": ["total_bytes", "free_bytes"],
                "additionalProperties": false
            },
            "disks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "mount": {"type": "string", "minLength": 1},
                        "fs_type": {"type": "string", "minLength": 1},
                        "total_bytes": bytes,
                        "available_bytes": bytes,
                        "used_bytes": bytes
                    },
                    "required": ["mount", "fs_type", "total_bytes", "available_bytes", "used_bytes"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["hostname", "os", "kernel", "arch", "uptime_secs", "load", "cpu", "memory", "swap", "disks"],
        "additionalProperties": false
    })
}

/// Reads everything, blocking. `root` is `/` except in tests of the wiring.
fn collect(root: &Path, include_disks: bool) -> Result<Output> {
    let uname = rustix::system::uname();
    let text = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();

    let os = match read_optional(&root.join("etc/os-release"))? {
        Some(t) => Some(t),
        None => read_optional(&root.join("usr/lib/os-release"))?,
    }
    .and_then(|t| parse_os_release(&t))
    .unwrap_or_else(|| "unknown".to_owned());

    let uptime_secs = parse_uptime(&read_proc(&root.join("proc/uptime"))?).ok_or_else(|| unparsable("uptime"))?;
    let load = parse_loadavg(&read_proc(&root.join("proc/loadavg"))?).ok_or_else(|| unparsable("loadavg"))?;
    let cpuinfo = parse_cpuinfo(&read_proc(&root.join("proc/cpuinfo"))?);
    let count = if cpuinfo.count > 0 {
        cpuinfo.count
    } else {
        // Some kernels (or container shims) list no `processor` lines; ask the scheduler.
        std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1)
    };
    let meminfo = parse_meminfo(&read_proc(&root.join("proc/meminfo"))?).ok_or_else(|| unparsable("meminfo"))?;
    let disks = if include_disks { disks(&read_proc(&root.join("proc/self/mounts"))?) } else { Vec::new() };

    Ok(Output {
        hostname: text(uname.nodename()),
        os,
        kernel: text(uname.release()),
        arch: text(uname.machine()),
        uptime_secs,
        load,
        cpu: Cpu { count, model: cpuinfo.model.unwrap_or_else(|| "unknown".to_owned()) },
        memory: meminfo.memory,
        swap: meminfo.swap,
        disks,
    })
}

/// Reads a kernel file; a missing one means this host has no Linux `/proc` (E3007).
fn read_proc(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let err = Error::from_io(format!("system_info: reading {}", path.display()), &e);
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(ErrorCode::Unsupported, format!("system_info needs Linux /proc: {} is missing", path.display()))
                .with_details(err.details)
        } else {
            err
        }
    })
}

/// Reads a file that may legitimately be absent.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::from_io(format!("system_info: reading {}", path.display()), &e)),
    }
}

fn unparsable(file: &str) -> Error {
    Error::new(ErrorCode::ToolFailed, format!("system_info: /proc/{file} is not in the expected format"))
        .with_details(json!({ "file": format!("/proc/{file}") }))
}

/// Sizes each mount with `statvfs`, skipping those that cannot be read or have no blocks.
fn disks(mounts: &str) -> Vec<Disk> {
    let mut out = Vec::new();
    for m in parse_mounts(mounts) {
        // An unreadable mount (permission, stale NFS handle) is left out rather than failing
        // the whole call: the other facts are still true.
        let Ok(st) = rustix::fs::statvfs(m.mount.as_str()) else {
            tracing::debug!(mount = %m.mount, "system_info: statvfs failed; mount skipped");
            continue;
        };
        if st.f_blocks == 0 {
            continue;
        }
        let unit = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
        out.push(Disk {
            mount: m.mount,
            fs_type: m.fs_type,
            total_bytes: st.f_blocks.saturating_mul(unit),
            available_bytes: st.f_bavail.saturating_mul(unit),
            used_bytes: st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(unit),
        });
    }
    out
}

/// `PRETTY_NAME` from os-release text, unquoted.
pub(crate) fn parse_os_release(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = unquote(value);
        (!value.is_empty()).then_some(value)
    })
}

/// Undoes os-release's shell-style quoting: `"…"` with `\` escapes, or `'…'` verbatim.
fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let inner = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since boot: the first field of `/proc/uptime`.
pub(crate) fn parse_uptime(text: &str) -> Option<f64> {
    let v: f64 = text.split_whitespace().next()?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// The first three fields of `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<Load> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0));
    Some(Load { one: it.next()??, five: it.next()??, fifteen: it.next()?? })
}

/// What `/proc/cpuinfo` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuInfo {
    /// Number of `processor` entries (0 if the format has none).
    count: u64,
    /// The first model line found.
    model: Option<String>,
}

/// Counts `processor` lines and finds the model name; the model key differs by architecture
/// (`model name` on x86, `Hardware`/`Model` on some ARM boards, `cpu model` on MIPS, `cpu` on POWER).
pub(crate) fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut count = 0;
    let mut models: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            count += 1;
        } else if !value.is_empty() {
            models.entry(key).or_insert(value);
        }
    }
    let model = ["model name", "cpu model", "Hardware", "Model", "cpu", "uarch"]
        .iter()
        .find_map(|k| models.get(k))
        .map(|m| (*m).to_owned());
    CpuInfo { count, model }
}

/// Memory and swap from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemInfo {
    memory: Memory,
    swap: Swap,
}

/// Parses `/proc/meminfo` (values in kB, which the kernel means as KiB). `MemTotal` is
/// required; `MemAvailable` (absent before Linux 3.14) falls back to free + buffers + cached.
pub(crate) fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut fields: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(n)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match parts.next() {
            Some("kB") => n.saturating_mul(1024),
            None => n, // counts such as HugePages_Total have no unit
            Some(_) => continue,
        };
        fields.insert(key.trim(), bytes);
    }
    let get = |k: &str| fields.get(k).copied();
    let total = get("MemTotal")?;
    let available = get("MemAvailable")
        .or_else(|| {
            Some(get("MemFree")?.saturating_add(get("Buffers").unwrap_or(0)).saturating_add(get("Cached").unwrap_or(0)))
        })?
        .min(total);
    Some(MemInfo {
        memory: Memory { total_bytes: total, available_bytes: available, used_bytes: total - available },
        swap: Swap { total_bytes: get("SwapTotal").unwrap_or(0), free_bytes: get("SwapFree").unwrap_or(0) },
    })
}

/// One line of `/proc/self/mounts` kept by [`parse_mounts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    device: String,
    mount: String,
    fs_type: String,
}

/// Kernel and memory filesystems that hold no disk space worth reporting.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// The real filesystems of `/proc/self/mounts`, one per device.
///
/// Pseudo filesystems are dropped. A device named by a path (`/dev/sda1`, `server:/export`)
/// mounted in several places (bind mounts, container files) is reported once, at its shortest
/// mount point; sources that are only a label (`overlay`, `none`) are not merged.
pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(device), Some(mount), Some(fs_type)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if PSEUDO_FS.contains(&fs_type) {
            continue;
        }
        let m = Mount { device: unescape_mount(device), mount: unescape_mount(mount), fs_type: fs_type.to_owned() };
        if m.device.contains('/') {
            if let Some(seen) = out.iter_mut().find(|o| o.device == m.device) {
                if m.mount.len() < seen.mount.len() {
                    *seen = m;
                }
                continue;
            }
        } else if out.iter().any(|o| o.mount == m.mount && o.device == m.device) {
            continue;
        }
        out.push(m);
    }
    out
}

/// Decodes the octal escapes (`\040` for a space) the kernel writes in mount fields.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = oct.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
mod tests {
    use super::*;
    use crate::house::House;
    use std::sync::Arc;

    use crate::contract::Contract;
    use crate::tools::ToolEnv;
    use crate::tools::file::Roots;

    fn ctx() -> ToolContext {
        ToolContext::new(Arc::new(ToolEnv::new(Roots::new::<&str>(&[]).unwrap())), House::Timmy, false, "t")
    }

    const MEMINFO: &str = "MemTotal:       24683656 kB\nMemFree:        24561964 kB\n\
        MemAvailable:   24465364 kB\nBuffers:             404 kB\nCached:            15456 kB\n\
        SwapCached:            0 kB\nSwapTotal:       2097148 kB\nSwapFree:        2000000 kB\n\
        HugePages_Total:       0\nHugepagesize:       2048 kB\n";

    /// Proves meminfo kB values become bytes (×1024) and used = total − available.
    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.memory.total_bytes, 24_683_656 * 1024);
        assert_eq!(m.memory.available_bytes, 24_465_364 * 1024);
        assert_eq!(m.memory.used_bytes, (24_683_656 - 24_465_364) * 1024);
        assert_eq!(m.swap, Swap { total_bytes: 2_097_148 * 1024, free_bytes: 2_000_000 * 1024 });
    }

    /// Proves a pre-3.14 meminfo without MemAvailable falls back to free + buffers + cached,
    /// and that text without MemTotal is refused rather than reported as zero.
    #[test]
    fn meminfo_without_available_falls_back_and_without_total_fails() {
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 30 kB\n";
        let m = parse_meminfo(old).unwrap();
        assert_eq!(m.memory.available_bytes, 150 * 1024);
        assert_eq!(m.swap, Swap { total_bytes: 0, free_bytes: 0 });
        assert_eq!(parse_meminfo("MemFree: 100 kB\n"), None);
    }

    /// Proves uptime and loadavg take the right fields and reject garbage.
    #[test]
    fn uptime_and_loadavg_are_parsed() {
        assert_eq!(parse_uptime("3085.47 6142.45\n"), Some(3085.47));
        assert_eq!(parse_uptime("soon"), None);
        let l = parse_loadavg("0.52 1.25 2.00 3/812 29541\n").unwrap();
        assert_eq!(l, Load { one: 0.52, five: 1.25, fifteen: 2.0 });
        assert_eq!(parse_loadavg("0.5 1.0\n"), None);
    }

    /// Proves processors are counted and the model found on x86 and on ARM-style cpuinfo.
    #[test]
    fn cpuinfo_counts_processors_and_finds_the_model() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n\n\
                   processor\t: 1\nmodel name\t: AMD EPYC\n\n";
        assert_eq!(parse_cpuinfo(x86), CpuInfo { count: 2, model: Some("AMD EPYC".into()) });
        let arm = "processor\t: 0\nBogoMIPS\t: 108.00\n\nprocessor\t: 1\n\nprocessor\t: 2\n\n\
                   processor\t: 3\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(parse_cpuinfo(arm), CpuInfo { count: 4, model: Some("BCM2835".into()) });
        assert_eq!(parse_cpuinfo(""), CpuInfo { count: 0, model: None });
    }

    /// Proves PRETTY_NAME is unquoted in its double-, single- and unquoted forms, and that a
    /// file without it yields nothing.
    #[test]
    fn os_release_pretty_name_is_unquoted() {
        let deb = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n";
        assert_eq!(parse_os_release(deb).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(parse_os_release("PRETTY_NAME='Alpine Linux v3.20'\n").as_deref(), Some("Alpine Linux v3.20"));
        assert_eq!(parse_os_release("PRETTY_NAME=Arch\n").as_deref(), Some("Arch"));
        assert_eq!(parse_os_release("PRETTY_NAME=\"say \\\"hi\\\"\"\n").as_deref(), Some("say \"hi\""));
        assert_eq!(parse_os_release("NAME=x\n"), None);
    }

    /// Proves pseudo filesystems are dropped, bind mounts of one device are merged at the
    /// shortest mount point, overlays are kept apart, and `\040` decodes to a space.
    #[test]
    fn mounts_keep_real_filesystems_once_each() {
        let mounts = "proc /proc proc rw,relatime 0 0\n\
            sysfs /sys sysfs rw 0 0\n\
            devtmpfs /dev devtmpfs rw 0 0\n\
            tmpfs /dev/shm tmpfs rw 0 0\n\
            cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n\
            cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
            /dev/vda1 /etc/hosts ext4 rw 0 0\n\
            /dev/vda1 / ext4 rw 0 0\n\
            /dev/vdb /mnt/my\\040data xfs rw 0 0\n\
            overlay /var/lib/docker/overlay2/a/merged overlay rw 0 0\n\
            overlay /var/lib/docker/overlay2/b/merged overlay rw 0 0\n";
        let parsed = parse_mounts(mounts);
        let got: Vec<(&str, &str, &str)> =
            parsed.iter().map(|m| (m.device.as_str(), m.mount.as_str(), m.fs_type.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("/dev/vda1", "/", "ext4"),
                ("/dev/vdb", "/mnt/my data", "xfs"),
                ("overlay", "/var/lib/docker/overlay2/a/merged", "overlay"),
                ("overlay", "/var/lib/docker/overlay2/b/merged", "overlay"),
            ]
        );
    }

    /// Proves the live output agrees with the kernel's own files: CPU count with the
    /// `processor` lines, memory total with MemTotal×1024, hostname and kernel release.
    #[tokio::test]
    async fn live_output_agrees_with_proc() {
        let out = SystemInfo::run(&ctx(), Input::default()).await.unwrap();
        let read = |p: &str| std::fs::read_to_string(p).unwrap();
        let processors =
            read("/proc/cpuinfo").lines().filter(|l| l.split(':').next().map(str::trim) == Some("processor")).count();
        assert_eq!(out.cpu.count, processors as u64);
        let mem_total_kb: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(out.memory.total_bytes, mem_total_kb * 1024);
        assert!(out.memory.used_bytes + out.memory.available_bytes == out.memory.total_bytes);
        assert_eq!(out.hostname, read("/proc/sys/kernel/hostname").trim());
        assert_eq!(out.kernel, read("/proc/sys/kernel/osrelease").trim());
        assert!(out.uptime_secs > 0.0);
        assert!(!out.disks.is_empty(), "the root filesystem at least");
        for d in &out.disks {
            assert!(d.total_bytes >= d.used_bytes && d.total_bytes >= d.available_bytes, "{d:?}");
        }
    }

    /// Proves the live output validates against the tool's own output schema, with and
    /// without disks, and that `{}` and `include_disks` are the accepted inputs.
    #[tokio::test]
    async fn live_output_matches_the_contract() {
        let contract = Contract::new(SystemInfo::spec()).unwrap();
        contract.validate_input(&json!({})).unwrap();
        contract.validate_input(&json!({"include_disks": false})).unwrap();
        assert!(contract.validate_input(&json!({"disks": false})).is_err());
        for include_disks in [true, false] {
            let out = SystemInfo::run(&ctx(), Input { include_disks }).await.unwrap();
            assert_eq!(out.disks.is_empty(), !include_disks);
            contract.validate_output(&serde_json::to_value(out).unwrap()).unwrap();
        }
    }

    /// Proves an empty argument object deserialises with disks included by default.
    #[test]
    fn empty_input_includes_disks() {
        let i: Input = serde_json::from_value(json!({})).unwrap();
        assert!(i.include_disks);
        assert!(serde_json::from_value::<Input>(json!({"other": 1})).is_err());
    }

    /// Proves a host without /proc is reported as unsupported (E3007), not as a missing target.
    #[test]
    fn missing_proc_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let err = collect(dir.path(), false).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported, "{err}");
    }
}
