//! The journal (issue 3).
