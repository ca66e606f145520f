//! A [`MetaDisk`] over a file or block device, for the offline tools.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::format::{PAGE_SIZE, PageNo};
use crate::store::MetaDisk;

/// Synchronous page I/O on a file or block device (page cache on; `flush` is `fdatasync`).
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    size: u64,
}

impl FileDisk {
    /// Opens `path` read-write (or read-only), sized by seeking to its end (so block devices
    /// work too).
    ///
    /// # Errors
    /// The kernel's answer.
    pub fn open(path: &Path, writable: bool) -> std::io::Result<FileDisk> {
        let mut file = OpenOptions::new().read(true).write(writable).open(path)?;
        let size = file.seek(SeekFrom::End(0))?;
        Ok(FileDisk { file, size })
    }
}

impl MetaDisk for FileDisk {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_page(&mut self, page: PageNo) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; PAGE_SIZE];
        let offset = page.0 * PAGE_SIZE as u64;
        if offset + PAGE_SIZE as u64 > self.size {
            return Err(format!("{page} lies beyond the end of the device"));
        }
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| format!("reading {page}: {e}"))?;
        Ok(buf)
    }

    fn write_page(&mut self, page: PageNo, bytes: &[u8]) -> Result<(), String> {
        let offset = page.0 * PAGE_SIZE as u64;
        if offset + PAGE_SIZE as u64 > self.size {
            return Err(format!("{page} lies beyond the end of the device"));
        }
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| format!("writing {page}: {e}"))
    }

    fn flush(&mut self) -> Result<(), String> {
        self.file.sync_data().map_err(|e| format!("flushing: {e}"))
    }
}
