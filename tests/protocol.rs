//! Protocol behaviour over real UDP and TCP sockets: EDNS, truncation, TCP framing and limits,
//! and every kind of bad input.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use headless_dns::dns::{Responder, Transport};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use support::dns::{addresses, ask, query_message, rcode, tcp, tcp_raw, udp, udp_raw};
use support::server::TestServer;

const FIXTURE: &str = include_str!("fixtures/records.yaml");

/// A headless Service `big` in `ns-0` with `n` ready endpoints `big-<i>`, one named port.
fn big_service(n: usize) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: ns-0}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: ns-0, labels: {kubernetes.io/service-name: big}}\n\
         addressType: IPv4\nports: [{name: web, port: 80}]\nendpoints:\n",
    );
    for i in 0..n {
        yaml.push_str(&format!("- {{addresses: [10.1.{}.{}], hostname: big-{i}}}\n", i / 250, i % 250 + 1));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread")]
async fn edns_is_answered_with_opt_and_our_size() {
    let server = TestServer::start(FIXTURE).await;
    let resp = udp(server.addr, &query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, Some(4096)));
    let edns = resp.edns.as_ref().expect("OPT in the response");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    let plain = ask(server.addr, "web-0.nginx.ns-0.svc.cluster.local.", RecordType::A);
    assert!(plain.edns.is_none(), "no OPT without EDNS in the query");
    server.stop().await;
}

