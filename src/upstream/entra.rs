//! entra client.
