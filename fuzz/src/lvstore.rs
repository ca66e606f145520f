//! The `lvol_store` fuzz target: a whole volume store opened from corrupted metadata, then
//! used.
//!
//! Every input starts from the same small store, built deterministically on an in-memory
//! device ([`pristine`]): a 4 MiB device of 64 clusters of 64 KiB, with thin and thick volumes,
//! a two-level map, a snapshot, a clone, a deleted volume, properties over two pages, a
//! volume table over two pages and two commits, so that both superblock slots are valid (page
//! 0 holds generation 3, page 1 generation 2, whose tree is still intact on the device).
//!
//! # Input
//!
//! One byte `n`, then `n` [`Patch`]es applied to that device, then [`Op`]s until the input
//! ends (at most [`MAX_OPS`]). Missing bytes read as zeros, so every input means something and
//! the empty input is the pristine store, opened and checked. [`StoreInput`] encodes and
//! decodes the format, so seeds are written from values.
//!
//! A patch is `kind u8, a u16, b u16, len u8, bytes[len]` (little-endian). The low two bits of
//! `kind` choose [`Patch::Write`], [`Patch::Xor`], [`Patch::Copy`] or [`Patch::Resize`]; bit 2
//! makes `a` an index into the pages the pristine store wrote ([`PagePick::Written`]) rather
//! than any page of the device, bit 3 does the same for `b` (the source of a copy), and bit 7
//! recomputes the CRC-32C of the changed page afterwards, like `lvol_metadata`'s reseal bit, so
//! that the decoders get past the checksum and see the change.
//!
//! An op is a tag byte (modulo the number of ops) and its fields: see [`Op`].
//!
//! # What must hold
//!
//! - `Store::open` on the patched device returns a value or an error whose message is not
//!   empty; never a panic, a hang or an unbounded allocation.
//! - An opened store passes its own invariants: every cluster a lookup returns lies inside
//!   the store, is in use and referenced; [`Store::check`] runs (and finds nothing on the
//!   pristine store).
//! - Operations succeed or fail as their documentation says (a fresh valid name always makes
//!   a snapshot, a write is visible to the next lookup, ...).
//! - A commit that succeeds leaves a store that checks clean and is no longer dirty; reopening
//!   then gives back exactly what was committed (superblock, records, properties and every
//!   probed map entry). A commit that fails, including one whose device starts failing
//!   writes halfway ([`Op::FailingCommit`]), leaves the previous commit intact: reopening gives
//!   that one back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use basalt_lvol::format::{
    CRC_OFFSET, MapEntry, MapLeaf, MapNode, PAGE_MAGIC, PAGE_SIZE, PageKind, PageNo,
    PropertiesPage, StoreBounds, Superblock, VOLUME_READ_ONLY, VOLUME_SNAPSHOT, VolumeRecord,
    VolumeTablePage, check_name,
};
use basalt_lvol::store::{MetaDisk, Store, StoreError};

use crate::Fields;

/// Cluster size of the pristine store: the smallest the format allows, so that a small device
/// has many clusters.
pub const CLUSTER_SIZE: u32 = 64 * 1024;
/// Block size of the pristine store.
pub const BLOCK_SIZE: u32 = 512;
/// Pages of the device the pristine store is made on: 64 clusters, 4 MiB.
pub const DEVICE_PAGES: u64 = 64 * CLUSTER_SIZE as u64 / PAGE_SIZE as u64;
/// Largest device a patch or an op can make (16 MiB): keeps every run small.
pub const MAX_DEVICE_PAGES: u64 = 4 * DEVICE_PAGES;
/// Ops run per input, at most.
pub const MAX_OPS: usize = 256;
/// Commits and reopens per input, at most (each writes or reads the whole metadata).
pub const MAX_HEAVY_OPS: usize = 12;
/// Map entries probed per volume: the first and the last this many clusters.
const PROBES_PER_END: u64 = 16;
/// Map entries probed in all, at most (besides those the ops wrote): a corrupted volume
/// table may hold thousands of volumes of any size.
const MAX_PROBES: usize = 2048;
/// The uuid the pristine store is given (see [`normalize`]).
const FUZZ_UUID: [u8; 16] = *b"basalt-fuzz-lvs1";
/// Creation time written into the pristine store (Unix ns).
const EPOCH_NS: u64 = 1_700_000_000_000_000_000;

/// An in-memory device for store metadata: pages never written read as zeros, pages beyond
/// its end fail, and writes can be made to fail from some point on (a dying device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemDisk {
    pages: BTreeMap<u64, Box<[u8; PAGE_SIZE]>>,
    total_pages: u64,
    /// Writes that still succeed (`None`: every one).
    writes_left: Option<u32>,
}

impl MemDisk {
    /// A zeroed device of `total_pages` pages.
    pub fn new(total_pages: u64) -> MemDisk {
        MemDisk {
            pages: BTreeMap::new(),
            total_pages,
            writes_left: None,
        }
    }

    /// Pages of the device.
    pub fn total_pages(&self) -> u64 {
        self.total_pages
    }

    /// Page `page` as last written, `None` if never written (it reads as zeros).
    pub fn page(&self, page: u64) -> Option<&[u8; PAGE_SIZE]> {
        self.pages.get(&page).map(|p| &**p)
    }

    /// Every page ever written, in order.
    pub fn written(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.keys().copied()
    }

    /// Truncates or extends the device to `total_pages` pages; what lay beyond the new end
    /// is lost (an extended device reads as zeros there).
    pub fn set_total_pages(&mut self, total_pages: u64) {
        self.pages.retain(|&p, _| p < total_pages);
        self.total_pages = total_pages;
    }

