//! The slow lane: queries the index alone cannot answer (forwarding, autopath, CNAME chains
//! within the zones), shared by UDP and TCP. Each ends in [`super::finish::Finish`], as every
//! other response does.

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name as HName, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;

use super::answer::{Caps, Outcome, Responder};
use super::finish::{Head, Sections, Transport};
use super::name::Name;
use super::proto::{CLASS_IN, MAX_MESSAGE, flags};
use super::question::Question;
use crate::forward::Forwarder;

/// CNAMEs followed within the served zones at most, after the first (CoreDNS's `plugin.A` follows
/// in-zone targets recursively; a bound keeps a long chain from costing more than it is worth).
pub const MAX_CHASE: usize = 8;

/// What the slow lane answers with.
#[derive(Clone, Copy)]
pub struct Lane<'a> {
    /// The responder (for autopath's in-zone candidates, and for finishing every response).
    pub responder: &'a Responder,
    /// The upstreams, if forwarding is on.
    pub forwarder: Option<&'a Forwarder>,
}

// === impl Lane ===

impl Lane<'_> {
    /// Writes the answer to a query the responder handed over as `outcome` (forward or
    /// autopath) into `out` and returns its length; `None` means send nothing.
    pub async fn answer(self, packet: &[u8], transport: Transport, outcome: Outcome, out: &mut [u8]) -> Option<usize> {
        let Lane { responder, forwarder } = self;
        match outcome {
            Outcome::Autopath => match super::autopath::answer(responder, forwarder, packet, transport, out).await {
                Some(n) => Some(n),
                // No search candidate exists: the answer without autopath (the original NXDOMAIN).
                None => responder.respond(packet, transport, out),
            },
            Outcome::Forward => forward(responder, forwarder?, packet, transport, out).await,
            // Already answered, or not to be: nothing for the slow lane.
            Outcome::Reply(_) | Outcome::Drop => None,
        }
    }
}

/// The upstreams' answer to a query for a name outside our zones: not authoritative, recursion
/// available. `None` when the packet is not a query that can be forwarded.
async fn forward(
    responder: &Responder,
    forwarder: &Forwarder,
    packet: &[u8],
    transport: Transport,
    out: &mut [u8],
) -> Option<usize> {
    let query = Message::from_vec(packet).ok()?;
    let question = query.queries.first()?;
    let Some(resolved) = forwarder.resolve(question).await else {
        // No upstream for it (`--upstream none`, no stub domain holds it): as without forwarding,
        // REFUSED outside the zones, NXDOMAIN for a reverse name the cluster does not know.
        return responder.respond(packet, transport, out);
    };
    let finish = responder.policy().finish(Head::of(&query), transport, out.len());
    let body = Sections { flags: flags::RA, rcode: resolved.rcode.into(), ..Sections::default() };
    finish.records(out, question, [&resolved.answers, &resolved.authorities, &[]], body)
}

/// Answers `q`, whose name holds a CNAME into the served zones (an ExternalName Service whose
/// `externalName` is another Service), with the CNAME followed by its target's records, as RFC
/// 1034 §4.3.2 step 3a and CoreDNS do: the client gets the address in one round trip. Targets
/// that are CNAMEs again are followed up to [`MAX_CHASE`] links; a chain that loops, leaves the
/// zones or is too long stops with the CNAMEs so far (the client's resolver takes it from there).
/// The RCODE and authority section are those of the last name, so a target that does not exist
/// is NXDOMAIN after the CNAME (RFC 6604).
///
/// Runs in the worker that read the query: only the index is asked, nothing waits.
pub fn chase(responder: &Responder, q: &Question<'_>, transport: Transport, out: &mut [u8]) -> Outcome {
    match follow(responder, q, transport, out) {
        Some(n) => Outcome::Reply(n),
        // Something did not decode (a bug, not an input): the bare CNAME, as before chasing.
        None => responder.answer_inner(q, transport, out, Caps::default(), false),
    }
}

fn follow(responder: &Responder, q: &Question<'_>, transport: Transport, out: &mut [u8]) -> Option<usize> {
    let name_len = q.asked.len().checked_sub(4)?;
    let question = Query::query(HName::from_bytes(&q.asked[..name_len]).ok()?, RecordType::from(q.qtype));
    let index = responder.index();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut asked = q.asked.to_vec();
    let mut lower = Name::parse(&question.name().to_ascii()).ok()?;
    let mut seen = vec![lower.clone()];
    let (mut answers, mut last): (Vec<Record>, Message) = (Vec::new(), Message::query());
    for _ in 0..=MAX_CHASE {
        let link = Question { id: 0, flags: 0, asked: &asked, lower: lower.as_wire(), qtype: q.qtype, edns: None };
        let n = responder.answer_inner(&link, Transport::Tcp, &mut buf, Caps::default(), false).reply()?;
        last = Message::from_vec(&buf[..n]).ok()?;
        let owner = HName::from_bytes(&asked[..asked.len() - 4]).ok()?;
        let target = last.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name.eq_case(&owner) => Some(target.0.clone()),
            _ => None,
        });
        answers.append(&mut last.answers);
        let Some(target) = target else { break };
        let Ok(next) = Name::parse(&target.to_ascii()) else { break };
        if index.zone_of(next.as_wire()).is_none() || seen.contains(&next) {
            break;
        }
        asked = next.as_wire().to_vec();
        asked.extend_from_slice(&q.qtype.to_be_bytes());
        asked.extend_from_slice(&CLASS_IN.to_be_bytes());
        seen.push(next.clone());
        lower = next;
    }
    let finish = responder.policy().finish(q.head(), transport, out.len());
    let body = Sections { flags: flags::AA, rcode: last.metadata.response_code.into(), ..Sections::default() };
    finish.records(out, &question, [&answers, &last.authorities, &last.additionals], body)
}
