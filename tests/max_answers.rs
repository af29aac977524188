//! `--max-answers N`: a headless Service with hundreds of ready endpoints answers at most N
//! addresses, a different subset per query, spread so that every endpoint gets its share; the
//! answer fits in UDP without TC (clients without TCP fallback get a usable answer).
//!
//! `MAX_ANSWERS_QUERIES=100000 cargo test --test max_answers -- --nocapture` prints the spread
//! over more queries (the figure in benches/RESULTS.md).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{TIMEOUT, addresses, query_message, tcp, udp};
use support::server::{BinaryServer, eventually};

const NAME: &str = "big.default.svc.cluster.local.";
const ENDPOINTS: usize = 300;
const MAX: usize = 20;

/// A headless Service `big` with `ENDPOINTS` ready dual-stack endpoints, in slices of 100 per
/// family (as the EndpointSlice controller splits them). Returns the manifest and the addresses.
fn big_service() -> (String, BTreeSet<String>, BTreeSet<String>) {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None}\n",
    );
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for slice in 0..ENDPOINTS / 100 {
        for (family, addrs) in [("IPv4", &mut v4), ("IPv6", &mut v6)] {
            yaml.push_str(&format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: big-{family}-{slice}, namespace: default, labels: {{kubernetes.io/service-name: big}}}}\n\
                 addressType: {family}\nendpoints:\n"
            ));
            for i in slice * 100..(slice + 1) * 100 {
                let addr = if family == "IPv4" {
                    format!("10.1.{}.{}", i / 250, i % 250 + 1)
                } else {
                    format!("fd00::1:{i:x}")
                };
                yaml.push_str(&format!("- {{addresses: [\"{addr}\"]}}\n"));
                addrs.insert(addr);
            }
        }
    }
    (yaml, v4, v6)
}

fn start(dir: &tempfile::TempDir, yaml: &str, extra: &[&str]) -> BinaryServer {
    let manifest = dir.path().join("big.yaml");
    std::fs::write(&manifest, yaml).unwrap();
    let source = format!("file:{}", manifest.display());
    let mut args = vec!["serve", "--source", &source, "--listen", "127.0.0.1:0", "--http", "none"];
    args.extend_from_slice(extra);
    let server = BinaryServer::start(&args);
    // "listening" comes before the manifest is served (SERVFAIL until then).
    eventually("the Service to be served", Duration::from_secs(10), || {
        udp(server.addr, &query_message(NAME, RecordType::A, None)).metadata.response_code == ResponseCode::NoError
    });
    server
}

/// One stub resolver's socket: every query from the same address and port, as glibc sends its A
/// and AAAA queries (so they reach the same server worker, one after the other).
fn ask_on(sock: &UdpSocket, server: SocketAddr, rtype: RecordType) -> Message {
    let query = query_message(NAME, rtype, Some(1232));
    sock.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 65535];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("an answer within the timeout");
        let resp = Message::from_vec(&buf[..n]).expect("response decodes");
        if resp.metadata.id == query.metadata.id {
            return resp;
        }
    }
}

/// Per-address counts: how often each address was answered, and how often it came first.
#[derive(Default)]
struct Spread {
    answered: BTreeMap<String, usize>,
    first: BTreeMap<String, usize>,
}

impl Spread {
    fn add(&mut self, addrs: &[String]) {
        for a in addrs {
            *self.answered.entry(a.clone()).or_default() += 1;
        }
        *self.first.entry(addrs[0].clone()).or_default() += 1;
    }

    /// (min, max, mean) over `all` (an address never answered counts 0).
    fn range(counts: &BTreeMap<String, usize>, all: &BTreeSet<String>) -> (usize, usize, f64) {
        let of = |a: &String| counts.get(a).copied().unwrap_or(0);
        let total: usize = all.iter().map(of).sum();
        (all.iter().map(of).min().unwrap(), all.iter().map(of).max().unwrap(), total as f64 / all.len() as f64)
    }
}

#[test]
fn max_answers_spreads_every_endpoint_evenly_without_truncation() {
    let queries: usize = std::env::var("MAX_ANSWERS_QUERIES").ok().and_then(|q| q.parse().ok()).unwrap_or(3000);
    let (yaml, v4, v6) = big_service();
    let dir = tempfile::tempdir().unwrap();
    let max = MAX.to_string();
    let server = start(&dir, &yaml, &["--max-answers", &max]);

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut spread4, mut spread6) = (Spread::default(), Spread::default());
    for i in 0..queries {
        let (rtype, all, spread) =
            if i % 2 == 0 { (RecordType::A, &v4, &mut spread4) } else { (RecordType::AAAA, &v6, &mut spread6) };
        let resp = ask_on(&sock, server.addr, rtype);
        let m = &resp.metadata;
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert!(m.authoritative && !m.truncation, "AA, no TC: {m:?}");
        let addrs = addresses(&resp);
        let distinct: BTreeSet<String> = addrs.iter().cloned().collect();
        assert_eq!((addrs.len(), distinct.len()), (MAX, MAX), "{MAX} different addresses: {addrs:?}");
        assert!(distinct.is_subset(all), "only the Service's own endpoints: {addrs:?}");
        spread.add(&addrs);
    }

    for (family, spread, all) in [("A", &spread4, &v4), ("AAAA", &spread6, &v6)] {
        let (lo, hi, mean) = Spread::range(&spread.answered, all);
        let (first_lo, first_hi, first_mean) = Spread::range(&spread.first, all);
        println!(
            "{family}: {} queries, {MAX} of {ENDPOINTS}: each endpoint answered {lo}..{hi} times (mean {mean:.1}, \
             {:+.1}%..{:+.1}%), first {first_lo}..{first_hi} times (mean {first_mean:.1})",
            queries / 2,
            (lo as f64 / mean - 1.0) * 100.0,
            (hi as f64 / mean - 1.0) * 100.0,
        );
        // Every endpoint gets its share within 10 % (the expected spread is about ±1 %), and every
        // endpoint is the first address (the one most clients use) of some answers.
        assert!(lo as f64 >= mean * 0.9 && hi as f64 <= mean * 1.1, "{family}: answered {lo}..{hi}, mean {mean}");
        assert!(first_lo >= 1, "{family}: some endpoint is never the first address");
    }

    // Over TCP the cap holds as well.
    let resp = tcp(server.addr, &query_message(NAME, RecordType::A, None));
    assert_eq!(addresses(&resp).len(), MAX);
}

/// Off by default: all ready endpoints (the DNS specification), so over UDP the answer is
/// truncated and over TCP it is whole.
#[test]
fn without_max_answers_every_endpoint_is_answered() {
    let (yaml, v4, _) = big_service();
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, &yaml, &[]);
    let resp = udp(server.addr, &query_message(NAME, RecordType::A, Some(1232)));
    assert!(resp.metadata.truncation, "300 addresses do not fit in 1232 bytes");
    let resp = tcp(server.addr, &query_message(NAME, RecordType::A, None));
    let all: BTreeSet<String> = addresses(&resp).into_iter().collect();
    assert_eq!(all, v4);
}
