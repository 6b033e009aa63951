//! ye client.
