//! The bodies of Basalt's fuzz targets, as plain functions.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line libFuzzer wrapper around the function of the
//! same name here, so the very same code also runs on stable Rust: `tests/smoke.rs` feeds every
//! function its seed files (`seeds/<name>/`) plus a few thousand deterministic mutations of
//! them, and each target binary built without `--cfg fuzzing` replays files given on its
//! command line (see [`replay_main`]).
//!
//! A function panics only when Basalt does something wrong: a panic inside Basalt's code, or
//! an assertion here about what the decoder must guarantee.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use basalt_bdev::ByteSize;
use basalt_bench::TargetSpec;
use basalt_bench::verify::{self, HEADER_LEN, Header, Mismatch};
use basalt_datapath::DatapathConfig;

pub mod api;
pub mod iscsi;
pub mod lvstore;
pub mod nbd;
pub mod nvmf;
pub mod ring;
pub use api::api_request;
pub use iscsi::{iscsi_conn, iscsi_pdu, iscsi_text, scsi_cdb};
pub use lvstore::lvol_store;
pub use nbd::nbd_conn;
pub use nvmf::{nvmf_cmd, nvmf_conn, nvmf_pdu};
pub use ring::ring_msg;

/// The body of a fuzz target.
pub type Body = fn(&[u8]);

/// Every fuzz target: its name (also its directory under `seeds/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("verify_decode", verify_decode),
    ("verify_roundtrip", verify_roundtrip),
    ("datapath_config", datapath_config),
    ("cli_values", cli_values),
    ("lvol_metadata", lvol_metadata),
    ("lvol_store", lvol_store),
    ("iscsi_pdu", iscsi_pdu),
    ("iscsi_text", iscsi_text),
    ("iscsi_conn", iscsi_conn),
    ("scsi_cdb", scsi_cdb),
    ("nvmf_pdu", nvmf_pdu),
    ("nvmf_cmd", nvmf_cmd),
    ("nvmf_conn", nvmf_conn),
    ("ring_msg", ring_msg),
    ("api_request", api_request),
    ("nbd_conn", nbd_conn),
];

/// Little-endian field reader over the fuzz input; reads past the end as zeros.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn header(&mut self) -> Header {
        Header {
            offset: self.u64(),
            run_id: self.u64(),
            generation: self.u32(),
        }
    }
}

/// Bytes of the expected header that prefix a `verify_decode` input.
pub const EXPECTED_LEN: usize = 20;

/// Encodes `h` the way [`verify_decode`] reads its expected header (20 bytes).
pub fn expected_prefix(h: Header) -> [u8; EXPECTED_LEN] {
    let mut out = [0u8; EXPECTED_LEN];
    out[..8].copy_from_slice(&h.offset.to_le_bytes());
    out[8..16].copy_from_slice(&h.run_id.to_le_bytes());
    out[16..20].copy_from_slice(&h.generation.to_le_bytes());
    out
}

