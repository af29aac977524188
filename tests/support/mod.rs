//! Shared test support: a fake Kubernetes API server, object builders, DNS client helpers and
//! server harnesses. Each integration test file includes it with `mod support;` and uses what it
//! needs.
#![allow(dead_code)]

pub mod bind;
pub mod dns;
pub mod envtest;
pub mod fake_api;
pub mod image;
pub mod knot;
pub mod objects;
pub mod openmetrics;
pub mod server;
pub mod watchdog;
