//! store scenarios.
