//! The one integration-test binary. Each module is a group of scenarios; `support` holds
//! the shared world (connector + simulators) and the Azurite helper.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod alerts;
mod api;
mod auth;
mod bulk;
mod cli;
mod console;
#[cfg(feature = "fault-injection")]
mod crash;
mod deployment;
mod e2e;
mod lifecycle;
mod list;
mod metrics;
mod okta;
mod otlp;
mod pacing;
mod preflight;
mod recovery;
mod replicas;
mod secrets;
mod security;
mod store;
mod support;
mod upstream;
