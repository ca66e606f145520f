//! Stable smoke run of every fuzz target: no nightly, no libFuzzer.
//!
//! Each target's body runs over its seed files (`seeds/<target>/`), then over
//! `BASALT_FUZZ_SMOKE_ITERS` (default 20 000) inputs made by mutating the seeds with a
//! fixed-seed PRNG (`BASALT_FUZZ_SMOKE_SEED`, default below): byte flips, overwrites,
//! insertions of random bytes and of target-specific tokens, deletions, truncations,
//! duplications and splices of two seeds. The run is deterministic; change the seed to explore.
//!
//! A failing input is written to `target/smoke-failures/<target>/` so it can be replayed with
//! `cargo run --release --bin <target> -- <file>` or `cargo +nightly fuzz run <target> <file>`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use basalt_bench::verify::{self, Header};
use basalt_fuzz::{TARGETS, expected_prefix, files_in};

const DEFAULT_SEED: u64 = 0xba5a_17f0_22ed_5eed;
const DEFAULT_ITERS: u64 = 20_000;
/// Mutants grow no larger than this (the seeds are at most a few KiB).
const MAX_LEN: usize = 16 << 10;

/// SplitMix64: tiny, fast, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    /// Interesting byte values first, like libFuzzer's.
    fn special_byte(&mut self) -> u8 {
        const SPECIAL: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b' ', b'\n', b'"', b'\''];
        if self.below(2) == 0 {
            SPECIAL[self.below(SPECIAL.len())]
        } else {
            self.byte()
        }
    }
}

/// Tokens worth inserting, per target (what libFuzzer would find through its dictionary and
/// comparison tracing).
fn tokens(target: &str) -> &'static [&'static str] {
    match target {
        "datapath_config" => &[
            "[engine]\n",
            "[engine.buffers]\n",
            "[[bdev]]\n",
            "cores = ",
            "cpus = [",
            "pin = false\n",
            "busy_poll = true\n",
            "ring_entries = ",
            "small_count = ",
            "large_count = ",
            "module = \"malloc\"\n",
            "module = \"null\"\n",
            "module = \"uring\"\n",
            "module = \"error\"\n",
            "module = \"delay\"\n",
            "name = \"a\"\n",
            "base = \"a\"\n",
            "size = \"",
            "block_size = ",
            "rules = [{ ops = [\"read\"], probability = 0.5 }]\n",
            "= ",
            "\"",
            "]",
            "[",
            "{",
            "}",
            ",",
            "\n",
            "#",
            "0",
            "1",
            "-1",
            "4096",
            "0x10",
            "1e9",
            "nan",
            "inf",
            "true",
            "\"4K\"",
            "\"1G\"",
            "9223372036854775807",
            "18446744073709551616",
            "'''",
            "\"\"\"",
            "\\u0000",
        ],
        "cli_values" => &[
            "file:",
            "malloc:",
            "null:",
            "lvol:",
            ",cluster=",
            ",size=",
            ",thick",
            ",no-prefill",
            ",snapshots=",
            ",fresh-snapshot",
            ",drop-fresh",
            ",inflate",
            ",snapshot-every=",
            "ms",
            ":",
            "K",
            "M",
            "G",
            "T",
            "B",
            "iB",
            "KiB",
            "k",
            " ",
            "0",
            "9",
            "18446744073709551615",
            "18446744073709551616",
            "17179869184",
            "-",
            "+",
            "é",
            "\u{3000}",
            "\u{661}",
        ],
        // Op tags: commit, reopen, a failing commit, and a write to the first volume.
        "lvol_store" => &["\u{c}", "\u{e}", "\u{d}\u{3}", "\0\0\0\0\0\0"],
        "iscsi_text" | "iscsi_conn" => &[
            "=",
            "\0",
            "InitiatorName=",
            "TargetName=",
            "SessionType=Discovery\0",
            "AuthMethod=CHAP\0",
            "CHAP_A=5\0",
            "CHAP_R=0x",
            "CHAP_C=0b",
            "MaxRecvDataSegmentLength=",
            "HeaderDigest=CRC32C\0",
            "SendTargets=All\0",
            "X-vendor=",
            "4294967296",
            "\u{ff}\u{ff}\u{ff}\u{ff}",
        ],
        // Pieces of requests: paths, ids, version headers, JSON, query strings, separators.
        "api_request" => &[
            "/v3/",
            "/v3/fuzz-project/",
            "volumes",
            "snapshots",
            "attachments",
            "types",
            "os-quota-sets/",
            "volume-transfers",
            "/detail",
            "/action",
            "/metadata/",
            "/extra_specs/",
            "$ID",
            "\n",
            "\u{1e}",
            "volume 3.",
            "volume latest",
            "volume 3.71",
            "compute 2.1, ",
            "{\"volume\": {\"size\": 1}}",
            "{\"os-extend\": {\"new_size\": ",
            "{\"os-reset_status\": {\"status\": \"available\"}}",
            "{\"",
            "\": ",
            "}",
            "[",
            "]",
            ",",
            "null",
            "true",
            "\"\"",
            "?",
            "&",
            "=",
            "limit=",
            "marker=",
            "sort=name:asc",
            "with_count=true",
            "%",
            "%FF",
            "%2F",
            "%00",
            "-1",
            "0",
            "9223372036854775807",
            "18446744073709551616",
            "1e999",
            "\\u0000",
            "\u{10ffff}",
        ],
        // NBD magics, option and command codes, lengths (big-endian, as on the wire).
        "nbd_conn" => &[
            "IHAVEOPT",
            "\0\0\0\u{7}",
            "\0\0\0\u{1}",
            "\0\0\0\u{8}",
            "\0\0\0\u{a}",
            "\0\0\0\u{3}",
            "\0\u{0}",
            "\0\u{1}",
            "\0\u{7}",
            "\0\0\u{10}\0",
            "\0\0\u{2}\0",
            "\u{2}\0\0\0",
            "base:allocation",
            "vol",
            "ro",
            "\u{ff}\u{ff}\u{ff}\u{ff}",
        ],
        _ => &[],
    }
}

