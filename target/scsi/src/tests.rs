//! End-to-end tests: commands through [`LuChannel::execute`] on real reactors, over malloc
//! bdevs (and the error, delay and a block-status-tracking test bdev), checked byte for byte
//! against SPC-4 / SBC-3 and the expectations of libiscsi's test suite.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use basalt_bdev::io::{ChannelImpl, IoKind, IoSlot};
use basalt_bdev::modules::delay::DelayBdev;
use basalt_bdev::modules::error::{ErrorBdev, ErrorRule};
use basalt_bdev::modules::malloc::MallocBdev;
use basalt_bdev::{Bdev, BdevError, BlockStatus, Geometry, Lba};
use basalt_engine::{BufPoolConfig, Engine, EngineConfig};
use proptest::prelude::*;

use crate::sense::{Asc, Sense, SenseKey};
use crate::*;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn engine(cores: usize) -> Engine {
    let mut cfg = EngineConfig::with_cores(cores);
    cfg.pin = false;
    cfg.reactor.buffers = BufPoolConfig {
        small_size: 8192,
        small_count: 128,
        large_size: 128 * 1024,
        large_count: 80,
    };
    Engine::start(&cfg).expect("engine starts")
}

fn on<F, Fut, T>(e: &Engine, core: usize, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    e.reactor(core).block_on(f).expect("the test future ran")
}

fn config(bdev: Arc<dyn Bdev>, thin: bool) -> LuConfig {
    LuConfig {
        bdev,
        uuid: [0x5A; 16],
        serial: "BSLT0001".into(),
        vendor: "BASALT".into(),
        product: "VOLUME".into(),
        revision: "0.1".into(),
        read_only: false,
        thin,
        unmap_granularity: 8,
    }
}

fn malloc_lu(bs: u32, blocks: u64, thin: bool) -> Arc<LogicalUnit> {
    let bdev = Arc::new(MallocBdev::new("ram", bs, blocks).expect("geometry"));
    LogicalUnit::new(config(bdev, thin))
}

fn nexus(id: u64) -> Nexus {
    let name = format!("iqn.2024-01.test:host{id}");
    Nexus {
        id,
        initiator_port: format!("{name},i,0x{id:012x}"),
        initiator_name: name,
        target_port: "iqn.2024-01.test:target,t,0x0001".into(),
        relative_port: 1,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    None,
    In,
    Out,
}

#[derive(Debug)]
struct R {
    status: u8,
    sense: Option<Sense>,
    data: Vec<u8>,
    residual: Residual,
}

impl R {
    fn good(&self) -> &Self {
        assert_eq!(self.status, 0, "expected GOOD, got {self:?}");
        self
    }

    fn check(&self, key: SenseKey, asc: Asc) -> Sense {
        assert_eq!(self.status, 2, "expected CHECK CONDITION, got {self:?}");
        let s = self.sense.expect("sense data");
        assert_eq!((s.key, s.asc), (key, asc), "{self:?}");
        s
    }

    fn invalid_field(&self) -> Sense {
        self.check(SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_CDB)
    }

    fn oob(&self) {
        self.check(SenseKey::IllegalRequest, Asc::LBA_OUT_OF_RANGE);
    }
}

async fn run(ch: &LuChannel, n: &Nexus, cdb: &[u8], dir: Dir, edtl: u32, data: Vec<u8>) -> R {
    let resp = ch
        .execute(Command {
            nexus: n,
            cdb,
            attr: TaskAttr::Simple,
            expected_len: edtl,
            read: dir == Dir::In,
            write: dir == Dir::Out,
            data_out: data,
        })
        .await;
    R {
        status: resp.status,
        sense: if resp.sense.is_empty() {
            None
        } else {
            Some(Sense::parse(&resp.sense).expect("sense data parses"))
        },
        data: resp.data_in.slices().concat(),
        residual: resp.residual,
    }
}

async fn cmd_in(ch: &LuChannel, n: &Nexus, cdb: &[u8], edtl: u32) -> R {
    run(ch, n, cdb, Dir::In, edtl, Vec::new()).await
}

async fn cmd_out(ch: &LuChannel, n: &Nexus, cdb: &[u8], data: Vec<u8>) -> R {
    let len = data.len() as u32;
    run(ch, n, cdb, Dir::Out, len, data).await
}

async fn cmd_none(ch: &LuChannel, n: &Nexus, cdb: &[u8]) -> R {
    run(ch, n, cdb, Dir::None, 0, Vec::new()).await
}

fn cdb10(op: u8, flags: u8, lba: u32, n: u16) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = op;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

fn cdb12(op: u8, flags: u8, lba: u32, n: u32) -> Vec<u8> {
    let mut c = vec![0u8; 12];
    c[0] = op;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[6..10].copy_from_slice(&n.to_be_bytes());
    c
}

fn cdb16(op: u8, flags: u8, lba: u64, n: u32) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&n.to_be_bytes());
    c
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

async fn read16(ch: &LuChannel, n: &Nexus, lba: u64, blocks: u32, bs: u32) -> Vec<u8> {
    let r = cmd_in(ch, n, &cdb16(0x88, 0, lba, blocks), blocks * bs).await;
    r.good();
    r.data
}

async fn write16(ch: &LuChannel, n: &Nexus, lba: u64, data: Vec<u8>, bs: u32) {
    let blocks = data.len() as u32 / bs;
    cmd_out(ch, n, &cdb16(0x8A, 0, lba, blocks), data)
        .await
        .good();
}

fn caw(lba: u64, n: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = n;
    c
}

/// A malloc bdev that tracks which blocks hold data, and reports it through
/// [`Bdev::block_status`].
#[derive(Debug)]
struct MapBdev {
    base: MallocBdev,
    mapped: Arc<Mutex<Vec<bool>>>,
}

impl MapBdev {
    fn new(bs: u32, blocks: u64) -> MapBdev {
        MapBdev {
            base: MallocBdev::new("map", bs, blocks).expect("geometry"),
            mapped: Arc::new(Mutex::new(vec![false; blocks as usize])),
        }
    }
}

struct MapChannel {
    inner: Rc<dyn ChannelImpl>,
    mapped: Arc<Mutex<Vec<bool>>>,
}

impl ChannelImpl for MapChannel {
    fn submit(&self, slot: IoSlot) {
        let (kind, lba, blocks) = slot.with(|r| (r.kind, r.lba.0, r.blocks));
        let state = match kind {
            IoKind::Write => Some(true),
            IoKind::Unmap | IoKind::WriteZeroes => Some(false),
            IoKind::Read | IoKind::Flush => None,
        };
        if let Some(s) = state {
            let mut m = self.mapped.lock().expect("not poisoned");
            for b in &mut m[lba as usize..(lba + blocks) as usize] {
                *b = s;
            }
        }
        self.inner.submit(slot);
    }
}

impl Bdev for MapBdev {
    fn name(&self) -> &str {
        "map"
    }

    fn geometry(&self) -> Geometry {
        self.base.geometry()
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        Ok(Rc::new(MapChannel {
            inner: self.base.open_channel()?,
            mapped: self.mapped.clone(),
        }))
    }

    fn block_status(&self, lba: Lba, max_blocks: u64) -> Option<BlockStatus> {
        let m = self.mapped.lock().expect("not poisoned");
        let start = usize::try_from(lba.0).ok()?;
        let first = *m.get(start)?;
        let run = m[start..]
            .iter()
            .take(max_blocks as usize)
            .take_while(|&&b| b == first)
            .count();
        Some(BlockStatus {
            mapped: first,
            blocks: run as u64,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Unit attentions, INQUIRY, capacity
// ---------------------------------------------------------------------------------------------

#[test]
fn power_on_unit_attention_is_reported_once_and_inquiry_passes_it() {
    let e = engine(1);
    let lu = malloc_lu(512, 1024, false);
    let n = nexus(1);
    lu.nexus_added(&n);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        cmd_in(&ch, &n, &[0x12, 0, 0, 0, 96, 0], 96).await.good();
        let r = cmd_none(&ch, &n, &[0, 0, 0, 0, 0, 0]).await;
        r.check(
            SenseKey::UnitAttention,
            Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
        );
        cmd_none(&ch, &n, &[0, 0, 0, 0, 0, 0]).await.good();
        // REQUEST SENSE reports and clears a unit attention.
        lu.capacity_changed();
        let r = cmd_in(&ch, &n, &[0x03, 0, 0, 0, 252, 0], 252).await;
        r.good();
        let s = Sense::parse(&r.data).expect("sense");
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::UnitAttention, Asc::CAPACITY_DATA_HAS_CHANGED)
        );
        let r = cmd_in(&ch, &n, &[0x03, 0x01, 0, 0, 252, 0], 252).await;
        assert_eq!(r.data, vec![0x72, 0, 0, 0, 0, 0, 0, 0]);
        cmd_none(&ch, &n, &[0, 0, 0, 0, 0, 0]).await.good();
    });
}

#[test]
fn unit_attentions_reach_every_nexus_across_cores() {
    let e = engine(2);
    let lu = malloc_lu(512, 1024, false);
    let (a, b) = (nexus(1), nexus(2));
    lu.nexus_added(&a);
    lu.nexus_added(&b);
    let (lu0, a0, b0) = (lu.clone(), a.clone(), b.clone());
    on(&e, 0, move || async move {
        let ch = lu0.open().expect("open");
        for n in [&a0, &b0] {
            cmd_none(&ch, n, &[0; 6])
                .await
                .check(SenseKey::UnitAttention, Asc(0x29, 0));
            cmd_none(&ch, n, &[0; 6]).await.good();
        }
    });
    lu.reset(&a, ResetKind::LogicalUnit);
    let (lu1, a1, b1) = (lu.clone(), a.clone(), b.clone());
    on(&e, 1, move || async move {
        let ch = lu1.open().expect("open");
        for n in [&a1, &b1] {
            cmd_none(&ch, n, &[0; 6]).await.check(
                SenseKey::UnitAttention,
                Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
            );
            cmd_none(&ch, n, &[0; 6]).await.good();
        }
    });
    lu.task_set_cleared(&a);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        cmd_none(&ch, &a, &[0; 6]).await.good();
        cmd_none(&ch, &b, &[0; 6]).await.check(
            SenseKey::UnitAttention,
            Asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR,
        );
        // A removed nexus forgets its attentions.
        lu.capacity_changed();
        lu.nexus_removed(&b);
        cmd_none(&ch, &b, &[0; 6]).await.good();
    });
}