/// `verify_decode`: a verify unit read back from disk, checked against an expected header.
///
/// Input: 20 bytes of expected header (offset u64, run id u64, generation u32, little-endian;
/// missing bytes read as zero), then the unit's bytes. `decode` and `check` must never panic,
/// and must agree with each other and with the documented layout.
pub fn verify_decode(data: &[u8]) {
    let (prefix, unit) = data.split_at(data.len().min(EXPECTED_LEN));
    let expected = Fields(prefix).header();

    let decoded = Header::decode(unit);
    match &decoded {
        Ok(h) => {
            assert!(
                unit.len() >= HEADER_LEN,
                "decoded a unit of {} bytes",
                unit.len()
            );
            assert_eq!(&unit[..8], b"BSLTVRFY", "decoded without the magic");
            let mut raw = Fields(&unit[8..HEADER_LEN]);
            assert_eq!(*h, raw.header(), "fields not read from bytes 8..28");
        }
        Err(Mismatch::TooShort { len }) => {
            assert!(unit.len() < HEADER_LEN && *len == unit.len(), "{decoded:?}");
        }
        Err(Mismatch::NoHeader) => {
            assert!(unit.len() >= HEADER_LEN && &unit[..8] != b"BSLTVRFY");
        }
        Err(other) => panic!("decode returned a check-only mismatch: {other:?}"),
    }

    let checked = verify::check(unit, expected);
    match (&decoded, &checked) {
        (Err(d), Err(c)) => assert_eq!(d, c, "check disagrees with decode"),
        (Err(d), Ok(())) => panic!("check passed a unit decode refused ({d:?})"),
        (Ok(found), Ok(())) => assert_eq!(*found, expected, "check passed the wrong header"),
        (Ok(found), Err(m)) => match *m {
            Mismatch::BadChecksum => {}
            Mismatch::WrongOffset { found: o } => {
                assert!(o == found.offset && o != expected.offset, "{m:?}");
            }
            Mismatch::WrongRun { found: r } => {
                assert!(r == found.run_id && r != expected.run_id, "{m:?}");
                assert_eq!(
                    found.offset, expected.offset,
                    "offset is checked before run id"
                );
            }
            Mismatch::StaleGeneration {
                expected: e,
                found: g,
            } => {
                assert!(
                    e == expected.generation && g == found.generation && e != g,
                    "{m:?}"
                );
                assert_eq!(
                    (found.offset, found.run_id),
                    (expected.offset, expected.run_id)
                );
            }
            Mismatch::TooShort { .. } | Mismatch::NoHeader => {
                panic!("check refused ({m:?}) a unit decode accepted");
            }
        },
    }
    // What a failed verify run prints.
    if let Err(m) = checked {
        let _ = m.to_string();
    }
}

/// Largest unit [`verify_roundtrip`] fills.
pub const ROUNDTRIP_MAX_LEN: usize = 8192;

/// `verify_roundtrip`: `fill` then `check` must succeed, and any single-byte change must fail.
///
/// Input (little-endian, missing bytes read as zero): offset u64, run id u64, generation u32,
/// length u16 (the unit is `HEADER_LEN + length % (ROUNDTRIP_MAX_LEN - HEADER_LEN + 1)`
/// bytes), position u16 and mask u8 of one extra byte flip (a zero mask flips `0x01`).
pub fn verify_roundtrip(data: &[u8]) {
    let mut f = Fields(data);
    let header = f.header();
    let len = HEADER_LEN + usize::from(f.u16()) % (ROUNDTRIP_MAX_LEN - HEADER_LEN + 1);
    let pos = usize::from(f.u16()) % len;
    let mask = match f.take::<1>()[0] {
        0 => 1,
        m => m,
    };

    let mut unit = vec![0u8; len];
    verify::fill(&mut unit, header);
    assert_eq!(Header::decode(&unit), Ok(header), "decode after fill");
    assert_eq!(verify::check(&unit, header), Ok(()), "check after fill");

    // Whatever the buffer held before, fill overwrites all of it.
    let mut dirty = vec![0xa5u8; len];
    verify::fill(&mut dirty, header);
    assert!(
        dirty == unit,
        "fill depends on the buffer's previous contents"
    );

    // Each field is checked: a header that differs in one field names that field.
    let other = Header {
        offset: header.offset ^ 1,
        ..header
    };
    assert_eq!(
        verify::check(&unit, other),
        Err(Mismatch::WrongOffset {
            found: header.offset
        })
    );
    let other = Header {
        run_id: header.run_id.wrapping_add(1),
        ..header
    };
    assert_eq!(
        verify::check(&unit, other),
        Err(Mismatch::WrongRun {
            found: header.run_id
        })
    );
    let other = Header {
        generation: header.generation.wrapping_add(1),
        ..header
    };
    assert_eq!(
        verify::check(&unit, other),
        Err(Mismatch::StaleGeneration {
            expected: other.generation,
            found: header.generation
        })
    );
    // Too short to hold a header.
    let cut = pos.min(HEADER_LEN - 1);
    assert_eq!(
        verify::check(&unit[..cut], header),
        Err(Mismatch::TooShort { len: cut })
    );

    // One flipped byte anywhere must be caught: in the magic as a missing header, anywhere
    // else (fields, checksum, payload) by the checksum. Every header byte, then the chosen one.
    let mut flip = |i: usize, m: u8| {
        unit[i] ^= m;
        let want = if i < 8 {
            Mismatch::NoHeader
        } else {
            Mismatch::BadChecksum
        };
        assert_eq!(
            verify::check(&unit, header),
            Err(want),
            "byte {i} of {len} flipped by {m:#04x} went unnoticed"
        );
        unit[i] ^= m;
    };
    for i in 0..HEADER_LEN {
        flip(i, mask);
    }
    flip(pos, mask);
    if len > HEADER_LEN {
        flip(HEADER_LEN + pos % (len - HEADER_LEN), mask);
    }
}