    /// Page `page` for patching (zeros if never written). `page` must lie on the device.
    fn page_mut(&mut self, page: u64) -> &mut [u8; PAGE_SIZE] {
        assert!(page < self.total_pages, "patching beyond the device");
        self.pages
            .entry(page)
            .or_insert_with(|| Box::new([0; PAGE_SIZE]))
    }
}

impl MetaDisk for MemDisk {
    fn size_bytes(&self) -> u64 {
        self.total_pages * PAGE_SIZE as u64
    }

    fn read_page(&mut self, page: PageNo) -> Result<Vec<u8>, String> {
        if page.0 >= self.total_pages {
            return Err(format!(
                "{page} lies beyond the end of the device ({} pages)",
                self.total_pages
            ));
        }
        Ok(self
            .pages
            .get(&page.0)
            .map_or_else(|| vec![0; PAGE_SIZE], |p| p.to_vec()))
    }

    fn write_page(&mut self, page: PageNo, bytes: &[u8]) -> Result<(), String> {
        let bytes = <&[u8; PAGE_SIZE]>::try_from(bytes)
            .unwrap_or_else(|_| panic!("the store wrote {} bytes to {page}", bytes.len()));
        if page.0 >= self.total_pages {
            return Err(format!(
                "{page} lies beyond the end of the device ({} pages)",
                self.total_pages
            ));
        }
        if let Some(n) = &mut self.writes_left {
            if *n == 0 {
                return Err(format!("writing {page}: the device failed (injected)"));
            }
            *n -= 1;
        }
        self.pages.insert(page.0, Box::new(*bytes));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        // Writes land at once: a commit that returns an error therefore never wrote its
        // superblock (the last write), which is what the target checks.
        Ok(())
    }
}

/// The device every `lvol_store` input starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pristine {
    /// The device, holding a committed store.
    pub disk: MemDisk,
    /// Every page written while making it, in order: what [`PagePick::Written`] picks from.
    pub written: Vec<u64>,
}

impl Pristine {
    /// The index of `page` in [`Pristine::written`], for a [`PagePick::Written`].
    ///
    /// # Panics
    /// If the pristine store never wrote `page`.
    pub fn written_index(&self, page: u64) -> u16 {
        let i = self
            .written
            .iter()
            .position(|&p| p == page)
            .unwrap_or_else(|| panic!("the pristine store never wrote page {page}"));
        u16::try_from(i).expect("a few pages")
    }
}

/// The pristine store, built once per process (see [`build_pristine`]).
pub fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(build_pristine)
}

/// Writes subclusters `bits` (0: all) of cluster `index` of volume `id` the way the volume
/// layer would: in place when the store says the cluster is the volume's alone, otherwise into
/// a new cluster that keeps the old one as its backing for the other subclusters.
fn write_cluster(s: &mut Store, id: u64, index: u64, bits: u64) -> Result<(), StoreError> {
    let bits = if bits == 0 { u64::MAX } else { bits };
    let found = s.lookup(id, index)?;
    let old = found.entry;
    let backing = |back: u64, back_bits: u64| {
        let back_bits = back_bits & !bits;
        if back_bits == 0 {
            (0, 0)
        } else {
            (back, back_bits)
        }
    };
    if found.own_exclusive {
        let (back, back_bits) = backing(old.back, old.back_bits);
        let entry = MapEntry {
            own: old.own,
            own_bits: old.own_bits | bits,
            back,
            back_bits,
        };
        return s.set_entry(id, index, entry);
    }
    let (back, back_bits) = if old.own != 0 {
        backing(old.own, old.own_bits)
    } else {
        backing(old.back, old.back_bits)
    };
    let own = s.alloc_cluster()?;
    let entry = MapEntry {
        own,
        own_bits: bits,
        back,
        back_bits,
    };
    s.set_entry(id, index, entry).inspect_err(|_| {
        s.abandon_cluster(own);
    })
}