#[test]
fn inquiry_pages_and_allocation_lengths() {
    let e = engine(1);
    let lu = malloc_lu(512, 4096, true);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        for alloc in [5u16, 36, 95, 96, 255, 511, 512] {
            let mut c = vec![0x12, 0, 0, 0, 0, 0];
            c[3..5].copy_from_slice(&alloc.to_be_bytes());
            let r = cmd_in(&ch, &n, &c, u32::from(alloc)).await;
            r.good();
            assert_eq!(r.data.len(), usize::from(alloc).min(96));
            assert_eq!(r.data[0], 0);
            if alloc >= 96 {
                assert_eq!(r.data[4], 91);
                assert_eq!(r.residual, residual_for(u32::from(alloc), 96));
            } else {
                assert_eq!(r.residual, Residual::None);
            }
        }
        // EVPD clear with a page code.
        cmd_in(&ch, &n, &[0x12, 0, 1, 1, 0, 0], 256)
            .await
            .invalid_field();
        let r = cmd_in(&ch, &n, &[0x12, 1, 0, 0, 255, 0], 255).await;
        r.good();
        for &page in &r.data[4..] {
            let r = cmd_in(&ch, &n, &[0x12, 1, page, 0, 255, 0], 255).await;
            r.good();
            assert_eq!(r.data[1], page);
        }
        cmd_in(&ch, &n, &[0x12, 1, 0xC0, 0, 255, 0], 255)
            .await
            .invalid_field();
        let r = cmd_in(&ch, &n, &[0x12, 1, 0xB0, 0, 64, 0], 64).await;
        assert_eq!(r.data.len(), 64);
        assert_eq!(&r.data[8..12], &16384u32.to_be_bytes());
        assert_eq!(&r.data[28..32], &8u32.to_be_bytes(), "unmap granularity");
    });
}

fn residual_for(expected: u32, implied: u64) -> Residual {
    crate::reply::residual(expected, implied)
}

#[test]
fn read_capacity() {
    let e = engine(1);
    let lu = malloc_lu(4096, 1000, true);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let r = cmd_in(&ch, &n, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8).await;
        assert_eq!(r.data, vec![0, 0, 0x03, 0xE7, 0, 0, 0x10, 0]);
        let mut c = [0u8; 10];
        c[0] = 0x25;
        c[5] = 1;
        cmd_in(&ch, &n, &c, 8).await.invalid_field();
        for alloc in 0..40u32 {
            let mut c = cdb16(0x9E, 0x10, 0, alloc);
            c[2..10].fill(0);
            let r = cmd_in(&ch, &n, &c, alloc).await;
            r.good();
            assert_eq!(r.data.len() as u32, alloc.min(32));
            if alloc >= 15 {
                assert_eq!(&r.data[..8], &999u64.to_be_bytes());
                assert_eq!(&r.data[8..12], &4096u32.to_be_bytes());
                assert_eq!(r.data[14], 0xC0, "LBPME and LBPRZ");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// READ / WRITE
// ---------------------------------------------------------------------------------------------

#[test]
fn reads_and_writes_of_every_size_round_trip() {
    let e = engine(1);
    let lu = malloc_lu(512, 100_000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let data = pattern(8 * 512, 1);
        cmd_out(&ch, &n, &[0x0A, 0, 0, 5, 8, 0], data.clone())
            .await
            .good();
        assert_eq!(
            cmd_in(&ch, &n, &[0x08, 0, 0, 5, 8, 0], 4096).await.data,
            data
        );
        let data = pattern(3 * 512, 2);
        cmd_out(&ch, &n, &cdb10(0x2A, 0x08, 70, 3), data.clone())
            .await
            .good();
        assert_eq!(
            cmd_in(&ch, &n, &cdb10(0x28, 0x10, 70, 3), 1536).await.data,
            data
        );
        let data = pattern(5 * 512, 3);
        cmd_out(&ch, &n, &cdb12(0xAA, 0x1A, 99_990, 5), data.clone())
            .await
            .good();
        assert_eq!(
            cmd_in(&ch, &n, &cdb12(0xA8, 0, 99_990, 5), 2560).await.data,
            data
        );
        // Larger than a pool buffer, and the largest transfer allowed.
        let data = pattern(16384 * 512, 4);
        cmd_out(&ch, &n, &cdb16(0x8A, 0, 1000, 16384), data.clone())
            .await
            .good();
        assert_eq!(read16(&ch, &n, 1000, 16384, 512).await, data);
        cmd_in(&ch, &n, &cdb16(0x88, 0, 0, 16385), 16385 * 512)
            .await
            .invalid_field();
        // READ(6) with a transfer length of 0 means 256 blocks.
        let r = cmd_in(&ch, &n, &[0x08, 0, 0, 0, 0, 0], 256 * 512).await;
        r.good();
        assert_eq!(r.data.len(), 256 * 512);
    });
}

#[test]
fn beyond_end_of_lun_zero_blocks_and_protection_fields() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        for i in 1..=4u32 {
            cmd_in(&ch, &n, &cdb10(0x28, 0, 1001 - i, i as u16), i * 512)
                .await
                .oob();
            cmd_in(&ch, &n, &cdb16(0x88, 0, 1 << 63, i), i * 512)
                .await
                .oob();
            cmd_in(&ch, &n, &cdb16(0x88, 0, u64::MAX, i), i * 512)
                .await
                .oob();
            cmd_in(&ch, &n, &cdb16(0x88, 0, 1 << 55, i), i * 512)
                .await
                .oob();
            let d = vec![0u8; i as usize * 512];
            cmd_out(&ch, &n, &cdb10(0x2A, 0, 1001 - i, i as u16), d)
                .await
                .oob();
        }
        cmd_in(&ch, &n, &cdb10(0x28, 0, 999, 2), 1024).await.oob();
        cmd_in(&ch, &n, &[0x08, 0x1F, 0xFF, 0xFF, 1, 0], 512)
            .await
            .oob();
        cmd_none(&ch, &n, &cdb10(0x28, 0, 0, 0)).await.good();
        cmd_none(&ch, &n, &cdb10(0x2A, 0, 1000, 0)).await.good();
        cmd_none(&ch, &n, &cdb10(0x2A, 0, 1001, 0)).await.oob();
        cmd_none(&ch, &n, &cdb16(0x8A, 0, u64::MAX, 0)).await.oob();
        for p in 1..8u8 {
            cmd_in(&ch, &n, &cdb10(0x28, p << 5, 0, 1), 512)
                .await
                .invalid_field();
            cmd_out(&ch, &n, &cdb10(0x2A, p << 5, 0, 1), vec![0; 512])
                .await
                .invalid_field();
        }
        // DPO, FUA and FUA_NV are accepted.
        for flags in [0x10u8, 0x08, 0x02, 0x1A] {
            cmd_in(&ch, &n, &cdb10(0x28, flags, 0, 1), 512).await.good();
            cmd_out(&ch, &n, &cdb10(0x2A, flags, 0, 1), vec![7; 512])
                .await
                .good();
        }
    });
}

#[test]
fn residuals_match_the_expected_length() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let one = cdb10(0x28, 0, 0, 1);
        let r = cmd_in(&ch, &n, &one, 0).await;
        r.good();
        assert_eq!(r.residual, Residual::Overflow(512));
        let r = cmd_in(&ch, &n, &one, 10_000).await;
        assert_eq!((r.data.len(), r.residual), (512, Residual::Underflow(9488)));
        let r = cmd_in(&ch, &n, &one, 200).await;
        assert_eq!((r.data.len(), r.residual), (200, Residual::Overflow(312)));
        let r = cmd_in(&ch, &n, &cdb10(0x28, 0, 0, 2), 512).await;
        assert_eq!((r.data.len(), r.residual), (512, Residual::Overflow(512)));
        // A READ sent with the write flag moves no data but is not an error.
        let r = run(&ch, &n, &one, Dir::Out, 512, vec![0xA6; 512]).await;
        r.good();
        assert!(r.data.is_empty());

        // WRITE: the same four cases, and only whole received blocks are written.
        let w1 = cdb10(0x2A, 0, 0, 1);
        let r = run(&ch, &n, &w1, Dir::Out, 0, Vec::new()).await;
        r.good();
        assert_eq!(r.residual, Residual::Overflow(512));
        let r = run(&ch, &n, &w1, Dir::Out, 10_000, vec![0xA6; 10_000]).await;
        r.good();
        assert_eq!(r.residual, Residual::Underflow(9488));
        let r = run(&ch, &n, &w1, Dir::Out, 200, vec![0xA6; 200]).await;
        r.good();
        assert_eq!(r.residual, Residual::Overflow(312));
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 2), vec![b'a'; 1024])
            .await
            .good();
        let r = run(
            &ch,
            &n,
            &cdb10(0x2A, 0, 0, 2),
            Dir::Out,
            512,
            vec![b'b'; 512],
        )
        .await;
        r.good();
        assert_eq!(r.residual, Residual::Overflow(512));
        let d = cmd_in(&ch, &n, &cdb10(0x28, 0, 0, 2), 1024).await.data;
        assert!(d[..512].iter().all(|&b| b == b'b'));
        assert!(
            d[512..].iter().all(|&b| b == b'a'),
            "the second block was not sent"
        );
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 2), vec![b'a'; 1024])
            .await
            .good();
        let r = run(
            &ch,
            &n,
            &cdb10(0x2A, 0, 0, 1),
            Dir::Out,
            1024,
            vec![b'b'; 1024],
        )
        .await;
        assert_eq!(r.residual, Residual::Underflow(512));
        let d = cmd_in(&ch, &n, &cdb10(0x28, 0, 0, 2), 1024).await.data;
        assert!(d[..512].iter().all(|&b| b == b'b'));
        assert!(d[512..].iter().all(|&b| b == b'a'));
        // A command without data and an expected length underflows by all of it.
        let r = run(&ch, &n, &[0; 6], Dir::In, 100, Vec::new()).await;
        assert_eq!(r.residual, Residual::Underflow(100));
        // MODE SENSE(6) with a 4-byte allocation length: no overflow.
        let r = cmd_in(&ch, &n, &[0x1A, 0, 0x3F, 0, 4, 0], 4).await;
        assert_eq!((r.data.len(), r.residual), (4, Residual::None));
        let r = cmd_in(&ch, &n, &[0x1A, 0, 0x3F, 0, 255, 0], 255).await;
        assert!(matches!(r.residual, Residual::Underflow(_)));
    });
}

