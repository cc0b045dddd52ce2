//! End-to-end test support (issue 4).