/// Builds the pristine store: deterministic, byte for byte (the uuids and timestamps that differ
/// from one build to the next are replaced by fixed values).
///
/// # Panics
/// If the store refuses any step (a bug in the store, or in this function).
pub fn build_pristine() -> Pristine {
    let mut disk = MemDisk::new(DEVICE_PAGES);
    let cluster = u64::from(CLUSTER_SIZE);
    let mut s = Store::create(&mut disk, "fuzz-store", CLUSTER_SIZE, BLOCK_SIZE)
        .expect("create the pristine store");
    let write = |s: &mut Store, id, index, bits| {
        write_cluster(s, id, index, bits).expect("write a pristine cluster");
    };
    // A thin volume of 16 clusters, 6 mapped (some only partly), with a property.
    let a = s.create_volume("vol-a", 16 * cluster).expect("vol-a");
    for i in 0..6 {
        let bits = if i % 2 == 0 {
            u64::MAX
        } else {
            0xff << (8 * i)
        };
        write(&mut s, a, i, bits);
    }
    s.set_property(
        a,
        "cinder.volume_id",
        Some(b"0b7e4c52-0000-4000-8000-000000000001"),
    )
    .expect("property");
    // 256 clusters: a two-level map (a node, two leaves).
    let b = s.create_volume("vol-b", 256 * cluster).expect("vol-b");
    write(&mut s, b, 0, 0b1);
    write(&mut s, b, 200, 0xf0f0);
    let thick = s
        .create_thick_volume("vol-thick", 2 * cluster)
        .expect("thick");
    write(&mut s, thick, 0, u64::MAX);
    write(&mut s, thick, 1, u64::MAX);
    s.commit(&mut disk).expect("first commit");

    // A snapshot, copy-on-write into vol-a after it, a clone of the snapshot.
    let snap = s.snapshot(a, "vol-a-snap").expect("snapshot");
    write(&mut s, a, 0, 0xf);
    write(&mut s, a, 8, 0xff00);
    let clone = s.clone_volume(snap, "vol-a-clone").expect("clone");
    write(&mut s, clone, 1, 0xf0);
    // A volume with data, deleted: its space is released by the second commit.
    let doomed = s.create_volume("doomed", 4 * cluster).expect("doomed");
    write(&mut s, doomed, 0, u64::MAX);
    s.delete(doomed).expect("delete");
    // Properties over two pages.
    s.set_property(b, "big-1", Some(&[0xa5; 3000]))
        .expect("big property");
    s.set_property(b, "big-2", Some(&[0x5a; 3000]))
        .expect("big property");
    // Seventeen volumes in all: a volume table of two pages.
    for i in 0..12 {
        let v = s
            .create_volume(&format!("small-{i:02}"), cluster)
            .expect("small volume");
        if i == 0 {
            s.set_read_only(v, true).expect("read-only");
        }
    }
    s.commit(&mut disk).expect("second commit");
    drop(s);

    normalize(&mut disk);
    let s = Store::open(&mut disk).expect("the pristine store opens");
    assert_eq!(s.superblock().generation, 3);
    assert_eq!(s.volumes().count(), 17);
    let report = s.check();
    assert!(
        report.problems.is_empty(),
        "pristine store: {:?}",
        report.problems
    );
    let written = disk.written().collect();
    Pristine { disk, written }
}

/// A fixed uuid for volume `id`.
fn volume_uuid(id: u64) -> [u8; 16] {
    let mut u = *b"fuzz-volume-\0\0\0\0";
    u[12..].copy_from_slice(&u32::try_from(id).unwrap_or(u32::MAX).to_le_bytes());
    u
}

/// Replaces what differs from one build to the next (the store's and volumes' uuids, the
/// timestamps) by fixed values in every page written, so that an input means the same thing
/// in every process: a crash found once reproduces.
fn normalize(disk: &mut MemDisk) {
    let bounds = StoreBounds::from(
        &Superblock::decode(disk.page(0).expect("slot 0")).expect("slot 0 decodes"),
    );
    for (&p, bytes) in &mut disk.pages {
        let page = PageNo(p);
        let buf = &bytes[..];
        let new = if p < 2 {
            let mut sb = Superblock::decode(buf).expect("both slots are written");
            sb.uuid = FUZZ_UUID;
            sb.created_ns = EPOCH_NS;
            sb.committed_ns = EPOCH_NS + sb.generation;
            sb.encode()
        } else if buf[..4] == PAGE_MAGIC {
            match buf[4] {
                k if k == PageKind::VolumeTable as u8 => {
                    let mut t = VolumeTablePage::decode(buf, page, &bounds).expect("table");
                    for v in &mut t.volumes {
                        v.uuid = volume_uuid(v.id);
                        v.created_ns = EPOCH_NS + v.id;
                    }
                    t.encode(page, &FUZZ_UUID)
                }
                k if k == PageKind::MapNode as u8 => MapNode::decode(buf, page, &bounds)
                    .expect("map node")
                    .encode(page, &FUZZ_UUID),
                k if k == PageKind::MapLeaf as u8 => MapLeaf::decode(buf, page, &bounds)
                    .expect("map leaf")
                    .encode(page, &FUZZ_UUID),
                k if k == PageKind::Properties as u8 => PropertiesPage::decode(buf, page, &bounds)
                    .expect("properties")
                    .encode(page, &FUZZ_UUID)
                    .expect("fits"),
                k => panic!("{page}: unknown page kind {k}"),
            }
        } else {
            continue;
        };
        *bytes = new;
    }
}

/// Which page a [`Patch`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePick {
    /// The n-th (modulo their number) page the pristine store wrote: superblocks, tables,
    /// properties and map pages, current or stale.
    Written(u16),
    /// Page n, modulo the device's pages.
    Any(u16),
}

impl PagePick {
    fn resolve(self, written: &[u64], total_pages: u64) -> Option<u64> {
        match self {
            PagePick::Written(i) => written
                .get(usize::from(i) % written.len())
                .copied()
                .filter(|&p| p < total_pages),
            PagePick::Any(p) => u64::from(p).checked_rem(total_pages),
        }
    }

    fn raw(self) -> (u16, bool) {
        match self {
            PagePick::Written(i) => (i, true),
            PagePick::Any(p) => (p, false),
        }
    }

    fn from_raw(v: u16, written: bool) -> PagePick {
        if written {
            PagePick::Written(v)
        } else {
            PagePick::Any(v)
        }
    }
}

/// One change to the pristine device before the store is opened. A page a patch names that
/// lies beyond the (resized) device is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch {
    /// Overwrites bytes from `offset` (modulo the page size; cut at the page's end).
    Write {
        /// The page.
        page: PagePick,
        /// Where in the page.
        offset: u16,
        /// The new bytes (at most 255).
        bytes: Vec<u8>,
        /// Recompute the page's CRC-32C afterwards.
        reseal: bool,
    },
    /// XORs bytes into the page from `offset`, as [`Patch::Write`].
    Xor {
        /// The page.
        page: PagePick,
        /// Where in the page.
        offset: u16,
        /// The mask (at most 255 bytes).
        bytes: Vec<u8>,
        /// Recompute the page's CRC-32C afterwards.
        reseal: bool,
    },
    /// Copies page `from` over page `to`: a misdirected or stale write.
    Copy {
        /// The page read.
        from: PagePick,
        /// The page overwritten.
        to: PagePick,
        /// Recompute the CRC-32C of `to` afterwards.
        reseal: bool,
    },
    /// The device now has `pages % (MAX_DEVICE_PAGES + 1)` pages: truncated or grown.
    Resize {
        /// The new size, in pages.
        pages: u16,
    },
}