#[test]
fn io_errors_become_medium_errors() {
    let e = engine(1);
    let base = Arc::new(MallocBdev::new("ram", 512, 1000).expect("geometry"));
    let err = Arc::new(ErrorBdev::new("err", base, Vec::new(), 1).expect("valid"));
    let lu = LogicalUnit::new(config(err.clone(), false));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        err.set_rules(vec![ErrorRule {
            lba_start: 10,
            lba_end: Some(20),
            ..ErrorRule::always(&[IoKind::Read])
        }])
        .expect("rules");
        cmd_in(&ch, &n, &cdb10(0x28, 0, 0, 4), 2048).await.good();
        let s = cmd_in(&ch, &n, &cdb10(0x28, 0, 8, 4), 2048)
            .await
            .check(SenseKey::MediumError, Asc::UNRECOVERED_READ_ERROR);
        assert_eq!(s.information, Some(8));
        err.set_rules(vec![ErrorRule::always(&[IoKind::Write])])
            .expect("rules");
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 1), vec![1; 512])
            .await
            .check(SenseKey::MediumError, Asc::WRITE_ERROR);
        err.set_rules(vec![ErrorRule::always(&[IoKind::Flush])])
            .expect("rules");
        cmd_none(&ch, &n, &cdb10(0x35, 0, 0, 0))
            .await
            .check(SenseKey::MediumError, Asc::WRITE_ERROR);
    });
}

// ---------------------------------------------------------------------------------------------
// VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE
// ---------------------------------------------------------------------------------------------

#[test]
fn verify_compares_and_reports_the_miscompare_offset() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let data = pattern(4 * 512, 9);
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 100, 4), data.clone())
            .await
            .good();
        cmd_none(&ch, &n, &cdb10(0x2F, 0, 100, 4)).await.good();
        cmd_out(&ch, &n, &cdb10(0x2F, 0x02, 100, 4), data.clone())
            .await
            .good();
        let mut bad = data.clone();
        bad[1500] ^= b'X';
        let s = cmd_out(&ch, &n, &cdb10(0x2F, 0x02, 100, 4), bad.clone())
            .await
            .check(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY);
        assert_eq!(s.information, Some(1500));
        // BYTCHK 0: no comparison at all.
        run(&ch, &n, &cdb10(0x2F, 0, 100, 4), Dir::None, 0, bad)
            .await
            .good();
        // BYTCHK 11b: one block against each.
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 200, 3), vec![0x5C; 1536])
            .await
            .good();
        cmd_out(&ch, &n, &cdb10(0x2F, 0x06, 200, 3), vec![0x5C; 512])
            .await
            .good();
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 201, 1), vec![0x5D; 512])
            .await
            .good();
        let s = cmd_out(&ch, &n, &cdb10(0x2F, 0x06, 200, 3), vec![0x5C; 512])
            .await
            .check(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY);
        assert_eq!(s.information, Some(512));
        cmd_out(&ch, &n, &cdb10(0x2F, 0x04, 200, 3), vec![0; 512])
            .await
            .invalid_field();
        cmd_none(&ch, &n, &cdb10(0x2F, 0, 999, 2)).await.oob();
        cmd_none(&ch, &n, &cdb10(0x2F, 0x20, 0, 1))
            .await
            .invalid_field();
        // VERIFY(12) and (16), DPO accepted.
        cmd_out(&ch, &n, &cdb12(0xAF, 0x12, 100, 4), data.clone())
            .await
            .good();
        cmd_out(&ch, &n, &cdb16(0x8F, 0x12, 100, 4), data)
            .await
            .good();
    });
}

#[test]
fn write_and_verify() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let data = pattern(2048, 4);
        cmd_out(&ch, &n, &cdb10(0x2E, 0x02, 40, 4), data.clone())
            .await
            .good();
        assert_eq!(read16(&ch, &n, 40, 4, 512).await, data);
        cmd_out(&ch, &n, &cdb12(0xAE, 0x10, 44, 1), vec![3; 512])
            .await
            .good();
        cmd_out(&ch, &n, &cdb16(0x8E, 0, 999, 2), vec![3; 1024])
            .await
            .oob();
        let r = run(&ch, &n, &cdb10(0x2E, 0x02, 0, 1), Dir::Out, 0, Vec::new()).await;
        r.good();
        assert_eq!(r.residual, Residual::Overflow(512));
        cmd_out(&ch, &n, &cdb10(0x2E, 0x08, 0, 1), vec![0; 512])
            .await
            .invalid_field();
    });
}

#[test]
fn compare_and_write() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        cmd_out(&ch, &n, &cdb16(0x8A, 0, 10, 2), vec![b'A'; 1024])
            .await
            .good();
        let mut d = vec![b'A'; 1024];
        d.extend(vec![b'B'; 1024]);
        cmd_out(&ch, &n, &caw(10, 2), d.clone()).await.good();
        assert_eq!(read16(&ch, &n, 10, 2, 512).await, vec![b'B'; 1024]);
        // Now the compare fails: the offset of the first different byte, nothing written.
        let mut d = vec![b'B'; 1024];
        d[700] = b'C';
        d.extend(vec![b'Z'; 1024]);
        let s = cmd_out(&ch, &n, &caw(10, 2), d)
            .await
            .check(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY);
        assert_eq!(s.information, Some(700));
        assert_eq!(read16(&ch, &n, 10, 2, 512).await, vec![b'B'; 1024]);
        // Unwritten blocks miscompare against non-zero data.
        let mut d = vec![b'%'; 512];
        d.extend(vec![b'B'; 512]);
        cmd_out(&ch, &n, &caw(500, 1), d)
            .await
            .check(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY);
        // The data-out length must be exactly twice the blocks (libiscsi sends 256 blocks as 0).
        cmd_out(&ch, &n, &caw(0, 0), vec![0; 2 * 256 * 512])
            .await
            .invalid_field();
        cmd_out(&ch, &n, &caw(0, 1), vec![0; 4 * 512])
            .await
            .invalid_field();
        cmd_none(&ch, &n, &caw(0, 0)).await.good();
        cmd_out(&ch, &n, &caw(999, 2), vec![0; 2048]).await.oob();
        let mut c = caw(0, 1);
        c[1] = 0x18;
        let mut d = read16(&ch, &n, 0, 1, 512).await;
        d.extend(vec![1; 512]);
        cmd_out(&ch, &n, &c, d).await.good();
        assert_eq!(lu.atomic_active.load(Ordering::SeqCst), 0);
        assert_eq!(lu.ranges.held(), 0);
    });
}

#[test]
fn compare_and_write_is_atomic_against_other_cores() {
    let e = engine(2);
    let lu = malloc_lu(512, 64, false);
    let n = nexus(1);
    // Both cores increment a counter in block 0 with read + COMPARE AND WRITE, while plain
    // writes hammer the neighbouring blocks. A lost update (two CAWs that both compared the
    // same value) would leave the counter below the number of successful CAWs.
    let mut handles = Vec::new();
    for core in 0..2usize {
        let lu = lu.clone();
        let n = n.clone();
        let remote = e
            .reactor(core)
            .spawn(move || async move {
                let ch = lu.open().expect("open");
                let mut good = 0u64;
                for i in 0..400u32 {
                    let cur = read16(&ch, &n, 0, 1, 512).await;
                    let v = u64::from_be_bytes(cur[..8].try_into().expect("8"));
                    let mut d = cur.clone();
                    let mut next = vec![0u8; 512];
                    next[..8].copy_from_slice(&(v + 1).to_be_bytes());
                    d.extend(next);
                    let r = cmd_out(&ch, &n, &caw(0, 1), d).await;
                    if r.status == 0 {
                        good += 1;
                    } else {
                        r.check(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY);
                    }
                    let lba = 1 + (i % 8) as u16;
                    cmd_out(
                        &ch,
                        &n,
                        &cdb10(0x2A, 0, u32::from(lba), 1),
                        vec![i as u8; 512],
                    )
                    .await
                    .good();
                }
                good
            })
            .expect("spawn");
        handles.push(remote);
    }
    let total: u64 = handles.into_iter().map(|h| h.wait().expect("ran")).sum();
    let last = on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let d = read16(&ch, &nexus(1), 0, 1, 512).await;
        u64::from_be_bytes(d[..8].try_into().expect("8"))
    });
    assert!(total > 0);
    assert_eq!(last, total, "no lost update");
}

#[test]
fn orwrite_merges_with_the_medium() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        cmd_out(&ch, &n, &cdb16(0x8A, 0, 5, 2), vec![0x0F; 1024])
            .await
            .good();
        cmd_out(&ch, &n, &cdb16(0x8B, 0, 5, 2), vec![0xA0; 1024])
            .await
            .good();
        assert_eq!(read16(&ch, &n, 5, 2, 512).await, vec![0xAF; 1024]);
        cmd_out(&ch, &n, &cdb16(0x8B, 0x18, 5, 1), vec![0x50; 512])
            .await
            .good();
        assert_eq!(read16(&ch, &n, 5, 1, 512).await, vec![0xFF; 512]);
        cmd_out(&ch, &n, &cdb16(0x8B, 0, 999, 2), vec![0; 1024])
            .await
            .oob();
        cmd_out(&ch, &n, &cdb16(0x8B, 0x20, 0, 1), vec![0; 512])
            .await
            .invalid_field();
        cmd_none(&ch, &n, &cdb16(0x8B, 0, 0, 0)).await.good();
    });
}

// ---------------------------------------------------------------------------------------------
// Thin provisioning: UNMAP, WRITE SAME, GET LBA STATUS
// ---------------------------------------------------------------------------------------------

fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
    let len = 8 + 16 * descs.len();
    let mut p = vec![0u8; len];
    p[0..2].copy_from_slice(&((len - 2) as u16).to_be_bytes());
    p[2..4].copy_from_slice(&((len - 8) as u16).to_be_bytes());
    for (i, &(lba, n)) in descs.iter().enumerate() {
        p[8 + 16 * i..16 + 16 * i].copy_from_slice(&lba.to_be_bytes());
        p[16 + 16 * i..20 + 16 * i].copy_from_slice(&n.to_be_bytes());
    }
    p
}

fn unmap_cdb(len: usize) -> Vec<u8> {
    cdb10(0x42, 0, 0, len as u16)
}

fn get_lba_status(lba: u64, alloc: u32) -> Vec<u8> {
    let mut c = cdb16(0x9E, 0x12, lba, alloc);
    c[14] = 0;
    c
}

