//! auth scenarios.
