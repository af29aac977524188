//! Knot DNS on loopback, as a real peer: an authoritative upstream for the forwarding tests, and a
//! secondary for the zone-transfer test.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::rr::RecordType;

use super::dns::query_message;
use super::server::wait_until;

/// A free loopback port (UDP and TCP), found by binding and releasing it.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// How many A records `big.example.test.` has in [`Knot::start`]'s zone.
pub const BIG_RECORDS: usize = 100;

/// A running `knotd` on 127.0.0.1, killed when dropped.
pub struct Knot {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Knot {
    /// Knot with one worker of each kind on a free port; `sections` (remotes, templates, zones)
    /// is written after the server and database sections, given the working directory.
    fn spawn(port: u16, sections: impl FnOnce(&Path) -> String) -> Knot {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = format!(
            "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
             database:\n  storage: {d}\n{}log:\n  - target: stderr\n    any: warning\n  - target: {d}/knot.log\n    any: info\n",
            sections(dir.path())
        );
        std::fs::write(dir.path().join("knot.conf"), config).unwrap();
        let child = Command::new("knotd")
            .args(["-c", &dir.path().join("knot.conf").display().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("knotd starts");
        Knot { child, addr: ([127, 0, 0, 1], port).into(), _dir: dir }
    }

    /// Knot authoritative for `example.test.`, once it answers.
    pub fn start() -> Knot {
        let knot = Knot::spawn(free_port(), |dir| {
            // `big` holds 100 A records (1,600 bytes of answer): more than 512 or 1232 bytes.
            let big: String = (1..=BIG_RECORDS).map(|i| format!("big IN A 198.51.100.{i}\n")).collect();
            std::fs::write(
                dir.join("example.test.zone"),
                "$ORIGIN example.test.\n$TTL 300\n\
                 @ IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
                 @ IN NS ns\nns IN A 127.0.0.1\nwww IN A 192.0.2.10\nwww IN AAAA 2001:db8::10\nalias IN CNAME www\n"
                    .to_string()
                    + &big,
            )
            .unwrap();
            let d = dir.display();
            format!(
                "template:\n  - id: default\n    storage: {d}\n    semantic-checks: off\n\
                 zone:\n  - domain: example.test\n    file: {d}/example.test.zone\n"
            )
        });
        let addr = knot.addr;
        wait_until(|| {
            super::dns::udp_raw(
                addr,
                &query_message("www.example.test.", RecordType::A, None).to_vec().unwrap(),
                Duration::from_millis(200),
            )
            .is_some()
        });
        knot
    }

    /// Knot as a secondary of `cluster.local`, pulling it from `primary` (not waited for).
    pub fn secondary(primary: SocketAddr) -> Knot {
        Knot::secondary_on(free_port(), primary)
    }

    /// [`Knot::secondary`] on a given port. It takes NOTIFY from the primary's address, and
    /// otherwise refreshes no sooner than hourly, so a quick update can only come from a NOTIFY.
    /// Loopback clients may AXFR its copy, to compare it with the primary's record for record.
    pub fn secondary_on(port: u16, primary: SocketAddr) -> Knot {
        Knot::secondary_of("cluster.local", port, primary)
    }

    /// [`Knot::secondary_on`] for the zone `zone`.
    pub fn secondary_of(zone: &str, port: u16, primary: SocketAddr) -> Knot {
        Knot::spawn(port, |dir| {
            let d = dir.display();
            format!(
                "remote:\n  - id: primary\n    address: {ip}@{}\n\
                 acl:\n  - id: notify-from-primary\n    address: {ip}\n    action: notify\n\
                 \x20 - id: transfer-to-loopback\n    address: 127.0.0.0/8\n    action: transfer\n\
                 template:\n  - id: default\n    storage: {d}\n\
                 zone:\n  - domain: {zone}\n    master: primary\n\
                 \x20   acl: [notify-from-primary, transfer-to-loopback]\n    refresh-min-interval: 3600\n",
                primary.port(),
                ip = primary.ip(),
            )
        })
    }
}

impl Knot {
    /// Knot's log (info and above) so far: transfers show as `AXFR, incoming` / `IXFR, incoming`.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("knot.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
