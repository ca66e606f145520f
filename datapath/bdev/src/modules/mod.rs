//! Block device modules, each a sibling behind the [`crate::Bdev`] trait.

pub mod crash;
pub mod delay;
pub mod error;
pub mod malloc;
pub mod null;
pub mod uring;
