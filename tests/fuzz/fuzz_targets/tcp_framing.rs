//! Fuzzes the TCP framing (RFC 1035 §4.2.2, RFC 7766 §8) as a connection sees it: the input is
//! the byte stream a client sends. The server's `read_framed` splits it into queries (at most
//! `MAX_TCP_QUERY` bytes each), each is answered over TCP (zone transfers included) and framed
//! with `length_prefix`, and the client reads the answers back with `read_framed`.
//!
//! Invariants checked for every input:
//! - nothing panics;
//! - `read_framed` splits the stream as the RFC says (checked against a plain reading of the
//!   prefixes): each message whole and in order, a prefix over the limit ends the connection
//!   with the message unread, and a stream that ends inside a prefix or a message is
//!   `UnexpectedEof`;
//! - the answer stream splits back into exactly the answers written, each a DNS message of at
//!   most 65,535 bytes carrying its query's ID, with nothing left over.
#![no_main]

use std::io::ErrorKind;
use std::sync::LazyLock;
use std::time::Duration;

use headless_dns::dns::server::{Framed, MAX_TCP_QUERY, length_prefix, read_framed};
use headless_dns::dns::transfer::{TransferAcl, is_transfer, respond as transfer};
use headless_dns::dns::{Responder, Transport};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

mod common;

/// A ready index without the Service that needs 64 KB (a transfer of it takes milliseconds);
/// transfers are allowed to loopback.
static RESPONDER: LazyLock<Responder> = LazyLock::new(|| {
    let acl = TransferAcl::new(vec!["127.0.0.0/8".parse().unwrap()]);
    Responder::new(common::index(true, false), common::MAX_UDP).with_transfer(acl)
});

/// A runtime for the deadlines inside `read_framed` (a byte slice never makes it wait).
static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap());

const DEADLINE: Duration = Duration::from_secs(10);

// The index is built before the first input (seconds with the sanitizer), not within its
// timeout.
fuzz_target!(init: { LazyLock::force(&RESPONDER); }, |data: &[u8]| {
    let responder = &*RESPONDER;
    let mut stream = data;
    let mut query = Vec::new();
    let mut out = vec![0u8; 2 + 65535];
    let mut answers = Vec::new();
    let mut ids = Vec::new();
    loop {
        let rest = stream;
        let read = RUNTIME.block_on(read_framed(&mut stream, &mut query, MAX_TCP_QUERY, DEADLINE, DEADLINE));
        // What the prefix says, read plainly.
        let announced = (rest.len() >= 2).then(|| usize::from(u16::from_be_bytes([rest[0], rest[1]])));
        match (read, announced) {
            (Ok(Framed::Message), Some(len)) => {
                assert!(len <= MAX_TCP_QUERY && rest.len() >= 2 + len, "{rest:02x?}");
                assert_eq!(query, rest[2..2 + len], "not the announced message");
                assert_eq!(stream, &rest[2 + len..], "read past the message");
            }
            (Ok(Framed::TooLong(n)), Some(len)) => {
                assert!(n == len && len > MAX_TCP_QUERY, "{rest:02x?}");
                assert_eq!(stream, &rest[2..], "read into a message over the limit");
                break;
            }
            (Err(e), announced) => {
                assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
                assert!(announced.is_none_or(|len| len <= MAX_TCP_QUERY && rest.len() < 2 + len), "{rest:02x?}");
                break;
            }
            (read, None) => panic!("{read:?} from {rest:02x?}: not even a prefix"),
        }
        // Answered as the server answers a TCP query.
        if is_transfer(&query) {
            let ip = "127.0.0.1".parse().unwrap();
            for message in transfer(responder.index(), &query, ip, responder.transfer_acl(), responder.policy()) {
                answers.extend_from_slice(&length_prefix(message.len()));
                answers.extend_from_slice(&message);
                ids.push(query[..2].to_vec());
            }
        } else if let Some(n) = responder.respond(&query, Transport::Tcp, &mut out[2..]) {
            out[..2].copy_from_slice(&length_prefix(n));
            answers.extend_from_slice(&out[..2 + n]);
            ids.push(query[..2].to_vec());
        } else {
            // Dropped (not even a header, or a response): the server closes the connection.
            break;
        }
    }
    // The client's side: the answers split back, one by one.
    let mut stream = &answers[..];
    let mut message = Vec::new();
    for id in &ids {
        let read = RUNTIME.block_on(read_framed(&mut stream, &mut message, 65535, DEADLINE, DEADLINE));
        assert_eq!(read.unwrap(), Framed::Message);
        assert_eq!(message[..2], id[..], "an answer with another ID");
        if let Err(e) = Message::from_vec(&message) {
            panic!("an answer that does not decode: {e}: {message:02x?}");
        }
    }
    assert!(stream.is_empty(), "{} bytes after the last answer", stream.len());
});
