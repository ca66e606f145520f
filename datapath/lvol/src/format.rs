//! On-disk format, version 1 (`docs/lvstore.md` is the reference).
//!
//! Everything is little-endian and lives in 4 KiB pages. Page 0 and page 1 of the base device
//! are the two superblock slots; every other metadata page carries a [`PageHeader`] that names
//! its kind, the store it belongs to, its own page number and the commit generation that wrote
//! it, and ends with a CRC-32C of the page. Decoders check every field they can: a page that is
//! torn, misdirected, from another store or simply garbage is reported as such, and a decoded
//! value never points outside the store.

use std::fmt;

/// Size of every metadata page and of each superblock slot.
pub const PAGE_SIZE: usize = 4096;
/// Magic at the start of a superblock.
pub const SUPER_MAGIC: [u8; 8] = *b"BSLTLVS1";
/// Magic at the start of every other metadata page.
pub const PAGE_MAGIC: [u8; 4] = *b"BLVP";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Subclusters per cluster: the granularity of "this part holds data" bitmaps and of
/// copy-on-write.
pub const SUBCLUSTERS: u32 = 64;
/// Smallest cluster size.
pub const MIN_CLUSTER_SIZE: u32 = 64 * 1024;
/// Largest cluster size.
pub const MAX_CLUSTER_SIZE: u32 = 64 * 1024 * 1024;
/// Bytes of the common page header.
pub const HEADER_LEN: usize = 48;
/// Where the CRC-32C of a page (or superblock) sits: its last four bytes.
pub const CRC_OFFSET: usize = PAGE_SIZE - 4;
/// Bytes between the header and the checksum.
pub const BODY_LEN: usize = CRC_OFFSET - HEADER_LEN;
/// Bytes of one cluster-map entry.
pub const ENTRY_LEN: usize = 32;
/// Entries per map leaf page.
pub const LEAF_FANOUT: usize = BODY_LEN / ENTRY_LEN;
/// Children per map interior page.
pub const NODE_FANOUT: usize = BODY_LEN / 8;
/// Bytes of one volume record.
pub const VOLUME_RECORD_LEN: usize = 256;
/// Volume records per volume-table page (after its 8-byte link to the next page).
pub const VOLUMES_PER_PAGE: usize = (BODY_LEN - 8) / VOLUME_RECORD_LEN;
/// Longest store or volume name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// Tallest cluster map: 126 × 505⁵ leaves' worth of clusters, far beyond any device.
pub const MAX_MAP_HEIGHT: u8 = 6;
/// Largest volume: 1 PiB, so that sums of volume sizes and cluster arithmetic stay far from
/// overflow.
pub const MAX_VOLUME_BYTES: u64 = 1 << 50;
/// Largest commit generation and volume id a superblock may hold: they only ever count up,
/// and this leaves room to count.
pub const MAX_COUNTER: u64 = 1 << 62;

/// A metadata page, as a page number on the base device (byte offset / 4096).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PageNo(pub u64);

impl PageNo {
    /// "No page".
    pub const NONE: PageNo = PageNo(0);

    /// Whether this names a page.
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {}", self.0)
    }
}

/// Why bytes read from a device are not valid store metadata.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum FormatError {
    /// {what}: expected {expected} bytes, got {got}
    Length {
        /// What was decoded.
        what: &'static str,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// not a Basalt volume store (no superblock magic)
    NotAStore,
    /// format version {0} is newer than this Basalt understands (1)
    UnsupportedVersion(u32),
    /// {what}: checksum mismatch (torn or corrupted write)
    Checksum {
        /// What was decoded.
        what: &'static str,
    },
    /// {0}: no page magic (never written, or not metadata)
    NoPageMagic(PageNo),
    /// {page}: belongs to another store
    ForeignStore {
        /// The page read.
        page: PageNo,
    },
    /// {page}: header names {found} (a misdirected write)
    Misdirected {
        /// The page read.
        page: PageNo,
        /// The page number in its header.
        found: PageNo,
    },
    /// {page}: expected a {expected} page, found kind {found}
    WrongKind {
        /// The page read.
        page: PageNo,
        /// The kind wanted.
        expected: PageKind,
        /// The kind byte found.
        found: u8,
    },
    /// {what}: {detail}
    Invalid {
        /// What was decoded.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

fn invalid(what: &'static str, detail: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        what,
        detail: detail.into(),
    }
}

/// Kinds of metadata page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageKind {
    /// A page of volume records.
    VolumeTable = 1,
    /// An interior page of a cluster map.
    MapNode = 2,
    /// A leaf page of a cluster map.
    MapLeaf = 3,
    /// A page of a volume's key/value properties.
    Properties = 4,
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::VolumeTable => "volume-table",
            PageKind::MapNode => "map-node",
            PageKind::MapLeaf => "map-leaf",
            PageKind::Properties => "properties",
        })
    }
}