/// Recomputes the CRC-32C in the last four bytes of a page (metadata page or superblock).
pub fn reseal(page: &mut [u8; PAGE_SIZE]) {
    let crc = crc32c::crc32c(&page[..CRC_OFFSET]);
    page[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
}

impl Patch {
    fn apply(&self, disk: &mut MemDisk, written: &[u64]) {
        let total = disk.total_pages();
        let (target, reseal_it) = match self {
            Patch::Write {
                page,
                offset,
                bytes,
                reseal,
            }
            | Patch::Xor {
                page,
                offset,
                bytes,
                reseal,
            } => {
                let Some(p) = page.resolve(written, total) else {
                    return;
                };
                let buf = disk.page_mut(p);
                let at = usize::from(*offset) % PAGE_SIZE;
                let n = bytes.len().min(PAGE_SIZE - at);
                let dst = &mut buf[at..at + n];
                if matches!(self, Patch::Write { .. }) {
                    dst.copy_from_slice(&bytes[..n]);
                } else {
                    dst.iter_mut().zip(bytes).for_each(|(d, m)| *d ^= m);
                }
                (p, *reseal)
            }
            Patch::Copy { from, to, reseal } => {
                let (Some(f), Some(t)) = (from.resolve(written, total), to.resolve(written, total))
                else {
                    return;
                };
                let src = disk.page(f).map_or([0; PAGE_SIZE], |b| *b);
                *disk.page_mut(t) = src;
                (t, *reseal)
            }
            Patch::Resize { pages } => {
                disk.set_total_pages(u64::from(*pages) % (MAX_DEVICE_PAGES + 1));
                return;
            }
        };
        if reseal_it {
            reseal(disk.page_mut(target));
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (kind, a, b, reseal, bytes): (u8, PagePick, PagePick, bool, &[u8]) = match self {
            Patch::Write {
                page,
                offset,
                bytes,
                reseal,
            } => (0, *page, PagePick::Any(*offset), *reseal, bytes),
            Patch::Xor {
                page,
                offset,
                bytes,
                reseal,
            } => (1, *page, PagePick::Any(*offset), *reseal, bytes),
            Patch::Copy { from, to, reseal } => (2, *to, *from, *reseal, &[]),
            Patch::Resize { pages } => (3, PagePick::Any(*pages), PagePick::Any(0), false, &[]),
        };
        let (a, a_written) = a.raw();
        let (b, b_written) = b.raw();
        let len = u8::try_from(bytes.len()).expect("a patch holds at most 255 bytes");
        out.push(
            kind | u8::from(a_written) << 2 | u8::from(b_written) << 3 | u8::from(reseal) << 7,
        );
        out.extend(a.to_le_bytes());
        out.extend(b.to_le_bytes());
        out.push(len);
        out.extend_from_slice(bytes);
    }

    fn decode(f: &mut Fields<'_>) -> Patch {
        let kind = f.u8();
        let (a, b) = (f.u16(), f.u16());
        let len = usize::from(f.u8());
        let n = len.min(f.0.len());
        let bytes = f.0[..n].to_vec();
        f.0 = &f.0[n..];
        let reseal = kind & 0x80 != 0;
        let page = PagePick::from_raw(a, kind & 0x04 != 0);
        match kind & 0x03 {
            0 => Patch::Write {
                page,
                offset: b,
                bytes,
                reseal,
            },
            1 => Patch::Xor {
                page,
                offset: b,
                bytes,
                reseal,
            },
            2 => Patch::Copy {
                from: PagePick::from_raw(b, kind & 0x08 != 0),
                to: page,
                reseal,
            },
            _ => Patch::Resize { pages: a },
        }
    }
}

/// One operation on the opened store: a tag byte, then its fields (little-endian). A
/// `volume` byte picks among the store's volumes in id order, modulo their number plus one:
/// the extra value names no volume. A `name` byte makes a fresh name (`fz-N`) below `0xf0`,
/// then an empty name, one too long, one with a control character, the longest valid one, and
/// from `0xf4` the name of an existing volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Tag 0: writes subclusters `bits` (0: all) of cluster `index` (modulo the volume's
    /// clusters), in place or copy-on-write as the volume layer would. Read-only volumes are
    /// skipped.
    Write {
        /// Volume selector.
        volume: u8,
        /// Cluster index.
        index: u32,
        /// Subclusters written.
        bits: u64,
    },
    /// Tag 1: unmaps cluster `index` (modulo the volume's clusters).
    Unmap {
        /// Volume selector.
        volume: u8,
        /// Cluster index.
        index: u32,
    },
    /// Tag 2: snapshots a volume.
    Snapshot {
        /// Volume selector.
        volume: u8,
        /// Name selector.
        name: u8,
    },
    /// Tag 3: clones a volume.
    Clone {
        /// Volume selector.
        volume: u8,
        /// Name selector.
        name: u8,
    },
    /// Tag 4: creates a volume of `blocks` × 512 bytes (at most 2 TiB).
    Create {
        /// Name selector.
        name: u8,
        /// Size in 512-byte units.
        blocks: u32,
        /// Thick rather than thin.
        thick: bool,
    },
    /// Tag 5: deletes a volume.
    Delete {
        /// Volume selector.
        volume: u8,
    },
    /// Tag 6: resizes a volume to `blocks` × 512 bytes (growing only succeeds).
    Resize {
        /// Volume selector.
        volume: u8,
        /// New size in 512-byte units.
        blocks: u32,
    },
    /// Tag 7: sets property `prop-KEY` to `len` bytes of `KEY`; a `len` of `0xffff` removes it,
    /// one over a page is refused.
    SetProperty {
        /// Volume selector.
        volume: u8,
        /// Key (and fill byte).
        key: u8,
        /// Value length.
        len: u16,
    },
    /// Tag 8: renames a volume.
    Rename {
        /// Volume selector.
        volume: u8,
        /// Name selector.
        name: u8,
    },
    /// Tag 9: reverts a volume to a snapshot (any volume, as the store allows).
    Revert {
        /// Volume selector.
        volume: u8,
        /// Volume selector of the snapshot.
        snapshot: u8,
    },
    /// Tag 10: sets or clears a volume's read-only flag.
    ReadOnly {
        /// Volume selector.
        volume: u8,
        /// Set rather than clear.
        on: bool,
    },
    /// Tag 11: the device grows by `pages` (up to [`MAX_DEVICE_PAGES`]) and the store takes
    /// the new clusters in.
    Grow {
        /// Pages added.
        pages: u16,
    },
    /// Tag 12: commits.
    Commit,
    /// Tag 13: commits on a device whose writes fail after `writes` more of them.
    FailingCommit {
        /// Writes that still succeed.
        writes: u8,
    },
    /// Tag 14: forgets what was not committed and opens the store again.
    Reopen,
}

/// Number of op tags.
const OP_TAGS: u8 = 15;

impl Op {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Op::Write {
                volume,
                index,
                bits,
            } => {
                out.extend([0, volume]);
                out.extend(index.to_le_bytes());
                out.extend(bits.to_le_bytes());
            }
            Op::Unmap { volume, index } => {
                out.extend([1, volume]);
                out.extend(index.to_le_bytes());
            }
            Op::Snapshot { volume, name } => out.extend([2, volume, name]),
            Op::Clone { volume, name } => out.extend([3, volume, name]),
            Op::Create {
                name,
                blocks,
                thick,
            } => {
                out.extend([4, name]);
                out.extend(blocks.to_le_bytes());
                out.push(u8::from(thick));
            }
            Op::Delete { volume } => out.extend([5, volume]),
            Op::Resize { volume, blocks } => {
                out.extend([6, volume]);
                out.extend(blocks.to_le_bytes());
            }
            Op::SetProperty { volume, key, len } => {
                out.extend([7, volume, key]);
                out.extend(len.to_le_bytes());
            }
            Op::Rename { volume, name } => out.extend([8, volume, name]),
            Op::Revert { volume, snapshot } => out.extend([9, volume, snapshot]),
            Op::ReadOnly { volume, on } => out.extend([10, volume, u8::from(on)]),
            Op::Grow { pages } => {
                out.push(11);
                out.extend(pages.to_le_bytes());
            }
            Op::Commit => out.push(12),
            Op::FailingCommit { writes } => out.extend([13, writes]),
            Op::Reopen => out.push(14),
        }
    }

    fn decode(f: &mut Fields<'_>) -> Op {
        match f.u8() % OP_TAGS {
            0 => Op::Write {
                volume: f.u8(),
                index: f.u32(),
                bits: f.u64(),
            },
            1 => Op::Unmap {
                volume: f.u8(),
                index: f.u32(),
            },
            2 => Op::Snapshot {
                volume: f.u8(),
                name: f.u8(),
            },
            3 => Op::Clone {
                volume: f.u8(),
                name: f.u8(),
            },
            4 => Op::Create {
                name: f.u8(),
                blocks: f.u32(),
                thick: f.u8() & 1 != 0,
            },
            5 => Op::Delete { volume: f.u8() },
            6 => Op::Resize {
                volume: f.u8(),
                blocks: f.u32(),
            },
            7 => Op::SetProperty {
                volume: f.u8(),
                key: f.u8(),
                len: f.u16(),
            },
            8 => Op::Rename {
                volume: f.u8(),
                name: f.u8(),
            },
            9 => Op::Revert {
                volume: f.u8(),
                snapshot: f.u8(),
            },
            10 => Op::ReadOnly {
                volume: f.u8(),
                on: f.u8() & 1 != 0,
            },
            11 => Op::Grow { pages: f.u16() },
            12 => Op::Commit,
            13 => Op::FailingCommit { writes: f.u8() },
            _ => Op::Reopen,
        }
    }
}

