//! A real etcd cluster on loopback for the leadership tests (Debian's `etcd-server`).
//!
//! [`EtcdCluster::new`] picks free client and peer ports on 127.0.0.1 for N members (1 or 3)
//! and a fresh temp data directory for each; [`EtcdCluster::start_all`] starts them with the
//! timing `../shared/design/DEPENDENCIES.md` measured (`--heartbeat-interval 50
//! --election-timeout 500`, so 1 s leases are granted) and waits, bounded, until every member
//! answers `etcdctl endpoint health`. One member can be killed (SIGKILL), stopped (SIGTERM) and
//! started again on its data directory, or frozen (SIGSTOP) and thawed; dropping the cluster
//! kills every member. [`EtcdCluster::from_files`] runs members whose names, ports and
//! certificates were made elsewhere (`uni-wizard fleet init`), TLS for clients and peers. Under
//! `CI=true` a missing `etcd` or `etcdctl` fails the test; elsewhere [`EtcdCluster::new`]
//! returns `None` after saying why (the caller then skips).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::fleet::{free_port, http_get};

/// How long a member, or the whole cluster, may take to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// The TLS files of a cluster that serves clients over TLS and asks for their certificates
/// (`--client-cert-auth`), all from one CA: made for it ([`EtcdCluster::new_tls`]) or given
/// ([`EtcdCluster::from_files`]).
pub struct Tls {
    /// The CA of every member's and client's certificate.
    pub ca: PathBuf,
    /// A client certificate the members accept, and its key.
    pub client_cert: PathBuf,
    /// The key of `client_cert`.
    pub client_key: PathBuf,
    /// Whether the members speak TLS to each other too (and ask for each other's certificates).
    peer_tls: bool,
    _pki: Option<crate::pki::Pki>,
}

/// A member whose name, ports and certificate were made elsewhere ([`EtcdCluster::from_files`]).
pub struct MemberFiles {
    /// Its `--name`.
    pub name: String,
    /// Its client port on 127.0.0.1.
    pub client_port: u16,
    /// Its peer port on 127.0.0.1.
    pub peer_port: u16,
    /// Its certificate, for clients and peers alike.
    pub cert: PathBuf,
    /// The key of `cert`.
    pub key: PathBuf,
}

/// One member: its ports, data directory and process.
pub struct Member {
    /// Its name in the cluster (`m0`, `m1`, ...).
    pub name: String,
    /// Its client port (`http://127.0.0.1:<port>`).
    pub client_port: u16,
    /// Its peer port.
    pub peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    scheme: &'static str,
    /// Its certificate and key (a TLS cluster).
    cert: Option<(PathBuf, PathBuf)>,
}

impl Member {
    /// Its client URL (`https://` in a TLS cluster).
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    /// Whether its process is running (as far as this handle knows).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// N etcd members on loopback, killed on drop.
pub struct EtcdCluster {
    /// The temp dir holding every member's data directory.
    pub dir: tempfile::TempDir,
    /// The members, in order.
    pub members: Vec<Member>,
    initial_cluster: String,
    token: String,
    tls: Option<Tls>,
}

/// `n` free ports on 127.0.0.1 whose next ports are free too: etcd members' client ports,
/// each peer port being the next (as `fleet init` plans them). Both ports of a pair come from
/// [`free_port`]'s walk, so later calls of it in this process do not hand them out again.
///
/// # Panics
/// When no such pairs turn up in 100 tries.
pub fn free_port_pairs(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    let mut last = free_port();
    for _ in 0..100 {
        if ports.len() == n {
            break;
        }
        let next = free_port();
        if next == last.wrapping_add(1) {
            ports.push(last);
            last = free_port();
        } else {
            last = next;
        }
    }
    assert_eq!(ports.len(), n, "no {n} pairs of free neighbouring ports on 127.0.0.1 in 100 tries");
    ports
}

/// Whether `etcd` and `etcdctl` are installed; under CI=true their absence panics.
fn installed() -> bool {
    for (bin, package) in [("etcd", "etcd-server"), ("etcdctl", "etcd-client")] {
        if Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            crate::missing(&format!("`{bin}` (Debian package {package})"));
            return false;
        }
    }
    true
}

