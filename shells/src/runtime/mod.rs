//! The two runtimes that drive the core through the one [`crate::driver`]: `threads`
//! (blocking threads and a channel) and `smol` (an async timer and channel, blocking work on
//! `smol`'s blocking pool). They differ only in how they wait; neither decides anything.

pub mod smol_rt;
pub mod threads;

pub use crate::driver::Msg;
#[cfg(test)]
pub use crate::driver::OperatorReply;