fn mutate(rng: &mut Rng, target: &str, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = if seeds.is_empty() || rng.below(32) == 0 {
        // Now and then, start from nothing at all.
        (0..rng.below(64)).map(|_| rng.byte()).collect()
    } else {
        seeds[rng.below(seeds.len())].clone()
    };
    let toks = tokens(target);
    for _ in 0..1 + rng.below(4) {
        match rng.below(10) {
            // Flip one bit.
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            // Overwrite a byte.
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.special_byte();
            }
            // Insert a few bytes.
            2 => {
                let i = rng.below(d.len() + 1);
                for _ in 0..1 + rng.below(4) {
                    d.insert(i, rng.special_byte());
                }
            }
            // Delete a range.
            3 if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = 1 + rng.below((d.len() - i).min(16));
                d.drain(i..i + n);
            }
            // Truncate.
            4 => {
                let n = rng.below(d.len() + 1);
                d.truncate(n);
            }
            // Insert a token.
            5 | 6 if !toks.is_empty() => {
                let i = rng.below(d.len() + 1);
                let t = toks[rng.below(toks.len())].as_bytes();
                d.splice(i..i, t.iter().copied());
            }
            // Duplicate a range.
            7 if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = 1 + rng.below((d.len() - i).min(64));
                let chunk = d[i..i + n].to_vec();
                let at = rng.below(d.len() + 1);
                d.splice(at..at, chunk);
            }
            // Splice: head of this input, tail of another seed.
            8 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(d.len() + 1);
                let from = rng.below(other.len() + 1);
                d.truncate(cut);
                d.extend_from_slice(&other[from..]);
            }
            // Overwrite a 1-, 2-, 4- or 8-byte field with a boundary value.
            _ if d.len() >= 8 => {
                let w = 1 << rng.below(4);
                let i = rng.below(d.len() - w + 1);
                let v: u64 = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => 1 << rng.below(64),
                    _ => rng.next(),
                };
                d[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            _ => d.push(rng.byte()),
        }
    }
    d.truncate(MAX_LEN);
    d
}

