//! Fuzzes the zone-transfer client (`source::primary::receive`): the input is what a primary
//! sends back on the connection, read as the secondary reads it (length-prefixed messages,
//! RFC 1995 / RFC 5936 framing of the records), then applied to a secondary's copy.
//!
//! The first byte picks the request: even, AXFR; odd, IXFR from serial 2026120301 (the seeds'
//! serials). The rest is the stream; the request's ID is 0x4858.
//!
//! Invariants checked for every input:
//! - nothing panics (reading, framing, applying);
//! - a transfer read is for the zone asked for; an IXFR answer is only read for an IXFR;
//! - a full transfer applies to an empty copy unless it holds a name outside the zone, and a
//!   transfer that applies leaves the copy at the transfer's serial.
#![no_main]

use std::sync::{Arc, LazyLock};

use headless_dns::dns::name::Name;
use headless_dns::index::Index;
use headless_dns::index::Writer;
use headless_dns::index::copy::{Content, Mismatch};
use headless_dns::metrics::SecondaryMetrics;
use headless_dns::source::primary::{Fetched, receive};
use libfuzzer_sys::fuzz_target;

mod common;

/// The request's ID, and the serial an IXFR asks from.
const ID: u16 = 0x4858;
const HELD: u32 = 2026120301;

static ZONE: LazyLock<Name> = LazyLock::new(|| Name::parse("cluster.local").unwrap());
static METRICS: LazyLock<SecondaryMetrics> = LazyLock::new(SecondaryMetrics::default);
/// A runtime for the read deadlines (a byte slice never makes a read wait).
static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap());

// The runtime is built before the first input, not within its timeout.
fuzz_target!(init: { LazyLock::force(&RUNTIME); }, |data: &[u8]| {
    let Some((&request, mut stream)) = data.split_first() else { return };
    let held = (request & 1 == 1).then_some(HELD);
    let fetched = RUNTIME.block_on(receive(&mut stream, ID, &ZONE, held, &METRICS));
    let Ok(Fetched::Transfer(transfer, soa)) = fetched else { return };
    assert_eq!(transfer.zone, *ZONE);
    assert_eq!(transfer.serial, soa.serial);
    let full = matches!(transfer.content, Content::Full(_));
    assert!(full || held.is_some(), "an incremental transfer read in answer to AXFR");
    let cfg = common::config();
    let mut writer = Writer::secondary(Arc::new(Index::new(&cfg)), cfg);
    let applied = writer.apply_transfer(&transfer);
    match applied {
        Ok(_) => assert_eq!(writer.index().serial(), transfer.serial, "the copy is not at the transfer's serial"),
        // A name of another zone (k8s.test is served too, and outside names are kept).
        Err(Mismatch::OutsideZone(_)) => {}
        Err(e) => assert!(!full, "a full transfer did not apply to an empty copy: {e}"),
    }
});