/// Little-endian field access over a byte slice whose length the caller has checked.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u8(&self, at: usize) -> u8 {
        self.0[at]
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(b)
    }
    fn u64(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&self.0[at..at + N]);
        b
    }
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn check_len(what: &'static str, buf: &[u8]) -> Result<(), FormatError> {
    if buf.len() == PAGE_SIZE {
        Ok(())
    } else {
        Err(FormatError::Length {
            what,
            expected: PAGE_SIZE,
            got: buf.len(),
        })
    }
}

fn seal(page: &mut [u8; PAGE_SIZE]) {
    let crc = crc32c::crc32c(&page[..CRC_OFFSET]);
    put_u32(page, CRC_OFFSET, crc);
}

fn sealed(buf: &[u8]) -> bool {
    Fields(buf).u32(CRC_OFFSET) == crc32c::crc32c(&buf[..CRC_OFFSET])
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Decodes a NUL-padded UTF-8 name field.
fn decode_name(what: &'static str, field: &[u8]) -> Result<String, FormatError> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    if !all_zero(&field[end..]) {
        return Err(invalid(what, "bytes after the name's terminating NUL"));
    }
    let s = std::str::from_utf8(&field[..end]).map_err(|_| invalid(what, "name is not UTF-8"))?;
    Ok(s.to_owned())
}

/// Checks a name for storing: 1 to 64 bytes of UTF-8, no NUL or control characters.
///
/// # Errors
/// [`FormatError::Invalid`] naming the problem.
pub fn check_name(what: &'static str, name: &str) -> Result<(), FormatError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(
            what,
            format!("names are 1 to {MAX_NAME_LEN} bytes, not {}", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(what, "names may not contain control characters"));
    }
    Ok(())
}

fn encode_name(field: &mut [u8], name: &str) {
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

/// Superblock flag: the store was closed cleanly (no recovery scan needed).
pub const SUPER_FLAG_CLEAN: u32 = 1;
const SUPER_KNOWN_FLAGS: u32 = SUPER_FLAG_CLEAN;

/// The store's root record, written alternately to page 0 and page 1; the valid slot with the
/// higher generation is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// `SUPER_FLAG_*` bits.
    pub flags: u32,
    /// Identifies the store; every metadata page repeats it.
    pub uuid: [u8; 16],
    /// The store's name.
    pub name: String,
    /// Commit sequence number: each commit writes the other slot with the next generation.
    pub generation: u64,
    /// Logical block size of the base device (512 or 4096).
    pub block_size: u32,
    /// Allocation unit in bytes (a power of two, 64 KiB to 64 MiB).
    pub cluster_size: u32,
    /// Clusters in the store (cluster 0 holds the superblocks). Grows with the base device.
    pub total_clusters: u64,
    /// First page of the volume table ([`PageNo::NONE`] for a store without volumes).
    pub volume_table: PageNo,
    /// Clusters in use (data and metadata), as of this commit.
    pub allocated_clusters: u64,
    /// Sum of the volumes' sizes, as of this commit.
    pub provisioned_bytes: u64,
    /// The id the next volume gets.
    pub next_volume_id: u64,
    /// When the store was created (Unix time, ns).
    pub created_ns: u64,
    /// When this commit was made (Unix time, ns).
    pub committed_ns: u64,
}

impl Superblock {
    /// Pages per cluster.
    pub fn pages_per_cluster(&self) -> u64 {
        u64::from(self.cluster_size) / PAGE_SIZE as u64
    }

    /// Pages addressable in the store.
    pub fn total_pages(&self) -> u64 {
        self.total_clusters.saturating_mul(self.pages_per_cluster())
    }

    /// Bytes per subcluster.
    pub fn subcluster_size(&self) -> u32 {
        self.cluster_size / SUBCLUSTERS
    }

    /// Encodes into a sealed page.
    pub fn encode(&self) -> Box<[u8; PAGE_SIZE]> {
        let mut p = Box::new([0u8; PAGE_SIZE]);
        p[0..8].copy_from_slice(&SUPER_MAGIC);
        put_u32(&mut *p, 8, FORMAT_VERSION);
        put_u32(&mut *p, 12, self.flags);
        p[16..32].copy_from_slice(&self.uuid);
        encode_name(&mut p[32..96], &self.name);
        put_u64(&mut *p, 96, self.generation);
        put_u32(&mut *p, 104, self.block_size);
        put_u32(&mut *p, 108, self.cluster_size);
        put_u64(&mut *p, 112, self.total_clusters);
        put_u64(&mut *p, 120, self.volume_table.0);
        put_u64(&mut *p, 128, self.allocated_clusters);
        put_u64(&mut *p, 136, self.provisioned_bytes);
        put_u64(&mut *p, 144, self.next_volume_id);
        put_u64(&mut *p, 152, self.created_ns);
        put_u64(&mut *p, 160, self.committed_ns);
        seal(&mut p);
        p
    }