/// A number from the environment: decimal, or hexadecimal with `0x`.
fn env_u64(name: &str, default: u64) -> u64 {
    let Ok(v) = std::env::var(name) else {
        return default;
    };
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
}

fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

/// Runs `body` on `data`; on a panic, saves the input and fails with where to find it.
fn run_one(target: &str, body: basalt_fuzz::Body, data: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| body(data))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/smoke-failures")
        .join(target);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("crash-{what}"));
    let saved = match std::fs::write(&file, data) {
        Ok(()) => format!("saved to {}", file.display()),
        Err(e) => format!("could not save it: {e}"),
    };
    let shown = String::from_utf8_lossy(&data[..data.len().min(512)]);
    panic!(
        "{target} panicked on {what} ({} bytes; {saved}); input starts {shown:?}\n\
         replay: cd fuzz && cargo run --release --bin {target} -- {}",
        data.len(),
        file.display()
    );
}

#[test]
fn every_target_survives_its_seeds_and_their_mutations() {
    let seed = env_u64("BASALT_FUZZ_SMOKE_SEED", DEFAULT_SEED);
    let iters = env_u64("BASALT_FUZZ_SMOKE_ITERS", DEFAULT_ITERS);
    for (i, &(target, body)) in TARGETS.iter().enumerate() {
        let files = files_in(&seed_dir(target));
        assert!(
            !files.is_empty(),
            "no seeds in {}",
            seed_dir(target).display()
        );
        let seeds: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(f).expect("readable seed"))
            .collect();
        for (file, data) in files.iter().zip(&seeds) {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            run_one(
                target,
                body,
                data,
                &format!("seed-{}", name.unwrap_or_default()),
            );
        }
        // api_request builds a store, a control plane and a runtime for every input (about
        // 2 ms): it gets a tenth as many mutants, to keep the whole run short.
        let iters = if target == "api_request" {
            (iters / 10).max(1)
        } else {
            iters
        };
        // A distinct stream per target, so adding a target does not reshuffle the others.
        let mut rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93));
        let started = std::time::Instant::now();
        let mut bytes = 0usize;
        for n in 0..iters {
            let data = mutate(&mut rng, target, &seeds);
            bytes += data.len();
            run_one(target, body, &data, &format!("mutant-{seed:#x}-{n}"));
        }
        eprintln!(
            "smoke: {target}: {} seeds + {iters} mutants (seed {seed:#x}, {} bytes on average) \
             passed in {:.2?}",
            seeds.len(),
            bytes / usize::try_from(iters.max(1)).unwrap_or(1),
            started.elapsed()
        );
    }
}

/// The `verify_decode` seeds hold units `check` accepts against their expected header, so the
/// mutations start from the interesting (valid) case rather than from "no header".
#[test]
fn verify_decode_seeds_are_valid_units() {
    for file in files_in(&seed_dir("verify_decode")) {
        let data = std::fs::read(&file).expect("readable seed");
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("invalid-"))
        {
            continue;
        }
        let (prefix, unit) = data.split_at(basalt_fuzz::EXPECTED_LEN);
        let h = Header::decode(unit).expect("a verify header");
        assert_eq!(prefix, expected_prefix(h), "{}", file.display());
        assert_eq!(verify::check(unit, h), Ok(()), "{}", file.display());
    }
}

/// The `datapath_config` seeds are what their names say: `bad-*` are refused by the parser,
/// `engine-refused-*` parse but `engine_config` refuses them, every other one parses (whether
/// its engine settings fit this machine is not checked).
#[test]
fn datapath_config_seeds_parse_as_named() {
    for file in files_in(&seed_dir("datapath_config")) {
        let text = std::fs::read_to_string(&file).expect("a UTF-8 seed");
        let name = file
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let parsed = basalt_datapath::DatapathConfig::parse(&text);
        if name.starts_with("bad-") {
            assert!(parsed.is_err(), "{name} parses");
        } else {
            let cfg = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.starts_with("engine-refused-") {
                assert!(
                    cfg.engine_config().is_err(),
                    "{name}: engine config accepted"
                );
            }
            if name == "full.toml" {
                assert_eq!(cfg.bdevs.len(), 4, "{name}");
            }
        }
    }
}

