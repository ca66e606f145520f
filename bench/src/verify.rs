//! Verify blocks: what `--verify` writes, and the checks it makes when reading back.
//!
//! Every unit of `bs` bytes written in verify mode starts with a 32-byte header, followed by a
//! pseudo-random payload derived from the header's fields:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `BSLTVRFY` |
//! | 8..16 | byte offset of the unit on the target (little-endian) |
//! | 16..24 | run id (random per run, so data from an earlier run is never taken as current) |
//! | 24..28 | generation: how many times this run has written the unit |
//! | 28..32 | CRC-32C of bytes 0..28 and of the payload |
//!
//! A read of a unit this run has written must find the header for that offset, this run and
//! the latest generation, with a good checksum: a lost write, a misdirected write (wrong
//! offset), a torn write or flipped bits each show as a distinct [`Mismatch`].

/// Size of the header at the start of every unit.
pub const HEADER_LEN: usize = 32;

const MAGIC: [u8; 8] = *b"BSLTVRFY";

/// The fields of a verify header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Byte offset of the unit on the target.
    pub offset: u64,
    /// Identifies the run that wrote it.
    pub run_id: u64,
    /// Write count of this unit within the run.
    pub generation: u32,
}

/// What a read-back found wrong.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// the unit is shorter than a verify header ({len} bytes)
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// no verify header (the write was lost, or never reached the device)
    NoHeader,
    /// the header names offset {found}: a misdirected write
    WrongOffset {
        /// The offset in the header.
        found: u64,
    },
    /// the unit holds data of another run ({found:#x}): the write was lost
    WrongRun {
        /// The run id in the header.
        found: u64,
    },
    /// stale data: generation {found}, expected {expected} (a lost write)
    StaleGeneration {
        /// The latest generation written.
        expected: u32,
        /// The generation found.
        found: u32,
    },
    /// checksum mismatch: the unit is torn or corrupted
    BadChecksum,
}

impl Header {
    /// Reads the header fields of `unit`, without checking the checksum.
    ///
    /// # Errors
    /// [`Mismatch::TooShort`] or [`Mismatch::NoHeader`].
    pub fn decode(unit: &[u8]) -> Result<Header, Mismatch> {
        let Some(h) = unit.get(..HEADER_LEN) else {
            return Err(Mismatch::TooShort { len: unit.len() });
        };
        if h[..8] != MAGIC {
            return Err(Mismatch::NoHeader);
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let mut g = [0u8; 4];
        g.copy_from_slice(&h[24..28]);
        Ok(Header {
            offset: u64_at(8),
            run_id: u64_at(16),
            generation: u32::from_le_bytes(g),
        })
    }

    fn encode(&self, h: &mut [u8]) {
        h[..8].copy_from_slice(&MAGIC);
        h[8..16].copy_from_slice(&self.offset.to_le_bytes());
        h[16..24].copy_from_slice(&self.run_id.to_le_bytes());
        h[24..28].copy_from_slice(&self.generation.to_le_bytes());
    }

    fn seed(&self) -> u64 {
        // SplitMix64 finaliser over the fields: a different stream per unit and write.
        let mut z = self.offset ^ self.run_id.rotate_left(17) ^ u64::from(self.generation) << 40;
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn checksum(unit: &[u8]) -> u32 {
    let c = crc32c::crc32c(&unit[..28]);
    crc32c::crc32c_append(c, &unit[HEADER_LEN..])
}

/// Fills `unit` (at least [`HEADER_LEN`] bytes) with the verify pattern for `header`.
///
/// # Panics
/// If `unit` is shorter than a header.
pub fn fill(unit: &mut [u8], header: Header) {
    assert!(
        unit.len() >= HEADER_LEN,
        "a verify unit holds at least its header"
    );
    header.encode(&mut unit[..HEADER_LEN]);
    let mut x = header.seed() | 1;
    for chunk in unit[HEADER_LEN..].chunks_mut(8) {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let c = checksum(unit);
    unit[28..32].copy_from_slice(&c.to_le_bytes());
}

/// Checks that `unit` holds what [`fill`] wrote for `expected`.
///
/// # Errors
/// The first [`Mismatch`] found.
pub fn check(unit: &[u8], expected: Header) -> Result<(), Mismatch> {
    let found = Header::decode(unit)?;
    let mut c = [0u8; 4];
    c.copy_from_slice(&unit[28..32]);
    if u32::from_le_bytes(c) != checksum(unit) {
        return Err(Mismatch::BadChecksum);
    }
    if found.offset != expected.offset {
        return Err(Mismatch::WrongOffset {
            found: found.offset,
        });
    }
    if found.run_id != expected.run_id {
        return Err(Mismatch::WrongRun {
            found: found.run_id,
        });
    }
    if found.generation != expected.generation {
        return Err(Mismatch::StaleGeneration {
            expected: expected.generation,
            found: found.generation,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(offset: u64, generation: u32) -> Header {
        Header {
            offset,
            run_id: 0xfeed,
            generation,
        }
    }

    #[test]
    fn every_fault_is_told_apart() {
        let mut unit = vec![0u8; 4096];
        assert_eq!(check(&unit, h(0, 1)), Err(Mismatch::NoHeader));
        assert_eq!(
            check(&unit[..10], h(0, 1)),
            Err(Mismatch::TooShort { len: 10 })
        );
        fill(&mut unit, h(8192, 3));
        assert_eq!(check(&unit, h(8192, 3)), Ok(()));
        assert_eq!(
            check(&unit, h(4096, 3)),
            Err(Mismatch::WrongOffset { found: 8192 })
        );
        assert_eq!(
            check(&unit, h(8192, 4)),
            Err(Mismatch::StaleGeneration {
                expected: 4,
                found: 3
            })
        );
        let other_run = Header {
            run_id: 1,
            ..h(8192, 3)
        };
        assert_eq!(
            check(&unit, other_run),
            Err(Mismatch::WrongRun { found: 0xfeed })
        );
        unit[2000] ^= 0x10;
        assert_eq!(check(&unit, h(8192, 3)), Err(Mismatch::BadChecksum));
    }

    #[test]
    fn torn_units_fail_the_checksum() {
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        fill(&mut a, h(0, 1));
        fill(&mut b, h(0, 2));
        a[512..].copy_from_slice(&b[512..]);
        assert_eq!(check(&a, h(0, 1)), Err(Mismatch::BadChecksum));
    }

    proptest! {
        #[test]
        fn fill_then_check_round_trips(len in 32usize..9000, offset: u64, run_id: u64, generation: u32) {
            let mut unit = vec![0u8; len];
            let hd = Header { offset, run_id, generation };
            fill(&mut unit, hd);
            prop_assert_eq!(Header::decode(&unit), Ok(hd));
            prop_assert_eq!(check(&unit, hd), Ok(()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = check(&bytes, h(0, 0));
        }
    }
}
