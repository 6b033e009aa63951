//! lifecycle scenarios.