/// Rewrites the generated (binary) seeds: `cargo test --release -- --ignored write_seeds`.
/// The text seeds (TOML, command-line values) are written by hand.
#[test]
#[ignore = "writes into seeds/; run by hand after changing the verify format"]
fn write_seeds() {
    let unit = |len: usize, h: Header| {
        let mut u = vec![0u8; len];
        verify::fill(&mut u, h);
        u
    };
    let decode = seed_dir("verify_decode");
    let roundtrip = seed_dir("verify_roundtrip");
    std::fs::create_dir_all(&decode).expect("mkdir");
    std::fs::create_dir_all(&roundtrip).expect("mkdir");
    let write = |dir: &Path, name: &str, data: &[u8]| {
        std::fs::write(dir.join(name), data).expect("write seed");
    };

    // verify_decode: expected header ++ unit.
    let cases = [
        (
            "valid-4k",
            4096,
            Header {
                offset: 8192,
                run_id: 0x5eed_cafe_f00d_0001,
                generation: 3,
            },
        ),
        (
            "valid-512",
            512,
            Header {
                offset: 0,
                run_id: 1,
                generation: 1,
            },
        ),
        (
            "valid-header-only",
            32,
            Header {
                offset: 1 << 40,
                run_id: u64::MAX,
                generation: u32::MAX,
            },
        ),
    ];
    for (name, len, h) in cases {
        let mut data = expected_prefix(h).to_vec();
        data.extend(unit(len, h));
        write(&decode, &format!("{name}.bin"), &data);
    }
    // A unit from an earlier generation: check must report StaleGeneration.
    let h = Header {
        offset: 4096,
        run_id: 7,
        generation: 2,
    };
    let mut data = expected_prefix(Header { generation: 3, ..h }).to_vec();
    data.extend(unit(4096, h));
    write(&decode, "invalid-stale-4k.bin", &data);
    // A torn unit: the second half from another generation.
    let mut torn = unit(4096, h);
    torn[2048..].copy_from_slice(&unit(4096, Header { generation: 3, ..h })[2048..]);
    let mut data = expected_prefix(h).to_vec();
    data.extend(torn);
    write(&decode, "invalid-torn-4k.bin", &data);

    // verify_roundtrip: offset, run id, generation, length, flip position, flip mask.
    let rt = |h: Header, len: u16, pos: u16, mask: u8| {
        let mut d = expected_prefix(h).to_vec();
        d.extend(len.to_le_bytes());
        d.extend(pos.to_le_bytes());
        d.push(mask);
        d
    };
    let h = Header {
        offset: 8192,
        run_id: 0x5eed_cafe_f00d_0001,
        generation: 3,
    };
    write(
        &roundtrip,
        "4k-flip-payload.bin",
        &rt(h, 4096 - 32, 1000, 0x10),
    );
    write(
        &roundtrip,
        "512-flip-checksum.bin",
        &rt(
            Header {
                offset: 0,
                run_id: 1,
                generation: 1,
            },
            512 - 32,
            29,
            0xff,
        ),
    );
    write(
        &roundtrip,
        "header-only-flip-magic.bin",
        &rt(
            Header {
                offset: 1 << 40,
                run_id: u64::MAX,
                generation: u32::MAX,
            },
            0,
            3,
            0x01,
        ),
    );
    write(
        &roundtrip,
        "odd-length.bin",
        &rt(
            Header {
                offset: 12345,
                run_id: 42,
                generation: 0,
            },
            37,
            60,
            0x80,
        ),
    );
}

