//! Local file-backed secret store (single machine).