/// A decoded `lvol_store` input: see the module documentation for the byte format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreInput {
    /// Changes to the pristine device (at most 255).
    pub patches: Vec<Patch>,
    /// Operations on the opened store (at most [`MAX_OPS`] run).
    pub ops: Vec<Op>,
}

impl StoreInput {
    /// Reads an input; every byte string is one (missing bytes read as zeros).
    pub fn decode(data: &[u8]) -> StoreInput {
        let mut f = Fields(data);
        let n = f.u8();
        let patches = (0..n).map(|_| Patch::decode(&mut f)).collect();
        let mut ops = Vec::new();
        while !f.0.is_empty() && ops.len() < MAX_OPS {
            ops.push(Op::decode(&mut f));
        }
        StoreInput { patches, ops }
    }

    /// The pristine device with the input's patches applied: what the store is opened from.
    pub fn device(&self) -> MemDisk {
        let p = pristine();
        let mut disk = p.disk.clone();
        for patch in &self.patches {
            patch.apply(&mut disk, &p.written);
        }
        disk
    }

    /// Writes the input's bytes: `decode(encode(x)) == x` for up to 255 patches and
    /// [`MAX_OPS`] ops.
    ///
    /// # Panics
    /// With more than 255 patches, or a patch of more than 255 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::try_from(self.patches.len()).expect("at most 255 patches")];
        for p in &self.patches {
            p.encode(&mut out);
        }
        for op in &self.ops {
            op.encode(&mut out);
        }
        out
    }
}

