//! DNS client helpers over real sockets, decoding with hickory-proto.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Builds a query message (RD set, as stub resolvers send).
pub fn query_message(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// Sends raw bytes over UDP; returns the raw response, or None on timeout.
pub fn udp_raw(server: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Queries over UDP and decodes the response (retries once on timeout, as stub resolvers do).
pub fn udp(server: SocketAddr, msg: &Message) -> Message {
    let bytes = msg.to_vec().unwrap();
    for _ in 0..2 {
        if let Some(resp) = udp_raw(server, &bytes, TIMEOUT) {
            let resp = Message::from_vec(&resp).expect("response decodes");
            assert_eq!(resp.metadata.id, msg.metadata.id, "response id matches");
            return resp;
        }
    }
    panic!("no UDP response from {server} to {:?}", msg.queries);
}

/// One query over UDP, no EDNS.
pub fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    udp(server, &query_message(name, rtype, None))
}

/// Sends raw messages over one TCP connection, returning the raw responses in order.
pub fn tcp_raw(server: SocketAddr, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut out = Vec::new();
    for p in packets {
        let mut framed = (p.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(p);
        stream.write_all(&framed).unwrap();
    }
    for _ in packets {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).unwrap();
        out.push(buf);
    }
    out
}

/// One query over TCP.
pub fn tcp(server: SocketAddr, msg: &Message) -> Message {
    let resp = tcp_raw(server, &[msg.to_vec().unwrap()]).remove(0);
    Message::from_vec(&resp).expect("response decodes")
}

/// The records of a section in zone-file syntax (`name ttl IN TYPE rdata`), for table tests.
pub fn zone_lines(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| format!("{} {} IN {} {}", r.name, r.ttl, r.record_type(), r.data)).collect()
}

/// The addresses in the answer section, in order.
pub fn addresses(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            RData::AAAA(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

pub fn rcode(msg: &Message) -> ResponseCode {
    msg.metadata.response_code
}

/// Whether a test may skip for a missing system tool: never in CI.
pub fn require_tool(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required in CI (install it: see .ci/run)");
        }
        eprintln!("SKIPPED: {tool} is not installed (install it to run this test)");
    }
    found
}
