//! Registered buffers for a command's data: the core-wide allocation gate of
//! [`basalt_bdev::bufs`], shared with the other targets.

pub use basalt_bdev::bufs::{alloc, alloc_copy};