fn lba_status(d: &[u8]) -> Vec<(u64, u32, u8)> {
    let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    assert_eq!((len - 4) % 16, 0);
    d[8..]
        .chunks(16)
        .map(|c| {
            (
                u64::from_be_bytes(c[..8].try_into().expect("8")),
                u32::from_be_bytes(c[8..12].try_into().expect("4")),
                c[12] & 0x0F,
            )
        })
        .collect()
}

#[test]
fn unmap_deallocates_and_reports_status() {
    let e = engine(1);
    let lu = LogicalUnit::new(config(Arc::new(MapBdev::new(512, 2048)), true));
    assert!(lu.block_erase);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 256), vec![b'a'; 256 * 512])
            .await
            .good();
        let p = unmap_list(&[(10, 5), (100, 1), (0, 0)]);
        cmd_out(&ch, &n, &unmap_cdb(p.len()), p).await.good();
        let d = read16(&ch, &n, 8, 10, 512).await;
        assert!(d[..1024].iter().all(|&b| b == b'a'));
        assert!(d[1024..3584].iter().all(|&b| b == 0));
        assert!(d[3584..].iter().all(|&b| b == b'a'));
        let r = cmd_in(&ch, &n, &get_lba_status(0, 1024), 1024).await;
        r.good();
        let s = lba_status(&r.data);
        assert_eq!(
            &s[..5],
            &[
                (0, 10, 0),
                (10, 5, 1),
                (15, 85, 0),
                (100, 1, 1),
                (101, 155, 0)
            ]
        );
        assert_eq!(s[5], (256, 2048 - 256, 1));
        // The allocation length bounds the descriptors; the first one starts at the LBA.
        let r = cmd_in(&ch, &n, &get_lba_status(12, 24), 24).await;
        assert_eq!(lba_status(&r.data), vec![(12, 3, 1)]);
        cmd_in(&ch, &n, &get_lba_status(2048, 24), 24).await.oob();
        cmd_in(&ch, &n, &get_lba_status(u64::MAX, 24), 24)
            .await
            .oob();
        // Parameter list checks.
        let p = unmap_list(&[(2047, 2)]);
        cmd_out(&ch, &n, &unmap_cdb(p.len()), p).await.oob();
        let p = unmap_list(&[(0, 1 << 21)]);
        cmd_out(&ch, &n, &unmap_cdb(p.len()), p).await.check(
            SenseKey::IllegalRequest,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        );
        cmd_out(&ch, &n, &unmap_cdb(4), vec![0; 4])
            .await
            .check(SenseKey::IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR);
        let mut p = unmap_list(&[(0, 1)]);
        p[3] = 32;
        cmd_out(&ch, &n, &unmap_cdb(p.len()), p)
            .await
            .check(SenseKey::IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR);
        cmd_none(&ch, &n, &unmap_cdb(0)).await.good();
        cmd_none(&ch, &n, &cdb10(0x42, 1, 0, 0))
            .await
            .invalid_field();
        let p = unmap_list(&[(2048, 0)]);
        cmd_out(&ch, &n, &unmap_cdb(p.len()), p).await.good();
    });
}

#[test]
fn unmap_needs_a_thin_lu() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let p = unmap_list(&[(0, 1)]);
        cmd_out(&ch, &n, &unmap_cdb(p.len()), p).await.check(
            SenseKey::IllegalRequest,
            Asc::INVALID_COMMAND_OPERATION_CODE,
        );
        let mut ws = cdb10(0x41, 0x08, 0, 1);
        ws[0] = 0x41;
        cmd_out(&ch, &n, &ws, vec![0; 512]).await.invalid_field();
        // GET LBA STATUS still answers: everything mapped.
        let r = cmd_in(&ch, &n, &get_lba_status(3, 64), 64).await;
        assert_eq!(lba_status(&r.data), vec![(3, 997, 0)]);
    });
    // Even when the bdev tracks deallocated blocks.
    let lu = LogicalUnit::new(config(Arc::new(MapBdev::new(512, 100)), false));
    assert!(!lu.block_erase);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let r = cmd_in(&ch, &nexus(1), &get_lba_status(0, 64), 64).await;
        assert_eq!(lba_status(&r.data), vec![(0, 100, 0)]);
    });
}

#[test]
fn write_same() {
    let e = engine(1);
    let lu = LogicalUnit::new(config(Arc::new(MapBdev::new(512, 4096)), true));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let blockpat = pattern(512, 7);
        cmd_out(&ch, &n, &cdb10(0x41, 0, 100, 300), blockpat.clone())
            .await
            .good();
        let d = read16(&ch, &n, 100, 300, 512).await;
        for b in d.chunks(512) {
            assert_eq!(b, &blockpat[..]);
        }
        // Zeros with UNMAP deallocate; without UNMAP they write zeros.
        cmd_out(&ch, &n, &cdb10(0x41, 0x08, 100, 50), vec![0; 512])
            .await
            .good();
        let r = cmd_in(&ch, &n, &get_lba_status(100, 64), 64).await;
        assert_eq!(lba_status(&r.data)[0], (100, 50, 1));
        assert!(read16(&ch, &n, 100, 50, 512).await.iter().all(|&b| b == 0));
        // UNMAP with non-zero data deallocates too (libiscsi's WRITE SAME(10) UNMAP test).
        cmd_out(&ch, &n, &cdb10(0x41, 0, 100, 2), vec![9; 512])
            .await
            .good();
        cmd_out(&ch, &n, &cdb10(0x41, 0x08, 100, 2), vec![9; 512])
            .await
            .good();
        assert_eq!(read16(&ch, &n, 100, 2, 512).await, vec![0; 1024]);
        // Zero blocks means up to the end of the LUN.
        cmd_out(&ch, &n, &cdb10(0x41, 0, 4000, 0), vec![4; 512])
            .await
            .good();
        assert_eq!(read16(&ch, &n, 4090, 6, 512).await, vec![4; 3072]);
        let mut ws16 = cdb16(0x93, 0x08, 4090, 0);
        ws16[14] = 0;
        cmd_out(&ch, &n, &ws16, vec![0; 512]).await.good();
        assert!(read16(&ch, &n, 4090, 6, 512).await.iter().all(|&b| b == 0));
        // NDOB: no data-out, zeros.
        cmd_none(&ch, &n, &cdb16(0x93, 0x01, 300, 4)).await.good();
        assert!(read16(&ch, &n, 300, 4, 512).await.iter().all(|&b| b == 0));
        // ANCHOR, range, limits, missing data.
        cmd_out(&ch, &n, &cdb10(0x41, 0x10, 0, 1), vec![0; 512])
            .await
            .invalid_field();
        cmd_out(&ch, &n, &cdb10(0x41, 0x18, 0, 1), vec![0; 512])
            .await
            .invalid_field();
        cmd_out(&ch, &n, &cdb10(0x41, 0, 4096, 1), vec![0; 512])
            .await
            .oob();
        cmd_out(&ch, &n, &cdb10(0x41, 0, 4097, 0), vec![0; 512])
            .await
            .oob();
        cmd_out(&ch, &n, &cdb16(0x93, 0, 0, 0x10000), vec![0; 512])
            .await
            .invalid_field();
        let r = cmd_out(&ch, &n, &cdb10(0x41, 0, 0, 1), vec![0; 256]).await;
        assert_eq!(r.status, 2);
        // More than one block of Data-Out is refused too, with and without UNMAP
        // (libiscsi's WriteSame10/16.InvalidDataOutSize).
        for flags in [0u8, 0x08] {
            cmd_out(&ch, &n, &cdb10(0x41, flags, 0, 1), vec![0; 1024])
                .await
                .invalid_field();
            cmd_out(&ch, &n, &cdb16(0x93, flags, 0, 1), vec![0; 1024])
                .await
                .invalid_field();
        }
        for p in 1..8u8 {
            cmd_out(&ch, &n, &cdb10(0x41, p << 5, 0, 1), vec![0; 512])
                .await
                .invalid_field();
        }
    });
}

#[test]
fn write_same_over_the_limit_from_block_zero() {
    let e = engine(1);
    let lu = malloc_lu(512, 0xFFFF + 10, true);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        cmd_out(&ch, &n, &cdb10(0x41, 0, 0, 0), vec![0; 512])
            .await
            .invalid_field();
        cmd_out(&ch, &n, &cdb10(0x41, 0, 9, 0), vec![0; 512])
            .await
            .invalid_field();
        cmd_out(&ch, &n, &cdb10(0x41, 0, 10, 0), vec![0; 512])
            .await
            .good();
        cmd_out(&ch, &n, &cdb10(0x41, 0, 11, 0), vec![0; 512])
            .await
            .good();
    });
}

// ---------------------------------------------------------------------------------------------
// MODE SENSE / SELECT, write protection, sense format
// ---------------------------------------------------------------------------------------------

async fn control_page(ch: &LuChannel, n: &Nexus, pc: u8) -> Vec<u8> {
    let r = cmd_in(ch, n, &[0x1A, 0x08, (pc << 6) | 0x0A, 0, 255, 0], 255).await;
    r.good();
    r.data[4..].to_vec()
}

async fn select_page(ch: &LuChannel, n: &Nexus, page: &[u8]) -> R {
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(page);
    let c = [0x15, 0x10, 0, 0, p.len() as u8, 0];
    cmd_out(ch, n, &c, p).await
}