    /// Decodes and validates one superblock slot.
    ///
    /// # Errors
    /// [`FormatError::NotAStore`] without the magic, [`FormatError::UnsupportedVersion`],
    /// [`FormatError::Checksum`], or [`FormatError::Invalid`] for inconsistent fields.
    pub fn decode(buf: &[u8]) -> Result<Superblock, FormatError> {
        const WHAT: &str = "superblock";
        check_len(WHAT, buf)?;
        let f = Fields(buf);
        if f.bytes::<8>(0) != SUPER_MAGIC {
            return Err(FormatError::NotAStore);
        }
        let version = f.u32(8);
        if !sealed(buf) {
            return Err(FormatError::Checksum { what: WHAT });
        }
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        if !all_zero(&buf[168..CRC_OFFSET]) {
            return Err(invalid(WHAT, "reserved bytes are not zero"));
        }
        let sb = Superblock {
            flags: f.u32(12),
            uuid: f.bytes::<16>(16),
            name: decode_name(WHAT, &buf[32..96])?,
            generation: f.u64(96),
            block_size: f.u32(104),
            cluster_size: f.u32(108),
            total_clusters: f.u64(112),
            volume_table: PageNo(f.u64(120)),
            allocated_clusters: f.u64(128),
            provisioned_bytes: f.u64(136),
            next_volume_id: f.u64(144),
            created_ns: f.u64(152),
            committed_ns: f.u64(160),
        };
        sb.validate()?;
        Ok(sb)
    }

    /// Checks the fields against each other.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] naming the first problem.
    pub fn validate(&self) -> Result<(), FormatError> {
        const WHAT: &str = "superblock";
        if self.flags & !SUPER_KNOWN_FLAGS != 0 {
            return Err(invalid(WHAT, format!("unknown flags {:#x}", self.flags)));
        }
        check_name(WHAT, &self.name)?;
        if self.block_size != 512 && self.block_size != 4096 {
            return Err(invalid(
                WHAT,
                format!("block size {} (512 or 4096)", self.block_size),
            ));
        }
        if !self.cluster_size.is_power_of_two()
            || !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&self.cluster_size)
        {
            return Err(invalid(
                WHAT,
                format!(
                    "cluster size {} (a power of two from 64 KiB to 64 MiB)",
                    self.cluster_size
                ),
            ));
        }
        if self.total_clusters < 2 {
            return Err(invalid(WHAT, "a store needs at least two clusters"));
        }
        if self.generation > MAX_COUNTER || self.next_volume_id > MAX_COUNTER {
            return Err(invalid(
                WHAT,
                format!(
                    "generation {} or next volume id {} beyond {MAX_COUNTER}",
                    self.generation, self.next_volume_id
                ),
            ));
        }
        if self
            .total_clusters
            .checked_mul(u64::from(self.cluster_size))
            .is_none()
        {
            return Err(invalid(WHAT, "the store is larger than 2^64 bytes"));
        }
        if self.volume_table.is_some() {
            check_page(WHAT, self.volume_table, self.total_pages())?;
        }
        if self.allocated_clusters > self.total_clusters {
            return Err(invalid(
                WHAT,
                format!(
                    "{} clusters allocated of {}",
                    self.allocated_clusters, self.total_clusters
                ),
            ));
        }
        if self.next_volume_id == 0 {
            return Err(invalid(WHAT, "volume ids start at 1"));
        }
        Ok(())
    }
}

/// Checks that `page` may hold metadata in a store of `total_pages` pages (not a superblock
/// slot, inside the store).
fn check_page(what: &'static str, page: PageNo, total_pages: u64) -> Result<(), FormatError> {
    if page.0 < 2 || page.0 >= total_pages {
        return Err(invalid(
            what,
            format!("{page} is outside the store's metadata pages 2..{total_pages}"),
        ));
    }
    Ok(())
}

/// The bytes from `from` to the checksum must be zero (one encoding per value).
fn check_tail(
    what: &'static str,
    page: PageNo,
    buf: &[u8],
    from: usize,
) -> Result<(), FormatError> {
    if all_zero(&buf[from..CRC_OFFSET]) {
        Ok(())
    } else {
        Err(invalid(
            what,
            format!("{page}: bytes after the last entry are not zero"),
        ))
    }
}

