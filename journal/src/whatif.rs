//! What-if replay: the recorded world, replayed against a core with changed settings.