/// Writes the `lvol_metadata` seeds: one valid page of each kind (selector byte first):
/// `cargo test --release -- --ignored write_lvol_seeds`.
#[test]
#[ignore = "writes into seeds/; run by hand after changing the volume-store format"]
fn write_lvol_seeds() {
    use basalt_lvol::format::*;
    let dir = seed_dir("lvol_metadata");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let b = basalt_fuzz::lvol_bounds();
    let at = PageNo(basalt_fuzz::LVOL_SEED_PAGE);
    // Each page twice: as is, and with the reseal bit (the target recomputes the checksum).
    let write = |name: &str, selector: u8, page: &[u8]| {
        for (suffix, sel) in [("", selector), ("-resealed", selector | 0x80)] {
            let mut d = vec![sel];
            d.extend_from_slice(page);
            let file = name.replace(".bin", &format!("{suffix}.bin"));
            std::fs::write(dir.join(file), d).expect("write seed");
        }
    };
    let sb = Superblock {
        flags: SUPER_FLAG_CLEAN,
        uuid: b.uuid,
        name: "cinder-volumes".into(),
        generation: 12,
        block_size: 512,
        cluster_size: 1 << 20,
        total_clusters: 4096,
        volume_table: PageNo(300),
        allocated_clusters: 17,
        provisioned_bytes: 10 << 30,
        next_volume_id: 3,
        created_ns: 1_700_000_000_000_000_000,
        committed_ns: 1_700_000_001_000_000_000,
    };
    write("superblock.bin", 0, &*sb.encode());
    let mut entries = Box::new([MapEntry::default(); LEAF_FANOUT]);
    entries[0] = MapEntry {
        own: 5,
        own_bits: u64::MAX,
        back: 0,
        back_bits: 0,
    };
    entries[7] = MapEntry {
        own: 9,
        own_bits: 0b1,
        back: 6,
        back_bits: 0b1110,
    };
    write(
        "map-leaf.bin",
        1,
        &*MapLeaf {
            generation: 12,
            entries,
        }
        .encode(at, &b.uuid),
    );
    let mut children = Box::new([PageNo::NONE; NODE_FANOUT]);
    children[0] = PageNo(100);
    children[3] = PageNo(101);
    write(
        "map-node.bin",
        2,
        &*MapNode {
            generation: 12,
            level: 1,
            children,
        }
        .encode(at, &b.uuid),
    );
    let vol = |id: u64, flags: u32, parent_id: u64| VolumeRecord {
        id,
        uuid: [id as u8; 16],
        name: format!("volume-{id}"),
        flags,
        map_height: 1,
        size_bytes: 100 << 20,
        map_root: PageNo(200 + id),
        parent_id,
        created_ns: 5,
        properties: if id == 1 { PageNo(43) } else { PageNo::NONE },
    };
    let table = VolumeTablePage {
        generation: 12,
        next: PageNo::NONE,
        volumes: vec![vol(1, 0, 0), vol(2, VOLUME_SNAPSHOT | VOLUME_READ_ONLY, 1)],
    };
    write("volume-table.bin", 3, &*table.encode(at, &b.uuid));
    let props = PropertiesPage {
        generation: 12,
        next: PageNo::NONE,
        pairs: vec![(
            "cinder.volume_id".into(),
            b"0b7e4c52-0000-4000-8000-000000000001".to_vec(),
        )],
    };
    write(
        "properties.bin",
        4,
        &*props.encode(at, &b.uuid).expect("fits"),
    );
}

/// The `lvol_store` pristine store is the same, byte for byte, however often it is built (the
/// build replaces uuids and timestamps), so an input means the same in every process.
#[test]
fn lvol_store_pristine_is_deterministic() {
    use basalt_fuzz::lvstore::{build_pristine, pristine};
    assert_eq!(&build_pristine(), pristine());
}

/// The `lvol_store` seeds are canonical inputs: they decode to what they encode (but for the
/// empty one).
#[test]
fn lvol_store_seeds_are_canonical() {
    use basalt_fuzz::lvstore::StoreInput;
    for file in files_in(&seed_dir("lvol_store")) {
        let data = std::fs::read(&file).expect("readable seed");
        if data.is_empty() {
            continue;
        }
        let input = StoreInput::decode(&data);
        assert_eq!(input.encode(), data, "{}", file.display());
    }
}

/// The `lvol_store` seeds are what their names say: the store on a `refused-*` seed's device
/// does not open, every other one opens (and then runs its ops).
#[test]
fn lvol_store_seeds_open_as_named() {
    use basalt_fuzz::lvstore::StoreInput;
    use basalt_lvol::store::Store;
    for file in files_in(&seed_dir("lvol_store")) {
        let data = std::fs::read(&file).expect("readable seed");
        let name = file
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let opened = Store::open(&mut StoreInput::decode(&data).device());
        match opened {
            Ok(_) => assert!(!name.starts_with("refused-"), "{name}: opens"),
            Err(e) => assert!(name.starts_with("refused-"), "{name}: {e}"),
        }
    }
}