/// What a commit made durable, as far as the target compares it: the superblock, every
/// volume's record and properties, and the map entries probed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Durable {
    sb: Superblock,
    volumes: BTreeMap<u64, DurableVolume>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DurableVolume {
    record: VolumeRecord,
    properties: BTreeMap<String, Vec<u8>>,
    entries: Vec<(u64, MapEntry)>,
}

/// Checks an error's message and returns it.
fn shown(e: &StoreError) -> String {
    let s = e.to_string();
    assert!(!s.is_empty(), "an error without a message: {e:?}");
    s
}

/// Looks up cluster `index` of volume `id` and checks the entry against the space map: every
/// cluster it names lies inside the store, is in use and is referenced.
fn probe(s: &Store, id: u64, index: u64) -> MapEntry {
    let entry = s
        .lookup(id, index)
        .unwrap_or_else(|e| panic!("volume {id}: lookup of cluster {index}: {e}"))
        .entry;
    let total = s.forest().space().total_clusters();
    for (c, bits) in [(entry.own, entry.own_bits), (entry.back, entry.back_bits)] {
        assert_eq!(c == 0, bits == 0, "volume {id} cluster {index}: {entry:?}");
        if c != 0 {
            assert!(
                c < total && s.forest().space().cluster_in_use(c),
                "volume {id} cluster {index} names cluster {c}, not in use ({total} clusters)"
            );
            assert!(
                s.forest().cluster_refs(c) > 0,
                "volume {id} cluster {index} names cluster {c}, unreferenced"
            );
        }
    }
    entry
}

impl Durable {
    /// Reads the store as it stands (right after an open or a commit), probing the first and
    /// last clusters of every volume and those the ops touched.
    fn of(s: &Store, touched: &BTreeSet<(u64, u64)>) -> Durable {
        let mut budget = MAX_PROBES;
        let volumes = s
            .volumes()
            .map(|v| {
                let id = v.record.id;
                let n = s.volume_clusters(id).expect("listed");
                assert!(
                    s.lookup(id, n).is_err(),
                    "volume {id}: a lookup past its end"
                );
                let mut indices: BTreeSet<u64> = touched
                    .range((id, 0)..=(id, u64::MAX))
                    .map(|&(_, i)| i)
                    .filter(|&i| i < n)
                    .collect();
                let ends = (0..n.min(PROBES_PER_END)).chain(n.saturating_sub(PROBES_PER_END)..n);
                for i in ends {
                    if budget == 0 {
                        break;
                    }
                    if indices.insert(i) {
                        budget -= 1;
                    }
                }
                let entries = indices.into_iter().map(|i| (i, probe(s, id, i))).collect();
                let dv = DurableVolume {
                    record: v.record.clone(),
                    properties: v.properties.clone(),
                    entries,
                };
                (id, dv)
            })
            .collect();
        Durable {
            sb: s.superblock().clone(),
            volumes,
        }
    }

    /// Panics unless `s` (just opened) holds exactly this.
    fn assert_matches(&self, s: &Store, when: &str) {
        assert_eq!(s.superblock(), &self.sb, "{when}: superblock");
        let ids: Vec<u64> = s.volumes().map(|v| v.record.id).collect();
        let want: Vec<u64> = self.volumes.keys().copied().collect();
        assert_eq!(ids, want, "{when}: volume ids");
        for (&id, dv) in &self.volumes {
            let v = s.volume(id).expect("listed");
            assert_eq!(v.record, dv.record, "{when}: volume {id}'s record");
            assert_eq!(
                v.properties, dv.properties,
                "{when}: volume {id}'s properties"
            );
            for &(i, e) in &dv.entries {
                assert_eq!(probe(s, id, i), e, "{when}: volume {id}, cluster {i}");
            }
        }
    }
}

/// The store under test and what the target knows about it.
struct Session {
    disk: MemDisk,
    store: Store,
    /// What the device holds as of the last commit (or the first open).
    durable: Durable,
    /// The last durable state was written by a commit of this session (not just opened from
    /// the patched device), so it must check clean.
    committed: bool,
    /// (volume, cluster) pairs the ops wrote or unmapped: probed at every commit.
    touched: BTreeSet<(u64, u64)>,
    heavy: usize,
}

impl Session {
    fn volume(&self, sel: u8) -> u64 {
        let n = self.store.volumes().count();
        let i = usize::from(sel) % (n + 1);
        // Id 0 is never a volume's.
        self.store.volumes().nth(i).map_or(0, |v| v.record.id)
    }

