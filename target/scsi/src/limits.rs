//! Limits this crate advertises (VPD B0h, RECEIVE COPY RESULTS) and enforces.

/// Largest READ/WRITE/VERIFY/WRITE AND VERIFY/ORWRITE transfer, in bytes (MAXIMUM TRANSFER
/// LENGTH is this divided by the block size). Larger requests are INVALID FIELD IN CDB.
pub const MAX_TRANSFER_BYTES: u32 = 8 << 20;

/// OPTIMAL TRANSFER LENGTH, in bytes.
pub const OPTIMAL_TRANSFER_BYTES: u32 = 1 << 20;

/// MAXIMUM UNMAP LBA COUNT (per descriptor), in blocks.
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 20;

/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;

/// MAXIMUM WRITE SAME LENGTH, in blocks. Below 65536 on purpose: libiscsi's WRITE SAME(16)
/// UNMAP test writes MAXIMUM WRITE SAME LENGTH blocks (if at least 65536) with one WRITE(16),
/// ignoring MAXIMUM TRANSFER LENGTH.
pub const MAX_WRITE_SAME_BLOCKS: u64 = 0xFFFF;

/// MAXIMUM COMPARE AND WRITE LENGTH, in blocks.
pub const MAX_COMPARE_AND_WRITE: u8 = 255;

/// Bytes moved per I/O by the commands that loop over a range (VERIFY, WRITE SAME, EXTENDED
/// COPY, SANITIZE, read-back of WRITE AND VERIFY).
pub const CHUNK_BYTES: u32 = 1 << 20;

/// EXTENDED COPY: most target descriptors in one parameter list.
pub const XCOPY_MAX_TARGET_DESCRIPTORS: u16 = 8;

/// EXTENDED COPY: most segment descriptors in one parameter list.
pub const XCOPY_MAX_SEGMENT_DESCRIPTORS: u16 = 64;

/// EXTENDED COPY: most bytes of target and segment descriptors together.
pub const XCOPY_MAX_DESCRIPTOR_LIST_BYTES: u32 = 4096;

/// EXTENDED COPY: most bytes one segment descriptor may copy.
pub const XCOPY_MAX_SEGMENT_BYTES: u32 = 256 << 20;

/// Copy results kept per logical unit for RECEIVE COPY RESULTS.
pub const XCOPY_HELD_RESULTS: usize = 64;

/// Unit attentions queued per I_T nexus; older ones are dropped beyond this.
pub const MAX_QUEUED_UNIT_ATTENTIONS: usize = 16;