/// Writes the `lvol_store` seeds: `cargo test --release -- --ignored write_lvol_store_seeds`.
#[test]
#[ignore = "writes into seeds/; run by hand after changing the volume-store format"]
fn write_lvol_store_seeds() {
    use basalt_fuzz::lvstore::{Op, PagePick, Patch, StoreInput, pristine};
    use basalt_lvol::format::{HEADER_LEN, VOLUME_RECORD_LEN, VolumeTablePage};
    use basalt_lvol::store::Store;

    let dir = seed_dir("lvol_store");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let p = pristine();
    let store = Store::open(&mut p.disk.clone()).expect("pristine");
    let sb = store.superblock().clone();
    let written = |page: u64| PagePick::Written(p.written_index(page));
    let vol = |name: &str| store.find(name).expect("a pristine volume").clone();
    let write = |name: &str, patches: Vec<Patch>, ops: Vec<Op>| {
        let data = StoreInput { patches, ops }.encode();
        std::fs::write(dir.join(name), data).expect("write seed");
    };
    // Volume selectors, in id order: vol-a, vol-b, vol-thick, vol-a-snap, vol-a-clone,
    // small-00 (read-only), small-01, ...
    let (a, b, thick, snap, clone, ro) = (0, 1, 2, 3, 4, 5);

    // The empty input: the pristine store, opened and checked.
    std::fs::write(dir.join("empty.bin"), b"").expect("write seed");

    // Every op on the pristine store, with commits, a failing commit and reopens.
    let tour = vec![
        Op::Write {
            volume: a,
            index: 3,
            bits: 0xff,
        },
        Op::Write {
            volume: clone,
            index: 1,
            bits: 0xf00,
        },
        Op::Write {
            volume: b,
            index: 250,
            bits: 0,
        },
        Op::Unmap {
            volume: a,
            index: 2,
        },
        Op::Snapshot { volume: a, name: 1 },
        Op::Write {
            volume: a,
            index: 0,
            bits: 0xf0,
        },
        Op::Clone {
            volume: snap,
            name: 2,
        },
        Op::Create {
            name: 3,
            blocks: 2048,
            thick: false,
        },
        Op::Create {
            name: 4,
            blocks: 256,
            thick: true,
        },
        Op::SetProperty {
            volume: b,
            key: b'k',
            len: 100,
        },
        Op::SetProperty {
            volume: a,
            key: b'x',
            len: 0xffff,
        },
        Op::Rename {
            volume: thick,
            name: 5,
        },
        Op::Resize {
            volume: b,
            blocks: 1 << 20,
        },
        Op::ReadOnly {
            volume: clone,
            on: true,
        },
        Op::Commit,
        Op::Revert {
            volume: a,
            snapshot: snap,
        },
        Op::Grow { pages: 1024 },
        Op::Write {
            volume: b,
            index: 60_000,
            bits: 1,
        },
        Op::FailingCommit { writes: 3 },
        Op::Delete { volume: snap },
        Op::Write {
            volume: a,
            index: 5,
            bits: 1 << 63,
        },
        Op::Commit,
        Op::Reopen,
        Op::ReadOnly {
            volume: ro,
            on: false,
        },
        Op::Rename {
            volume: a,
            name: 0xf4,
        },
        Op::Snapshot {
            volume: b,
            name: 0xf2,
        },
        Op::Commit,
    ];
    write("ops-tour.bin", vec![], tour.clone());

    // Slot 0 torn: the store opens from slot 1 (generation 2), then is used.
    let torn = Patch::Xor {
        page: PagePick::Any(0),
        offset: 100,
        bytes: vec![0xff],
        reseal: false,
    };
    write("slot0-torn.bin", vec![torn], tour[..16].to_vec());

    // Valid superblock changes (resealed): the clean flag, and a wrong allocation count that
    // check() reports and the next commit corrects.
    write(
        "superblock-clean-miscounted.bin",
        vec![
            Patch::Write {
                page: PagePick::Any(0),
                offset: 12,
                bytes: vec![1, 0, 0, 0],
                reseal: false,
            },
            Patch::Write {
                page: PagePick::Any(0),
                offset: 128,
                bytes: 7u64.to_le_bytes().to_vec(),
                reseal: true,
            },
        ],
        vec![Op::Commit, Op::Reopen],
    );

    // Two volumes with the same name (resealed table page): refused.
    let table = sb.volume_table.0;
    let t = VolumeTablePage::decode(
        p.disk.page(table).expect("table"),
        sb.volume_table,
        &(&sb).into(),
    )
    .expect("decodes");
    let i = t
        .volumes
        .iter()
        .position(|v| v.name == "vol-b")
        .expect("in the first page");
    let mut name = [0u8; 5];
    name.copy_from_slice(b"vol-a");
    write(
        "refused-table-duplicate-name.bin",
        vec![Patch::Write {
            page: written(table),
            offset: u16::try_from(HEADER_LEN + 8 + i * VOLUME_RECORD_LEN + 24).expect("fits"),
            bytes: name.to_vec(),
            reseal: true,
        }],
        vec![],
    );

    // A map leaf copied over another page (misdirected): refused. A leaf entry that names a
    // cluster another volume owns (resealed): accepted, as clusters are shared by design
    // (after a snapshot, the old and the new leaf name the same clusters).
    let leaf_a = vol("vol-a").map.root.0;
    let leaf_thick = vol("vol-thick").map.root.0;
    write(
        "refused-leaf-misdirected.bin",
        vec![Patch::Copy {
            from: written(leaf_a),
            to: written(leaf_thick),
            reseal: false,
        }],
        vec![],
    );
    let thick_cluster = store
        .lookup(vol("vol-thick").record.id, 0)
        .expect("mapped")
        .entry
        .own;
    write(
        "leaf-shared-cluster.bin",
        vec![Patch::Write {
            page: written(leaf_a),
            offset: u16::try_from(HEADER_LEN + 2 * 32).expect("fits"),
            bytes: thick_cluster.to_le_bytes().to_vec(),
            reseal: true,
        }],
        vec![Op::Commit],
    );

    // The device cut short (refused), and grown (the store then takes the space in).
    write(
        "refused-device-truncated.bin",
        vec![Patch::Resize { pages: 512 }],
        vec![],
    );
    write(
        "device-grown.bin",
        vec![Patch::Resize { pages: 2048 }],
        vec![
            Op::Grow { pages: 0 },
            Op::Create {
                name: 9,
                blocks: 64 * 128,
                thick: true,
            },
            Op::Commit,
            Op::Reopen,
        ],
    );

    // Fill the store: writes until there is no space, commits that run out of pages.
    let mut fill: Vec<Op> = (0..48)
        .map(|i| Op::Write {
            volume: b,
            index: 3 * i,
            bits: 0,
        })
        .collect();
    fill.extend([Op::Commit, Op::Snapshot { volume: b, name: 7 }, Op::Commit]);
    fill.extend((0..8).map(|i| Op::Write {
        volume: b,
        index: 7 * i,
        bits: 1,
    }));
    fill.extend([Op::FailingCommit { writes: 0 }, Op::Commit, Op::Reopen]);
    write("fill-the-store.bin", vec![], fill);

    // A properties page with a pair length past the page (resealed): refused.
    let props = vol("vol-b").record.properties.0;
    write(
        "refused-properties-overrun.bin",
        vec![Patch::Write {
            page: written(props),
            offset: u16::try_from(HEADER_LEN + 8 + 2).expect("fits"),
            bytes: vec![0xff, 0x0f],
            reseal: true,
        }],
        vec![],
    );
}

