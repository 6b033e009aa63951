//! fido-connector: ships YubiKeys that arrive pre-registered to their users in Microsoft
//! Entra ID. The HTTP API is the vendor connector's; everything behind it is ours.
//!
//! The crate is a library with a thin binary (`src/main.rs`). [`app::build`] wires a
//! [`config::Config`] into a running service; tests call the same function on port 0.

pub mod api;
pub mod app;
pub mod auth;
pub mod azure_auth;
pub mod backoff;
pub mod bulk;
pub mod clock;
pub mod config;
pub mod console;
pub mod crypto;
pub mod csv_safe;
pub mod domain;
pub mod faults;
pub mod hex;
pub mod jobs;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod store;
pub mod upstream;

#[cfg(feature = "sandbox")]
pub mod sandbox;