/// The header's entry count must match what the body holds.
fn check_count(
    what: &'static str,
    page: PageNo,
    header: u16,
    used: usize,
) -> Result<(), FormatError> {
    if usize::from(header) == used {
        Ok(())
    } else {
        Err(invalid(
            what,
            format!("{page}: header counts {header} entries, {used} in use"),
        ))
    }
}

/// Reads the link to the next page of a chain (volume table, properties) at the body's start.
fn decode_link(
    what: &'static str,
    page: PageNo,
    buf: &[u8],
    total_pages: u64,
) -> Result<PageNo, FormatError> {
    let next = PageNo(Fields(buf).u64(HEADER_LEN));
    if next.is_some() {
        check_page(what, next, total_pages)?;
        if next == page {
            return Err(invalid(what, format!("{page} links to itself")));
        }
    }
    Ok(next)
}

/// What a decoder needs to know about the store to bound what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBounds {
    /// The store's uuid (pages of other stores are rejected).
    pub uuid: [u8; 16],
    /// Clusters in the store.
    pub total_clusters: u64,
    /// Pages in the store.
    pub total_pages: u64,
    /// Allocation unit in bytes.
    pub cluster_size: u32,
    /// Block size of the base device.
    pub block_size: u32,
}

impl From<&Superblock> for StoreBounds {
    fn from(sb: &Superblock) -> StoreBounds {
        StoreBounds {
            uuid: sb.uuid,
            total_clusters: sb.total_clusters,
            total_pages: sb.total_pages(),
            cluster_size: sb.cluster_size,
            block_size: sb.block_size,
        }
    }
}

/// The common header of every metadata page but the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// What the page holds.
    pub kind: PageKind,
    /// Map pages: height above the leaves (0 for a leaf). Other pages: 0.
    pub level: u8,
    /// Entries in use.
    pub count: u16,
    /// The commit that wrote this page.
    pub generation: u64,
    /// The page's own number.
    pub page: PageNo,
}

fn encode_header(p: &mut [u8; PAGE_SIZE], h: &PageHeader, uuid: &[u8; 16]) {
    p[0..4].copy_from_slice(&PAGE_MAGIC);
    p[4] = h.kind as u8;
    p[5] = h.level;
    put_u16(&mut *p, 6, h.count);
    put_u64(&mut *p, 8, h.generation);
    p[16..32].copy_from_slice(uuid);
    put_u64(&mut *p, 32, h.page.0);
}

/// Decodes and checks the framing of metadata page `page` (magic, checksum, store, address,
/// kind); returns the header.
///
/// # Errors
/// The first framing problem.
pub fn decode_header(
    buf: &[u8],
    page: PageNo,
    expected: PageKind,
    bounds: &StoreBounds,
) -> Result<PageHeader, FormatError> {
    const WHAT: &str = "metadata page";
    check_len(WHAT, buf)?;
    let f = Fields(buf);
    if f.bytes::<4>(0) != PAGE_MAGIC {
        return Err(FormatError::NoPageMagic(page));
    }
    if !sealed(buf) {
        return Err(FormatError::Checksum { what: WHAT });
    }
    if f.bytes::<16>(16) != bounds.uuid {
        return Err(FormatError::ForeignStore { page });
    }
    let found = PageNo(f.u64(32));
    if found != page {
        return Err(FormatError::Misdirected { page, found });
    }
    if f.u8(4) != expected as u8 {
        return Err(FormatError::WrongKind {
            page,
            expected,
            found: f.u8(4),
        });
    }
    if !all_zero(&buf[40..HEADER_LEN]) {
        return Err(invalid(
            WHAT,
            format!("{page}: reserved header bytes are not zero"),
        ));
    }
    Ok(PageHeader {
        kind: expected,
        level: f.u8(5),
        count: f.u16(6),
        generation: f.u64(8),
        page,
    })
}

/// One cluster of a volume: where its data is.
///
/// A subcluster whose bit is set in `own_bits` is read from `own`; otherwise, if set in
/// `back_bits`, from `back` (a cluster shared with a snapshot, kept so that the first write
/// after a snapshot copies one subcluster, not the whole cluster); otherwise it reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapEntry {
    /// The cluster this volume wrote (0: none).
    pub own: u64,
    /// Subclusters of `own` that hold data.
    pub own_bits: u64,
    /// A cluster shared with a snapshot (0: none).
    pub back: u64,
    /// Subclusters of `back` that hold data and are not overridden by `own`.
    pub back_bits: u64,
}