#[test]
fn software_write_protect_and_descriptor_sense_through_mode_select() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, true);
    let (a, b) = (nexus(1), nexus(2));
    lu.nexus_added(&a);
    lu.nexus_added(&b);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        cmd_none(&ch, &a, &[0; 6]).await;
        cmd_none(&ch, &b, &[0; 6]).await;
        let changeable = control_page(&ch, &a, 1).await;
        assert_eq!(changeable[4] & 0x08, 0x08, "SWP changeable");
        let mut page = control_page(&ch, &a, 0).await;
        page[4] |= 0x08;
        select_page(&ch, &a, &page).await.good();
        let r = cmd_in(&ch, &a, &[0x1A, 0, 0x3F, 0, 255, 0], 255).await;
        assert_eq!(
            r.data[2] & 0x80,
            0x80,
            "WP in the device-specific parameter"
        );
        cmd_in(&ch, &a, &cdb10(0x28, 0, 0, 1), 512).await.good();
        cmd_out(&ch, &a, &cdb10(0x2A, 0, 0, 1), vec![0; 512])
            .await
            .check(SenseKey::DataProtect, Asc::WRITE_PROTECTED);
        let p = unmap_list(&[(0, 1)]);
        cmd_out(&ch, &a, &unmap_cdb(p.len()), p)
            .await
            .check(SenseKey::DataProtect, Asc::WRITE_PROTECTED);
        cmd_none(&ch, &a, &cdb10(0x41, 0x08, 0, 1))
            .await
            .check(SenseKey::DataProtect, Asc::WRITE_PROTECTED);
        // The other nexus learns that mode parameters changed.
        cmd_none(&ch, &b, &[0; 6])
            .await
            .check(SenseKey::UnitAttention, Asc::MODE_PARAMETERS_CHANGED);
        page[4] &= !0x08;
        page[2] |= 0x04;
        select_page(&ch, &a, &page).await.good();
        let r = cmd_in(&ch, &a, &cdb16(0x88, 0, u64::MAX, 1), 512).await;
        assert_eq!(r.status, 2);
        let raw = ch
            .execute(Command {
                nexus: &a,
                cdb: &cdb16(0x88, 0, u64::MAX, 1),
                attr: TaskAttr::Simple,
                expected_len: 512,
                read: true,
                write: false,
                data_out: Vec::new(),
            })
            .await;
        assert_eq!(raw.sense[0], 0x72, "descriptor format with D_SENSE");
        // Non-changeable fields and saved pages.
        let mut bad = page.clone();
        bad[3] = 0x12;
        select_page(&ch, &a, &bad).await.check(
            SenseKey::IllegalRequest,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        );
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(&page);
        cmd_out(&ch, &a, &[0x15, 0x11, 0, 0, p.len() as u8, 0], p)
            .await
            .invalid_field();
        cmd_in(&ch, &a, &[0x1A, 0, 0xCA, 0, 255, 0], 255)
            .await
            .check(
                SenseKey::IllegalRequest,
                Asc::SAVING_PARAMETERS_NOT_SUPPORTED,
            );
        // A LU reset restores the defaults.
        lu.reset(&a, ResetKind::LogicalUnit);
        cmd_none(&ch, &a, &[0; 6]).await;
        assert_eq!(control_page(&ch, &a, 0).await[2] & 0x04, 0);
    });
}

#[test]
fn write_cache_disabled_makes_writes_fua_and_mode_sense_10_works() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let r = cmd_in(&ch, &n, &[0x5A, 0, 0x08, 0, 0, 0, 0, 0, 255, 0], 255).await;
        r.good();
        assert_eq!(u16::from_be_bytes([r.data[6], r.data[7]]), 8);
        let page = r.data[16..].to_vec();
        assert_eq!(&page[..3], &[0x08, 0x12, 0x04]);
        let mut p = vec![0u8; 8];
        let mut off = page.clone();
        off[2] = 0;
        p.extend_from_slice(&off);
        let mut c = [0x55, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
        c[8] = p.len() as u8;
        cmd_out(&ch, &n, &c, p).await.good();
        assert!(lu.flags() & crate::lu::F_WRITE_THROUGH != 0);
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 1), vec![1; 512])
            .await
            .good();
    });
}

#[test]
fn read_only_lu_refuses_every_write() {
    let e = engine(1);
    let bdev = Arc::new(MallocBdev::new("ram", 512, 1000).expect("geometry"));
    let mut cfg = config(bdev, true);
    cfg.read_only = true;
    let lu = LogicalUnit::new(cfg);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let wp = |r: R| {
            r.check(SenseKey::DataProtect, Asc::WRITE_PROTECTED);
        };
        wp(cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 1), vec![0; 512]).await);
        wp(cmd_out(&ch, &n, &cdb12(0xAA, 0, 0, 1), vec![0; 512]).await);
        wp(cmd_out(&ch, &n, &cdb16(0x8A, 0, 0, 1), vec![0; 512]).await);
        wp(cmd_out(&ch, &n, &cdb10(0x2E, 0x02, 0, 1), vec![0; 512]).await);
        wp(cmd_out(&ch, &n, &cdb16(0x8B, 0, 0, 1), vec![0; 512]).await);
        wp(cmd_out(&ch, &n, &caw(0, 1), vec![0; 1024]).await);
        wp(cmd_out(&ch, &n, &cdb10(0x41, 0, 0, 1), vec![0; 512]).await);
        wp(cmd_none(&ch, &n, &cdb10(0x41, 0x08, 0, 1)).await);
        let p = unmap_list(&[(0, 1)]);
        wp(cmd_out(&ch, &n, &unmap_cdb(p.len()), p).await);
        cmd_in(&ch, &n, &cdb10(0x28, 0, 0, 1), 512).await.good();
        lu.set_read_only(false);
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 1), vec![0; 512])
            .await
            .good();
        lu.set_read_only(true);
        wp(cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 1), vec![0; 512]).await);
    });
}

// ---------------------------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------------------------

#[test]
fn spc2_reserve_release_between_two_nexuses() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    let (a, b) = (nexus(1), nexus(2));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let reserve = [0x16, 0, 0, 0, 0, 0];
        let release = [0x17, 0, 0, 0, 0, 0];
        cmd_none(&ch, &a, &reserve).await.good();
        cmd_none(&ch, &a, &reserve).await.good();
        assert_eq!(cmd_none(&ch, &b, &reserve).await.status, 0x18);
        cmd_none(&ch, &b, &release).await.good();
        cmd_in(&ch, &a, &[0x1A, 0, 0x3F, 0, 255, 0], 255)
            .await
            .good();
        assert_eq!(
            cmd_in(&ch, &b, &[0x1A, 0, 0x3F, 0, 255, 0], 255)
                .await
                .status,
            0x18
        );
        assert_eq!(cmd_none(&ch, &b, &[0; 6]).await.status, 0x18);
        cmd_in(&ch, &b, &[0x12, 0, 0, 0, 36, 0], 36).await.good();
        assert_eq!(
            cmd_in(&ch, &b, &cdb10(0x5E, 0, 0, 0x100), 0x100)
                .await
                .status,
            0x18
        );
        cmd_none(&ch, &a, &release).await.good();
        cmd_none(&ch, &b, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .await
            .good();
        // Nexus loss releases it.
        lu.nexus_removed(&b);
        cmd_none(&ch, &a, &reserve).await.good();
        // LU reset releases it.
        lu.reset(&a, ResetKind::LogicalUnit);
        cmd_none(&ch, &b, &reserve).await.good();
        cmd_none(&ch, &b, &release).await.good();
        // Third-party reservations are refused (after the reset's unit attention).
        cmd_none(&ch, &a, &[0; 6]).await.check(
            SenseKey::UnitAttention,
            Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
        );
        cmd_none(&ch, &a, &[0x16, 0x10, 0, 0, 0, 0])
            .await
            .invalid_field();
    });
}

fn prout(sa: u8, pr_type: u8, key: u64, sa_key: u64) -> (Vec<u8>, Vec<u8>) {
    let mut c = vec![0x5F, sa, pr_type, 0, 0, 0, 0, 0, 24, 0];
    c[2] = pr_type;
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    (c, p)
}

async fn pr_out(ch: &LuChannel, n: &Nexus, sa: u8, pr_type: u8, key: u64, sa_key: u64) -> R {
    let (c, p) = prout(sa, pr_type, key, sa_key);
    cmd_out(ch, n, &c, p).await
}

async fn read_keys(ch: &LuChannel, n: &Nexus, alloc: u16) -> R {
    let mut c = vec![0x5E, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&alloc.to_be_bytes());
    cmd_in(ch, n, &c, u32::from(alloc)).await
}

#[test]
fn persistent_reservations_end_to_end() {
    let e = engine(2);
    let lu = malloc_lu(512, 1000, false);
    let (a, b) = (nexus(1), nexus(2));
    lu.nexus_added(&a);
    lu.nexus_added(&b);
    let (lu0, a0, b0) = (lu.clone(), a.clone(), b.clone());
    on(&e, 0, move || async move {
        let ch = lu0.open().expect("open");
        cmd_none(&ch, &a0, &[0; 6]).await;
        cmd_none(&ch, &b0, &[0; 6]).await;
        pr_out(&ch, &a0, 6, 0, 0, 0xA).await.good();
        pr_out(&ch, &b0, 6, 0, 0, 0xB).await.good();
        let r = read_keys(&ch, &a0, 8).await;
        assert_eq!(
            &r.data[4..8],
            &16u32.to_be_bytes(),
            "ADDITIONAL LENGTH not truncated"
        );
        assert_eq!(r.data.len(), 8);
        pr_out(&ch, &a0, 1, 3, 0xA, 0).await.good();
    });
    // Exclusive access from another core: b (registered) can neither read nor write.
    let (lu1, a1, b1) = (lu.clone(), a.clone(), b.clone());
    on(&e, 1, move || async move {
        let ch = lu1.open().expect("open");
        cmd_in(&ch, &a1, &cdb10(0x28, 0, 1, 1), 512).await.good();
        assert_eq!(
            cmd_in(&ch, &b1, &cdb10(0x28, 0, 1, 1), 512).await.status,
            0x18
        );
        let r = cmd_out(&ch, &b1, &cdb10(0x2A, 0, 1, 1), vec![0; 512]).await;
        assert_eq!((r.status, r.residual), (0x18, Residual::None));
        cmd_none(&ch, &b1, &[0; 6]).await.good();
        // READ RESERVATION.
        let r = cmd_in(&ch, &b1, &cdb10(0x5E, 1, 0, 0x100), 0x100).await;
        assert_eq!(&r.data[8..16], &0xAu64.to_be_bytes());
        assert_eq!(r.data[21], 3);
        // b preempts a's reservation: a gets REGISTRATIONS PREEMPTED.
        pr_out(&ch, &b1, 4, 1, 0xB, 0xA).await.good();
        cmd_none(&ch, &a1, &[0; 6])
            .await
            .check(SenseKey::UnitAttention, Asc::REGISTRATIONS_PREEMPTED);
        assert_eq!(
            cmd_out(&ch, &a1, &cdb10(0x2A, 0, 1, 1), vec![0; 512])
                .await
                .status,
            0x18
        );
        cmd_in(&ch, &a1, &cdb10(0x28, 0, 1, 1), 512).await.good();
        // SPC-2 RESERVE while persistent state exists: conflict for the unregistered a.
        assert_eq!(
            cmd_none(&ch, &a1, &[0x16, 0, 0, 0, 0, 0]).await.status,
            0x18
        );
        cmd_none(&ch, &b1, &[0x16, 0, 0, 0, 0, 0]).await.good();
        // REPORT CAPABILITIES and READ FULL STATUS.
        let r = cmd_in(&ch, &a1, &cdb10(0x5E, 2, 0, 0x100), 0x100).await;
        assert_eq!(r.data, vec![0, 8, 0x1C, 0x80, 0xEA, 0x01, 0, 0]);
        let r = cmd_in(&ch, &a1, &cdb10(0x5E, 3, 0, 0x1000), 0x1000).await;
        assert_eq!(&r.data[8..16], &0xBu64.to_be_bytes());
        assert_eq!(r.data[8 + 12], 0x01, "R_HOLDER");
        for sa in 4..0x20u8 {
            cmd_in(&ch, &a1, &cdb10(0x5E, sa, 0, 0x100), 0x100)
                .await
                .invalid_field();
        }
        // CLEAR.
        pr_out(&ch, &b1, 3, 0, 0xB, 0).await.good();
        let r = read_keys(&ch, &b1, 0x100).await;
        assert_eq!(&r.data[4..8], &0u32.to_be_bytes());
        cmd_out(&ch, &a1, &cdb10(0x2A, 0, 1, 1), vec![0; 512])
            .await
            .good();
        // APTPL is refused.
        let (c, mut p) = prout(0, 0, 0, 5);
        p[20] = 1;
        cmd_out(&ch, &a1, &c, p).await.check(
            SenseKey::IllegalRequest,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        );
    });
    // A cold reset is a power on: registrations are gone.
    lu.reset(&a, ResetKind::TargetCold);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        cmd_none(&ch, &a, &[0; 6])
            .await
            .check(SenseKey::UnitAttention, Asc::POWER_ON_OCCURRED);
        let r = read_keys(&ch, &a, 0x100).await;
        assert_eq!(r.data, vec![0; 8]);
    });
}

