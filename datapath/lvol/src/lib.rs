//! The volume store ("lvstore"): thin volumes, O(1) snapshots and clones on a base block
//! device. `docs/lvstore.md` describes the design and the on-disk format.
//!
//! This crate is being built in steps. Today it holds:
//! - the on-disk format ([`format`]): the superblock, metadata page framing, volume records and
//!   the cluster-map pages, each encoded and strictly validated (checksums, bounds, cross-field
//!   checks) so that any byte string read from a device decodes to a value or a precise
//!   [`FormatError`], never a panic;
//! - the space map ([`alloc`]): clusters and metadata pages in use, rebuilt at open by claiming
//!   what the committed trees reference (double references are errors), with releases held
//!   back until the commit that made them is durable.
//!
//! The copy-on-write map tree, commits and recovery, the volume bdev and the checker follow.

#![deny(missing_docs)]

pub mod alloc;
pub mod format;

pub use format::FormatError;