impl MapEntry {
    /// Whether the entry maps nothing.
    pub fn is_empty(&self) -> bool {
        *self == MapEntry::default()
    }

    fn validate(&self, what: &'static str, total_clusters: u64) -> Result<(), FormatError> {
        let cluster = |c: u64| c != 0 && c < total_clusters;
        if (self.own == 0) != (self.own_bits == 0) || (self.own != 0 && !cluster(self.own)) {
            return Err(invalid(
                what,
                format!("own cluster {} with bits {:#x}", self.own, self.own_bits),
            ));
        }
        if (self.back == 0) != (self.back_bits == 0) || (self.back != 0 && !cluster(self.back)) {
            return Err(invalid(
                what,
                format!(
                    "backing cluster {} with bits {:#x}",
                    self.back, self.back_bits
                ),
            ));
        }
        if self.own_bits & self.back_bits != 0 {
            return Err(invalid(what, "a subcluster is mapped twice"));
        }
        if self.own != 0 && self.own == self.back {
            return Err(invalid(what, "a cluster backs itself"));
        }
        Ok(())
    }
}

/// A leaf page of a cluster map: [`LEAF_FANOUT`] consecutive clusters of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLeaf {
    /// The commit that wrote it.
    pub generation: u64,
    /// One entry per cluster.
    pub entries: Box<[MapEntry; LEAF_FANOUT]>,
}

impl MapLeaf {
    /// Encodes into a sealed page at `page`.
    pub fn encode(&self, page: PageNo, uuid: &[u8; 16]) -> Box<[u8; PAGE_SIZE]> {
        let mut p = Box::new([0u8; PAGE_SIZE]);
        let count = self.entries.iter().filter(|e| !e.is_empty()).count();
        let h = PageHeader {
            kind: PageKind::MapLeaf,
            level: 0,
            count: u16::try_from(count).expect("fanout fits u16"),
            generation: self.generation,
            page,
        };
        encode_header(&mut p, &h, uuid);
        for (i, e) in self.entries.iter().enumerate() {
            let at = HEADER_LEN + i * ENTRY_LEN;
            put_u64(&mut *p, at, e.own);
            put_u64(&mut *p, at + 8, e.own_bits);
            put_u64(&mut *p, at + 16, e.back);
            put_u64(&mut *p, at + 24, e.back_bits);
        }
        seal(&mut p);
        p
    }

    /// Decodes and validates the leaf at `page`.
    ///
    /// # Errors
    /// A framing problem or an entry that is inconsistent or points outside the store.
    pub fn decode(buf: &[u8], page: PageNo, bounds: &StoreBounds) -> Result<MapLeaf, FormatError> {
        const WHAT: &str = "map leaf";
        let h = decode_header(buf, page, PageKind::MapLeaf, bounds)?;
        if h.level != 0 {
            return Err(invalid(WHAT, format!("{page}: leaf at level {}", h.level)));
        }
        let f = Fields(buf);
        let mut entries = Box::new([MapEntry::default(); LEAF_FANOUT]);
        let mut used = 0usize;
        for (i, e) in entries.iter_mut().enumerate() {
            let at = HEADER_LEN + i * ENTRY_LEN;
            *e = MapEntry {
                own: f.u64(at),
                own_bits: f.u64(at + 8),
                back: f.u64(at + 16),
                back_bits: f.u64(at + 24),
            };
            e.validate(WHAT, bounds.total_clusters)?;
            used += usize::from(!e.is_empty());
        }
        check_tail(WHAT, page, buf, HEADER_LEN + LEAF_FANOUT * ENTRY_LEN)?;
        check_count(WHAT, page, h.count, used)?;
        Ok(MapLeaf {
            generation: h.generation,
            entries,
        })
    }
}

/// An interior page of a cluster map: [`NODE_FANOUT`] children one level down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapNode {
    /// The commit that wrote it.
    pub generation: u64,
    /// Height above the leaves (at least 1).
    pub level: u8,
    /// Child pages ([`PageNo::NONE`]: nothing mapped below).
    pub children: Box<[PageNo; NODE_FANOUT]>,
}

impl MapNode {
    /// Encodes into a sealed page at `page`.
    pub fn encode(&self, page: PageNo, uuid: &[u8; 16]) -> Box<[u8; PAGE_SIZE]> {
        let mut p = Box::new([0u8; PAGE_SIZE]);
        let count = self.children.iter().filter(|c| c.is_some()).count();
        let h = PageHeader {
            kind: PageKind::MapNode,
            level: self.level,
            count: u16::try_from(count).expect("fanout fits u16"),
            generation: self.generation,
            page,
        };
        encode_header(&mut p, &h, uuid);
        for (i, c) in self.children.iter().enumerate() {
            put_u64(&mut *p, HEADER_LEN + i * 8, c.0);
        }
        seal(&mut p);
        p
    }

