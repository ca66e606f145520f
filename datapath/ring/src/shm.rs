//! The crate's one unsafe leaf: the shared mapping and typed access into it.
//!
//! # Safety model
//!
//! The region is a `MAP_SHARED` mapping of a sealed memfd that another process maps too. That
//! process may write any byte at any time, so this module never hands out `&[u8]` or `&mut [u8]`
//! into the mapping. It offers exactly three kinds of access:
//!
//! - shared references to [`Shared`] types: `#[repr(C)]` structs made only of atomics (the
//!   region header, ring indices). Atomics have interior mutability, every bit pattern is a
//!   valid value, and a write by the peer is, to us, a write by another thread.
//! - byte copies in and out ([`Shm::copy_in`], [`Shm::copy_out`]) through raw pointers. What
//!   is copied out is untrusted: callers copy first, then validate the private copy, so a peer
//!   that rewrites a frame while we read it can give us garbage but never a value that changes
//!   after it was checked (no double fetch). For a well-behaved peer the acquire/release
//!   pairs on the ring indices order these copies (see `spsc`).
//! - raw pointers to a byte range ([`Shm::ptr`]), for an io_uring READ/WRITE straight into a
//!   data slot. Getting the pointer is safe; using it is the caller's `unsafe`.
//!
//! The mapping cannot shrink under us: a region is only mapped after its seals
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) are checked and its size is read, so no access
//! within `len` can fault with SIGBUS. Every offset is bounds- and alignment-checked here.

use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// A type that may live in shared memory and be viewed through `&Self`.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` (or a primitive atomic), contain only atomics and padding
/// (so any bytes the peer writes are a valid value and every access is atomic), and have no
/// `Drop` glue. Their alignment must not exceed the page size.
pub(crate) unsafe trait Shared: Sized {}

// SAFETY: a primitive atomic: 4 bytes, every bit pattern valid, interior mutability.
unsafe impl Shared for AtomicU32 {}
// SAFETY: a primitive atomic: 8 bytes, every bit pattern valid, interior mutability.
unsafe impl Shared for AtomicU64 {}

/// A shared mapping of a whole region.
#[derive(Debug)]
pub(crate) struct Shm {
    map: memmap2::MmapRaw,
}

impl Shm {
    /// Maps `len` bytes of `fd` shared and writable.
    ///
    /// The caller has checked that the file is at least `len` bytes long and sealed against
    /// shrinking (see the module docs); `Region` is the only caller.
    pub(crate) fn map(fd: impl AsFd, len: usize) -> io::Result<Shm> {
        let fd = fd.as_fd();
        let map = memmap2::MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Shm { map })
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The address of `offset..offset + len`, after checking the range and alignment.
    ///
    /// # Panics
    ///
    /// If the range is outside the mapping or misaligned: offsets come from a validated
    /// layout, never from the peer, so this is a bug in this crate.
    fn at(&self, offset: usize, len: usize, align: usize) -> NonNull<u8> {
        let end = offset.checked_add(len).expect("offset + len overflows");
        assert!(
            end <= self.len(),
            "shared-memory access {offset}..{end} outside the {}-byte region",
            self.len()
        );
        let base = self.map.as_mut_ptr();
        // `offset <= len` of the mapping, so the result stays in (or one past) the mapping.
        let p = base.wrapping_add(offset);
        assert!(
            p.align_offset(align) == 0,
            "shared-memory access at {offset} misaligned for {align}"
        );
        NonNull::new(p).expect("a mapping is never at address 0")
    }

    /// A shared view of the `T` at `offset`.
    ///
    /// # Panics
    ///
    /// If `T` at `offset` is not inside the mapping or is misaligned (a bug in this crate).
    pub(crate) fn view<T: Shared>(&self, offset: usize) -> &T {
        let p = self.at(offset, size_of::<T>(), align_of::<T>());
        // SAFETY: `at` checked that `size_of::<T>()` bytes at `p` lie inside the mapping, which
        // lives as long as `&self`, and that `p` is aligned for `T`. `T: Shared` is made only of
        // atomics, so every bit pattern is a valid `T`, and concurrent writes by the peer are
        // atomic writes to interior-mutable memory, which a shared reference permits. The mapping
        // cannot shrink (sealed), so the memory stays valid.
        unsafe { p.cast::<T>().as_ref() }
    }

    /// Copies `src` into the mapping at `offset`.
    ///
    /// # Panics
    ///
    /// If the range is outside the mapping (a bug in this crate).
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) {
        let p = self.at(offset, src.len(), 1);
        // SAFETY: `at` checked that `src.len()` bytes at `p` are inside the live mapping. `src`
        // is private memory, so the ranges cannot overlap. No reference into the mapping is
        // created; a concurrent write by a misbehaving peer only changes the bytes it sees.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p.as_ptr(), src.len()) }
    }

    /// Copies `dst.len()` bytes at `offset` out of the mapping.
    ///
    /// # Panics
    ///
    /// If the range is outside the mapping (a bug in this crate).
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        let p = self.at(offset, dst.len(), 1);
        // SAFETY: `at` checked that `dst.len()` bytes at `p` are inside the live mapping. `dst`
        // is private memory, so the ranges cannot overlap. The bytes are treated as untrusted
        // by every caller (copied first, validated after), so whatever a peer writes meanwhile
        // can only make them wrong, never break an invariant of ours.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), dst.as_mut_ptr(), dst.len()) }
    }

    /// The address of `offset..offset + len` in this process, for I/O straight into the region.
    ///
    /// # Panics
    ///
    /// If the range is outside the mapping (a bug in this crate).
    pub(crate) fn ptr(&self, offset: usize, len: usize) -> NonNull<u8> {
        self.at(offset, len, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn memfd(len: u64) -> std::os::fd::OwnedFd {
        let fd =
            rustix::fs::memfd_create("shm-test", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, len).expect("size");
        fd
    }

    #[test]
    fn views_and_copies_see_the_same_memory() {
        let fd = memfd(4096);
        let a = Shm::map(&fd, 4096).expect("map");
        let b = Shm::map(&fd, 4096).expect("map twice");
        a.view::<AtomicU64>(64)
            .store(0x1122_3344_5566_7788, Ordering::Relaxed);
        let mut out = [0u8; 8];
        b.copy_out(64, &mut out);
        assert_eq!(u64::from_le_bytes(out), 0x1122_3344_5566_7788);
        b.copy_in(4088, &[9; 8]);
        assert_eq!(
            a.view::<AtomicU64>(4088).load(Ordering::Relaxed),
            0x0909_0909_0909_0909
        );
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn out_of_range_is_a_bug_not_ub() {
        let fd = memfd(4096);
        let a = Shm::map(&fd, 4096).expect("map");
        a.copy_out(4090, &mut [0u8; 8]);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_view_is_a_bug_not_ub() {
        let fd = memfd(4096);
        let a = Shm::map(&fd, 4096).expect("map");
        let _ = a.view::<AtomicU64>(4);
    }
}