impl EtcdCluster {
    /// A cluster of `n` members with ports and data directories chosen, none started yet
    /// (`None`: etcd is not installed and this is not CI; the reason was printed).
    ///
    /// # Panics
    /// Under CI=true when etcd or etcdctl is missing; when `n` is 0.
    pub fn new(n: usize) -> Option<EtcdCluster> {
        assert!(n > 0, "a cluster has at least one member");
        let members = (0..n).map(|i| (format!("m{i}"), free_port(), free_port(), None)).collect();
        EtcdCluster::make(members, None)
    }

    /// Like [`EtcdCluster::new`], but its members serve clients over TLS only and ask for a
    /// client certificate, both from a CA made here ([`EtcdCluster::tls`] has the files).
    ///
    /// # Panics
    /// As [`EtcdCluster::new`].
    pub fn new_tls(n: usize) -> Option<EtcdCluster> {
        let pki = crate::pki::Pki::new();
        let ca = crate::pki::Pki::ca("etcd test CA");
        let (server_cert, server_key) = pki.leaf(&ca, "etcd-server");
        let (client_cert, client_key) = pki.leaf(&ca, "etcd-client");
        let ca = pki.write_ca(&ca, "etcd-ca");
        assert!(n > 0, "a cluster has at least one member");
        let members = (0..n)
            .map(|i| (format!("m{i}"), free_port(), free_port(), Some((server_cert.clone(), server_key.clone()))))
            .collect();
        EtcdCluster::make(members, Some(Tls { ca, client_cert, client_key, peer_tls: false, _pki: Some(pki) }))
    }

    /// A TLS cluster of `members`, whose names, ports and certificates were made elsewhere
    /// (`fleet init`'s `DIR/etcd/<member>/`), none started yet: clients and peers over TLS,
    /// each asked for a certificate of `ca` (`--client-cert-auth`, `--peer-client-cert-auth`);
    /// `client_cert` and `client_key` are what the health checks show.
    ///
    /// # Panics
    /// As [`EtcdCluster::new`].
    pub fn from_files(
        ca: PathBuf,
        client_cert: PathBuf,
        client_key: PathBuf,
        members: Vec<MemberFiles>,
    ) -> Option<EtcdCluster> {
        assert!(!members.is_empty(), "a cluster has at least one member");
        let members =
            members.into_iter().map(|m| (m.name, m.client_port, m.peer_port, Some((m.cert, m.key)))).collect();
        EtcdCluster::make(members, Some(Tls { ca, client_cert, client_key, peer_tls: true, _pki: None }))
    }