// ---------------------------------------------------------------------------------------------
// REPORT SUPPORTED OPERATION CODES and the other small commands
// ---------------------------------------------------------------------------------------------

fn rsoc(rctd: bool, options: u8, opcode: u8, sa: u16, alloc: u32) -> Vec<u8> {
    let mut c = vec![
        0xA3,
        0x0C,
        options | if rctd { 0x80 } else { 0 },
        opcode,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    c[4..6].copy_from_slice(&sa.to_be_bytes());
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

#[test]
fn report_supported_operation_codes_matches_the_decoder() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let r = cmd_in(&ch, &n, &rsoc(false, 0, 0, 0, 65535), 65535).await;
        r.good();
        let len = u32::from_be_bytes(r.data[..4].try_into().expect("4")) as usize;
        assert_eq!(len + 4, r.data.len());
        let descs: Vec<&[u8]> = r.data[4..].chunks(8).collect();
        assert!(
            descs.iter().all(|d| d[5] & 0x02 == 0),
            "no CTDP without RCTD"
        );
        assert!(
            !descs.iter().any(|d| d[0] == 0x42),
            "no UNMAP on a thick LU"
        );
        for d in &descs {
            let (op, sa, servactv) = (d[0], u16::from_be_bytes([d[2], d[3]]), d[5] & 1 != 0);
            assert!(servactv || sa == 0);
            let one = cmd_in(
                &ch,
                &n,
                &rsoc(false, if servactv { 2 } else { 1 }, op, sa, 512),
                512,
            )
            .await;
            one.good();
            assert_eq!(one.data[1] & 0x07, 0x03);
            let cdb_len = usize::from(u16::from_be_bytes([one.data[2], one.data[3]]));
            assert_eq!(cdb_len, usize::from(u16::from_be_bytes([d[6], d[7]])));
            let usage = &one.data[4..4 + cdb_len];
            assert_eq!(usage[0], op);
            // The usage data decodes; setting any other bit is refused.
            let mut c = usage.to_vec();
            if !servactv {
                c[1..].fill(0);
            } else {
                c[2..].fill(0);
                c[1] &= 0x1F;
            }
            if op == 0x48 && sa == 1 {
                c[8] = 8;
            }
            assert!(crate::cdb::decode(&c).is_ok(), "{c:02x?}");
            let wrong = if servactv { 1 } else { 2 };
            cmd_in(&ch, &n, &rsoc(false, wrong, op, sa, 512), 512)
                .await
                .invalid_field();
        }
        // DPO/FUA advertised where the device-specific parameter says DPOFUA.
        for (op, mask) in [
            (0x28u8, 0x18u8),
            (0x2A, 0x18),
            (0x2F, 0x10),
            (0x2E, 0x10),
            (0x89, 0x18),
            (0x8B, 0x18),
        ] {
            let one = cmd_in(&ch, &n, &rsoc(false, 1, op, 0, 512), 512).await;
            assert_eq!(one.data[5] & mask, mask, "{op:02x}");
        }
        // RCTD: every descriptor carries a 12-byte timeouts descriptor.
        let r = cmd_in(&ch, &n, &rsoc(true, 0, 0, 0, 65535), 65535).await;
        let mut at = 4;
        while at < r.data.len() {
            assert_eq!(r.data[at + 5] & 0x02, 0x02);
            assert_eq!(&r.data[at + 8..at + 10], &[0, 0x0A]);
            at += 20;
        }
        assert_eq!(at, r.data.len());
        // An unsupported opcode: SUPPORT 001b.
        let one = cmd_in(&ch, &n, &rsoc(false, 1, 0xFB, 0, 512), 512).await;
        assert_eq!(one.data, vec![0, 1, 0, 0]);
        // Truncated to 1024 bytes.
        let r = cmd_in(&ch, &n, &rsoc(false, 0, 0, 0, 1024), 1024).await;
        r.good();
    });
}

#[test]
fn small_commands() {
    let e = engine(1);
    let lu = malloc_lu(512, 1000, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let r = cmd_in(&ch, &n, &[0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0], 32).await;
        assert_eq!(r.data, vec![0, 0x18, 0, 0]);
        let r = cmd_in(&ch, &n, &[0xB7, 0x05, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], 32).await;
        assert_eq!(r.data, vec![0, 0x05, 0, 0, 0, 0, 0, 0]);
        cmd_none(&ch, &n, &[0x1B, 1, 0, 0, 0, 0]).await.good();
        cmd_none(&ch, &n, &[0x1B, 0, 0, 0, 1, 0]).await.good();
        cmd_none(&ch, &n, &[0x1E, 0, 0, 0, 1, 0]).await.good();
        cmd_none(&ch, &n, &[0x1B, 0, 0, 0, 0x02, 0])
            .await
            .check(SenseKey::IllegalRequest, Asc::MEDIUM_REMOVAL_PREVENTED);
        cmd_none(&ch, &n, &[0x1E, 0, 0, 0, 0, 0]).await.good();
        cmd_none(&ch, &n, &[0x1B, 0, 0, 0, 0x02, 0]).await.good();
        cmd_none(&ch, &n, &[0, 0, 0, 0, 0, 0]).await.good();
        let r = cmd_none(&ch, &n, &cdb10(0x34, 0, 0, 16)).await;
        assert_eq!(r.status, 0x04, "CONDITION MET");
        cmd_none(&ch, &n, &cdb16(0x90, 0x02, 0, 0)).await;
        cmd_none(&ch, &n, &cdb10(0x34, 0, 1001, 0)).await.oob();
        cmd_none(&ch, &n, &cdb16(0x90, 0, 1 << 63, 0)).await.oob();
        cmd_none(&ch, &n, &cdb10(0x35, 0x02, 0, 1000)).await.good();
        cmd_none(&ch, &n, &cdb16(0x91, 0, 0, 0)).await.good();
        cmd_none(&ch, &n, &cdb16(0x91, 0, 999, 2)).await.oob();
        cmd_none(&ch, &n, &[0xFB, 0, 0, 0, 0, 0]).await.check(
            SenseKey::IllegalRequest,
            Asc::INVALID_COMMAND_OPERATION_CODE,
        );
        let r = cmd_in(&ch, &n, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64).await;
        assert_eq!(r.data, vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    });
}

// ---------------------------------------------------------------------------------------------
// SANITIZE
// ---------------------------------------------------------------------------------------------

fn sanitize(sa: u8, immed: bool, param_len: u16) -> Vec<u8> {
    let mut c = vec![
        0x48,
        sa | if immed { 0x80 } else { 0 },
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    c[7..9].copy_from_slice(&param_len.to_be_bytes());
    c
}

fn overwrite_params(bs: usize, byte: u8) -> Vec<u8> {
    let mut p = vec![0x01, 0, (bs >> 8) as u8, bs as u8];
    p.extend(vec![byte; bs]);
    p
}

#[test]
fn sanitize_overwrite_and_block_erase() {
    let e = engine(1);
    let lu = LogicalUnit::new(config(Arc::new(MapBdev::new(512, 4096)), true));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        cmd_out(&ch, &n, &cdb10(0x2A, 0, 0, 16), vec![b'a'; 8192])
            .await
            .good();
        let p = overwrite_params(512, 0xAA);
        cmd_out(&ch, &n, &sanitize(1, false, p.len() as u16), p)
            .await
            .good();
        assert_eq!(read16(&ch, &n, 0, 4, 512).await, vec![0xAA; 2048]);
        assert_eq!(read16(&ch, &n, 4092, 4, 512).await, vec![0xAA; 2048]);
        // A 4-byte pattern repeats through each block.
        let p = vec![0x01, 0, 0, 4, 1, 2, 3, 4];
        cmd_out(&ch, &n, &sanitize(1, false, 8), p).await.good();
        assert_eq!(
            &read16(&ch, &n, 7, 1, 512).await[..8],
            &[1, 2, 3, 4, 1, 2, 3, 4]
        );
        // BLOCK ERASE deallocates everything.
        cmd_none(&ch, &n, &sanitize(2, false, 0)).await.good();
        assert!(read16(&ch, &n, 0, 256, 512).await.iter().all(|&b| b == 0));
        let r = cmd_in(&ch, &n, &get_lba_status(0, 256), 256).await;
        assert_eq!(lba_status(&r.data), vec![(0, 4096, 1)]);
        // Bad service actions, crypto erase, parameter lists.
        for sa in [0u8, 3, 4, 0x1E] {
            cmd_none(&ch, &n, &sanitize(sa, false, 0))
                .await
                .invalid_field();
        }
        cmd_out(&ch, &n, &sanitize(2, false, 8), vec![0; 8])
            .await
            .invalid_field();
        cmd_out(&ch, &n, &sanitize(0x1F, false, 8), vec![0; 8])
            .await
            .invalid_field();
        cmd_none(&ch, &n, &sanitize(0x1F, false, 0)).await.good();
        let mut p = overwrite_params(512, 1);
        p[0] = 0;
        cmd_out(&ch, &n, &sanitize(1, false, 516), p).await.check(
            SenseKey::IllegalRequest,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        );
        cmd_out(&ch, &n, &sanitize(1, false, 517), vec![0; 517])
            .await
            .invalid_field();
        // Write protected.
        lu.set_read_only(true);
        let p = overwrite_params(512, 1);
        cmd_out(&ch, &n, &sanitize(1, false, 516), p)
            .await
            .check(SenseKey::DataProtect, Asc::WRITE_PROTECTED);
        cmd_none(&ch, &n, &sanitize(2, false, 0))
            .await
            .check(SenseKey::DataProtect, Asc::WRITE_PROTECTED);
    });
}

