//! The slow lane: queries the index alone cannot answer (forwarding, autopath), shared by UDP
//! and TCP. Each ends in [`super::finish::Finish`], as every
//! other response does.

use hickory_proto::op::Message;

use super::answer::{Outcome, Responder};
use super::finish::{Head, Sections, Transport};
use super::proto::flags;
use crate::forward::Forwarder;

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
