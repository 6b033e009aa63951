//! entra scenarios.
