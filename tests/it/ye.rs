//! ye scenarios.
