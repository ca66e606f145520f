//! The shared region: a sealed memfd, its `#[repr(C)]` header and its layout.
//!
//! # Layout (all offsets from the start of the memfd, little-endian, 64-byte aligned)
//!
//! ```text
//! 0      RegionHeader (256 B): magic, layout version, geometry, total length, epoch, PIDs,
//!        then two doorbell lines (one waiting flag per direction)
//! 256    commands    ring: indices (head line, tail line: 128 B), then frames × frame_size
//! ...    completions ring: same shape
//! ...    events      ring: same shape
//! page   data slots: slot_count × slot_size (page aligned, so O_DIRECT can use them)
//! ```
//!
//! The creator (`basalt control`) writes the header once, before it seals the memfd and passes
//! it on; afterwards only the epoch word is rewritten by nobody and the attacher PID once by the
//! attacher. The receiver trusts nothing: [`Region::open`] checks the seals, the file size, the
//! magic, the version and every geometry limit, and recomputes the layout itself; from then on
//! it uses its own copy of the geometry, never the header's, so a peer that rewrites the header
//! later cannot move a ring under us.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};

use crate::error::RegionError;
use crate::shm::{Shared, Shm};

/// `b"BSLTRING"` read as a little-endian `u64`: the first eight bytes of every region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"BSLTRING");

/// Layout version of the region. One line per version:
///
/// - 1: header of 256 bytes, three rings (commands, completions, events), data slots.
pub const LAYOUT_VERSION: u32 = 1;

/// Size of the region header (offset of the first ring).
pub const HEADER_LEN: usize = 256;

/// Largest region [`Region::open`] accepts (a sanity bound on the peer's geometry).
pub const MAX_REGION_LEN: u64 = 16 << 30;

/// Most frames in one ring.
pub const MAX_FRAMES: u32 = 1 << 16;
/// Smallest frame: a 4-byte length, a message header and some payload.
pub const MIN_FRAME_SIZE: u32 = 64;
/// Largest frame.
pub const MAX_FRAME_SIZE: u32 = 64 << 10;
/// Data slots are a multiple of this (page size, and O_DIRECT's strictest alignment).
pub const SLOT_ALIGN: u32 = 4096;
/// Largest data slot.
pub const MAX_SLOT_SIZE: u32 = 64 << 20;
/// Most data slots.
pub const MAX_SLOTS: u32 = 1 << 16;

const CACHE_LINE: usize = 64;
const PAGE: usize = 4096;

/// The generation of a pairing between the two processes.
///
/// The creator bumps it every time it sets up a region for a new (or restarted) peer, and every
/// message carries it; a message from another epoch is refused. Epoch 0 is never used, so a
/// zeroed header or message never looks current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The first epoch.
    pub const FIRST: Epoch = Epoch(1);

    /// The epoch after this one.
    #[must_use]
    pub fn next(self) -> Epoch {
        Epoch(self.0.wrapping_add(1).max(1))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Shape of one ring: how many frames and how large each is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Number of frames: a power of two in `2..=MAX_FRAMES`.
    pub frames: u32,
    /// Bytes per frame, a multiple of 64 in `MIN_FRAME_SIZE..=MAX_FRAME_SIZE`. A frame holds
    /// a 4-byte length and the message (header and payload).
    pub frame_size: u32,
}

impl RingGeometry {
    /// Largest message (header included) a frame of this ring carries.
    pub fn max_message(&self) -> usize {
        self.frame_size as usize - crate::spsc::FRAME_PREFIX
    }
}

/// Sizes of everything in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Commands, control → datapath.
    pub commands: RingGeometry,
    /// Completions, datapath → control (one per command).
    pub completions: RingGeometry,
    /// Events, datapath → control (unsolicited).
    pub events: RingGeometry,
    /// Bytes per data slot: a multiple of 4096, at most `MAX_SLOT_SIZE`.
    pub slot_size: u32,
    /// Number of data slots, at most `MAX_SLOTS` (0: no bulk transfers).
    pub slot_count: u32,
}

impl Default for Geometry {
    /// 256 commands and completions of 4 KiB, 64 events of 1 KiB, 64 data slots of 1 MiB
    /// (about 66 MiB in all).
    fn default() -> Self {
        Geometry {
            commands: RingGeometry {
                frames: 256,
                frame_size: 4096,
            },
            completions: RingGeometry {
                frames: 256,
                frame_size: 4096,
            },
            events: RingGeometry {
                frames: 64,
                frame_size: 1024,
            },
            slot_size: 1 << 20,
            slot_count: 64,
        }
    }
}