#[test]
fn iscsi_conn_seeds_get_past_login() {
    let read = |name: &str| std::fs::read(seed_dir("iscsi_conn").join(name)).expect("seed");
    let run = basalt_fuzz::iscsi::run_conn(&read("conversation.bin"));
    assert!(
        run.executed >= 4,
        "the conversation seed logs in and runs its commands: {run:?}"
    );
    let run = basalt_fuzz::iscsi::run_conn(&read("discovery.bin"));
    assert!(run.sent > 48, "discovery answers: {run:?}");
}

#[test]
fn nvmf_conn_seed_delivers_commands() {
    let data = std::fs::read(seed_dir("nvmf_conn").join("session.bin")).expect("seed");
    let n = basalt_fuzz::nvmf::run_nvmf_conn(&data);
    assert!(n >= 4, "the session seed's commands reach the controller layer: {n}");
}

#[test]
fn nbd_conn_seeds_reach_transmission() {
    let read = |name: &str| std::fs::read(seed_dir("nbd_conn").join(name)).expect("seed");
    for name in ["structured.bin", "simple.bin", "readonly.bin"] {
        let run = basalt_fuzz::nbd::run_nbd_conn(&read(name));
        assert!(run.attached, "{name} enters transmission: {run:?}");
        assert!(run.commands >= 3, "{name} hands out its commands: {run:?}");
    }
    let run = basalt_fuzz::nbd::run_nbd_conn(&read("options.bin"));
    assert!(!run.attached && run.sent > 200, "options are answered: {run:?}");
}

