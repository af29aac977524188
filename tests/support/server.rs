//! Starting the real server: in-process on an ephemeral port, or as the built binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use headless_dns::config::Config;

/// A server started in this process, serving manifests from a temporary directory.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
    running: Option<headless_dns::Running>,
}

impl TestServer {
    /// Writes `yaml` to a manifest file and starts a server on 127.0.0.1:0 with default flags.
    pub async fn start(yaml: &str) -> TestServer {
        Self::start_with(yaml, |_| {}).await
    }

    /// Like [`TestServer::start`], letting the test adjust the configuration.
    pub async fn start_with(yaml: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("cluster.yaml");
        std::fs::write(&manifest, yaml).unwrap();
        let mut config = Config::for_file(&manifest, "127.0.0.1:0".parse().unwrap());
        if let Some(opts) = config.file_options_mut() {
            opts.poll_interval = Duration::from_millis(20);
            opts.settle = Duration::from_millis(60);
        }
        adjust(&mut config);
        let running = headless_dns::start(config).await.expect("server starts");
        let addr = running.dns_addrs()[0];
        let deadline = Instant::now() + Duration::from_secs(5);
        while !running.index().is_ready() {
            assert!(Instant::now() < deadline, "server did not become ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TestServer { addr, dir, manifest, running: Some(running) }
    }

    pub fn index(&self) -> &std::sync::Arc<headless_dns::index::Index> {
        self.running.as_ref().unwrap().index()
    }

    /// The HTTP endpoints' address, when the configuration enabled them.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().unwrap().http_addr()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// The built `headless-dns` binary, running `serve` with the given flags.
pub struct BinaryServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: mpsc::Receiver<String>,
    /// The log lines up to the "listening" one (what a file source warned about as it loaded).
    pub startup_logs: Vec<String>,
}

impl BinaryServer {
    /// Starts the binary and waits for its "listening" log line (the address it bound).
    // The child is killed and reaped by `Drop` once it is wrapped; before that, a missing log line
    // panics the test, which ends the process group anyway.
    #[allow(clippy::zombie_processes)]
    /// Without an explicit `--upstream`, forwarding is off (`--upstream none`): a test must never
    /// send queries to the machine's own resolvers.
    pub fn start(args: &[&str]) -> BinaryServer {
        let mut args = args.to_vec();
        if !args.contains(&"--upstream") && args.first() == Some(&"serve") {
            args.extend(["--upstream", "none"]);
        }
        let args = &args[..];
        let mut child = Command::new(env!("CARGO_BIN_EXE_headless-dns"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut startup_logs = Vec::new();
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no 'listening' line from headless-dns {args:?}"));
            eprintln!("[server] {line}");
            if line.contains("listening (udp, tcp)")
                && let Some(addr) = listen_addr(&line)
            {
                return BinaryServer { child, addr, stderr: rx, startup_logs };
            }
            startup_logs.push(line);
        }
    }

    /// `serve` on the shipped example (`deploy/examples/cluster.yaml`) with `extra` flags; unless
    /// they say otherwise, on 127.0.0.1:0 with HTTP off.
    pub fn example(extra: &[&str]) -> BinaryServer {
        let source = format!("file:{}", example_manifest().display());
        let mut args = vec!["serve", "--source", &source];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--http") {
            args.extend(["--http", "none"]);
        }
        args.extend_from_slice(extra);
        BinaryServer::start(&args)
    }

    /// `serve --source file:<manifest>` on 127.0.0.1:0 with HTTP off, and `extra` flags.
    pub fn file(manifest: &Path, extra: &[&str]) -> BinaryServer {
        let source = format!("file:{}", manifest.display());
        let mut args = vec!["serve", "--source", &source, "--listen", "127.0.0.1:0", "--http", "none"];
        args.extend_from_slice(extra);
        BinaryServer::start(&args)
    }

    /// `serve --source kube` with this kubeconfig, DNS and HTTP on 127.0.0.1:0, and `extra` flags.
    pub fn kube(kubeconfig: &Path, extra: &[&str]) -> BinaryServer {
        let kubeconfig = kubeconfig.display().to_string();
        let mut args = vec![
            "serve",
            "--source",
            "kube",
            "--kubeconfig",
            &kubeconfig,
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        BinaryServer::start(&args)
    }

    /// The HTTP address, from the "http endpoints" log line (which follows the DNS one).
    pub fn http_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("http endpoints", Duration::from_secs(10)).expect("an http endpoints log line");
        listen_addr(&line).expect("an address in the http log line")
    }

    /// Every log line received so far that has not been read yet.
    pub fn drain_logs(&self) -> Vec<String> {
        self.stderr.try_iter().inspect(|l| eprintln!("[server] {l}")).collect()
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            eprintln!("[server] {line}");
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a "listening" log line, text (`addr=127.0.0.1:53`) or JSON (`"addr":"…"`).
fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("addr=").nth(1).or_else(|| line.split("\"addr\":\"").nth(1))?;
    rest.split(|c: char| c.is_whitespace() || c == '"').next()?.parse().ok()
}

/// Polls `check` every 10 ms for up to 10 s.
pub fn wait_until(check: impl FnMut() -> bool) {
    eventually("condition", Duration::from_secs(10), check)
}

/// Polls `check` every 10 ms until it holds; fails the test, naming `what`, after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`], with connection errors (nothing listening yet) as values.
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The example manifest shipped in the repo.
pub fn example_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/cluster.yaml")
}

/// Replaces a file the way `mv` into place does (atomic rename).
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
