//! The system's own stub resolver (glibc, through `getent`) resolving short names through a Pod's
//! search path, against the real binary, inside a network namespace the test creates (so port 53
//! on its loopback is ours, and /etc/resolv.conf is replaced only inside it).
//! Needs root, `unshare` and `ip` (util-linux, iproute2); skipped without them, except in CI.

mod support;

use std::process::Command;

use support::dns::require_tool;
use support::server::example_manifest;

const POD_RESOLV_CONF: &str = "nameserver 127.0.0.1\n\
search default.svc.cluster.local svc.cluster.local cluster.local\n\
options ndots:5 timeout:1 attempts:2\n";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

#[test]
fn glibc_resolves_short_names_through_the_search_path() {
    if !(require_tool("unshare") && require_tool("ip") && require_tool("getent")) {
        return;
    }
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIPPED: creating a network namespace needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, POD_RESOLV_CONF).unwrap();
    let script = format!(
        r#"set -e
ip link set lo up
mount --bind {resolv} /etc/resolv.conf
{bin} serve --source file:{manifest} --listen 127.0.0.1:53 --http none --upstream none --log-level warn &
server=$!
trap 'kill $server' EXIT
for i in $(seq 1 100); do getent hosts dns-version.cluster.local >/dev/null 2>&1 && break; sleep 0.1; done
echo "web-0.nginx: $(getent ahosts web-0.nginx | awk '{{print $1}}' | sort -u | tr '\n' ' ')"
echo "web-1.nginx.default: $(getent hosts web-1.nginx.default | awk '{{print $1, $2}}')"
echo "nginx: $(getent ahosts nginx | awk '{{print $1}}' | sort -u | tr '\n' ' ')"
echo "api: $(getent hosts api | awk '{{print $1, $2}}')"
echo "missing: $(getent hosts web-9.nginx || echo not-found)"
"#,
        resolv = resolv.display(),
        bin = env!("CARGO_BIN_EXE_headless-dns"),
        manifest = example_manifest().display(),
    );
    let out = Command::new("unshare").args(["--net", "--mount", "sh", "-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // `ahosts` asks A and AAAA (AF_UNSPEC): the AAAA is NODATA, never NXDOMAIN, so the IPv4
    // answer stands. (`ahostsv4` would resolve nothing here: AI_ADDRCONFIG sees no non-loopback
    // IPv4 address in the namespace.)
    let expect = [
        "web-0.nginx: 10.244.1.5 ",
        "web-1.nginx.default: 10.244.2.7 web-1.nginx.default.svc.cluster.local",
        "nginx: 10.244.1.5 10.244.2.7 ",
        "api: 10.96.0.20 api.default.svc.cluster.local",
        "missing: not-found",
    ];
    for line in expect {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}\n{stderr}");
    }
}