/// Every path advertises `--max-udp-size` in its OPT: the fast path, the general path's errors
/// and its CHAOS answers (those said 1232 whatever the flag).
#[tokio::test(flavor = "multi_thread")]
async fn every_opt_advertises_max_udp_size() {
    let server = TestServer::start_with(FIXTURE, |c| c.max_udp_size = 4096).await;
    let mut bad_version = query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, Some(4096));
    bad_version.edns.as_mut().unwrap().set_version(1);
    let cases = [
        ("fast path", query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, Some(4096))),
        ("BADVERS", bad_version),
        ("CHAOS version.bind", chaos_txt("version.bind.", Some(4096))),
        ("CHAOS refused", chaos_txt("nothing.bind.", Some(4096))),
    ];
    for (what, query) in cases {
        let resp = udp(server.addr, &query);
        assert_eq!(resp.edns.as_ref().map(|e| e.max_payload()), Some(4096), "{what}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_answers_truncate_over_udp_with_whole_records_and_complete_over_tcp() {
    let server = TestServer::start(&big_service(300)).await;
    let name = "big.ns-0.svc.cluster.local.";

    // No EDNS: 512 bytes. musl has no TCP fallback, so the truncated answer still carries
    // as many whole records as fit.
    let raw = udp_raw(server.addr, &query_message(name, RecordType::A, None).to_vec().unwrap(), Duration::from_secs(3))
        .unwrap();
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    let resp = Message::from_vec(&raw).unwrap();
    assert!(resp.metadata.truncation);
    assert!(resp.answers.len() >= 25, "{} records fit in 512 bytes", resp.answers.len());

    // EDNS 1232.
    let raw =
        udp_raw(server.addr, &query_message(name, RecordType::A, Some(1232)).to_vec().unwrap(), Duration::from_secs(3))
            .unwrap();
    assert!(raw.len() <= 1232);
    let resp = Message::from_vec(&raw).unwrap();
    assert!(resp.metadata.truncation);
    assert!(resp.answers.len() >= 70, "{}", resp.answers.len());
    assert!(resp.edns.is_some(), "the OPT survives truncation");

    // A client offering more than --max-udp-size still gets at most 1232 bytes.
    let raw = udp_raw(
        server.addr,
        &query_message(name, RecordType::A, Some(65000)).to_vec().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(raw.len() <= 1232);

    // TCP: all 300.
    let resp = tcp(server.addr, &query_message(name, RecordType::A, None));
    assert!(!resp.metadata.truncation);
    let mut got = addresses(&resp);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 300);

    // SRV over TCP: 300 targets with weight ⌊100/300⌋ → 1, and all glue.
    let resp = tcp(server.addr, &query_message("_web._tcp.big.ns-0.svc.cluster.local.", RecordType::SRV, Some(1232)));
    assert!(!resp.metadata.truncation);
    assert_eq!(resp.answers.len(), 300);
    assert_eq!(resp.additionals.len(), 300);
    let hickory_proto::rr::RData::SRV(srv) = &resp.answers[0].data else { panic!() };
    assert_eq!(srv.weight, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_carries_several_queries_per_connection() {
    let server = TestServer::start(FIXTURE).await;
    let names =
        ["web-0.nginx.ns-0.svc.cluster.local.", "web-1.nginx.ns-0.svc.cluster.local.", "api.ns-0.svc.cluster.local."];
    let msgs: Vec<Message> = names.iter().map(|n| query_message(n, RecordType::A, None)).collect();
    let responses = tcp_raw(server.addr, &msgs.iter().map(|m| m.to_vec().unwrap()).collect::<Vec<_>>());
    let got: Vec<Vec<String>> = responses.iter().map(|r| addresses(&Message::from_vec(r).unwrap())).collect();
    assert_eq!(got, [vec!["10.244.1.5"], vec!["10.244.2.7"], vec!["10.96.0.20"]]);
    server.stop().await;
}

/// Hundreds of queries pipelined in one write on one connection (more than one read of the
/// server's takes, so messages straddle its reads), then a message split over two writes, with a
/// zone transfer request among them, and the client's side shut down after the last: every
/// answer comes back, in order, with its query's ID and question, and the Pod names with their
/// addresses; then the server closes the connection.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_answers_queries_pipelined_in_one_write_in_order() {
    let server = TestServer::start(FIXTURE).await;
    let asked = [
        ("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, Some("10.244.1.5")),
        ("web-1.nginx.ns-0.svc.cluster.local.", RecordType::A, Some("10.244.2.7")),
        ("_web._tcp.nginx.ns-0.svc.cluster.local.", RecordType::SRV, None),
        ("nope.ns-0.svc.cluster.local.", RecordType::A, None),
        ("nginx.ns-0.svc.cluster.local.", RecordType::AAAA, None),
        ("api.ns-0.svc.cluster.local.", RecordType::A, None),
    ];
    let mut queries: Vec<(Message, Option<&str>)> = (0..600)
        .map(|i| {
            let (name, rtype, address) = asked[i % asked.len()];
            (query_message(name, rtype, (i % 2 == 0).then_some(1232)), address)
        })
        .collect();
    queries.insert(300, (query_message("cluster.local.", RecordType::AXFR, None), None));
    let mut framed = Vec::new();
    for (q, _) in &queries {
        let bytes = q.to_vec().unwrap();
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
    }
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&framed).unwrap();
    // One more query, its length and half its header in one write, the rest a little later.
    let last = query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, None);
    let bytes = last.to_vec().unwrap();
    let mut split = (bytes.len() as u16).to_be_bytes().to_vec();
    split.extend_from_slice(&bytes);
    s.write_all(&split[..8]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&split[8..]).unwrap();
    // Done asking: the answers still come, then the server closes its side too.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    queries.push((last, Some("10.244.1.5")));
    for (i, (query, address)) in queries.iter().enumerate() {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap_or_else(|e| panic!("answer {i}: {e}"));
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        let resp = Message::from_vec(&buf).unwrap();
        assert_eq!(resp.metadata.id, query.metadata.id, "answer {i}: ID");
        assert_eq!(resp.queries, query.queries, "answer {i}: question");
        assert_eq!(resp.metadata.message_type, MessageType::Response, "answer {i}");
        if let Some(address) = address {
            assert_eq!(addresses(&resp), [*address], "answer {i}");
        }
    }
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0, "the server closes after the last answer");
    server.stop().await;
}