    /// Decodes and validates the interior page at `page`.
    ///
    /// # Errors
    /// A framing problem, a bad level, or a child outside the store.
    pub fn decode(buf: &[u8], page: PageNo, bounds: &StoreBounds) -> Result<MapNode, FormatError> {
        const WHAT: &str = "map node";
        let h = decode_header(buf, page, PageKind::MapNode, bounds)?;
        if h.level == 0 || h.level >= MAX_MAP_HEIGHT {
            return Err(invalid(
                WHAT,
                format!("{page}: interior page at level {}", h.level),
            ));
        }
        let f = Fields(buf);
        let mut children = Box::new([PageNo::NONE; NODE_FANOUT]);
        let mut used = 0usize;
        for (i, c) in children.iter_mut().enumerate() {
            *c = PageNo(f.u64(HEADER_LEN + i * 8));
            if c.is_some() {
                check_page(WHAT, *c, bounds.total_pages)?;
                if *c == page {
                    return Err(invalid(WHAT, format!("{page} names itself as a child")));
                }
                used += 1;
            }
        }
        check_tail(WHAT, page, buf, HEADER_LEN + NODE_FANOUT * 8)?;
        check_count(WHAT, page, h.count, used)?;
        Ok(MapNode {
            generation: h.generation,
            level: h.level,
            children,
        })
    }
}

/// Clusters a map of `height` levels can address.
pub fn map_capacity(height: u8) -> u64 {
    let mut cap = LEAF_FANOUT as u64;
    for _ in 1..height {
        cap = cap.saturating_mul(NODE_FANOUT as u64);
    }
    cap
}

/// The smallest map height that addresses `clusters` clusters.
pub fn map_height_for(clusters: u64) -> u8 {
    let mut h = 1;
    while map_capacity(h) < clusters {
        h += 1;
    }
    h
}

/// Volume flag: writes are refused.
pub const VOLUME_READ_ONLY: u32 = 1;
/// Volume flag: the volume is a snapshot (read-only, a point in time of another volume).
pub const VOLUME_SNAPSHOT: u32 = 2;
/// Volume flag: every cluster was allocated at creation (thick provisioning).
pub const VOLUME_THICK: u32 = 4;
const VOLUME_KNOWN_FLAGS: u32 = VOLUME_READ_ONLY | VOLUME_SNAPSHOT | VOLUME_THICK;

/// One volume (or snapshot, or clone) of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    /// Store-unique id, never reused.
    pub id: u64,
    /// Globally unique id.
    pub uuid: [u8; 16],
    /// Store-unique name.
    pub name: String,
    /// `VOLUME_*` bits.
    pub flags: u32,
    /// Height of the cluster map.
    pub map_height: u8,
    /// Size in bytes (a multiple of the store's block size).
    pub size_bytes: u64,
    /// Root page of the cluster map ([`PageNo::NONE`]: nothing allocated).
    pub map_root: PageNo,
    /// The volume this one was snapshotted or cloned from (0: none). Lineage only: sharing of
    /// clusters is tracked by the maps themselves.
    pub parent_id: u64,
    /// When it was created (Unix time, ns).
    pub created_ns: u64,
    /// First page of its key/value properties ([`PageNo::NONE`]: none).
    pub properties: PageNo,
}

impl VolumeRecord {
    fn encode_into(&self, r: &mut [u8]) {
        put_u64(r, 0, self.id);
        r[8..24].copy_from_slice(&self.uuid);
        encode_name(&mut r[24..88], &self.name);
        put_u32(r, 88, self.flags);
        r[92] = self.map_height;
        put_u64(r, 96, self.size_bytes);
        put_u64(r, 104, self.map_root.0);
        put_u64(r, 112, self.parent_id);
        put_u64(r, 120, self.created_ns);
        put_u64(r, 128, self.properties.0);
    }

    fn decode_from(r: &[u8], bounds: &StoreBounds) -> Result<VolumeRecord, FormatError> {
        const WHAT: &str = "volume record";
        let f = Fields(r);
        if !all_zero(&r[93..96]) || !all_zero(&r[136..VOLUME_RECORD_LEN]) {
            return Err(invalid(WHAT, "reserved bytes are not zero"));
        }
        let v = VolumeRecord {
            id: f.u64(0),
            uuid: f.bytes::<16>(8),
            name: decode_name(WHAT, &r[24..88])?,
            flags: f.u32(88),
            map_height: f.u8(92),
            size_bytes: f.u64(96),
            map_root: PageNo(f.u64(104)),
            parent_id: f.u64(112),
            created_ns: f.u64(120),
            properties: PageNo(f.u64(128)),
        };
        v.validate(bounds)?;
        Ok(v)
    }

