//! Embedded backend: one SQLite file (WAL mode), the default outside Azure.
