//! Fuzzes the YAML object decoder: the input is a manifest file, read by `parse_manifests` (as
//! the file source reads it), and its objects applied to an index.
//!
//! Invariants checked for every input:
//! - nothing panics (YAML, decoding, projection, records);
//! - the objects of a file that reads, applied and then deleted, leave the index as it was
//!   before them (no record outlives its objects).
#![no_main]

use std::path::Path;
use std::time::Instant;

use headless_dns::cluster::Object;
use headless_dns::pipeline::Pipeline;
use headless_dns::source::Event;
use headless_dns::source::file::parse_manifests;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(objects) = parse_manifests(text, Path::new("fuzz.yaml")) else { return };
    let mut pipeline = Pipeline::new(common::config());
    pipeline.apply(Event::Synced);
    let empty = pipeline.index().len();
    let refs: Vec<_> = objects.iter().map(Object::object_ref).collect();
    pipeline.apply_batch(Instant::now(), objects.into_iter().map(Event::Apply));
    pipeline.apply_batch(Instant::now(), refs.into_iter().map(Event::Delete));
    assert_eq!(pipeline.index().len(), empty, "names left after every object was deleted: {text:?}");
});