    /// Checks the record against itself and the store.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] naming the first problem.
    pub fn validate(&self, bounds: &StoreBounds) -> Result<(), FormatError> {
        const WHAT: &str = "volume record";
        if self.id == 0 {
            return Err(invalid(WHAT, "volume id 0"));
        }
        check_name(WHAT, &self.name)?;
        if self.flags & !VOLUME_KNOWN_FLAGS != 0 {
            return Err(invalid(WHAT, format!("unknown flags {:#x}", self.flags)));
        }
        if self.flags & VOLUME_SNAPSHOT != 0 && self.flags & VOLUME_READ_ONLY == 0 {
            return Err(invalid(WHAT, "a snapshot must be read-only"));
        }
        if self.size_bytes == 0 || !self.size_bytes.is_multiple_of(u64::from(bounds.block_size)) {
            return Err(invalid(
                WHAT,
                format!(
                    "size {} is not a positive multiple of the block size {}",
                    self.size_bytes, bounds.block_size
                ),
            ));
        }
        if self.size_bytes > MAX_VOLUME_BYTES {
            return Err(invalid(
                WHAT,
                format!(
                    "size {} beyond the largest volume, {MAX_VOLUME_BYTES}",
                    self.size_bytes
                ),
            ));
        }
        let clusters = self.size_bytes.div_ceil(u64::from(bounds.cluster_size));
        if self.map_height != map_height_for(clusters) {
            return Err(invalid(
                WHAT,
                format!(
                    "map height {} for {clusters} clusters (expected {})",
                    self.map_height,
                    map_height_for(clusters)
                ),
            ));
        }
        if self.map_root.is_some() {
            check_page(WHAT, self.map_root, bounds.total_pages)?;
        }
        if self.properties.is_some() {
            check_page(WHAT, self.properties, bounds.total_pages)?;
        }
        if self.parent_id == self.id {
            return Err(invalid(WHAT, "a volume is its own parent"));
        }
        Ok(())
    }
}

/// A page of the volume table: up to [`VOLUMES_PER_PAGE`] records and a link to the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTablePage {
    /// The commit that wrote it.
    pub generation: u64,
    /// The next page of the table ([`PageNo::NONE`]: last).
    pub next: PageNo,
    /// The records.
    pub volumes: Vec<VolumeRecord>,
}

impl VolumeTablePage {
    /// Encodes into a sealed page at `page`.
    ///
    /// # Panics
    /// With more than [`VOLUMES_PER_PAGE`] records.
    pub fn encode(&self, page: PageNo, uuid: &[u8; 16]) -> Box<[u8; PAGE_SIZE]> {
        assert!(
            self.volumes.len() <= VOLUMES_PER_PAGE,
            "too many records for one page"
        );
        let mut p = Box::new([0u8; PAGE_SIZE]);
        let h = PageHeader {
            kind: PageKind::VolumeTable,
            level: 0,
            count: u16::try_from(self.volumes.len()).expect("fits"),
            generation: self.generation,
            page,
        };
        encode_header(&mut p, &h, uuid);
        put_u64(&mut *p, HEADER_LEN, self.next.0);
        for (i, v) in self.volumes.iter().enumerate() {
            let at = HEADER_LEN + 8 + i * VOLUME_RECORD_LEN;
            v.encode_into(&mut p[at..at + VOLUME_RECORD_LEN]);
        }
        seal(&mut p);
        p
    }

    /// Decodes and validates the volume-table page at `page`.
    ///
    /// # Errors
    /// A framing problem, a bad count or link, or an invalid record.
    pub fn decode(
        buf: &[u8],
        page: PageNo,
        bounds: &StoreBounds,
    ) -> Result<VolumeTablePage, FormatError> {
        const WHAT: &str = "volume table";
        let h = decode_header(buf, page, PageKind::VolumeTable, bounds)?;
        let count = usize::from(h.count);
        if h.level != 0 || count > VOLUMES_PER_PAGE {
            return Err(invalid(
                WHAT,
                format!("{page}: level {} with {count} records", h.level),
            ));
        }
        let next = decode_link(WHAT, page, buf, bounds.total_pages)?;
        let mut volumes = Vec::with_capacity(count);
        for i in 0..count {
            let at = HEADER_LEN + 8 + i * VOLUME_RECORD_LEN;
            volumes.push(VolumeRecord::decode_from(
                &buf[at..at + VOLUME_RECORD_LEN],
                bounds,
            )?);
        }
        check_tail(WHAT, page, buf, HEADER_LEN + 8 + count * VOLUME_RECORD_LEN)?;
        Ok(VolumeTablePage {
            generation: h.generation,
            next,
            volumes,
        })
    }
}

