//! Attribute macros of goka (re-exported by the `goka` crate).
