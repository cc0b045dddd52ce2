//! Seeded cluster simulator (see docs/simulator.md).
