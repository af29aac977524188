//! BIND 9 (`named`) on loopback as a secondary of `cluster.local`, as a second real peer for the
//! zone-transfer tests.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::knot::free_port;

/// A running `named` on 127.0.0.1, killed when dropped.
pub struct Bind {
    pub child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Bind {
    /// `named` as a secondary of `cluster.local`, pulling it from `primary` (not waited for).
    /// It takes NOTIFY from the primary (BIND's default for its primaries), asks for IXFR once it
    /// holds a copy (also its default), and lets loopback clients AXFR its copy.
    pub fn secondary(primary: SocketAddr) -> Bind {
        Bind::secondary_on(free_port(), primary)
    }

    /// [`Bind::secondary`] on a given port.
    pub fn secondary_on(port: u16, primary: SocketAddr) -> Bind {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = format!(
            "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  session-keyfile \"{d}/session.key\";\n\
             \x20 managed-keys-directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
             \x20 recursion no;\n  dnssec-validation no;\n  notify no;\n  allow-transfer {{ 127.0.0.0/8; }};\n}};\n\
             controls {{ }};\n\
             logging {{\n  channel main {{ file \"{d}/named.log\"; severity info; print-category yes; }};\n\
             \x20 category default {{ main; }};\n}};\n\
             zone \"cluster.local\" {{\n  type secondary;\n  primaries port {} {{ {}; }};\n  file \"{d}/cluster.local.db\";\n}};\n",
            primary.port(),
            primary.ip(),
        );
        std::fs::write(dir.path().join("named.conf"), config).unwrap();
        let child = Command::new("named")
            .args(["-f", "-n", "1", "-c", &dir.path().join("named.conf").display().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("named starts");
        Bind { child, addr: ([127, 0, 0, 1], port).into(), dir }
    }

    /// named's log (info and above) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