/// `datapath_config`: the daemon's TOML configuration file.
///
/// Input: any bytes, taken as UTF-8 (invalid sequences become U+FFFD, so every input is
/// tried). `parse` and, when it succeeds, `engine_config` must never panic; an engine
/// configuration they accept must pass the engine's own validation.
pub fn datapath_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let cfg = match DatapathConfig::parse(&text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = format!("{cfg:?}");
    for b in &cfg.bdevs {
        let _ = b.name();
    }
    match cfg.engine_config() {
        Ok(e) => {
            assert!(
                !e.cpus.is_empty(),
                "engine config without a reactor: {cfg:?}"
            );
            assert!(e.reactor.ring_entries.is_power_of_two(), "{cfg:?}");
            assert!(
                e.validate().is_ok(),
                "accepted an invalid engine config: {cfg:?}"
            );
            assert_eq!(e.pin, cfg.engine.pin);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// `cli_values`: command-line values, `--size`-style byte sizes and basalt-bench targets.
///
/// Input: any bytes, taken as UTF-8 (lossily). Both parsers must never panic; a size that
/// parses to `n` must reparse from `n` written in decimal, and a target must agree with what
/// its parts parse to (an `lvol:` target with its options reparses from how it prints).
pub fn cli_values(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    match s.parse::<ByteSize>() {
        Ok(n) => {
            let again = n.0.to_string().parse::<ByteSize>();
            assert_eq!(
                again,
                Ok(n),
                "{s:?} parsed to {n:?}, which does not reparse"
            );
        }
        Err(e) => assert!(!e.is_empty()),
    }

    match s.parse::<TargetSpec>() {
        Ok(spec) => {
            let (scheme, rest) = s.split_once(':').expect("a parsed target has a scheme");
            let shown = spec.to_string();
            match &spec {
                TargetSpec::File {
                    path,
                    block_size,
                    buffered,
                } => {
                    assert_eq!(scheme, "file");
                    assert_eq!(path, &PathBuf::from(rest));
                    assert_eq!((*block_size, *buffered), (None, false));
                    assert_eq!(shown, s, "a file target prints as written");
                }
                TargetSpec::Malloc { size, block_size } | TargetSpec::Null { size, block_size } => {
                    assert!(
                        scheme == "malloc" || scheme == "null",
                        "{spec:?} from {s:?}"
                    );
                    assert_eq!(rest.parse::<ByteSize>(), Ok(ByteSize(*size)));
                    assert_eq!(*block_size, 512);
                    let again = format!("{scheme}:{size}").parse::<TargetSpec>();
                    assert_eq!(again.as_ref(), Ok(&spec));
                }
                TargetSpec::Nvmf(_) => {
                    assert_eq!(scheme, "nvmf");
                    // The printed form names the same connection.
                    let again = shown.parse::<TargetSpec>();
                    assert_eq!(again.as_ref(), Ok(&spec), "{s:?} prints as {shown:?}");
                }
                TargetSpec::Iscsi(iscsi) => {
                    assert_eq!(scheme, "iscsi");
                    // A CHAP secret is never printed: the URL shows `***` in its place.
                    if let Some(c) = &iscsi.chap {
                        let masked = format!("iscsi://{}%***@", c.user);
                        assert!(shown.starts_with(&masked), "{shown:?}");
                    }
                }
                TargetSpec::Lvol(lvol) => {
                    assert_eq!(scheme, "lvol");
                    let path = rest.split(',').next().unwrap_or_default();
                    assert_eq!(lvol.path, PathBuf::from(path));
                    // What a report prints names the same setup.
                    let again = shown.parse::<TargetSpec>();
                    assert_eq!(again.as_ref(), Ok(&spec), "{s:?} prints as {shown:?}");
                }
            }
            let _ = spec
                .with_block_size(Some(4096))
                .with_buffered(true)
                .to_string();
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// Every file of `dir`, sorted by name (empty if `dir` does not exist).
///
/// # Panics
/// If `dir` exists but cannot be read.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// `main` of a target binary built without libFuzzer: runs `body` over each file named on the
/// command line (a directory stands for the files in it), e.g. a crash from
/// `artifacts/<target>/` or a whole seed directory. A panic is reported as usual and fails the
/// process.
pub fn replay_main(name: &str, body: Body) -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!(
            "usage: {name} FILE_OR_DIR...\n\
             Replays inputs through the `{name}` fuzz target on stable Rust. To fuzz, use\n\
             `cargo +nightly fuzz run {name} fuzz/seeds/{name}` (see fuzz/README.md)."
        );
        return std::process::ExitCode::from(2);
    }
    let mut ran = 0usize;
    for arg in args {
        let files = if arg.is_dir() {
            files_in(&arg)
        } else {
            vec![arg]
        };
        for file in files {
            let data = match std::fs::read(&file) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return std::process::ExitCode::FAILURE;
                }
            };
            eprintln!("{name}: {} ({} bytes)", file.display(), data.len());
            body(&data);
            ran += 1;
        }
    }
    eprintln!("{name}: {ran} inputs, no failure");
    std::process::ExitCode::SUCCESS
}

/// The store every `lvol_metadata` input is decoded against: the seeds are pages of this store
/// at [`LVOL_SEED_PAGE`].
pub fn lvol_bounds() -> basalt_lvol::format::StoreBounds {
    basalt_lvol::format::StoreBounds {
        uuid: *b"basalt-fuzz-lvol",
        total_clusters: 4096,
        total_pages: 4096 * 256,
        cluster_size: 1 << 20,
        block_size: 512,
    }
}

/// The page number the `lvol_metadata` seeds are written at.
pub const LVOL_SEED_PAGE: u64 = 42;

/// `lvol_metadata`: volume-store metadata read from a device.
///
/// Input: one selector byte (low bits: superblock, map leaf, map node, volume table,
/// properties; top bit: recompute the page's checksum first), then the page, zero-padded or cut
/// to 4 KiB. Decoding must never panic, and whatever decodes must
/// encode back to exactly the same bytes: the format has one encoding per value, so a decoder
/// that accepted non-canonical bytes would be accepting corruption.
pub fn lvol_metadata(data: &[u8]) {
    use basalt_lvol::format::{
        MapLeaf, MapNode, PAGE_SIZE, PageNo, PropertiesPage, Superblock, VolumeTablePage,
    };
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut page = vec![0u8; PAGE_SIZE];
    let n = rest.len().min(PAGE_SIZE);
    page[..n].copy_from_slice(&rest[..n]);
    if selector & 0x80 != 0 {
        // Reseal: lets mutations get past the checksum and exercise every field check.
        let crc = crc32c::crc32c(&page[..PAGE_SIZE - 4]);
        page[PAGE_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    let b = lvol_bounds();
    let at = PageNo(LVOL_SEED_PAGE);
    let same = |encoded: &[u8], what: &str| {
        assert!(
            encoded == page.as_slice(),
            "{what}: decoded bytes do not re-encode to themselves"
        );
    };
    match selector % 5 {
        0 => {
            if let Ok(sb) = Superblock::decode(&page) {
                same(&*sb.encode(), "superblock");
            }
        }
        1 => {
            if let Ok(leaf) = MapLeaf::decode(&page, at, &b) {
                same(&*leaf.encode(at, &b.uuid), "map leaf");
            }
        }
        2 => {
            if let Ok(node) = MapNode::decode(&page, at, &b) {
                same(&*node.encode(at, &b.uuid), "map node");
            }
        }
        3 => {
            if let Ok(table) = VolumeTablePage::decode(&page, at, &b) {
                same(&*table.encode(at, &b.uuid), "volume table");
            }
        }
        _ => {
            if let Ok(props) = PropertiesPage::decode(&page, at, &b) {
                let encoded = props
                    .encode(at, &b.uuid)
                    .expect("a decoded properties page fits a page");
                same(&*encoded, "properties");
            }
        }
    }
}
