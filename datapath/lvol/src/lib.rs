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
//! - the cluster maps ([`tree`]): copy-on-write radix trees whose pages and clusters are shared
//!   by reference (snapshot = one reference on a root), with path copying, shadow paging of
//!   committed pages, and reference counts rebuilt by [`tree::Forest::load`].
//!
//! - the store's metadata ([`store`]): create, open (the newer valid superblock slot, the
//!   volume table and properties, the maps) and commit in shadow-paging order over a
//!   [`store::MetaDisk`]; thin volumes, snapshots, clones, delete, revert, resize, rename,
//!   read-only and properties.
//!
//! The volume layer (data copy-on-write by subcluster, thick volumes, the volume bdev on the
//! engine), the checker and the CLI follow.

#![deny(missing_docs)]

pub mod alloc;
pub mod disk;
pub mod format;
pub mod lvs;
pub mod store;
mod sync;
pub mod tree;
pub mod volume;

pub use format::FormatError;
pub use lvs::{LvStore, LvsCounters, SpaceInfo, VolumeInfo, VolumeIoStats};
pub use store::StoreError;
pub use volume::VolumeBdev;
