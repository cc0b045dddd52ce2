//! Exact replay: a fresh core fed the recorded inputs must produce the recorded outputs.
