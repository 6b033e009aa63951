//! jwks client.