    /// The TLS files of a cluster made by [`EtcdCluster::new_tls`].
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The cluster of `members` (name, client port, peer port, certificate and key).
    #[allow(clippy::type_complexity)]
    fn make(members: Vec<(String, u16, u16, Option<(PathBuf, PathBuf)>)>, tls: Option<Tls>) -> Option<EtcdCluster> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<Member> = members
            .into_iter()
            .map(|(name, client_port, peer_port, cert)| Member {
                data_dir: dir.path().join(&name),
                name,
                client_port,
                peer_port,
                child: None,
                log: Arc::default(),
                scheme: if tls.is_some() { "https" } else { "http" },
                cert,
            })
            .collect();
        let peer_scheme = if tls.as_ref().is_some_and(|t| t.peer_tls) { "https" } else { "http" };
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={peer_scheme}://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("uw-test-{}", crate::fleet::token());
        Some(EtcdCluster { dir, members, initial_cluster, token, tls })
    }

    /// [`EtcdCluster::new`] and [`EtcdCluster::start_all`].
    ///
    /// # Panics
    /// As both.
    pub fn start(n: usize) -> Option<EtcdCluster> {
        let mut c = EtcdCluster::new(n)?;
        c.start_all();
        Some(c)
    }

    /// Starts every member not running and waits until all are healthy.
    ///
    /// # Panics
    /// When a member exits or the cluster is not healthy within 20 s; the panic shows the logs.
    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if !self.members[i].running() {
                self.spawn(i);
            }
        }
        self.wait_healthy((0..self.members.len()).collect());
    }

    /// Every member's client URL, running or not (what a client is configured with).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// SIGKILLs member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes member `i` (SIGSTOP): its process and sockets stay, and it answers nothing,
    /// as a hung host or a one-way partition would. Thaw it with [`EtcdCluster::thaw`]; a
    /// frozen member is killed on drop like any other.
    ///
    /// # Panics
    /// When it is not running or `kill` fails.
    pub fn freeze(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a frozen member run again (SIGCONT).
    ///
    /// # Panics
    /// When it is not running or `kill` fails.
    pub fn thaw(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let child = self.members[i].child.as_ref().expect("the member runs");
        let sent = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill runs");
        assert!(sent.success(), "kill {signal} {}", self.members[i].name);
    }

    /// Stops member `i` with SIGTERM, waiting (bounded) for it to exit; SIGKILL after 10 s.
    pub fn stop(&mut self, i: usize) {
        let Some(mut c) = self.members[i].child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts member `i` again on its data directory (it rejoins the cluster) and waits until
    /// it is healthy, if a quorum of members runs.
    ///
    /// # Panics
    /// When it is running, exits, or (with a quorum running) is not healthy within 20 s.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.members[i].running(), "{} is running", self.members[i].name);
        self.spawn(i);
        let running = self.members.iter().filter(|m| m.running()).count();
        if running > self.members.len() / 2 {
            self.wait_healthy(vec![i]);
        }
    }

    /// The member that is etcd's raft leader now, if one says so (its `/metrics`).
    pub fn raft_leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            m.running()
                && http_get(&format!("127.0.0.1:{}", m.client_port), "/metrics")
                    .is_some_and(|(_, body)| body.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
        })
    }

    /// Every member's log, labelled (for panic messages).
    pub fn logs(&self) -> String {
        self.members.iter().map(|m| format!("--- etcd {}\n{}", m.name, m.log())).collect()
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let client = m.endpoint();
        let peer_tls = self.tls.as_ref().is_some_and(|t| t.peer_tls);
        let peer = format!("{}://127.0.0.1:{}", if peer_tls { "https" } else { "http" }, m.peer_port);
        let mut etcd = Command::new("etcd");
        if let (Some(t), Some((cert, key))) = (&self.tls, &m.cert) {
            etcd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
            etcd.arg("--trusted-ca-file").arg(&t.ca).arg("--client-cert-auth");
            if peer_tls {
                etcd.arg("--peer-cert-file").arg(cert).arg("--peer-key-file").arg(key);
                etcd.arg("--peer-trusted-ca-file").arg(&t.ca).arg("--peer-client-cert-auth");
            }
        }
        let mut child = etcd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcd starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = m.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
                // Bounded: the first 256 KiB of a member's log is enough to diagnose it.
                if l.len() < 256 * 1024 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        m.child = Some(child);
    }

    /// Waits until each member in `which` answers `etcdctl endpoint health`.
    fn wait_healthy(&mut self, which: Vec<usize>) {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        for i in which {
            loop {
                if let Some(status) = self.members[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!("etcd {} exited with {status}:\n{}", self.members[i].name, self.logs());
                }
                let mut etcdctl = Command::new("etcdctl");
                if let Some(t) = &self.tls {
                    etcdctl
                        .arg("--cacert")
                        .arg(&t.ca)
                        .arg("--cert")
                        .arg(&t.client_cert)
                        .arg("--key")
                        .arg(&t.client_key);
                }
                let healthy = etcdctl
                    .args(["--endpoints", &self.members[i].endpoint(), "--command-timeout", "1s", "endpoint", "health"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if healthy {
                    break;
                }
                assert!(Instant::now() < deadline, "etcd was not healthy within {HEALTHY_WITHIN:?}:\n{}", self.logs());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
