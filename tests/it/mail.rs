//! mail scenarios.