#[test]
fn sanitize_blocks_other_commands_until_it_is_done() {
    let e = engine(1);
    let base = Arc::new(MallocBdev::new("ram", 512, 2048 * 8).expect("geometry"));
    let slow = Arc::new(DelayBdev::new("slow", base, 0, 20_000, 0));
    let lu = LogicalUnit::new(config(slow, false));
    let a = nexus(1);
    let b = nexus(2);
    lu.nexus_added(&a);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        cmd_none(&ch, &a, &[0; 6]).await;
        let p = overwrite_params(512, 0x33);
        cmd_out(&ch, &a, &sanitize(1, true, 516), p).await.good();
        cmd_none(&ch, &b, &[0; 6])
            .await
            .check(SenseKey::NotReady, Asc::SANITIZE_IN_PROGRESS);
        cmd_in(&ch, &b, &cdb10(0x28, 0, 0, 1), 512)
            .await
            .check(SenseKey::NotReady, Asc::SANITIZE_IN_PROGRESS);
        cmd_in(&ch, &b, &[0x12, 0, 0, 0, 36, 0], 36).await.good();
        let r = cmd_in(&ch, &b, &[0x03, 0, 0, 0, 18, 0], 18).await;
        r.good();
        assert_eq!((r.data[2], r.data[12], r.data[13]), (0x02, 0x04, 0x1B));
        assert_eq!(r.data[15] & 0x80, 0x80, "progress indication");
        // A nexus going away or a LU reset does not stop it.
        lu.reset(&a, ResetKind::LogicalUnit);
        let mut waited = 0;
        loop {
            let r = cmd_none(&ch, &b, &[0; 6]).await;
            if r.status == 0 {
                break;
            }
            let s = r.sense.expect("sense");
            assert!(s.asc == Asc::SANITIZE_IN_PROGRESS || s.key == SenseKey::UnitAttention);
            basalt_engine::sleep(std::time::Duration::from_millis(20)).await;
            waited += 1;
            assert!(waited < 500, "sanitize never finished");
        }
        assert!(waited > 0);
        assert_eq!(read16(&ch, &b, 2048 * 8 - 1, 1, 512).await, vec![0x33; 512]);
    });
}

#[test]
fn sanitize_failure_mode() {
    let e = engine(1);
    let base = Arc::new(MallocBdev::new("ram", 512, 1024).expect("geometry"));
    let err = Arc::new(
        ErrorBdev::new("err", base, vec![ErrorRule::always(&[IoKind::Write])], 1).expect("valid"),
    );
    let lu = LogicalUnit::new(config(err.clone(), false));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let p = overwrite_params(512, 1);
        cmd_out(&ch, &n, &[0x48, 0x21, 0, 0, 0, 0, 0, 0x02, 0x04, 0], p)
            .await
            .check(SenseKey::MediumError, Asc::SANITIZE_COMMAND_FAILED);
        cmd_in(&ch, &n, &cdb10(0x28, 0, 0, 1), 512)
            .await
            .check(SenseKey::MediumError, Asc::SANITIZE_COMMAND_FAILED);
        cmd_none(&ch, &n, &[0; 6]).await.good();
        err.set_rules(Vec::new()).expect("rules");
        cmd_none(&ch, &n, &sanitize(0x1F, false, 0)).await.good();
        cmd_in(&ch, &n, &cdb10(0x28, 0, 0, 1), 512).await.good();
    });
}

// ---------------------------------------------------------------------------------------------
// EXTENDED COPY
// ---------------------------------------------------------------------------------------------

fn xcopy_list(
    list_id: u8,
    usage: u8,
    targets: &[[u8; 12]],
    segs: &[(u16, u16, u16, u64, u64)],
    bs: u32,
) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[1] = usage << 3;
    p[2..4].copy_from_slice(&((32 * targets.len()) as u16).to_be_bytes());
    p[8..12].copy_from_slice(&((28 * segs.len()) as u32).to_be_bytes());
    for t in targets {
        let mut d = vec![0u8; 32];
        d[0] = 0xE4;
        d[4..16].copy_from_slice(t);
        d[29..32].copy_from_slice(&bs.to_be_bytes()[1..]);
        p.extend(d);
    }
    for &(src, dst, n, sl, dl) in segs {
        let mut d = vec![0u8; 28];
        d[0] = 0x02;
        d[3] = 0x18;
        d[4..6].copy_from_slice(&src.to_be_bytes());
        d[6..8].copy_from_slice(&dst.to_be_bytes());
        d[10..12].copy_from_slice(&n.to_be_bytes());
        d[12..20].copy_from_slice(&sl.to_be_bytes());
        d[20..28].copy_from_slice(&dl.to_be_bytes());
        p.extend(d);
    }
    p
}

fn xcopy_cdb(len: usize) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn rcr(sa: u8, list_id: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x84;
    c[1] = sa;
    c[2] = list_id;
    c[10..14].copy_from_slice(&1024u32.to_be_bytes());
    c
}

#[derive(Debug)]
struct Targets(Vec<Arc<LogicalUnit>>);

impl CopyTargets for Targets {
    fn find(&self, designator: &[u8]) -> Option<Arc<LogicalUnit>> {
        self.0
            .iter()
            .find(|l| l.naa_designator()[..] == *designator)
            .cloned()
    }
}

#[test]
fn extended_copy_within_and_between_lus() {
    let e = engine(1);
    let lu = malloc_lu(512, 8192, false);
    let mut other_cfg = config(
        Arc::new(MallocBdev::new("other", 512, 4096).expect("geometry")),
        false,
    );
    other_cfg.uuid = [0x77; 16];
    let other = LogicalUnit::new(other_cfg);
    lu.set_copy_targets(Arc::new(Targets(vec![lu.clone(), other.clone()])));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let me = lu.naa_designator();
        let data = pattern(2048 * 512, 5);
        write16(&ch, &n, 0, data.clone(), 512).await;
        cmd_in(&ch, &n, &rcr(0, 1), 1024).await.invalid_field();
        let p = xcopy_list(1, 0, &[me], &[(0, 0, 2048, 0, 8192 - 2048)], 512);
        cmd_out(&ch, &n, &xcopy_cdb(p.len()), p).await.good();
        assert_eq!(read16(&ch, &n, 8192 - 2048, 2048, 512).await, data);
        let r = cmd_in(&ch, &n, &rcr(0, 1), 1024).await;
        r.good();
        assert_eq!(&r.data[..8], &[0, 0, 0, 8, 0, 0, 1, 0xF1]);
        assert_eq!(&r.data[8..12], &1024u32.to_be_bytes());
        // To the other LU.
        let p = xcopy_list(
            2,
            2,
            &[me, other.naa_designator()],
            &[(0, 1, 100, 0, 10)],
            512,
        );
        cmd_out(&ch, &n, &xcopy_cdb(p.len()), p).await.good();
        cmd_in(&ch, &n, &rcr(0, 2), 1024).await.invalid_field();
        let och = other.open().expect("open");
        assert_eq!(
            read16(&och, &n, 10, 100, 512).await,
            data[..100 * 512].to_vec()
        );
        // Errors.
        let p = xcopy_list(3, 0, &[me], &[(0, 1, 16, 0, 0)], 512);
        cmd_out(&ch, &n, &xcopy_cdb(p.len()), p)
            .await
            .check(SenseKey::CopyAborted, Asc::UNREACHABLE_COPY_TARGET);
        let p = xcopy_list(3, 0, &[me], &[(0, 0, 16, 0, 8191)], 512);
        cmd_out(&ch, &n, &xcopy_cdb(p.len()), p)
            .await
            .check(SenseKey::CopyAborted, Asc::NO_ADDITIONAL_SENSE);
        let r = cmd_in(&ch, &n, &rcr(0, 3), 1024).await;
        assert_eq!(r.data[4], 1, "held result says the copy failed");
        let p = xcopy_list(
            3,
            0,
            &[[0x01, 0x03, 0, 8, 9, 9, 9, 9, 9, 9, 9, 9]],
            &[(0, 0, 1, 0, 1)],
            512,
        );
        cmd_out(&ch, &n, &xcopy_cdb(p.len()), p)
            .await
            .check(SenseKey::CopyAborted, Asc::UNREACHABLE_COPY_TARGET);
        let p = xcopy_list(3, 0, &[me], &[(0, 0, 1, 0, 1)], 512);
        let short = p[..p.len() - 1].to_vec();
        cmd_out(&ch, &n, &xcopy_cdb(p.len()), short)
            .await
            .check(SenseKey::IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR);
        cmd_none(&ch, &n, &xcopy_cdb(0)).await.good();
        let r = cmd_in(&ch, &n, &rcr(3, 0), 1024).await;
        r.good();
        assert_eq!(
            &r.data[8..10],
            &limits::XCOPY_MAX_TARGET_DESCRIPTORS.to_be_bytes()
        );
        assert_eq!(r.data[43], 2);
        assert_eq!(&r.data[44..46], &[0x02, 0xE4]);
        // Standard INQUIRY claims 3PC.
        let r = cmd_in(&ch, &n, &[0x12, 0, 0, 0, 36, 0], 36).await;
        assert_eq!(r.data[5] & 0x08, 0x08);
    });
}

// ---------------------------------------------------------------------------------------------
// Capacity change, channels on several cores
// ---------------------------------------------------------------------------------------------

