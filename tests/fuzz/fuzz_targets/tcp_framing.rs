//! Fuzzes the TCP framing (RFC 1035 §4.2.2, RFC 7766 §8) as a connection sees it: the input is
//! the byte stream a client sends. It is split into queries twice: by `read_framed` (what the
//! secondary reads transfers with, one message at a time) and by the server's batched reader
//! (`join_read` and `split_queries`: one read of up to `TCP_READ` bytes per batch, joined to the
//! start of a message left from the last, every whole message in it handed on in order). The
//! batched reader is driven as `tcp_connection` drives it, with reads of the largest size and of
//! sizes drawn from the input, and with batches stopped early as a transfer, a forwarded query or
//! a full send buffer stops them. The queries are answered as the server answers them over TCP
//! (zone transfers included), the answers framed with `length_prefix` and read back with
//! `read_framed` as a client does.
//!
//! Invariants checked for every input:
//! - nothing panics;
//! - `read_framed` splits the stream as the RFC says (checked against a plain reading of the
//!   prefixes): each message whole and in order, a prefix over the limit ends the connection
//!   with the message unread, and a stream that ends inside a prefix or a message is
//!   `UnexpectedEof`;
//! - the batched reader, however the stream is cut into reads and wherever its batches stop,
//!   hands on the same queries in the same order, ends the connection at the same prefix over
//!   the limit, and is left holding exactly the unfinished message at the end of the stream; it
//!   never carries into a read more than the start of one message (`TCP_CARRY`);
//! - every answer is a DNS message carrying its query's ID; a query asked twice gets the same
//!   answers (but the ID); each answer decodes with hickory-proto (an answer already decoded
//!   for an earlier input is not decoded again: decoding every copy took 80 % of the time);
//! - the answer stream splits back into exactly the answers written, each at most 65,535 bytes,
//!   with nothing left over.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use headless_dns::dns::server::{
    Framed, MAX_TCP_QUERY, Split, TCP_BATCH, TCP_CARRY, TCP_READ, join_read, length_prefix, read_framed, split_queries,
};
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

/// The answers (but their ID) decoded by hickory-proto so far in this process, by hash: the
/// same answer is not decoded again for another input (decoding took most of the time, zone
/// transfers above all).
static DECODED: LazyLock<Mutex<HashSet<u64>>> = LazyLock::new(Mutex::default);

/// Zone transfers answered so far in this process, by request (but its ID), with the answers
/// (but their ID): the same request is not answered again for another input (packing the zone
/// took a third of the time). The index does not change, so neither would the answer.
static TRANSFERRED: LazyLock<Mutex<HashMap<Vec<u8>, Vec<Vec<u8>>>>> = LazyLock::new(Mutex::default);

/// The answers to the transfer request `query`, from [`TRANSFERRED`] or `answer`.
fn transferred(query: &[u8], answer: impl FnOnce() -> Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut known = TRANSFERRED.lock().unwrap();
    if known.len() > 256 {
        known.clear();
    }
    if let Some(known) = known.get(&query[2..]) {
        let mut messages = known.clone();
        for message in &mut messages {
            message[..2].copy_from_slice(&query[..2]);
        }
        return messages;
    }
    let messages = answer();
    known.insert(query[2..].to_vec(), messages.clone());
    messages
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client's stream ended; what it sent of an unfinished message is left.
    Eof(Vec<u8>),
    /// A length prefix over [`MAX_TCP_QUERY`].
    TooLong(usize),
    /// The server closed it (a query it drops).
    Closed,
}

/// What a batch does after a query.
enum Then {
    /// Go on with the next one.
    Next,
    /// Stop the batch; the next one answers what is in hand without reading (after a transfer,
    /// a forwarded query, or answers the socket did not take).
    Stop,
    /// Close the connection.
    Close,
}

/// The client's stream read as `read_framed` reads it: the messages, and how it ended.
fn framed(data: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut stream = data;
    let mut query = Vec::new();
    let mut queries = Vec::new();
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
                queries.push(query.clone());
            }
            (Ok(Framed::TooLong(n)), Some(len)) => {
                assert!(n == len && len > MAX_TCP_QUERY, "{rest:02x?}");
                assert_eq!(stream, &rest[2..], "read into a message over the limit");
                return (queries, End::TooLong(len));
            }
            (Err(e), announced) => {
                assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
                assert!(announced.is_none_or(|len| len <= MAX_TCP_QUERY && rest.len() < 2 + len), "{rest:02x?}");
                return (queries, End::Eof(rest.to_vec()));
            }
            (read, None) => panic!("{read:?} from {rest:02x?}: not even a prefix"),
        }
    }
}

