//! Azure Table Storage backend.