#[test]
fn writes_on_one_core_read_on_another_and_capacity_change_reopens() {
    let e = engine(2);
    let lu = malloc_lu(4096, 256, false);
    let n = nexus(1);
    let (lu0, n0) = (lu.clone(), n.clone());
    on(&e, 0, move || async move {
        let ch = lu0.open().expect("open");
        write16(&ch, &n0, 3, pattern(3 * 4096, 8), 4096).await;
    });
    let (lu1, n1) = (lu.clone(), n.clone());
    on(&e, 1, move || async move {
        let ch = lu1.open().expect("open");
        assert_eq!(read16(&ch, &n1, 3, 3, 4096).await, pattern(3 * 4096, 8));
        lu1.nexus_added(&n1);
        cmd_none(&ch, &n1, &[0; 6]).await;
        lu1.capacity_changed();
        cmd_none(&ch, &n1, &[0; 6])
            .await
            .check(SenseKey::UnitAttention, Asc::CAPACITY_DATA_HAS_CHANGED);
        let r = cmd_in(&ch, &n1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8).await;
        assert_eq!(&r.data[..4], &255u32.to_be_bytes());
        assert_eq!(ch.0.capacity_seen.get(), 1, "the channel reopened");
    });
}

#[test]
fn a_dropped_command_leaves_no_claims_behind() {
    let e = engine(1);
    let lu = malloc_lu(512, 1024, false);
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let data = vec![1u8; 512];
        let cdb = cdb10(0x2A, 0, 0, 1);
        let fut = ch.execute(Command {
            nexus: &n,
            cdb: &cdb,
            attr: TaskAttr::Simple,
            expected_len: 512,
            read: false,
            write: true,
            data_out: data,
        });
        // Poll it once, then drop it.
        let _ = basalt_engine::timeout(std::time::Duration::ZERO, fut).await;
        basalt_engine::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            lu.inflight_counters()
                .iter()
                .all(|c| c.0.load(Ordering::SeqCst) == 0)
        );
        let mut d = vec![0u8; 512];
        d.extend(vec![2u8; 512]);
        let r = cmd_out(&ch, &n, &caw(5, 1), d).await;
        r.good();
    });
}

// ---------------------------------------------------------------------------------------------
// Model test
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Write {
        lba: u64,
        blocks: u32,
        seed: u8,
    },
    Unmap {
        lba: u64,
        blocks: u32,
    },
    WriteSame {
        lba: u64,
        blocks: u32,
        byte: u8,
        unmap: bool,
    },
    Caw {
        lba: u64,
        seed: u8,
    },
}

fn op_strategy(cap: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..cap, 1u32..40, any::<u8>()).prop_map(move |(lba, n, seed)| Op::Write {
            lba: lba.min(cap - 1),
            blocks: n.min((cap - lba.min(cap - 1)) as u32),
            seed
        }),
        (0..cap, 1u32..40).prop_map(move |(lba, n)| Op::Unmap {
            lba,
            blocks: n.min((cap - lba) as u32)
        }),
        (
            0..cap,
            1u32..40,
            prop_oneof![Just(0u8), any::<u8>()],
            any::<bool>()
        )
            .prop_map(move |(lba, n, byte, unmap)| Op::WriteSame {
                lba,
                blocks: n.min((cap - lba) as u32),
                byte,
                unmap
            }),
        (0..cap, any::<u8>()).prop_map(|(lba, seed)| Op::Caw { lba, seed }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn reads_match_a_model_after_random_writes(ops in proptest::collection::vec(op_strategy(200), 1..40)) {
        const BS: usize = 512;
        let e = engine(1);
        let lu = LogicalUnit::new(config(Arc::new(MapBdev::new(BS as u32, 200)), true));
        let ok = Arc::new(AtomicBool::new(false));
        let done = ok.clone();
        on(&e, 0, move || async move {
            let ch = lu.open().expect("open");
            let n = nexus(1);
            let mut model = vec![0u8; 200 * BS];
            for op in ops {
                match op {
                    Op::Write { lba, blocks, seed } => {
                        let d = pattern(blocks as usize * BS, seed);
                        model[lba as usize * BS..][..d.len()].copy_from_slice(&d);
                        cmd_out(&ch, &n, &cdb16(0x8A, 0, lba, blocks), d).await.good();
                    }
                    Op::Unmap { lba, blocks } => {
                        model[lba as usize * BS..][..blocks as usize * BS].fill(0);
                        let p = unmap_list(&[(lba, blocks)]);
                        cmd_out(&ch, &n, &unmap_cdb(p.len()), p).await.good();
                    }
                    Op::WriteSame { lba, blocks, byte, unmap } => {
                        let value = if unmap { 0 } else { byte };
                        model[lba as usize * BS..][..blocks as usize * BS].fill(value);
                        let c = cdb10(0x41, if unmap { 0x08 } else { 0 }, lba as u32, blocks as u16);
                        cmd_out(&ch, &n, &c, vec![byte; BS]).await.good();
                    }
                    Op::Caw { lba, seed } => {
                        let cur = model[lba as usize * BS..][..BS].to_vec();
                        let new = pattern(BS, seed);
                        let mut d = cur.clone();
                        d.extend_from_slice(&new);
                        cmd_out(&ch, &n, &caw(lba, 1), d).await.good();
                        model[lba as usize * BS..][..BS].copy_from_slice(&new);
                    }
                }
            }
            let all = read16(&ch, &n, 0, 200, BS as u32).await;
            assert_eq!(all, model);
            // Deallocated blocks are exactly the ones GET LBA STATUS reports.
            let r = cmd_in(&ch, &n, &get_lba_status(0, 8 + 16 * 256), 8 + 16 * 256).await;
            let mut covered = 0;
            for (start, count, prov) in lba_status(&r.data) {
                assert_eq!(start, covered);
                if prov == 1 {
                    let bytes = &model[start as usize * BS..(start + u64::from(count)) as usize * BS];
                    assert!(bytes.iter().all(|&b| b == 0));
                }
                covered += u64::from(count);
            }
            assert_eq!(covered, 200);
            done.store(true, Ordering::SeqCst);
        });
        prop_assert!(ok.load(Ordering::SeqCst));
    }
}

#[test]
fn the_data_path_future_stays_small() {
    let e = engine(1);
    let lu = malloc_lu(512, 64, false);
    let size = on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let cdb = cdb10(0x28, 0, 0, 1);
        let fut = ch.execute(Command {
            nexus: &n,
            cdb: &cdb,
            attr: TaskAttr::Simple,
            expected_len: 512,
            read: true,
            write: false,
            data_out: Vec::new(),
        });
        std::mem::size_of_val(&fut)
    });
    assert!(size < 1024, "execute() future is {size} bytes");
}

#[test]
fn an_aborted_sanitize_goes_on() {
    let e = engine(1);
    let base = Arc::new(MallocBdev::new("ram", 512, 2048 * 4).expect("geometry"));
    let slow = Arc::new(DelayBdev::new("slow", base, 0, 20_000, 0));
    let lu = LogicalUnit::new(config(slow, false));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let p = overwrite_params(512, 0x44);
        let cdb = sanitize(1, false, 516);
        let fut = ch.execute(Command {
            nexus: &n,
            cdb: &cdb,
            attr: TaskAttr::Simple,
            expected_len: 516,
            read: false,
            write: true,
            data_out: p,
        });
        // The transport aborts the task: its future is dropped.
        let aborted = basalt_engine::timeout(std::time::Duration::from_millis(30), fut).await;
        assert!(aborted.is_err(), "the sanitize must still be running");
        cmd_none(&ch, &n, &[0; 6])
            .await
            .check(SenseKey::NotReady, Asc::SANITIZE_IN_PROGRESS);
        let mut polls = 0;
        while cmd_none(&ch, &n, &[0; 6]).await.status != 0 {
            basalt_engine::sleep(std::time::Duration::from_millis(20)).await;
            polls += 1;
            assert!(polls < 500, "sanitize never finished");
        }
        assert_eq!(read16(&ch, &n, 2048 * 4 - 1, 1, 512).await, vec![0x44; 512]);
    });
}

#[test]
fn sanitize_bandwidth_cap_slows_overwrite() {
    let e = engine(1);
    let lu = malloc_lu(512, 8192, false);
    // 4 MiB at 16 MiB/s: at least a quarter of a second.
    lu.set_sanitize_bandwidth(Some(16 << 20));
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        let n = nexus(1);
        let start = std::time::Instant::now();
        let p = overwrite_params(512, 0x21);
        cmd_out(&ch, &n, &sanitize(1, false, 516), p).await.good();
        assert!(start.elapsed() >= std::time::Duration::from_millis(240));
        lu.set_sanitize_bandwidth(None);
        let p = overwrite_params(512, 0x22);
        cmd_out(&ch, &n, &sanitize(1, false, 516), p).await.good();
        assert_eq!(read16(&ch, &n, 8191, 1, 512).await, vec![0x22; 512]);
    });
}

#[derive(Debug, Default)]
struct Aborts(Mutex<Vec<u64>>);

impl TaskAborter for Aborts {
    fn abort_tasks(&self, _lu: &LogicalUnit, nexus_ids: &[u64]) {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(nexus_ids);
    }
}

#[test]
fn preempt_and_abort_asks_the_transport_to_abort() {
    let e = engine(1);
    let lu = malloc_lu(512, 64, false);
    let aborts = Arc::new(Aborts::default());
    lu.set_task_aborter(aborts.clone());
    let (a, b) = (nexus(1), nexus(2));
    lu.nexus_added(&a);
    lu.nexus_added(&b);
    let seen = aborts.clone();
    on(&e, 0, move || async move {
        let ch = lu.open().expect("open");
        cmd_none(&ch, &a, &[0; 6]).await;
        cmd_none(&ch, &b, &[0; 6]).await;
        pr_out(&ch, &a, 6, 0, 0, 0xA).await.good();
        pr_out(&ch, &b, 6, 0, 0, 0xB).await.good();
        pr_out(&ch, &a, 1, 1, 0xA, 0).await.good();
        // Plain PREEMPT aborts nothing.
        pr_out(&ch, &b, 4, 1, 0xB, 0xA).await.good();
        assert!(seen.0.lock().expect("not poisoned").is_empty());
        cmd_none(&ch, &a, &[0; 6])
            .await
            .check(SenseKey::UnitAttention, Asc::REGISTRATIONS_PREEMPTED);
        pr_out(&ch, &a, 6, 0, 0, 0xA).await.good();
        pr_out(&ch, &a, 5, 3, 0xA, 0xB).await.good();
        assert_eq!(*seen.0.lock().expect("not poisoned"), vec![2]);
    });
}

#[test]
fn shared_types_cross_cores() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LogicalUnit>();
    send_sync::<Arc<LogicalUnit>>();
    send_sync::<LuConfig>();
    send_sync::<Nexus>();
}