/// The client's stream read as `tcp_connection` reads it, `read_size()` bytes at most a read:
/// each batch reads (unless the last one stopped early), joins the read to the message carried
/// over, and hands each whole query to `each`.
fn batched(data: &[u8], mut read_size: impl FnMut() -> usize, mut each: impl FnMut(&[u8]) -> Then) -> End {
    let mut rx = vec![0u8; TCP_CARRY + TCP_READ];
    let mut carry = Vec::new();
    let mut rest = data;
    let mut read = true;
    loop {
        let n = if read {
            assert!(carry.len() < TCP_CARRY, "{} bytes carried into a read", carry.len());
            let n = read_size().clamp(1, TCP_READ).min(rest.len());
            if n == 0 {
                return End::Eof(carry);
            }
            rx[TCP_CARRY..TCP_CARRY + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            Some(n)
        } else {
            None
        };
        let split = join_read(&mut carry, &mut rx, n, |input| {
            split_queries(input, |query| match each(query) {
                Then::Next => ControlFlow::Continue(()),
                Then::Stop => ControlFlow::Break(true),
                Then::Close => ControlFlow::Break(false),
            })
        });
        assert!(carry.len() <= TCP_CARRY + TCP_READ, "{} bytes carried", carry.len());
        match split {
            Split::Partial => read = true,
            Split::TooLong(len) => return End::TooLong(len),
            Split::Stopped(true) => read = false,
            Split::Stopped(false) => return End::Closed,
        }
    }
}

/// A small generator seeded from the input, for read sizes and early stops.
struct Draw(u64);

impl Draw {
    fn new(data: &[u8]) -> Draw {
        // FNV-1a.
        Draw(data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)) | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A read size: often a few bytes (prefixes and messages cut anywhere), sometimes any.
    fn read_size(&mut self) -> usize {
        let r = self.next();
        if r & 1 == 0 { 1 + (r >> 8) as usize % 16 } else { 1 + (r >> 8) as usize % TCP_READ }
    }
}

// The index is built before the first input (seconds with the sanitizer), not within its
// timeout.
fuzz_target!(init: { LazyLock::force(&RESPONDER); }, |data: &[u8]| {
    let responder = &*RESPONDER;
    let (queries, end) = framed(data);

    // Cut anywhere, stopped anywhere: the same queries, the same end.
    let mut draw = Draw::new(data);
    let mut seen = Vec::new();
    let mut stops = Draw(draw.next() | 1);
    let cut = batched(data, || draw.read_size(), |query| {
        seen.push(query.to_vec());
        if stops.next() % 4 == 0 { Then::Stop } else { Then::Next }
    });
    assert_eq!(seen, queries, "the batched reader split the stream otherwise");
    assert_eq!(cut, end, "the batched reader ended otherwise");

    // Read as a fast client's stream arrives, answered as the server answers: every query in a
    // batch, answers gathered up to `TCP_BATCH` bytes; a transfer stops the batch, and so, now
    // and then, does a send buffer found full.
    let mut full = Draw(draw.next() | 1);
    let mut out = vec![0u8; 65535];
    let (mut answers, mut batch, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    // The answers to each query (but its ID) answered so far: a query asked again is answered
    // again, and must get the same answers (but the ID), which are not decoded again.
    let mut known: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    let mut answer = |query: &[u8], messages: Vec<Vec<u8>>, answers: &mut Vec<u8>| {
        for message in &messages {
            assert_eq!(message[..2], query[..2], "an answer with another ID");
            answers.extend_from_slice(&length_prefix(message.len()));
            answers.extend_from_slice(message);
            ids.push(query[..2].to_vec());
        }
        match known.get(&query[2..]) {
            Some(before) => {
                let same = before.len() == messages.len() && before.iter().zip(&messages).all(|(a, b)| a[2..] == b[2..]);
                assert!(same, "the same query answered otherwise: {query:02x?}");
            }
            None => {
                let mut decoded = DECODED.lock().unwrap();
                if decoded.len() > 1 << 20 {
                    decoded.clear();
                }
                for message in &messages {
                    if decoded.insert(hash(&message[2..]))
                        && let Err(e) = Message::from_vec(message)
                    {
                        panic!("an answer that does not decode: {e}: {message:02x?}");
                    }
                }
                known.insert(query[2..].to_vec(), messages);
            }
        }
    };
    let mut answered = 0;
    let served = batched(data, || TCP_READ, |query| {
        answered += 1;
        if is_transfer(query) {
            answers.append(&mut batch);
            let ip = "127.0.0.1".parse().unwrap();
            let messages = transferred(query, || {
                transfer(responder.index(), query, ip, responder.transfer_acl(), responder.policy())
            });
            answer(query, messages, &mut answers);
            return Then::Stop;
        }
        let Some(n) = responder.respond(query, Transport::Tcp, &mut out) else {
            // Dropped (not even a header, or a response): the server closes the connection.
            answered -= 1;
            return Then::Close;
        };
        answer(query, vec![out[..n].to_vec()], &mut batch);
        if batch.len() >= TCP_BATCH {
            answers.append(&mut batch);
            if full.next() % 2 == 0 {
                return Then::Stop;
            }
        }
        Then::Next
    });
    answers.append(&mut batch);
    // Every query up to the first one dropped, and then the connection closes.
    assert!(answered <= queries.len());
    if served == End::Closed {
        assert!(answered < queries.len());
    } else {
        assert_eq!(served, end, "the server's reader ended otherwise");
        assert_eq!(answered, queries.len(), "queries left unanswered");
    }

    // The client's side: the answers split back, one by one (each decoded above).
    let mut stream = &answers[..];
    let mut message = Vec::new();
    for id in &ids {
        let read = RUNTIME.block_on(read_framed(&mut stream, &mut message, 65535, DEADLINE, DEADLINE));
        assert_eq!(read.unwrap(), Framed::Message);
        assert_eq!(message[..2], id[..], "an answer with another ID");
    }
    assert!(stream.is_empty(), "{} bytes after the last answer", stream.len());
});
