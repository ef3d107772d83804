//! A loopback HTTP/1.1 target for effects that must happen once: it counts the POSTs it
//! receives, in all and per path, so a test can tell how often a call reached it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A loopback HTTP/1.1 server counting the POSTs it received (counted when the request has
/// arrived, before answering); a path starting `/slow` is answered after `hold`. Stopped and
/// joined on drop.
pub struct Target {
    /// Its port.
    pub port: u16,
    posts: Arc<AtomicUsize>,
    by_path: Arc<Mutex<BTreeMap<String, usize>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Target {
    /// Starts serving on 127.0.0.1 (a free port); a path starting `/slow` is held `hold`.
    pub fn start(hold: Duration) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (posts, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let by_path: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let (counted, stopping, paths) = (posts.clone(), stop.clone(), by_path.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (counted, stopping, paths) = (counted.clone(), stopping.clone(), paths.clone());
                        std::thread::spawn(move || serve(stream, &counted, &paths, &stopping, hold));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Target { port, posts, by_path, stop, thread: Some(thread) }
    }

    /// POSTs received so far.
    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }

    /// POSTs received so far, per path.
    pub fn posts_by_path(&self) -> BTreeMap<String, usize> {
        self.by_path.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (headers, then `Content-Length` bytes; bounded in size and time), counts
/// it if it is a POST, and answers 200.
fn serve(
    mut s: TcpStream,
    posts: &AtomicUsize,
    paths: &Mutex<BTreeMap<String, usize>>,
    stop: &AtomicBool,
    hold: Duration,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 && buf.len() < 1 << 20 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length.min(1 << 20) {
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    if head.starts_with("POST ") {
        posts.fetch_add(1, Ordering::SeqCst);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        *paths.lock().unwrap_or_else(PoisonError::into_inner).entry(path).or_default() += 1;
    }
    if head.split_whitespace().nth(1).is_some_and(|p| p.starts_with("/slow")) {
        let until = Instant::now() + hold;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\nreceived",
    );
}
