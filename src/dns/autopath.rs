//! Server-side search (CoreDNS `autopath`): one round trip instead of one per search domain.
//!
//! A Pod with `ndots:5` asks `api.example.com.<ns>.svc.<zone>` first, then `….svc.<zone>`,
//! `….<zone>`, and only then `api.example.com.`: four round trips (eight with AAAA) for every
//! external name. When a query from a known Pod IP misses in its first search domain, the server
//! walks the rest of the Pod's search list itself and answers with a CNAME from the asked name to
//! the first candidate that exists, followed by that candidate's records. When nothing exists the
//! original NXDOMAIN is answered, so the client's own search goes on as before.
//!
//! The client's namespace must be the one in the asked name, and the client IP must belong to a
//! running Pod there right now (`--pods verified`), which avoids the IP-reuse confusion of
//! coredns/coredns#2842.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name as HName, RData, Record};

use super::Responder;
use super::finish::{Head, Sections, Transport};
use super::grammar::Labels;
use super::name::Name;
use super::proto::{MAX_MESSAGE, flags};
use crate::forward::Forwarder;

/// Writes the autopath answer to `packet` into `out` and returns its length, or `None` when no
/// search candidate exists (the caller then answers as without autopath).
pub async fn answer(
    responder: &Responder,
    forwarder: Option<&Forwarder>,
    packet: &[u8],
    transport: Transport,
    out: &mut [u8],
) -> Option<usize> {
    let query = Message::from_vec(packet).ok()?;
    let question = query.queries.first()?.clone();
    let asked = question.name().clone();
    // The asked name in lower-case wire form, read by the grammar: <base…>.<ns>.svc.<zone>.
    let lower = Name::parse(&asked.to_ascii()).ok()?;
    let index = responder.index();
    let zone = &index.zone(index.zone_of(lower.as_wire())?).name;
    let prefix = lower.as_wire().get(..lower.as_wire().len() - zone.as_wire().len())?;
    let labels = Labels::of(prefix)?;
    let (_, base) = labels.search_base()?;
    let base: Vec<&str> = base.iter().map(|l| std::str::from_utf8(l).ok()).collect::<Option<_>>()?;
    let mut in_svc = base.clone();
    in_svc.push("svc");
    let in_zone = [zone.prepend(&in_svc), zone.prepend(&base)];
    let base_text = base.join(".");

    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut found: Option<(HName, Vec<Record>, bool)> = None;
    for candidate in in_zone.iter().flatten() {
        let Ok(name) = HName::from_ascii(candidate.to_dotted()) else { continue };
        let mut q = Message::new(1, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name.clone(), question.query_type()));
        let n = responder.respond(&q.to_vec().ok()?, Transport::Tcp, &mut buf)?;
        let resp = Message::from_vec(&buf[..n]).ok()?;
        if resp.metadata.response_code == ResponseCode::NoError && !resp.answers.is_empty() {
            found = Some((name, resp.answers, true));
            break;
        }
    }
    if found.is_none()
        && let Some(forwarder) = forwarder
        && let Ok(name) = HName::from_ascii(format!("{base_text}."))
        && let Some(resolved) = forwarder.resolve(&Query::query(name.clone(), question.query_type())).await
        && resolved.rcode == ResponseCode::NoError
        && !resolved.answers.is_empty()
    {
        found = Some((name, resolved.answers, false));
    }
    let (target, records, authoritative) = found?;

    let mut answers = Vec::with_capacity(1 + records.len());
    answers.push(Record::from_rdata(asked, index.ttl, RData::CNAME(CNAME(target))));
    answers.extend(records);
    let finish = responder.policy().finish(Head::of(&query), transport, out.len());
    let flags = if authoritative { flags::AA } else { 0 } | if forwarder.is_some() { flags::RA } else { 0 };
    finish.records(out, &question, [&answers, &[], &[]], Sections { flags, ..Sections::default() })
}