/// Writes the `ring_msg` seeds: `cargo test --release -- --ignored write_ring_msg_seeds`.
#[test]
#[ignore = "writes into seeds/; run by hand after changing the ring's message or region format"]
fn write_ring_msg_seeds() {
    let dir = seed_dir("ring_msg");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, data) in basalt_fuzz::ring::ring_msg_seeds() {
        std::fs::write(dir.join(name), data).expect("write seed");
    }
}

/// The `ring_msg` seeds are what their names say: frames decode, region images read by the
/// datapath open (but the `bad-` one), so mutations start past validation.
#[test]
fn ring_msg_seeds_get_past_validation() {
    use basalt_ring::{Region, decode};
    for file in files_in(&seed_dir("ring_msg")) {
        let data = std::fs::read(&file).expect("readable seed");
        let name = file
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let (mode, rest) = data.split_first().expect("not empty");
        match mode {
            0 => assert!(decode(rest).is_ok(), "{name}"),
            2 => {
                let region = Region::create(
                    &basalt_fuzz::ring::ring_geometry(),
                    basalt_fuzz::ring::RING_EPOCH,
                )
                .expect("create");
                basalt_fuzz::ring::overwrite(&region, rest);
                let fd = region.fd().try_clone_to_owned().expect("dup");
                let opened = Region::open(fd);
                assert_eq!(opened.is_ok(), !name.contains("bad-"), "{name}: {opened:?}");
            }
            _ => {}
        }
    }
}

/// The `api_request` seeds get past validation: each but `bad-*` and `wrong-*` gets at least one
/// 2xx answer, and the multi-request seeds reach the resource they created (`$ID`).
#[test]
fn api_request_seeds_reach_the_handlers() {
    use basalt_fuzz::api::run_requests;
    for file in files_in(&seed_dir("api_request")) {
        let data = std::fs::read(&file).expect("readable seed");
        let name = file
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let answers = run_requests(&data);
        let requests = data
            .split(|b| *b == basalt_fuzz::api::REQUEST_SEPARATOR)
            .count();
        assert_eq!(answers.len(), requests, "{name}: a request was skipped");
        let ok = answers.iter().filter(|a| a.status.as_u16() < 400).count();
        let shown: Vec<String> = answers
            .iter()
            .map(|a| format!("{} {} -> {}", a.method, a.path, a.status))
            .collect();
        if name.starts_with("bad-") || name.starts_with("wrong-") {
            assert_eq!(ok, 0, "{name}: {shown:?}");
        } else {
            assert!(ok > 0, "{name}: {shown:?}");
        }
        if name.ends_with("-flow.txt") || name.starts_with("create-then-") {
            assert!(
                !answers[1].path.contains("$ID") && answers[1].status.is_success(),
                "{name}: the second request did not reach what the first created: {shown:?}"
            );
        }
    }
}