    fn name(&self, sel: u8) -> String {
        match sel {
            0xf0 => String::new(),
            0xf1 => "x".repeat(65),
            0xf2 => "tab\there".into(),
            0xf3 => "é".repeat(32),
            0xf4..=0xff => {
                let n = self.store.volumes().count().max(1);
                self.store
                    .volumes()
                    .nth(usize::from(sel - 0xf4) % n)
                    .map_or_else(|| "vol-a".into(), |v| v.record.name.clone())
            }
            _ => format!("fz-{sel}"),
        }
    }

    /// Whether `name` may be given to a new volume.
    fn fresh(&self, name: &str) -> bool {
        check_name("volume", name).is_ok() && self.store.find(name).is_none()
    }

    fn flags(&self, id: u64) -> Option<u32> {
        self.store.volume(id).ok().map(|v| v.record.flags)
    }

    /// Drops what was not committed and opens the device again: the durable state must come
    /// back.
    fn reopen(&mut self, when: &str) {
        self.disk.writes_left = None;
        self.store = Store::open(&mut self.disk)
            .unwrap_or_else(|e| panic!("{when}: the store does not reopen: {e}"));
        self.durable.assert_matches(&self.store, when);
        let report = self.store.check();
        if self.committed {
            assert!(
                report.problems.is_empty(),
                "{when}: reopened after a commit: {:?}",
                report.problems
            );
        }
    }

    fn commit(&mut self, fail_after: Option<u8>) {
        self.disk.writes_left = fail_after.map(u32::from);
        let result = self.store.commit(&mut self.disk);
        self.disk.writes_left = None;
        match result {
            Ok(()) => {
                assert!(!self.store.is_dirty(), "dirty right after a commit");
                let report = self.store.check();
                assert!(
                    report.problems.is_empty(),
                    "right after a commit: {:?}",
                    report.problems
                );
                self.durable = Durable::of(&self.store, &self.touched);
                self.committed = true;
            }
            Err(e) => {
                let msg = shown(&e);
                if fail_after.is_none() {
                    assert!(
                        matches!(e, StoreError::NoSpace | StoreError::Io(_)),
                        "commit: {msg}"
                    );
                }
                // The previous commit is intact: the store must be reopened, and gives it back.
                self.reopen(&format!("after a failed commit ({msg})"));
            }
        }
    }