/// A page of one volume's key/value properties (for example the control plane's volume id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertiesPage {
    /// The commit that wrote it.
    pub generation: u64,
    /// The next page of this volume's properties ([`PageNo::NONE`]: last).
    pub next: PageNo,
    /// Pairs in order; keys are unique within the volume.
    pub pairs: Vec<(String, Vec<u8>)>,
}

/// Longest property key.
pub const MAX_PROPERTY_KEY: usize = 255;

impl PropertiesPage {
    /// Bytes the pairs take in a page body.
    pub fn encoded_len(pairs: &[(String, Vec<u8>)]) -> usize {
        8 + pairs
            .iter()
            .map(|(k, v)| 4 + k.len() + v.len())
            .sum::<usize>()
    }

    /// Encodes into a sealed page at `page`.
    ///
    /// # Errors
    /// The pairs do not fit one page, or a key is empty or too long.
    pub fn encode(
        &self,
        page: PageNo,
        uuid: &[u8; 16],
    ) -> Result<Box<[u8; PAGE_SIZE]>, FormatError> {
        const WHAT: &str = "properties";
        if PropertiesPage::encoded_len(&self.pairs) > BODY_LEN {
            return Err(invalid(WHAT, "the pairs do not fit one page"));
        }
        let mut p = Box::new([0u8; PAGE_SIZE]);
        let h = PageHeader {
            kind: PageKind::Properties,
            level: 0,
            count: u16::try_from(self.pairs.len()).map_err(|_| invalid(WHAT, "too many pairs"))?,
            generation: self.generation,
            page,
        };
        encode_header(&mut p, &h, uuid);
        put_u64(&mut *p, HEADER_LEN, self.next.0);
        let mut at = HEADER_LEN + 8;
        for (k, v) in &self.pairs {
            if k.is_empty() || k.len() > MAX_PROPERTY_KEY {
                return Err(invalid(
                    WHAT,
                    format!("key of {} bytes (1 to 255)", k.len()),
                ));
            }
            put_u16(&mut *p, at, k.len() as u16);
            put_u16(&mut *p, at + 2, v.len() as u16);
            at += 4;
            p[at..at + k.len()].copy_from_slice(k.as_bytes());
            at += k.len();
            p[at..at + v.len()].copy_from_slice(v);
            at += v.len();
        }
        seal(&mut p);
        Ok(p)
    }

    /// Decodes and validates the properties page at `page`.
    ///
    /// # Errors
    /// A framing problem, a pair that overruns the page, a bad or duplicate key.
    pub fn decode(
        buf: &[u8],
        page: PageNo,
        bounds: &StoreBounds,
    ) -> Result<PropertiesPage, FormatError> {
        const WHAT: &str = "properties";
        let h = decode_header(buf, page, PageKind::Properties, bounds)?;
        if h.level != 0 {
            return Err(invalid(WHAT, format!("{page}: level {}", h.level)));
        }
        let next = decode_link(WHAT, page, buf, bounds.total_pages)?;
        let f = Fields(buf);
        let mut at = HEADER_LEN + 8;
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::with_capacity(usize::from(h.count));
        for _ in 0..h.count {
            if at + 4 > CRC_OFFSET {
                return Err(invalid(WHAT, format!("{page}: pairs overrun the page")));
            }
            let klen = usize::from(f.u16(at));
            let vlen = usize::from(f.u16(at + 2));
            at += 4;
            if klen == 0 || klen > MAX_PROPERTY_KEY || at + klen + vlen > CRC_OFFSET {
                return Err(invalid(
                    WHAT,
                    format!("{page}: bad pair lengths {klen}/{vlen}"),
                ));
            }
            let key = std::str::from_utf8(&buf[at..at + klen])
                .map_err(|_| invalid(WHAT, format!("{page}: key is not UTF-8")))?
                .to_owned();
            at += klen;
            let value = buf[at..at + vlen].to_vec();
            at += vlen;
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(invalid(WHAT, format!("{page}: key {key:?} appears twice")));
            }
            pairs.push((key, value));
        }
        check_tail(WHAT, page, buf, at)?;
        Ok(PropertiesPage {
            generation: h.generation,
            next,
            pairs,
        })
    }
}

#[cfg(test)]
mod tests;