/// Where one ring lies in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingLayout {
    /// Offset of its [`RingIndices`].
    pub(crate) indices: usize,
    /// Offset of frame 0.
    pub(crate) frames: usize,
    pub(crate) geometry: RingGeometry,
}

/// Where everything lies in the region, computed from a validated [`Geometry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) commands: RingLayout,
    pub(crate) completions: RingLayout,
    pub(crate) events: RingLayout,
    pub(crate) slots: usize,
    pub(crate) total_len: usize,
}

fn check_ring(name: &'static str, r: RingGeometry) -> Result<(), RegionError> {
    if !r.frames.is_power_of_two() || !(2..=MAX_FRAMES).contains(&r.frames) {
        return Err(RegionError::BadRing {
            ring: name,
            what: "frame count",
            value: r.frames,
        });
    }
    if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&r.frame_size)
        || !r.frame_size.is_multiple_of(CACHE_LINE as u32)
    {
        return Err(RegionError::BadRing {
            ring: name,
            what: "frame size",
            value: r.frame_size,
        });
    }
    Ok(())
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

impl Geometry {
    /// Checks every limit and computes the layout.
    pub(crate) fn layout(&self) -> Result<Layout, RegionError> {
        check_ring("commands", self.commands)?;
        check_ring("completions", self.completions)?;
        check_ring("events", self.events)?;
        if !self.slot_size.is_multiple_of(SLOT_ALIGN)
            || self.slot_size > MAX_SLOT_SIZE
            || (self.slot_size == 0 && self.slot_count != 0)
        {
            return Err(RegionError::BadSlots {
                what: "slot size",
                value: self.slot_size,
            });
        }
        if self.slot_count > MAX_SLOTS {
            return Err(RegionError::BadSlots {
                what: "slot count",
                value: self.slot_count,
            });
        }
        // All in u64 with the limits above: no overflow is possible, but check anyway.
        let mut at = HEADER_LEN as u64;
        let mut ring = |g: RingGeometry| -> RingLayout {
            let indices = at;
            let frames = indices + size_of::<RingIndices>() as u64;
            at = frames + u64::from(g.frames) * u64::from(g.frame_size);
            RingLayout {
                indices: indices as usize,
                frames: frames as usize,
                geometry: g,
            }
        };
        let commands = ring(self.commands);
        let completions = ring(self.completions);
        let events = ring(self.events);
        let too_large = || RegionError::TooLarge {
            max: MAX_REGION_LEN,
        };
        let slots = align_up(at, PAGE as u64).ok_or_else(too_large)?;
        let data = u64::from(self.slot_size) * u64::from(self.slot_count);
        let total = align_up(slots.checked_add(data).ok_or_else(too_large)?, PAGE as u64)
            .ok_or_else(too_large)?;
        if total > MAX_REGION_LEN {
            return Err(RegionError::TooLarge {
                max: MAX_REGION_LEN,
            });
        }
        let total_len = usize::try_from(total).map_err(|_| too_large())?;
        Ok(Layout {
            commands,
            completions,
            events,
            slots: slots as usize,
            total_len,
        })
    }
}

/// One cache line holding one value, so the two ends never write the same line.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Line<T>(pub(crate) T);

/// The head and tail of one ring, each on its own cache line.
///
/// `head` is written only by the consumer (next frame it will read), `tail` only by the
/// producer (next frame it will write). Both count frames from 0 and never wrap in practice
/// (2^64 frames); the frame index is `counter % frames`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RingIndices {
    pub(crate) head: Line<AtomicU64>,
    pub(crate) tail: Line<AtomicU64>,
}

/// The region header, at offset 0.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct RegionHeader {
    magic: AtomicU64,
    version: AtomicU32,
    header_len: AtomicU32,
    total_len: AtomicU64,
    rings: [[AtomicU32; 2]; 3],
    slot_size: AtomicU32,
    slot_count: AtomicU32,
    epoch: AtomicU64,
    creator_pid: AtomicU32,
    attacher_pid: AtomicU32,
    reserved: [AtomicU64; 7],
    /// Set by control while it sleeps on its eventfd (completions and events).
    pub(crate) control_waiting: Line<AtomicU32>,
    /// Set by the datapath while it sleeps on its eventfd (commands).
    pub(crate) datapath_waiting: Line<AtomicU32>,
}

const _: () = assert!(size_of::<RegionHeader>() == HEADER_LEN);
const _: () = assert!(std::mem::offset_of!(RegionHeader, epoch) == 56);
const _: () = assert!(std::mem::offset_of!(RegionHeader, control_waiting) == 128);
const _: () = assert!(size_of::<RingIndices>() == 128);

