//! A fleet of real `uni-wizardd` processes on loopback, for the cross-process tests.
//!
//! [`Fleet::start`] writes one config per house into a temp dir (ports picked free on
//! 127.0.0.1, tokens random, each house its own state directory and file root, one scrape
//! token for every node's `/metrics` and `/triage/status`; every house's `http_endpoint` set,
//! so `uni-wizard status` reads every node), starts each
//! house as its own process, and waits (bounded) until every one answers `/health`. Dropping
//! the fleet kills every process it started; [`Node::kill`] and [`Node::start`] stop and start
//! one. Nothing here mocks a daemon: the processes are the binaries an operator runs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The four houses, Timmy first.
pub const HOUSES: [&str; 4] = ["timmy", "allegro", "ezra", "bezalel"];

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range: a daemon restarted by a
/// test binds its port again, and a port from the ephemeral range may meanwhile have become the
/// local end of some other process's outgoing connection ("Address already in use").
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|n| n.parse::<u16>().ok()))
        .unwrap_or(32768);
    // Start somewhere random per test process, then walk: parallel test binaries rarely meet.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = low.saturating_sub(10_000).max(1);
    let _ =
        NEXT.compare_exchange(0, (std::process::id() % u32::from(span)) as u16 + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let port = 10_000 + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A random token of 32 hex digits.
pub fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// One house's process and its addresses.
pub struct Node {
    /// The house.
    pub house: String,
    /// gRPC `host:port`.
    pub grpc: String,
    /// HTTP `host:port`.
    pub http: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its state directory (`worker.library.home`).
    pub home: PathBuf,
    /// Its file root.
    pub root: PathBuf,
    /// Its auth token.
    pub token: String,
    /// The bearer token of its `/metrics` and `/triage/status` (`http.metrics_token_file`).
    pub metrics_token: String,
    /// The `RUST_LOG` filter it starts with (`info`; the lag bench adds its stage marks).
    pub rust_log: String,
    /// More environment for the process (the variables of a node's env file).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// A node run from files made elsewhere (`uni-wizard fleet init`), not started yet: its
    /// config, its addresses, its state directory (also its `root`), its token, its scrape
    /// token and the environment its config expands.
    #[allow(clippy::too_many_arguments)]
    pub fn from_files(
        house: &str,
        config: PathBuf,
        grpc: String,
        http: String,
        home: PathBuf,
        token: String,
        metrics_token: String,
        env: Vec<(String, String)>,
    ) -> Node {
        Node {
            house: house.to_owned(),
            grpc,
            http,
            config,
            root: home.clone(),
            home,
            token,
            metrics_token,
            rust_log: "info".into(),
            env,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        }
    }

    /// Starts (or restarts) the process and waits until `/health` answers.
    ///
    /// # Panics
    /// When it does not come up within 20 s; the panic shows its log.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.house);
        let mut child = Command::new(crate::bin("uni-wizardd"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("uni-wizardd starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&self.http, "/health").is_none() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited with {status} before serving:\n{}", self.house, self.log());
            }
            assert!(Instant::now() < deadline, "{} did not serve within 20 s:\n{}", self.house, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    ///
    /// # Panics
    /// When the process does not exit within 15 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not exit within 15 s of SIGTERM:\n{}", self.house, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Its `/health` JSON.
    pub fn health(&self) -> Option<serde_json::Value> {
        http_get(&self.http, "/health").and_then(|(_, body)| serde_json::from_str(&body).ok())
    }

    /// A GET of a guarded route (`/metrics`, `/triage/status`) with the scrape token, as
    /// Prometheus sends it.
    pub fn scrape(&self, path: &str) -> Option<(u16, String)> {
        http_get_bearer(&self.http, path, Some(&self.metrics_token))
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (reaping it if so); its status then.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Four houses, each its own process.
pub struct Fleet {
    /// The temp dir holding configs, state and roots.
    pub dir: tempfile::TempDir,
    /// The nodes by house name.
    pub nodes: BTreeMap<String, Node>,
    /// The scrape token every node's guarded HTTP routes want.
    pub metrics_token: String,
}

/// Extra YAML appended to one house's config (router settings, TLS...).
pub type Extra<'a> = &'a dyn Fn(&str) -> String;

impl Fleet {
    /// Writes the configs of `houses` (a subset of [`HOUSES`]) without starting anything.
    ///
    /// # Panics
    /// When the temp dir cannot be written.
    pub fn configure(houses: &[&str], extra: Extra<'_>) -> Fleet {
        Fleet::configure_with_http(houses, extra, "")
    }

    /// As [`Fleet::configure`], with `http` (YAML flow-mapping entries such as
    /// `header_timeout_ms: 300`) added to every node's `http:` section.
    ///
    /// # Panics
    /// When the temp dir cannot be written.
    pub fn configure_with_http(houses: &[&str], extra: Extra<'_>, http: &str) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        // One scrape token for the fleet, in a file as Prometheus' credentials_file would be.
        let metrics_token = format!("metrics-{}", token());
        let token_file = dir.path().join("metrics.token");
        std::fs::write(&token_file, format!("{metrics_token}\n")).expect("metrics token");
        let http = if http.is_empty() { String::new() } else { format!(", {http}") };
        // Timmy's key pair, made by the real CLI: Timmy's sovereign role signs with the secret
        // half, every worker checks remote approvals with the public half.
        let keys = dir.path().join("keys");
        let made =
            Command::new(crate::bin("uni-wizard")).arg("keygen").arg("--out").arg(&keys).output().expect("keygen");
        assert!(made.status.success(), "keygen: {}", String::from_utf8_lossy(&made.stderr));
        let ports: BTreeMap<&str, (u16, u16)> = houses.iter().map(|h| (*h, (free_port(), free_port()))).collect();
        let tokens: BTreeMap<&str, String> = houses.iter().map(|h| (*h, format!("{h}-{}", token()))).collect();
        let mut fleet_yaml = String::from("houses:\n");
        for (i, h) in houses.iter().enumerate() {
            fleet_yaml.push_str(&format!(
                "  {h}: {{endpoint: \"127.0.0.1:{}\", http_endpoint: \"127.0.0.1:{}\", auth_token: \"{}\", role: {h}, priority: {}}}\n",
                ports[h].0,
                ports[h].1,
                tokens[h],
                i + 1
            ));
        }
        let mut nodes = BTreeMap::new();
        for h in houses {
            let home = dir.path().join(h).join("home");
            let root = dir.path().join(h).join("root");
            std::fs::create_dir_all(&home).expect("home");
            std::fs::create_dir_all(&root).expect("root");
            std::fs::write(root.join("hello.txt"), format!("hello from {h}\n")).expect("root file");
            let config = dir.path().join(h).join("node.yaml");
            let text = format!(
                "house: {h}\nnode: {h}-node\nplaintext_loopback: true\nlisten: {{grpc: \"127.0.0.1:{}\", http: \"127.0.0.1:{}\"}}\n\
                 health: {{interval_ms: 200, timeout_ms: 300, down_after: 2}}\n\
                 shutdown_grace_ms: 5000\n\
                 http: {{metrics_token_file: \"{}\"{}}}\n\
                 sovereign: {{key_file: {}}}\n\
                 worker:\n  timmy_pubkey: {}\n  approval_wait_ms: 20000\n  library:\n    home: {}\n    file_roots: [{}]\n    intelligence: {{enabled: false}}\n{}{}",
                ports[h].0,
                ports[h].1,
                token_file.display(),
                http,
                keys.join("timmy.key").display(),
                keys.join("timmy.pub").display(),
                home.display(),
                root.display(),
                extra(h),
                fleet_yaml
            );
            std::fs::write(&config, text).expect("config");
            nodes.insert(
                (*h).to_owned(),
                Node {
                    house: (*h).to_owned(),
                    grpc: format!("127.0.0.1:{}", ports[h].0),
                    http: format!("127.0.0.1:{}", ports[h].1),
                    config,
                    home,
                    root,
                    token: tokens[h].clone(),
                    metrics_token: metrics_token.clone(),
                    rust_log: "info".into(),
                    env: Vec::new(),
                    child: None,
                    log: Arc::new(Mutex::new(String::new())),
                },
            );
        }
        Fleet { dir, nodes, metrics_token }
    }

    /// Configures and starts `houses`.
    pub fn start(houses: &[&str], extra: Extra<'_>) -> Fleet {
        let mut f = Fleet::configure(houses, extra);
        for n in f.nodes.values_mut() {
            n.start();
        }
        f
    }

    /// Configures (as [`Fleet::configure_with_http`]) and starts `houses`.
    pub fn start_with_http(houses: &[&str], extra: Extra<'_>, http: &str) -> Fleet {
        let mut f = Fleet::configure_with_http(houses, extra, http);
        for n in f.nodes.values_mut() {
            n.start();
        }
        f
    }

    /// One node.
    ///
    /// # Panics
    /// When the house is not in the fleet.
    pub fn node(&mut self, house: &str) -> &mut Node {
        self.nodes.get_mut(house).unwrap_or_else(|| panic!("no {house} in the fleet"))
    }

    /// `uni-wizard approve --json --sovereign <timmy> ARGS` as Timmy; its JSON.
    ///
    /// # Panics
    /// When it fails or prints no JSON.
    pub fn approve(&self, args: &[&str]) -> serde_json::Value {
        let o = Command::new(crate::bin("uni-wizard"))
            .env("UNI_WIZARD_HOME", self.dir.path().join("cli-home"))
            .env("UNI_WIZARD_TOKEN", &self.nodes["timmy"].token)
            .args(["approve", "--json", "--sovereign", &self.nodes["timmy"].grpc])
            .args(args)
            .output()
            .expect("approve runs");
        let v = crate::json_stdout(&o);
        assert!(o.status.success(), "exit {:?}: {v}\n{}", o.status.code(), String::from_utf8_lossy(&o.stderr));
        v
    }

    /// Waits (bounded, 15 s) for a pending approval of `tool` asked by `house` at Timmy and
    /// returns it as `approve --list` shows it.
    ///
    /// # Panics
    /// When none appears in time.
    pub fn pending_approval(&self, house: &str, tool: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.approve(&["--list"]);
            let found =
                v["pending"].as_array().into_iter().flatten().find(|p| p["house"] == house && p["tool"] == tool);
            if let Some(p) = found {
                return p.clone();
            }
            assert!(Instant::now() < deadline, "no pending approval appeared: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded by `within`) until `watcher`'s `/health` shows `house` in `state`;
    /// returns how long that took.
    ///
    /// # Panics
    /// When it does not happen in time.
    pub fn wait_peer_state(&self, watcher: &str, house: &str, state: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let seen =
                self.nodes[watcher].health().and_then(|v| v["peers"][house]["state"].as_str().map(str::to_owned));
            if seen.as_deref() == Some(state) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{watcher} never saw {house} {state} within {within:?} (saw {seen:?})");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A plain HTTP/1.1 GET to `addr` (loopback); `(status, body)`, or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_bearer(addr, path, None)
}

/// [`http_get`] with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_bearer(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Some((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Writes `text` to `path` atomically (temp file + rename), as an editor would.
///
/// # Panics
/// When the file cannot be written.
pub fn rewrite(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}
