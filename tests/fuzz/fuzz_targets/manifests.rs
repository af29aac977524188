//! Fuzzes the YAML object decoder: the input is a manifest file, read by `parse_manifests` (as
//! the file source reads it), and its objects applied to an index.
//!
//! Invariants checked for every input:
//! - nothing panics (YAML, decoding, projection, records);
//! - the file source's fast YAML reader (`source::yaml::for_each_document`) reads the file as
//!   serde-saphyr alone does: the same documents, numbered alike, with equal values, and an error
//!   at the same document;
//! - the objects of a file that reads, applied and then deleted, leave the index as it was
//!   before them (no record outlives its objects), and the model empty.
//!
//! The pipeline is built once per process, as `query_path` builds its indexes once (a fresh one
//! per input, with its metrics registry, kept the rate at about 30 inputs a second). Each input
//! starts from the state a fresh pipeline has: synced, no objects (checked after every input, so
//! no input can leave anything behind for the next).
#![no_main]

use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use headless_dns::cluster::Object;
use headless_dns::pipeline::Pipeline;
use headless_dns::source::Event;
use headless_dns::source::file::parse_manifests;
use headless_dns::source::yaml;
use libfuzzer_sys::fuzz_target;

mod common;

/// The pipeline every input is applied to, and its index's size when it holds no object.
static PIPELINE: LazyLock<Mutex<(Pipeline, usize)>> = LazyLock::new(|| {
    let mut pipeline = Pipeline::new(common::config());
    pipeline.apply(Event::Synced);
    let empty = pipeline.index().len();
    Mutex::new((pipeline, empty))
});

fuzz_target!(init: { LazyLock::force(&PIPELINE); }, |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut fast = Vec::new();
    let fast_end = yaml::for_each_document(text, |n, value| fast.push((n, value))).map_err(|(n, _)| n);
    let mut slow = Vec::new();
    let slow_end = yaml::saphyr_documents(text, &mut |n, value| slow.push((n, value))).map_err(|(n, _)| n);
    assert_eq!(fast_end, slow_end, "the fast reader and serde-saphyr end at different documents");
    assert_eq!(fast, slow, "the fast reader and serde-saphyr read different documents");
    let Ok(objects) = parse_manifests(text, Path::new("fuzz.yaml")) else { return };
    // A panic below is reported as a crash before any other input runs: no poisoning to handle.
    let mut guard = PIPELINE.lock().unwrap();
    let (pipeline, empty) = &mut *guard;
    let refs: Vec<_> = objects.iter().map(Object::object_ref).collect();
    pipeline.apply_batch(Instant::now(), objects.into_iter().map(Event::Apply));
    pipeline.apply_batch(Instant::now(), refs.into_iter().map(Event::Delete));
    assert_eq!(pipeline.index().len(), *empty, "names left after every object was deleted: {text:?}");
    let model = pipeline.model().read();
    assert_eq!(model.counts(), (0, 0, 0, 0), "objects left after every object was deleted: {text:?}");
    assert_eq!(model.cluster_set_counts(), (0, 0), "objects left after every object was deleted: {text:?}");
});
