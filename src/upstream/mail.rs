//! mail client.
