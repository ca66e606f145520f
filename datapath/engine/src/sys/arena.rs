//! Page-aligned anonymous memory for registered buffer pools.
//!
//! An [`Arena`] is one `mmap` of `chunk_size * chunks` bytes, populated up front so the first I/O
//! does not fault, and advised for transparent huge pages. The kernel pins it when the pool
//! registers it with a ring; it is unmapped on drop.

use std::io;
use std::ptr::NonNull;

/// One anonymous mapping, carved into equal chunks by the buffer pool.
///
/// # Safety
/// The arena hands out raw chunk pointers; the pool above it guarantees each chunk has at most one
/// owner ([`crate::iobuf::IoBuf`]) at a time and that the arena outlives every owner (owners hold
/// an `Rc` to the pool that holds the arena).
#[derive(Debug)]
pub(crate) struct Arena {
    base: NonNull<u8>,
    len: usize,
}

impl Arena {
    /// Maps `len` bytes (a multiple of the page size).
    pub(crate) fn map(len: usize) -> io::Result<Arena> {
        assert!(
            len > 0 && len.is_multiple_of(4096),
            "arena length must be whole pages"
        );
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory;
        // the result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the range was just mapped by us; MADV_HUGEPAGE is advisory and its failure
        // (THP disabled) is harmless, so the result is ignored.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_HUGEPAGE);
        }
        let base = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns null on success");
        Ok(Arena { base, len })
    }

    /// Start of the mapping.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; no chunk outlives the arena (see the
        // type's safety section), so nothing references the range any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