/// A 12-byte header: ID, flags, and the counts of the four sections (QD, AN, NS, AR).
fn raw_header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    [id, flags].iter().chain(&counts).flat_map(|v| v.to_be_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_error_and_never_stalls_the_server() {
    let server = TestServer::start(FIXTURE).await;
    let short = Duration::from_millis(300);
    let question =
        query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, None).to_vec().unwrap()[12..].to_vec();

    // Not even a header: dropped.
    assert_eq!(udp_raw(server.addr, &[1, 2, 3, 4, 5], short), None);
    // A response (QR=1) is never answered: no reflection loops.
    let mut response = raw_header(7, 0x8000, [1, 0, 0, 0]);
    response.extend_from_slice(&question);
    assert_eq!(udp_raw(server.addr, &response, short), None);

    let rcode_of = |packet: &[u8]| {
        let raw = udp_raw(server.addr, packet, Duration::from_secs(2)).expect("an answer");
        let msg = Message::from_vec(&raw).unwrap();
        (msg.metadata.id, msg.metadata.response_code)
    };
    // QDCOUNT 0 and 2: FORMERR.
    assert_eq!(rcode_of(&raw_header(8, 0x0100, [0, 0, 0, 0])), (8, ResponseCode::FormErr));
    let mut two = raw_header(9, 0x0100, [2, 0, 0, 0]);
    two.extend_from_slice(&question);
    two.extend_from_slice(&question);
    assert_eq!(rcode_of(&two), (9, ResponseCode::FormErr));
    // Header plus garbage: FORMERR.
    let mut garbage = raw_header(10, 0, [1, 0, 0, 0]);
    garbage.extend_from_slice(&[0xff; 9]);
    assert_eq!(rcode_of(&garbage), (10, ResponseCode::FormErr));
    // A compression loop in the question: FORMERR, not a hang.
    let mut looped = raw_header(11, 0, [1, 0, 0, 0]);
    looped.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode_of(&looped), (11, ResponseCode::FormErr));
    // An OPT whose options do not fill its RDATA (found by the fuzzer): FORMERR on both paths.
    let mut bad_opt = query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, Some(1232)).to_vec().unwrap();
    let n = bad_opt.len();
    bad_opt[n - 2..].copy_from_slice(&[0, 1]);
    bad_opt.push(0);
    bad_opt[0..2].copy_from_slice(&14u16.to_be_bytes());
    assert_eq!(rcode_of(&bad_opt), (14, ResponseCode::FormErr));
    // Opcodes other than QUERY: NOTIMP.
    for opcode in [1u16, 2, 4, 5, 15] {
        let mut p = raw_header(12, opcode << 11, [1, 0, 0, 0]);
        p.extend_from_slice(&question);
        assert_eq!(rcode_of(&p), (12, ResponseCode::NotImp), "opcode {opcode}");
    }

    // EDNS version 1: BADVERS with an OPT of version 0.
    let mut msg = query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, None);
    let mut edns = Edns::new();
    edns.set_version(1);
    msg.set_edns(edns);
    let resp = udp(server.addr, &msg);
    // Extended RCODE 16 (BADVERS; hickory names the shared value BADSIG too).
    assert_eq!(u16::from(rcode(&resp)), 16);
    assert_eq!(resp.edns.as_ref().map(|e| e.version()), Some(0));

    // Class CHAOS: REFUSED.
    let mut msg = Message::new(13, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("web-0.nginx.ns-0.svc.cluster.local.").unwrap(), RecordType::A);
    q.set_query_class(DNSClass::CH);
    msg.add_query(q);
    assert_eq!(rcode(&udp(server.addr, &msg)), ResponseCode::Refused);

    // Zone transfers are denied by default.
    let resp = tcp(server.addr, &query_message("cluster.local.", RecordType::AXFR, None));
    assert_eq!(rcode(&resp), ResponseCode::Refused);

    // And the server still answers normally.
    assert_eq!(addresses(&ask(server.addr, "web-0.nginx.ns-0.svc.cluster.local.", RecordType::A)), ["10.244.1.5"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn any_gets_a_minimal_answer() {
    let server = TestServer::start(FIXTURE).await;
    // RFC 8482: one RRset is enough.
    let resp = ask(server.addr, "web-0.nginx.ns-0.svc.cluster.local.", RecordType::ANY);
    assert_eq!(rcode(&resp), ResponseCode::NoError);
    assert_eq!(resp.answers.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn random_packets_never_stop_the_server() {
    let server = TestServer::start(FIXTURE).await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, Some(1232)).to_vec().unwrap();
    for i in 0..3000 {
        // Half pure noise, half a valid query with a few bytes flipped.
        let packet: Vec<u8> = if i % 2 == 0 {
            (0..(next() % 600) as usize).map(|_| next() as u8).collect()
        } else {
            let mut p = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p
        };
        sock.send_to(&packet, server.addr).unwrap();
    }
    assert_eq!(addresses(&ask(server.addr, "web-0.nginx.ns-0.svc.cluster.local.", RecordType::A)), ["10.244.1.5"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_tcp_clients_never_lock_out_new_ones() {
    let server = TestServer::start_with(FIXTURE, |c| {
        c.tcp.max_connections = 16;
        c.tcp.idle_timeout = Duration::from_secs(30);
    })
    .await;
    // 100 idle connections, and 100 that send half a length prefix and stall.
    let mut held = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        if i % 2 == 1 {
            s.write_all(&[0]).unwrap();
        }
        held.push(s);
    }
    let started = Instant::now();
    let resp = tcp(server.addr, &query_message("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, None));
    assert_eq!(addresses(&resp), ["10.244.1.5"]);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_tcp_connections_time_out() {
    let server = TestServer::start_with(FIXTURE, |c| c.tcp.idle_timeout = Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "server closed the connection");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.stop().await;
}

/// The fast path (hand-parsed) and the general path (hickory-proto) give byte-identical
/// answers for every query both accept.
#[tokio::test(flavor = "multi_thread")]
async fn fast_and_general_paths_agree() {
    let server = TestServer::start(&format!("{FIXTURE}\n---\n{}", big_service(100))).await;
    let responder = Responder::new(server.index().clone(), 1232);
    let names = [
        "web-0.nginx.ns-0.svc.cluster.local.",
        "Web-1.NGINX.ns-0.svc.cluster.local.",
        "nginx.ns-0.svc.cluster.local.",
        "_web._tcp.nginx.ns-0.svc.cluster.local.",
        "_web._tcp.big.ns-0.svc.cluster.local.",
        "big.ns-0.svc.cluster.local.",
        "db.ns-0.svc.cluster.local.",
        "nope.ns-0.svc.cluster.local.",
        "ns-0.svc.cluster.local.",
        "cluster.local.",
        "5.1.244.10.in-addr.arpa.",
        "example.com.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::PTR,
        RecordType::SOA,
        RecordType::TXT,
        RecordType::ANY,
    ];
    let (mut fast, mut general) = (vec![0u8; 65535], vec![0u8; 65535]);
    let mut compared = 0;
    for name in names {
        for rtype in types {
            for edns in [None, Some(512), Some(4096)] {
                let packet = query_message(name, rtype, edns).to_vec().unwrap();
                for transport in [Transport::Udp, Transport::Tcp] {
                    let a = responder.respond(&packet, transport, &mut fast).unwrap();
                    let b = responder.respond_general(&packet, transport, &mut general).unwrap();
                    assert_eq!(fast[..a], general[..b], "{name} {rtype} {edns:?} {transport:?}");
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, names.len() * types.len() * 6);
    server.stop().await;
}

/// A CHAOS-class TXT question.
fn chaos_txt(name: &str, edns: Option<u16>) -> Message {
    let mut msg = query_message(name, RecordType::TXT, edns);
    let mut q = msg.queries.remove(0);
    q.set_query_class(DNSClass::CH);
    msg.add_query(q);
    msg
}

/// The TXT strings of the answer section, joined.
fn txt(resp: &Message) -> Vec<String> {
    resp.answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::TXT(t) => {
                Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_txt_answers_version_and_identity_over_udp_and_tcp() {
    let long_id = "r".repeat(300);
    let id = long_id.clone();
    let server = TestServer::start_with(FIXTURE, move |c| c.nsid = id).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let version = format!("headless-dns {}", env!("CARGO_PKG_VERSION"));
        for (name, want) in [
            ("version.bind.", version.as_str()),
            ("Version.Server.", version.as_str()),
            ("hostname.bind.", &long_id[..200]),
            ("id.server.", &long_id[..200]),
        ] {
            for edns in [None, Some(512), Some(1232)] {
                for resp in [udp(addr, &chaos_txt(name, edns)), tcp(addr, &chaos_txt(name, edns))] {
                    assert_eq!(rcode(&resp), ResponseCode::NoError, "{name}");
                    assert_eq!(txt(&resp), [want], "{name} {edns:?}");
                    let record = &resp.answers[0];
                    assert_eq!((record.dns_class, record.ttl), (DNSClass::CH, 0), "{name}");
                    assert_eq!(record.name.to_ascii(), name, "the question as asked");
                    assert!(!resp.metadata.authoritative && !resp.metadata.truncation);
                    assert_eq!(resp.edns.is_some(), edns.is_some());
                }
            }
        }
        // Anything else in class CH is refused.
        for (name, rtype) in [("authors.bind.", RecordType::TXT), ("version.bind.", RecordType::A)] {
            let mut msg = chaos_txt(name, None);
            msg.queries[0].set_query_type(rtype);
            assert_eq!(rcode(&udp(addr, &msg)), ResponseCode::Refused, "{name} {rtype}");
            assert_eq!(rcode(&tcp(addr, &msg)), ResponseCode::Refused, "{name} {rtype}");
        }
    })
    .await
    .unwrap();
    server.stop().await;
}

/// Sends `per_client` queries from each of `clients` sockets, interleaved, before reading any
/// answer, with malformed packets mixed into the burst, and checks that every query gets its own
/// answer (its ID, its question, the expected records) and every malformed one its FORMERR or
/// nothing.
fn burst(server: std::net::SocketAddr, clients: usize, per_client: usize) {
    use std::collections::HashMap;
    use std::net::UdpSocket;
    let cases = [
        ("web-0.nginx.ns-0.svc.cluster.local.", RecordType::A, ResponseCode::NoError, 1),
        ("web-1.nginx.ns-0.svc.cluster.local.", RecordType::A, ResponseCode::NoError, 1),
        ("api.ns-0.svc.cluster.local.", RecordType::A, ResponseCode::NoError, 1),
        ("_web._tcp.nginx.ns-0.svc.cluster.local.", RecordType::SRV, ResponseCode::NoError, 2),
        ("missing.ns-0.svc.cluster.local.", RecordType::A, ResponseCode::NXDomain, 0),
    ];
    let bind = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
    let sockets: Vec<UdpSocket> = (0..clients).map(|_| UdpSocket::bind(bind).unwrap()).collect();
    // Per client: ID → (case, or None for a malformed packet that must get FORMERR).
    let mut expected: Vec<HashMap<u16, Option<usize>>> = vec![HashMap::new(); clients];
    for i in 0..per_client {
        for (c, sock) in sockets.iter().enumerate() {
            let id = i as u16;
            if i % 10 == 5 {
                // Mixed into the burst: a runt (dropped) and a compression loop (FORMERR).
                sock.send_to(&[1, 2, 3, 4, 5], server).unwrap();
                let mut looped = raw_header(id, 0, [1, 0, 0, 0]);
                looped.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
                sock.send_to(&looped, server).unwrap();
                expected[c].insert(id, None);
                continue;
            }
            let case = (c + i) % cases.len();
            let (name, rtype, _, _) = cases[case];
            let mut msg = query_message(name, rtype, if i % 2 == 0 { Some(1232) } else { None });
            msg.metadata.id = id;
            sock.send_to(&msg.to_vec().unwrap(), server).unwrap();
            expected[c].insert(id, Some(case));
        }
    }
    let mut buf = vec![0u8; 65535];
    for (c, sock) in sockets.iter().enumerate() {
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        while !expected[c].is_empty() {
            let Ok(n) = sock.recv(&mut buf) else {
                panic!("client {c}: no answer to IDs {:?}", expected[c].keys().collect::<Vec<_>>());
            };
            let resp = Message::from_vec(&buf[..n]).expect("response decodes");
            let id = resp.metadata.id;
            let case = expected[c].remove(&id).unwrap_or_else(|| panic!("client {c}: unexpected or repeated ID {id}"));
            let Some(case) = case else {
                assert_eq!(resp.metadata.response_code, ResponseCode::FormErr, "malformed packet {id}");
                continue;
            };
            let (name, rtype, rcode, answers) = cases[case];
            assert_eq!(resp.queries.len(), 1, "ID {id}");
            assert_eq!(resp.queries[0].name().to_ascii(), name, "ID {id}: the question it asked");
            assert_eq!(resp.queries[0].query_type(), rtype, "ID {id}");
            assert_eq!(resp.metadata.response_code, rcode, "ID {id} ({name})");
            assert_eq!(resp.answers.len(), answers, "ID {id} ({name})");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bursts_from_many_clients_each_get_their_own_answer() {
    // One worker, so the burst queues up on one socket and is read in batches (recvmmsg on
    // Linux); then the same through the one-datagram-per-call loop.
    for batch in [32, 1] {
        let server = TestServer::start_with(FIXTURE, |c| {
            c.udp_workers = 1;
            c.udp_batch = batch;
        })
        .await;
        burst(server.addr, 8, 25);
        server.stop().await;
    }
    // IPv6 peers take the other address family through the batch's peer addresses.
    let server = TestServer::start_with(FIXTURE, |c| {
        c.listen = vec!["[::1]:0".parse().unwrap()];
        c.udp_workers = 1;
    })
    .await;
    burst(server.addr, 4, 25);
    server.stop().await;
}
