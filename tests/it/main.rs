//! The one integration-test binary. Each module is a group of scenarios.

mod api;
mod auth;
mod entra;
mod lifecycle;
mod mail;
mod secrets;
mod store;
mod ye;