// SAFETY: `#[repr(C)]`, made only of atomics (and the padding of `Line`), no Drop glue,
// alignment 64 (below a page).
unsafe impl Shared for RegionHeader {}
// SAFETY: `#[repr(C)]`, two `Line<AtomicU64>`: atomics and padding only, no Drop glue,
// alignment 64.
unsafe impl Shared for RingIndices {}

/// A mapped region, created here or received from the peer.
///
/// Cloning is cheap: the mapping is shared (`Arc`); the memfd is not needed after mapping but
/// is kept so the creator can pass it on.
#[derive(Debug, Clone)]
pub struct Region {
    shm: Arc<Shm>,
    fd: Arc<OwnedFd>,
    geometry: Geometry,
    layout: Layout,
    epoch: Epoch,
}

impl Region {
    /// Creates a region: a memfd (`MFD_CLOEXEC | MFD_ALLOW_SEALING`) of the geometry's size,
    /// allocated up front, with its header written and sealed with
    /// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`.
    ///
    /// # Errors
    ///
    /// [`RegionError::BadRing`], [`RegionError::BadSlots`], [`RegionError::TooLarge`] for a
    /// geometry outside the limits, [`RegionError::BadEpoch`] for epoch 0, and
    /// [`RegionError::Create`] when a syscall fails (memfd, size, allocation, seals, mapping).
    pub fn create(geometry: &Geometry, epoch: Epoch) -> Result<Region, RegionError> {
        let layout = geometry.layout()?;
        if epoch.0 == 0 {
            return Err(RegionError::BadEpoch);
        }
        let sys = |step: &'static str| {
            move |e: rustix::io::Errno| RegionError::Create {
                step,
                source: e.into(),
            }
        };
        let fd = rustix::fs::memfd_create(
            "basalt-ring",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(sys("memfd_create"))?;
        let len = layout.total_len as u64;
        rustix::fs::ftruncate(&fd, len).map_err(sys("ftruncate"))?;
        // Allocate every page now: a page that cannot be allocated later would SIGBUS whoever
        // touches it first.
        rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, len).map_err(sys("fallocate"))?;
        let shm = Shm::map(&fd, layout.total_len).map_err(|source| RegionError::Create {
            step: "mmap",
            source,
        })?;
        let h = shm.view::<RegionHeader>(0);
        let r = Ordering::Relaxed;
        h.magic.store(MAGIC, r);
        h.version.store(LAYOUT_VERSION, r);
        h.header_len.store(HEADER_LEN as u32, r);
        h.total_len.store(len, r);
        for (slot, g) in
            h.rings
                .iter()
                .zip([geometry.commands, geometry.completions, geometry.events])
        {
            slot[0].store(g.frames, r);
            slot[1].store(g.frame_size, r);
        }
        h.slot_size.store(geometry.slot_size, r);
        h.slot_count.store(geometry.slot_count, r);
        h.epoch.store(epoch.0, r);
        h.creator_pid
            .store(rustix::process::getpid().as_raw_nonzero().get() as u32, r);
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(sys("fcntl(F_ADD_SEALS)"))?;
        Ok(Region {
            shm: Arc::new(shm),
            fd: Arc::new(fd),
            geometry: *geometry,
            layout,
            epoch,
        })
    }

    /// Maps and validates a region received from the peer.
    ///
    /// Checks, in this order: the seals (the file must be a memfd sealed against shrinking,
    /// growing and further sealing, so it can never SIGBUS us), the file size, the magic, the
    /// layout version, the header length, the geometry limits, the total length against both
    /// the file size and the layout computed here, and the epoch.
    ///
    /// # Errors
    ///
    /// One [`RegionError`] variant per check above; never a panic or a fault, whatever the
    /// file holds.
    pub fn open(fd: OwnedFd) -> Result<Region, RegionError> {
        let need = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        let seals =
            rustix::fs::fcntl_get_seals(&fd).map_err(|e| RegionError::NotSealable(e.into()))?;
        if !seals.contains(need) {
            return Err(RegionError::MissingSeals {
                found: seals.bits(),
                need: need.bits(),
            });
        }
        let st = rustix::fs::fstat(&fd).map_err(|e| RegionError::Stat(e.into()))?;
        let file_len = u64::try_from(st.st_size).unwrap_or(0);
        if file_len < HEADER_LEN as u64 {
            return Err(RegionError::TooSmall { len: file_len });
        }
        if file_len > MAX_REGION_LEN {
            return Err(RegionError::TooLarge {
                max: MAX_REGION_LEN,
            });
        }
        let shm = Shm::map(&fd, file_len as usize).map_err(RegionError::Map)?;
        let h = shm.view::<RegionHeader>(0);
        let r = Ordering::Relaxed;
        let magic = h.magic.load(r);
        if magic != MAGIC {
            return Err(RegionError::BadMagic { found: magic });
        }
        let version = h.version.load(r);
        if version != LAYOUT_VERSION {
            return Err(RegionError::UnsupportedVersion {
                found: version,
                supported: LAYOUT_VERSION,
            });
        }
        let header_len = h.header_len.load(r);
        if header_len as usize != HEADER_LEN {
            return Err(RegionError::BadHeaderLen { found: header_len });
        }
        let ring = |i: usize| RingGeometry {
            frames: h.rings[i][0].load(r),
            frame_size: h.rings[i][1].load(r),
        };
        let geometry = Geometry {
            commands: ring(0),
            completions: ring(1),
            events: ring(2),
            slot_size: h.slot_size.load(r),
            slot_count: h.slot_count.load(r),
        };
        let layout = geometry.layout()?;
        let declared = h.total_len.load(r);
        if declared != file_len || layout.total_len as u64 != file_len {
            return Err(RegionError::SizeMismatch {
                declared,
                file: file_len,
                computed: layout.total_len as u64,
            });
        }
        let epoch = Epoch(h.epoch.load(r));
        if epoch.0 == 0 {
            return Err(RegionError::BadEpoch);
        }
        Ok(Region {
            shm: Arc::new(shm),
            fd: Arc::new(fd),
            geometry,
            layout,
            epoch,
        })
    }

    /// The memfd, to pass to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The geometry (validated; this process's own copy).
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Size of the region in bytes.
    pub fn len(&self) -> usize {
        self.layout.total_len
    }

    /// Always false: a region has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The epoch this region was created for (read once, at create or open).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// PID of the creator, as it wrote it (informational: the peer wrote it).
    pub fn creator_pid(&self) -> u32 {
        self.header().creator_pid.load(Ordering::Relaxed)
    }

    /// PID of the attacher, 0 until it attached (informational: the peer wrote it).
    pub fn attacher_pid(&self) -> u32 {
        self.header().attacher_pid.load(Ordering::Relaxed)
    }

    /// Records this process as the attacher.
    pub(crate) fn set_attacher_pid(&self) {
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        self.header().attacher_pid.store(pid, Ordering::Relaxed);
    }

    pub(crate) fn header(&self) -> &RegionHeader {
        self.shm.view::<RegionHeader>(0)
    }

    pub(crate) fn shm(&self) -> &Arc<Shm> {
        &self.shm
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn small() -> Geometry {
        Geometry {
            commands: RingGeometry {
                frames: 4,
                frame_size: 64,
            },
            completions: RingGeometry {
                frames: 8,
                frame_size: 128,
            },
            events: RingGeometry {
                frames: 2,
                frame_size: 64,
            },
            slot_size: 4096,
            slot_count: 2,
        }
    }

    fn dup(r: &Region) -> OwnedFd {
        r.fd().try_clone_to_owned().expect("dup")
    }

    fn poke(r: &Region, offset: u64, bytes: &[u8]) {
        std::fs::File::from(dup(r))
            .write_all_at(bytes, offset)
            .expect("pwrite");
    }

    #[test]
    fn layout_is_aligned_and_ordered() {
        let l = small().layout().expect("valid");
        assert_eq!(l.commands.indices, HEADER_LEN);
        assert_eq!(l.commands.frames, HEADER_LEN + 128);
        assert_eq!(l.completions.indices, l.commands.frames + 4 * 64);
        assert_eq!(l.events.indices, l.completions.frames + 8 * 128);
        assert_eq!(l.slots % PAGE, 0);
        assert!(l.slots >= l.events.frames + 2 * 64);
        assert_eq!(l.total_len, l.slots + 2 * 4096);
        let d = Geometry::default().layout().expect("default is valid");
        assert_eq!(d.total_len % PAGE, 0);
    }

    #[test]
    fn geometry_limits_are_enforced() {
        let bad = |f: fn(&mut Geometry)| {
            let mut g = small();
            f(&mut g);
            g.layout().expect_err("refused")
        };
        assert!(matches!(
            bad(|g| g.commands.frames = 3),
            RegionError::BadRing { .. }
        ));
        assert!(matches!(
            bad(|g| g.commands.frames = 1),
            RegionError::BadRing { .. }
        ));
        assert!(matches!(
            bad(|g| g.events.frames = 1 << 17),
            RegionError::BadRing { .. }
        ));
        assert!(matches!(
            bad(|g| g.completions.frame_size = 100),
            RegionError::BadRing { .. }
        ));
        assert!(matches!(
            bad(|g| g.completions.frame_size = 32),
            RegionError::BadRing { .. }
        ));
        assert!(matches!(
            bad(|g| g.slot_size = 100),
            RegionError::BadSlots { .. }
        ));
        assert!(matches!(
            bad(|g| g.slot_count = MAX_SLOTS + 1),
            RegionError::BadSlots { .. }
        ));
        assert!(matches!(
            bad(|g| {
                g.slot_size = MAX_SLOT_SIZE;
                g.slot_count = MAX_SLOTS;
            }),
            RegionError::TooLarge { .. }
        ));
    }

    #[test]
    fn create_then_open_agree() {
        let r = Region::create(&small(), Epoch(7)).expect("create");
        let seals = rustix::fs::fcntl_get_seals(r.fd()).expect("seals");
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        let o = Region::open(dup(&r)).expect("open");
        assert_eq!(o.geometry(), r.geometry());
        assert_eq!(o.layout(), r.layout());
        assert_eq!(o.epoch(), Epoch(7));
        assert_eq!(o.creator_pid(), std::process::id());
        assert_eq!(o.attacher_pid(), 0);
        o.set_attacher_pid();
        assert_eq!(r.attacher_pid(), std::process::id());
        // The seals hold: the peer cannot shrink or grow the file.
        assert!(rustix::fs::ftruncate(r.fd(), 4096).is_err());
        assert!(rustix::fs::ftruncate(r.fd(), r.len() as u64 * 2).is_err());
    }

    #[test]
    fn epoch_zero_is_refused() {
        assert!(matches!(
            Region::create(&small(), Epoch(0)),
            Err(RegionError::BadEpoch)
        ));
        assert_eq!(Epoch(u64::MAX).next(), Epoch(1));
        let r = Region::create(&small(), Epoch(1)).expect("create");
        poke(&r, 56, &0u64.to_le_bytes());
        assert!(matches!(Region::open(dup(&r)), Err(RegionError::BadEpoch)));
    }

    #[test]
    fn unsealed_or_plain_files_are_refused() {
        let fd = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .expect("memfd");
        rustix::fs::ftruncate(&fd, 8192).expect("size");
        assert!(matches!(
            Region::open(fd),
            Err(RegionError::MissingSeals { .. })
        ));
        let fd = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC).expect("memfd");
        // Without ALLOW_SEALING the memfd carries F_SEAL_SEAL only.
        assert!(matches!(
            Region::open(fd),
            Err(RegionError::MissingSeals { .. })
        ));
        let f = std::fs::File::open("/proc/self/exe").expect("a plain file");
        assert!(matches!(
            Region::open(f.into()),
            Err(RegionError::NotSealable(_))
        ));
    }

    #[test]
    fn hostile_headers_are_refused() {
        type Case<'a> = (u64, &'a [u8], fn(&RegionError) -> bool);
        let cases: &[Case<'_>] = &[
            (0, b"XSLTRING", |e| {
                matches!(e, RegionError::BadMagic { .. })
            }),
            (8, &2u32.to_le_bytes(), |e| {
                matches!(e, RegionError::UnsupportedVersion { .. })
            }),
            (12, &128u32.to_le_bytes(), |e| {
                matches!(e, RegionError::BadHeaderLen { .. })
            }),
            (16, &1u64.to_le_bytes(), |e| {
                matches!(e, RegionError::SizeMismatch { .. })
            }),
            (24, &5u32.to_le_bytes(), |e| {
                matches!(e, RegionError::BadRing { .. })
            }),
            // A geometry that is valid but does not fit the file.
            (32, &64u32.to_le_bytes(), |e| {
                matches!(e, RegionError::SizeMismatch { .. })
            }),
            (48, &4097u32.to_le_bytes(), |e| {
                matches!(e, RegionError::BadSlots { .. })
            }),
            (52, &u32::MAX.to_le_bytes(), |e| {
                matches!(e, RegionError::BadSlots { .. })
            }),
        ];
        for (offset, bytes, want) in cases {
            let r = Region::create(&small(), Epoch(1)).expect("create");
            poke(&r, *offset, bytes);
            let e = Region::open(dup(&r)).expect_err("refused");
            assert!(want(&e), "offset {offset}: {e}");
            // Every refusal reads as a sentence.
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn tiny_file_is_refused_before_mapping() {
        let fd = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .expect("memfd");
        rustix::fs::ftruncate(&fd, 100).expect("size");
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .expect("seal");
        assert!(matches!(
            Region::open(fd),
            Err(RegionError::TooSmall { len: 100 })
        ));
    }
}
