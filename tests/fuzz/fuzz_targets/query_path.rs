//! Fuzzes the query path: `Responder::respond` (fast path, falling back to the general path) and
//! `Responder::respond_general`, over UDP and TCP, against a fixed index.
//!
//! Invariants checked for every input:
//! - nothing panics;
//! - a response is at least 12 bytes, has QR set and carries the query's ID;
//! - over UDP it is at most 1232 bytes, and at most the limit the query allows (its EDNS size
//!   clamped to 512..=1232, or 512 without EDNS) whenever hickory-proto decodes the query;
//! - every response decodes with hickory-proto, with no bytes left over after the counted
//!   records;
//! - a response that echoes a question echoes the query's question (hickory-decoded queries);
//! - when hickory decodes the query as a standard query with one question and both `respond` and
//!   `respond_general` answer, the two answers are byte-identical;
//! - a UDP answer without TC has the same RCODE, answer and authority sections as the TCP one.
#![no_main]

use std::sync::LazyLock;

use headless_dns::dns::{Responder, Transport};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;

mod common;
use common::MAX_UDP;

struct Setup {
    /// A published index over two zones (`common::index`), with a Service whose answers need
    /// truncation over UDP and one whose A RRset does not fit even a TCP message.
    ready: Responder,
    /// An index that has not seen its first full sync (SERVFAIL / REFUSED).
    unready: Responder,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| Setup {
    ready: Responder::new(common::index(true, true), MAX_UDP),
    unready: Responder::new(common::index(false, false), MAX_UDP),
});

/// `QUERY_PATH_DUMP=1` prints a summary of each response (to check what the seeds reach).
static DUMP: LazyLock<bool> = LazyLock::new(|| std::env::var_os("QUERY_PATH_DUMP").is_some());

/// Decodes a whole message, failing if bytes are left after the counted records.
fn decode_exact(bytes: &[u8]) -> Result<Message, String> {
    let mut decoder = BinDecoder::new(bytes);
    let msg = Message::read(&mut decoder).map_err(|e| e.to_string())?;
    if !decoder.is_empty() {
        return Err(format!("{} trailing bytes after the counted records", bytes.len() - decoder.index()));
    }
    Ok(msg)
}

/// The UDP size limit a (hickory-decoded) query allows.
fn udp_limit(query: &Message) -> usize {
    match &query.edns {
        Some(e) => e.max_payload().clamp(512, MAX_UDP) as usize,
        None => 512,
    }
}

fn check(what: &str, data: &[u8], query: Option<&Message>, resp: &[u8], udp: bool) -> Message {
    let ctx = || format!("{what}: query {:02x?}\nresponse {:02x?}", data, resp);
    assert!(resp.len() >= 12, "{}: response shorter than a header", ctx());
    assert!(resp[2] & 0x80 != 0, "{}: QR not set", ctx());
    assert_eq!(resp[..2], data[..2], "{}: ID not echoed", ctx());
    if udp {
        assert!(resp.len() <= MAX_UDP as usize, "{}: UDP response over {MAX_UDP}", ctx());
        if let Some(q) = query {
            let limit = udp_limit(q);
            assert!(resp.len() <= limit, "{}: UDP response over the query's {limit}", ctx());
        }
    }
    let msg = match decode_exact(resp) {
        Ok(m) => m,
        Err(e) => panic!("{}: response does not decode: {e}", ctx()),
    };
    assert_eq!(msg.metadata.message_type, MessageType::Response, "{}", ctx());
    assert!(msg.queries.len() <= 1, "{}: several questions", ctx());
    if let (Some(q), Some(echoed)) = (query, msg.queries.first()) {
        let asked = q.queries.first().expect("a response echoes only a question it got");
        assert!(echoed.name().iter().eq(asked.name().iter()), "{}: question name not echoed as asked", ctx());
        assert_eq!(echoed.query_type(), asked.query_type(), "{}", ctx());
        assert_eq!(echoed.query_class(), asked.query_class(), "{}", ctx());
    }
    if let Some(q) = query
        && q.edns.is_some()
        && msg.queries.len() == 1
    {
        assert!(msg.edns.is_some(), "{}: EDNS query answered without OPT", ctx());
    }
    msg
}

fn run(r: &Responder, data: &[u8], query: Option<&Message>, out: &mut [u8], out2: &mut [u8]) {
    let mut decoded = [None, None];
    for (i, transport) in [Transport::Udp, Transport::Tcp].into_iter().enumerate() {
        let udp = transport == Transport::Udp;
        let fast = r.respond(data, transport, out);
        let general = r.respond_general(data, transport, out2);
        if let Some(len) = fast {
            decoded[i] = Some(check("respond", data, query, &out[..len], udp));
        }
        if let Some(len) = general {
            let msg = check("respond_general", data, query, &out2[..len], udp);
            if *DUMP {
                eprintln!("general {transport:?}: {:?}", msg.metadata.response_code);
            }
        }
        // A query the general path understands gets the same answer both ways.
        if let (Some(a), Some(b), Some(q)) = (fast, general, query)
            && q.metadata.message_type == MessageType::Query
            && q.metadata.op_code == OpCode::Query
            && q.queries.len() == 1
        {
            assert!(
                out[..a] == out2[..b],
                "{transport:?}: fast and general paths differ\nquery   {:02x?}\nfast    {:02x?}\ngeneral {:02x?}",
                data,
                &out[..a],
                &out2[..b]
            );
        }
        // The general path drops exactly what the fast path drops.
        assert_eq!(
            fast.is_none(),
            general.is_none(),
            "{transport:?}: one path dropped the query, the other did not: {:02x?}",
            data
        );
    }
    if *DUMP {
        for (t, m) in ["udp", "tcp"].iter().zip(&decoded) {
            if let Some(m) = m {
                eprintln!(
                    "{t}: {:?} tc={} an={} ns={} ar={} edns={}",
                    m.metadata.response_code,
                    m.metadata.truncation,
                    m.answers.len(),
                    m.authorities.len(),
                    m.additionals.len(),
                    m.edns.is_some()
                );
            }
        }
    }
    // A UDP answer that is not truncated says what the TCP answer says.
    if let [Some(u), Some(t)] = &decoded
        && !u.metadata.truncation
    {
        assert_eq!(u.metadata.response_code, t.metadata.response_code, "rcode: {data:02x?}");
        assert_eq!(u.answers, t.answers, "answers: {data:02x?}");
        assert_eq!(u.authorities, t.authorities, "authorities: {data:02x?}");
    }
}

// The index is built before the first input (seconds with the sanitizer), not within its
// timeout.
fuzz_target!(init: { LazyLock::force(&SETUP); }, |data: &[u8]| {
    let setup = &*SETUP;
    let mut out = vec![0u8; 65535];
    let mut out2 = vec![0u8; 65535];
    let query = Message::from_vec(data).ok();
    run(&setup.ready, data, query.as_ref(), &mut out, &mut out2);
    run(&setup.unready, data, query.as_ref(), &mut out, &mut out2);
});
