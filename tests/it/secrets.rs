//! secrets scenarios.