    fn run(&mut self, op: Op) {
        fn outcome<T>(r: &Result<T, StoreError>) {
            if let Err(e) = r {
                shown(e);
            }
        }
        match op {
            Op::Write {
                volume,
                index,
                bits,
            } => {
                let id = self.volume(volume);
                let Some(flags) = self.flags(id) else { return };
                if flags & VOLUME_READ_ONLY != 0 {
                    return;
                }
                let n = self.store.volume_clusters(id).expect("exists");
                let index = u64::from(index) % n;
                let r = write_cluster(&mut self.store, id, index, bits);
                outcome(&r);
                match r {
                    Ok(()) => {
                        let bits = if bits == 0 { u64::MAX } else { bits };
                        let e = probe(&self.store, id, index);
                        assert_eq!(e.own_bits & bits, bits, "a write vanished: {e:?}");
                        self.touched.insert((id, index));
                    }
                    Err(e) => assert_eq!(e, StoreError::NoSpace, "write"),
                }
            }
            Op::Unmap { volume, index } => {
                let id = self.volume(volume);
                let Ok(n) = self.store.volume_clusters(id) else {
                    return;
                };
                let index = u64::from(index) % n;
                let r = self.store.set_entry(id, index, MapEntry::default());
                outcome(&r);
                match r {
                    Ok(()) => {
                        assert!(probe(&self.store, id, index).is_empty(), "unmap");
                        self.touched.insert((id, index));
                    }
                    Err(e) => assert_eq!(e, StoreError::NoSpace, "unmap"),
                }
            }
            Op::Snapshot { volume, name } | Op::Clone { volume, name } => {
                let id = self.volume(volume);
                let name = self.name(name);
                let expect = self.flags(id).is_some() && self.fresh(&name);
                let snapshot = matches!(op, Op::Snapshot { .. });
                let r = if snapshot {
                    self.store.snapshot(id, &name)
                } else {
                    self.store.clone_volume(id, &name)
                };
                outcome(&r);
                assert_eq!(r.is_ok(), expect, "snapshot/clone {name:?} of {id}: {r:?}");
                if let Ok(new) = r {
                    let v = self.store.volume(new).expect("made");
                    assert_eq!(v.record.parent_id, id);
                    assert_eq!(v.record.flags & VOLUME_SNAPSHOT != 0, snapshot);
                    let size = self.store.volume(id).expect("exists").record.size_bytes;
                    assert_eq!(v.record.size_bytes, size);
                }
            }
            Op::Create {
                name,
                blocks,
                thick,
            } => {
                let name = self.name(name);
                let size = u64::from(blocks) * u64::from(BLOCK_SIZE);
                let bs = u64::from(self.store.superblock().block_size);
                let valid = self.fresh(&name) && size > 0 && size.is_multiple_of(bs);
                let r = if thick {
                    self.store.create_thick_volume(&name, size)
                } else {
                    self.store.create_volume(&name, size)
                };
                outcome(&r);
                match &r {
                    Ok(_) => assert!(valid, "created {name:?} of {size} bytes"),
                    Err(StoreError::NoSpace) if thick && valid => {}
                    Err(e) => assert!(!valid, "create {name:?} of {size} bytes: {e}"),
                }
            }
            Op::Delete { volume } => {
                let id = self.volume(volume);
                let exists = self.flags(id).is_some();
                let r = self.store.delete(id);
                outcome(&r);
                assert_eq!(r.is_ok(), exists, "delete {id}");
                assert!(self.store.volume(id).is_err(), "deleted, yet there");
            }
            Op::Resize { volume, blocks } => {
                let id = self.volume(volume);
                let size = u64::from(blocks) * u64::from(BLOCK_SIZE);
                let before = self.store.volume(id).map(|v| v.record.clone());
                let r = self.store.resize(id, size);
                outcome(&r);
                match (&before, &r) {
                    (Ok(v), Ok(())) => {
                        assert!(v.flags & VOLUME_READ_ONLY == 0 && size >= v.size_bytes);
                        let n = self.store.volume_clusters(id).expect("exists");
                        let cluster = u64::from(self.store.superblock().cluster_size);
                        assert_eq!(n, size.div_ceil(cluster), "clusters after a resize");
                    }
                    (Ok(v), Err(StoreError::ReadOnly(_))) => {
                        assert!(v.flags & VOLUME_READ_ONLY != 0);
                    }
                    (Ok(v), Err(StoreError::Shrink { .. })) => assert!(size < v.size_bytes),
                    (Ok(_), Err(StoreError::NoSpace | StoreError::Invalid(_))) => {}
                    (Err(_), Err(_)) => {}
                    (Ok(_), Err(e)) => panic!("resize of {id} to {size}: {e}"),
                    (Err(_), Ok(())) => panic!("resized a missing volume"),
                }
            }
            Op::SetProperty { volume, key, len } => {
                let id = self.volume(volume);
                let k = format!("prop-{key}");
                let value = (len != 0xffff).then(|| vec![key; usize::from(len)]);
                let r = self.store.set_property(id, &k, value.as_deref());
                outcome(&r);
                if r.is_ok() {
                    let v = self.store.volume(id).expect("exists");
                    assert_eq!(v.properties.get(&k), value.as_ref(), "property {k}");
                } else if let Ok(v) = self.store.volume(id) {
                    assert!(
                        value.is_some_and(|val| val.len() > 4000),
                        "property {k} refused on volume {}",
                        v.record.id
                    );
                }
            }
            Op::Rename { volume, name } => {
                let id = self.volume(volume);
                let name = self.name(name);
                let same = self.store.volume(id).is_ok_and(|v| v.record.name == name);
                let expect = self.flags(id).is_some() && (same || self.fresh(&name));
                let r = self.store.rename(id, &name);
                outcome(&r);
                assert_eq!(r.is_ok(), expect, "rename {id} to {name:?}: {r:?}");
            }
            Op::Revert { volume, snapshot } => {
                let (id, snap) = (self.volume(volume), self.volume(snapshot));
                let r = self.store.revert(id, snap);
                outcome(&r);
                if r.is_ok() {
                    let n = self.store.volume_clusters(id).expect("exists");
                    for i in 0..n.min(PROBES_PER_END) {
                        assert_eq!(
                            probe(&self.store, id, i),
                            probe(&self.store, snap, i),
                            "revert of {id} to {snap}, cluster {i}"
                        );
                    }
                }
            }
            Op::ReadOnly { volume, on } => {
                let id = self.volume(volume);
                let flags = self.flags(id);
                let r = self.store.set_read_only(id, on);
                outcome(&r);
                let expect = flags.is_some_and(|f| on || f & VOLUME_SNAPSHOT == 0);
                assert_eq!(r.is_ok(), expect, "read-only {on} on {id}: {r:?}");
            }
            Op::Grow { pages } => {
                let total = (self.disk.total_pages() + u64::from(pages)).min(MAX_DEVICE_PAGES);
                if total > self.disk.total_pages() {
                    self.disk.set_total_pages(total);
                }
                let before = self.store.forest().space().total_clusters();
                let r = self.store.grow_store(self.disk.size_bytes());
                outcome(&r);
                let after = r.expect("an open store fits its device, which only grew");
                assert!(after >= before);
                assert_eq!(self.store.forest().space().total_clusters(), after);
            }
            Op::Commit | Op::FailingCommit { .. } | Op::Reopen => {
                if self.heavy >= MAX_HEAVY_OPS {
                    return;
                }
                self.heavy += 1;
                match op {
                    Op::Commit => self.commit(None),
                    Op::FailingCommit { writes } => self.commit(Some(writes)),
                    _ => self.reopen("reopen"),
                }
            }
        }
    }
}

/// `lvol_store`: whole volume stores opened from corrupted metadata, then used. See the
/// [module documentation](self) for the input format and what must hold.
pub fn lvol_store(data: &[u8]) {
    let input = StoreInput::decode(data);
    let mut disk = input.device();
    let store = match Store::open(&mut disk) {
        Ok(s) => s,
        Err(e) => {
            let msg = shown(&e);
            assert!(
                !input.patches.is_empty(),
                "the pristine store does not open: {msg}"
            );
            return;
        }
    };
    let report = store.check();
    for line in report.problems.iter().chain(&report.notes) {
        assert!(!line.is_empty(), "an empty line in {report:?}");
    }
    if input.patches.is_empty() {
        assert!(
            report.problems.is_empty(),
            "pristine: {:?}",
            report.problems
        );
    }
    let durable = Durable::of(&store, &BTreeSet::new());
    let mut s = Session {
        disk,
        store,
        durable,
        committed: false,
        touched: BTreeSet::new(),
        heavy: 0,
    };
    for &op in &input.ops {
        s.run(op);
    }
    // Whatever happened, the device holds the last commit (nothing to see without ops: the
    // device is as it was opened).
    if !input.ops.is_empty() {
        s.reopen("at the end");
    }
}
