//! Volume I/O on real reactors over RAM and crash-simulating bases: thin reads and writes,
//! subcluster copy-on-write, snapshots, clones, revert, unmap, space reuse, reopen, and a
//! property test of random operation sequences (with power cuts) against a byte-array model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use basalt_bdev::modules::crash::{CrashBdev, CrashMode};
use basalt_bdev::modules::malloc::MallocBdev;
use basalt_bdev::{Bdev, IoChannel, IoError, IoVecs, Lba};
use basalt_engine::{BufPoolConfig, Engine, EngineConfig, current};
use proptest::prelude::*;

use crate::LvStore;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn engine() -> Engine {
    let mut cfg = EngineConfig::with_cores(2);
    cfg.pin = false;
    cfg.reactor.buffers = BufPoolConfig {
        small_size: 8192,
        small_count: 256,
        large_size: 128 * 1024,
        large_count: 128,
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

fn malloc(mib: u64) -> Arc<dyn Bdev> {
    Arc::new(MallocBdev::new("ram", 512, mib * MIB / 512).expect("geometry"))
}

/// Writes `data` at byte `off` in buffers of up to 64 KiB (one vectored request).
async fn write_at(ch: &IoChannel, off: u64, data: &[u8], fua: bool) -> Result<(), IoError> {
    let pool = current().pool().clone();
    let mut v = IoVecs::new();
    for chunk in data.chunks(64 * KIB as usize) {
        let mut b = pool.alloc(chunk.len()).expect("fits").await;
        b.copy_from_slice(chunk);
        v.push(b);
    }
    ch.write(Lba(off / 512), v, fua).await.1
}

async fn read_at(ch: &IoChannel, off: u64, len: u64) -> Vec<u8> {
    let pool = current().pool().clone();
    let mut v = IoVecs::new();
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(64 * KIB as usize);
        v.push(pool.alloc(n).expect("fits").await);
        left -= n;
    }
    let (bufs, r) = ch.read(Lba(off / 512), v).await;
    r.expect("read");
    bufs.iter().flat_map(|b| b.iter().copied()).collect()
}

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i / 512) as u8) | 1)
        .collect()
}

#[test]
fn thin_volumes_read_zeros_and_keep_what_is_written() {
    let e = engine();
    let base = malloc(32);
    on(&e, 0, move || async move {
        let lvs = LvStore::create(base, "pool", 64 * KIB as u32)
            .await
            .expect("create");
        let id = lvs
            .create_volume("v", 4 * MIB, false)
            .await
            .expect("volume");
        let used = lvs.space().used_clusters;
        let bdev = lvs.open_volume(id).expect("open");
        let ch = bdev.open().expect("channel");
        assert_eq!(ch.geometry().num_blocks, 4 * MIB / 512);
        assert!(read_at(&ch, 0, 256 * KIB).await.iter().all(|&b| b == 0));

        // A partial subcluster, then a write across a cluster boundary.
        let a = pattern(512, 1);
        write_at(&ch, 1536, &a, false).await.expect("write");
        let got = read_at(&ch, 0, 4 * KIB).await;
        assert!(got[..1536].iter().all(|&b| b == 0), "the fill is zeros");
        assert_eq!(&got[1536..2048], &a[..]);
        assert!(got[2048..].iter().all(|&b| b == 0));
        // Provisioning status by subcluster (1 KiB here): deallocated, mapped, deallocated.
        let st = |lba: u64, max: u64| bdev.block_status(Lba(lba), max).expect("tracked");
        assert_eq!(
            st(0, 100),
            basalt_bdev::BlockStatus {
                mapped: false,
                blocks: 2
            }
        );
        assert_eq!(
            st(1, 100),
            basalt_bdev::BlockStatus {
                mapped: false,
                blocks: 1
            }
        );
        assert_eq!(
            st(2, 100),
            basalt_bdev::BlockStatus {
                mapped: true,
                blocks: 2
            }
        );
        assert_eq!(
            st(2, 1),
            basalt_bdev::BlockStatus {
                mapped: true,
                blocks: 1
            }
        );
        assert_eq!(
            st(4, 1 << 40).blocks,
            4 * MIB / 512 - 4,
            "to the end of the volume"
        );
        assert!(
            bdev.block_status(Lba(4 * MIB / 512), 1).is_none(),
            "beyond the end"
        );
        let b = pattern(8 * KIB, 2);
        write_at(&ch, 64 * KIB - 4 * KIB, &b, false)
            .await
            .expect("write");
        assert_eq!(read_at(&ch, 60 * KIB, 8 * KIB).await, b);
        assert_eq!(lvs.space().used_clusters, used + 2, "two clusters taken");

        // Overwrites in place take the fast path and no space.
        let slow = lvs
            .counters()
            .slow_ios
            .load(std::sync::atomic::Ordering::Relaxed);
        let c = pattern(512, 3);
        write_at(&ch, 1536, &c, false).await.expect("write");
        assert_eq!(read_at(&ch, 1536, 512).await, c);
        assert_eq!(
            lvs.counters()
                .slow_ios
                .load(std::sync::atomic::Ordering::Relaxed),
            slow,
            "an overwrite is a fast-path I/O"
        );
        assert_eq!(lvs.space().used_clusters, used + 2);
        lvs.flush().await.expect("flush");
        assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
    });
}

#[test]
fn first_write_after_a_snapshot_copies_one_subcluster() {
    let e = engine();
    let base = malloc(32);
    on(&e, 0, move || async move {
        let lvs = LvStore::create(base, "pool", MIB as u32)
            .await
            .expect("create");
        let id = lvs
            .create_volume("v", 4 * MIB, false)
            .await
            .expect("volume");
        let bdev = lvs.open_volume(id).expect("open");
        let ch = bdev.open().expect("channel");
        let old = pattern(2 * MIB, 7);
        write_at(&ch, 0, &old, false).await.expect("fill");
        let snap = lvs.snapshot(id, "s1").await.expect("snapshot");
        let c = lvs.counters();
        let before = (
            c.cow_subclusters.load(std::sync::atomic::Ordering::Relaxed),
            c.fills.load(std::sync::atomic::Ordering::Relaxed),
        );
        let new = pattern(4 * KIB, 9);
        write_at(&ch, 100 * KIB, &new, false).await.expect("write");
        let after = (
            c.cow_subclusters.load(std::sync::atomic::Ordering::Relaxed),
            c.fills.load(std::sync::atomic::Ordering::Relaxed),
        );
        // 4 KiB inside one 16 KiB subcluster: one fill, nothing else copied (the rest of the
        // cluster stays shared as the backing cluster).
        assert_eq!(after.0 - before.0, 0, "no subcluster copied up");
        assert_eq!(after.1 - before.1, 1, "one partial subcluster filled");
        let mut expect = old.clone();
        expect[100 * KIB as usize..104 * KIB as usize].copy_from_slice(&new);
        assert_eq!(read_at(&ch, 0, 2 * MIB).await, expect);
        let sb = lvs.open_volume(snap).expect("snapshot bdev");
        let sch = sb.open().expect("channel");
        assert_eq!(
            read_at(&sch, 0, 2 * MIB).await,
            old,
            "the snapshot keeps its point in time"
        );
        assert_eq!(
            write_at(&sch, 0, &new, false).await,
            Err(IoError::ReadOnly),
            "snapshots are read-only"
        );

        // A second snapshot, then a write: the entry had own and back clusters; the one with
        // fewer live subclusters is copied up, so no backing chain forms.
        lvs.snapshot(id, "s2").await.expect("snapshot");
        let newer = pattern(16 * KIB, 11);
        write_at(&ch, 512 * KIB, &newer, false)
            .await
            .expect("write");
        expect[512 * KIB as usize..528 * KIB as usize].copy_from_slice(&newer);
        assert_eq!(read_at(&ch, 0, 2 * MIB).await, expect);
        let copied = c.cow_subclusters.load(std::sync::atomic::Ordering::Relaxed) - after.0;
        assert_eq!(copied, 1, "the single subcluster own held was copied up");
        lvs.flush().await.expect("flush");
        assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
    });
}

#[test]
fn clones_revert_delete_and_reopen() {
    let e = engine();
    let base = malloc(32);
    let b2 = base.clone();
    let lvs = on(&e, 0, move || async move {
        let lvs = LvStore::create(base, "pool", 64 * KIB as u32)
            .await
            .expect("create");
        let id = lvs.create_volume("v", MIB, false).await.expect("volume");
        let v = lvs.open_volume(id).expect("open");
        let ch = v.open().expect("channel");
        let a = pattern(MIB, 1);
        write_at(&ch, 0, &a, false).await.expect("write");
        let s = lvs.snapshot(id, "s").await.expect("snapshot");
        let c1 = lvs.clone_volume(s, "c1").await.expect("clone");
        let c2 = lvs.clone_volume(s, "c2").await.expect("clone");
        let b = pattern(100 * KIB, 2);
        {
            let cb = lvs.open_volume(c1).expect("open");
            let cch = cb.open().expect("channel");
            write_at(&cch, 10 * KIB, &b, false).await.expect("write");
        }
        let mut a_b = a.clone();
        a_b[10 * KIB as usize..110 * KIB as usize].copy_from_slice(&b);
        write_at(&ch, 0, &pattern(MIB, 3), false)
            .await
            .expect("write");

        // Deleting a snapshot with two clones keeps their data.
        assert_eq!(lvs.delete(s).await, Ok(()));
        for (cid, want) in [(c1, &a_b), (c2, &a)] {
            let cb = lvs.open_volume(cid).expect("open");
            let cch = cb.open().expect("channel");
            assert_eq!(&read_at(&cch, 0, MIB).await, want);
        }
        // An open volume cannot be deleted.
        assert_eq!(lvs.delete(id).await, Err(crate::StoreError::Busy(id)));

        // Revert: the volume reads as the snapshot again.
        let s2 = lvs.snapshot(c1, "s2").await.expect("snapshot");
        {
            let cb = lvs.open_volume(c1).expect("open");
            let cch = cb.open().expect("channel");
            write_at(&cch, 0, &pattern(MIB, 4), false)
                .await
                .expect("write");
        }
        lvs.revert(c1, s2).await.expect("revert");
        let cb = lvs.open_volume(c1).expect("open");
        let cch = cb.open().expect("channel");
        assert_eq!(read_at(&cch, 0, MIB).await, a_b);
        drop((cch, cb, ch, v));
        lvs.delete(c2).await.expect("delete");
        lvs
    });
    let before = lvs.space();
    let vols = lvs.volumes();
    drop(lvs);
    let lvs = on(&e, 1, move || async move {
        LvStore::open(b2).await.expect("reopen")
    });
    assert_eq!(lvs.volumes(), vols, "the same volumes after a reopen");
    assert_eq!(lvs.space().used_clusters, before.used_clusters);
    assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
    let c1 = lvs.find("c1").expect("c1").id;
    on(&e, 1, move || async move {
        let cb = lvs.open_volume(c1).expect("open");
        let cch = cb.open().expect("channel");
        let got = read_at(&cch, 0, MIB).await;
        assert_eq!(
            &got[10 * KIB as usize..110 * KIB as usize],
            &pattern(100 * KIB, 2)[..]
        );
    });
}

#[test]
fn unmap_frees_clusters_and_reused_space_never_shows_old_bytes() {
    let e = engine();
    let base = malloc(8);
    on(&e, 0, move || async move {
        let lvs = LvStore::create(base, "pool", 64 * KIB as u32)
            .await
            .expect("create");
        let empty = lvs.space().used_clusters;
        let a = lvs
            .create_volume("a", 4 * MIB, false)
            .await
            .expect("volume");
        let ab = lvs.open_volume(a).expect("open");
        let ach = ab.open().expect("channel");
        write_at(&ach, 0, &pattern(4 * MIB, 5), false)
            .await
            .expect("fill");
        let full = lvs.space().used_clusters;
        assert!(full >= empty + 64);
        // Unmap half, with partial edges: whole clusters go, edges read as zeros.
        let (off, len) = (1000 * 512, 2 * MIB);
        ach.unmap(Lba(off / 512), len / 512).await.1.expect("unmap");
        let got = read_at(&ach, 0, 4 * MIB).await;
        let want = pattern(4 * MIB, 5);
        assert_eq!(&got[..off as usize], &want[..off as usize]);
        assert!(
            got[off as usize..(off + len) as usize]
                .iter()
                .all(|&b| b == 0)
        );
        assert_eq!(&got[(off + len) as usize..], &want[(off + len) as usize..]);
        lvs.flush().await.expect("commit frees them");
        lvs.idle().await;
        assert!(lvs.space().used_clusters <= full - 30, "{:?}", lvs.space());

        // Delete everything and reuse the space: a new volume reads zeros wherever it has not
        // written, even inside clusters that held the old volume's bytes.
        drop((ach, ab));
        lvs.delete(a).await.expect("delete");
        let b = lvs
            .create_volume("b", 4 * MIB, false)
            .await
            .expect("volume");
        let bb = lvs.open_volume(b).expect("open");
        let bch = bb.open().expect("channel");
        for i in 0..64u64 {
            write_at(&bch, i * 64 * KIB + 512, &[0xEE; 512], false)
                .await
                .expect("write");
        }
        let got = read_at(&bch, 0, 4 * MIB).await;
        for (i, blk) in got.chunks(512).enumerate() {
            let want = if i % 128 == 1 { 0xEE } else { 0 };
            assert!(blk.iter().all(|&x| x == want), "block {i} shows old bytes");
        }
        lvs.flush().await.expect("flush");
        assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
    });
}

#[test]
fn thick_volumes_are_allocated_up_front_and_inflate_decouples_clones() {
    let e = engine();
    let base = malloc(32);
    on(&e, 0, move || async move {
        let lvs = LvStore::create(base, "pool", 64 * KIB as u32)
            .await
            .expect("create");
        let before = lvs.space().used_clusters;
        let t = lvs.create_volume("t", 2 * MIB, true).await.expect("thick");
        assert!(lvs.volume(t).expect("info").thick);
        assert!(
            lvs.space().used_clusters >= before + 32,
            "every cluster taken"
        );
        let tb = lvs.open_volume(t).expect("open");
        let tch = tb.open().expect("channel");
        assert!(read_at(&tch, 0, 2 * MIB).await.iter().all(|&b| b == 0));
        let slow = lvs
            .counters()
            .slow_ios
            .load(std::sync::atomic::Ordering::Relaxed);
        write_at(&tch, 4096, &pattern(4096, 1), false)
            .await
            .expect("write");
        assert_eq!(
            lvs.counters()
                .slow_ios
                .load(std::sync::atomic::Ordering::Relaxed),
            slow,
            "a thick volume's first write is a fast-path I/O"
        );
        let used = lvs.space().used_clusters;
        tch.unmap(Lba(0), 2 * MIB / 512).await.1.expect("unmap");
        assert!(read_at(&tch, 0, 2 * MIB).await.iter().all(|&b| b == 0));
        assert_eq!(lvs.space().used_clusters, used, "thick stays allocated");

        // Inflate: a clone stops sharing anything with its snapshot.
        write_at(&tch, 0, &pattern(2 * MIB, 2), false)
            .await
            .expect("write");
        let s = lvs.snapshot(t, "s").await.expect("snapshot");
        let c = lvs.clone_volume(s, "c").await.expect("clone");
        let used = lvs.space().used_clusters;
        lvs.inflate(c).await.expect("inflate");
        assert!(
            lvs.space().used_clusters >= used + 32,
            "the clone has its own clusters"
        );
        drop((tch, tb));
        lvs.delete(s).await.expect("delete snapshot");
        lvs.delete(t).await.expect("delete origin");
        let cb = lvs.open_volume(c).expect("open");
        let cch = cb.open().expect("channel");
        assert_eq!(read_at(&cch, 0, 2 * MIB).await, pattern(2 * MIB, 2));
        assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
    });
}

#[test]
fn writes_from_two_cores_at_once_all_land() {
    let e = engine();
    let base = malloc(32);
    let lvs = on(&e, 0, move || async move {
        LvStore::create(base, "pool", 64 * KIB as u32)
            .await
            .expect("create")
    });
    let l2 = lvs.clone();
    let id = on(&e, 0, move || async move {
        l2.create_volume("v", 4 * MIB, false).await.expect("volume")
    });
    let bdev = lvs.open_volume(id).expect("open");
    // Both cores write interleaved 4 KiB blocks of the same clusters, 32 at a time, so
    // first writes to a cluster race on allocation and subcluster fills.
    let mut handles = Vec::new();
    for core in 0..2usize {
        let bdev = bdev.clone();
        let h = e
            .reactor(core)
            .spawn(move || async move {
                let ch = bdev.open().expect("channel");
                let pool = current().pool().clone();
                let mut futs = Vec::new();
                for i in (core as u64..1024).step_by(2) {
                    let mut b = pool.alloc(4096).expect("fits").await;
                    b.fill(i as u8 | 1);
                    futs.push(ch.write(Lba(i * 8), [b].into_iter().collect(), false));
                    if futs.len() == 32 {
                        for f in futs.drain(..) {
                            f.await.1.expect("write");
                        }
                    }
                }
                for f in futs {
                    f.await.1.expect("write");
                }
            })
            .expect("spawn");
        handles.push(h);
    }
    for h in handles {
        h.wait().expect("writer finished");
    }
    on(&e, 1, move || async move {
        let ch = bdev.open().expect("channel");
        let got = read_at(&ch, 0, 4 * MIB).await;
        for (i, blk) in got.chunks(4096).enumerate() {
            assert!(
                blk.iter().all(|&x| x == i as u8 | 1),
                "block {i} lost a write"
            );
        }
        lvs.flush().await.expect("flush");
        assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
        assert_eq!(lvs.activity(), (0, 0), "no I/O or cluster lock left behind");
    });
}

#[test]
fn a_snapshot_under_load_is_a_stable_point_in_time() {
    let e = engine();
    let base = malloc(32);
    let lvs = on(&e, 0, move || async move {
        LvStore::create(base, "pool", 64 * KIB as u32)
            .await
            .expect("create")
    });
    let l2 = lvs.clone();
    let id = on(&e, 0, move || async move {
        l2.create_volume("v", 2 * MIB, false).await.expect("volume")
    });
    let bdev = lvs.open_volume(id).expect("open");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b2, s2) = (bdev.clone(), stop.clone());
    let writer = e
        .reactor(1)
        .spawn(move || async move {
            let ch = b2.open().expect("channel");
            let pool = current().pool().clone();
            let mut generation = 0u8;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                generation = generation.wrapping_add(1) | 1;
                let mut futs = Vec::new();
                for i in 0..512u64 {
                    let mut b = pool.alloc(4096).expect("fits").await;
                    b.fill(generation);
                    futs.push(ch.write(Lba(i * 8), [b].into_iter().collect(), false));
                    if futs.len() == 16 {
                        for f in futs.drain(..) {
                            f.await.1.expect("write");
                        }
                    }
                }
                for f in futs {
                    f.await.1.expect("write");
                }
            }
        })
        .expect("spawn");
    let l3 = lvs.clone();
    on(&e, 0, move || async move {
        basalt_engine::sleep(std::time::Duration::from_millis(20)).await;
        for n in 0..5 {
            let s = l3.snapshot(id, &format!("s{n}")).await.expect("snapshot");
            let sb = l3.open_volume(s).expect("open");
            let ch = sb.open().expect("channel");
            let first = read_at(&ch, 0, 2 * MIB).await;
            basalt_engine::sleep(std::time::Duration::from_millis(5)).await;
            let again = read_at(&ch, 0, 2 * MIB).await;
            assert!(first == again, "snapshot {n} changed after it was taken");
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.wait().expect("writer finished");
    drop(bdev);
    let l4 = lvs.clone();
    on(
        &e,
        0,
        move || async move { l4.flush().await.expect("flush") },
    );
    assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
}

// ---- The model test ----

#[derive(Debug, Clone)]
enum Op {
    Write {
        vol: usize,
        off: u64,
        blocks: u64,
        seed: u8,
        fua: bool,
        core: usize,
    },
    Read {
        vol: usize,
        off: u64,
        blocks: u64,
        core: usize,
    },
    Unmap {
        vol: usize,
        off: u64,
        blocks: u64,
    },
    Flush,
    Snapshot {
        vol: usize,
    },
    Clone {
        vol: usize,
    },
    Delete {
        vol: usize,
    },
    Revert {
        vol: usize,
        snap: usize,
    },
    Grow {
        vol: usize,
        by: u64,
    },
    Reopen,
    Crash {
        mode: u8,
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let vol = 0..8usize;
    let off = 0..4096u64; // in blocks, reduced modulo the volume size
    prop_oneof![
        12 => (vol.clone(), off.clone(), 1..300u64, any::<u8>(), prop::bool::weighted(0.1), 0..2usize)
            .prop_map(|(vol, off, blocks, seed, fua, core)| Op::Write { vol, off, blocks, seed, fua, core }),
        5 => (vol.clone(), off.clone(), 1..300u64, 0..2usize)
            .prop_map(|(vol, off, blocks, core)| Op::Read { vol, off, blocks, core }),
        2 => (vol.clone(), off, 1..600u64).prop_map(|(vol, off, blocks)| Op::Unmap { vol, off, blocks }),
        2 => Just(Op::Flush),
        2 => vol.clone().prop_map(|vol| Op::Snapshot { vol }),
        1 => vol.clone().prop_map(|vol| Op::Clone { vol }),
        1 => vol.clone().prop_map(|vol| Op::Delete { vol }),
        1 => (vol.clone(), vol.clone()).prop_map(|(vol, snap)| Op::Revert { vol, snap }),
        1 => (vol, 1..8u64).prop_map(|(vol, by)| Op::Grow { vol, by }),
        1 => Just(Op::Reopen),
        2 => (0..4u8, any::<u64>()).prop_map(|(mode, seed)| Op::Crash { mode, seed }),
    ]
}

fn block_hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

struct MVol {
    data: Vec<u8>,
    snapshot: bool,
    /// Per block, contents it may hold after a power cut besides the durable one.
    maybe: Vec<Vec<u64>>,
    durable: Vec<u8>,
}

impl MVol {
    fn new(data: Vec<u8>, snapshot: bool) -> MVol {
        let blocks = data.len() / 512;
        MVol {
            durable: data.clone(),
            data,
            snapshot,
            maybe: vec![Vec::new(); blocks],
        }
    }

    fn write(&mut self, off: usize, bytes: &[u8]) {
        self.data[off..off + bytes.len()].copy_from_slice(bytes);
        for (i, blk) in bytes.chunks(512).enumerate() {
            self.maybe[off / 512 + i].push(block_hash(blk));
        }
    }

    fn durable_point(&mut self) {
        self.durable = self.data.clone();
        for m in &mut self.maybe {
            m.clear();
        }
    }
}

struct Harness {
    engine: Engine,
    crash: Arc<CrashBdev>,
    lvs: LvStore,
    /// Model volumes by store id, and their open bdevs.
    vols: BTreeMap<u64, MVol>,
    bdevs: HashMap<u64, Arc<crate::VolumeBdev>>,
    names: u64,
}

impl Harness {
    fn new() -> Harness {
        let engine = engine();
        let crash = Arc::new(CrashBdev::new("crash", malloc(24)));
        let base: Arc<dyn Bdev> = crash.clone();
        let lvs = on(&engine, 0, move || async move {
            LvStore::create(base, "pool", 64 * KIB as u32)
                .await
                .expect("create")
        });
        Harness {
            engine,
            crash,
            lvs,
            vols: BTreeMap::new(),
            bdevs: HashMap::new(),
            names: 0,
        }
    }

    fn pick(&self, i: usize) -> Option<u64> {
        if self.vols.is_empty() {
            return None;
        }
        self.vols.keys().nth(i % self.vols.len()).copied()
    }

    /// The volume `vol` picks and the block range `off`/`blocks` clipped to it.
    fn range(&self, vol: usize, off: u64, blocks: u64) -> Option<(u64, u64, u64)> {
        let id = self.pick(vol)?;
        let size = self.vols[&id].data.len() as u64 / 512;
        let off = off % size;
        Some((id, off, blocks.min(size - off)))
    }

    fn bdev(&mut self, id: u64) -> Arc<crate::VolumeBdev> {
        let lvs = self.lvs.clone();
        self.bdevs
            .entry(id)
            .or_insert_with(|| lvs.open_volume(id).expect("open"))
            .clone()
    }

    fn all_durable(&mut self) {
        for v in self.vols.values_mut() {
            v.durable_point();
        }
    }

    fn mgmt<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
        &self,
        f: impl FnOnce(LvStore) -> Fut + Send + 'static,
    ) -> T {
        let lvs = self.lvs.clone();
        on(&self.engine, 0, move || f(lvs))
    }

    fn name(&mut self) -> String {
        self.names += 1;
        format!("v{}", self.names)
    }

    fn reopen(&mut self) {
        self.bdevs.clear();
        let base: Arc<dyn Bdev> = self.crash.clone();
        self.lvs = on(&self.engine, 1, move || async move {
            LvStore::open(base).await.expect("reopen")
        });
        let report = self.lvs.check();
        assert!(report.problems.is_empty(), "after reopen: {report:?}");
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Write {
                vol,
                off,
                blocks,
                seed,
                fua,
                core,
            } => {
                let Some((id, off, blocks)) = self.range(vol, off, blocks) else {
                    return Ok(());
                };
                let data = pattern(blocks * 512, seed);
                let bdev = self.bdev(id);
                let d2 = data.clone();
                let r = on(&self.engine, core, move || async move {
                    let ch = bdev.open().expect("channel");
                    write_at(&ch, off * 512, &d2, fua).await
                });
                let v = self.vols.get_mut(&id).expect("exists");
                if v.snapshot {
                    prop_assert_eq!(r, Err(IoError::ReadOnly));
                } else {
                    prop_assert_eq!(r, Ok(()));
                    v.write(off as usize * 512, &data);
                    if fua {
                        // Durable now: no power cut may lose it or land an older write over it.
                        let at = off as usize * 512;
                        v.durable[at..at + data.len()].copy_from_slice(&data);
                        for m in &mut v.maybe[off as usize..(off + blocks) as usize] {
                            m.clear();
                        }
                    }
                }
            }
            Op::Read {
                vol,
                off,
                blocks,
                core,
            } => {
                let Some((id, off, blocks)) = self.range(vol, off, blocks) else {
                    return Ok(());
                };
                let bdev = self.bdev(id);
                let got = on(&self.engine, core, move || async move {
                    let ch = bdev.open().expect("channel");
                    read_at(&ch, off * 512, blocks * 512).await
                });
                let want = &self.vols[&id].data[off as usize * 512..(off + blocks) as usize * 512];
                prop_assert!(got == want, "volume {} read at block {} differs", id, off);
            }
            Op::Unmap { vol, off, blocks } => {
                let Some((id, off, blocks)) = self.range(vol, off, blocks) else {
                    return Ok(());
                };
                let bdev = self.bdev(id);
                let r = on(&self.engine, 0, move || async move {
                    let ch = bdev.open().expect("channel");
                    ch.unmap(Lba(off), blocks).await.1
                });
                let v = self.vols.get_mut(&id).expect("exists");
                if v.snapshot {
                    prop_assert_eq!(r, Err(IoError::ReadOnly));
                } else {
                    prop_assert_eq!(r, Ok(()));
                    v.write(off as usize * 512, &vec![0; blocks as usize * 512]);
                }
            }
            Op::Flush => {
                self.mgmt(|l| async move { l.flush().await.expect("flush") });
                self.all_durable();
            }
            Op::Snapshot { vol } | Op::Clone { vol } => {
                let snapshot = matches!(op, Op::Snapshot { .. });
                let Some(id) = self.pick(vol) else {
                    return Ok(());
                };
                if self.vols.len() >= 12 {
                    return Ok(());
                }
                let name = self.name();
                let new = self.mgmt(move |l| async move {
                    if snapshot {
                        l.snapshot(id, &name).await.expect("snapshot")
                    } else {
                        l.clone_volume(id, &name).await.expect("clone")
                    }
                });
                let data = self.vols[&id].data.clone();
                self.vols.insert(new, MVol::new(data, snapshot));
                self.all_durable();
            }
            Op::Delete { vol } => {
                let Some(id) = self.pick(vol) else {
                    return Ok(());
                };
                self.bdevs.remove(&id);
                self.mgmt(move |l| async move { l.delete(id).await.expect("delete") });
                self.vols.remove(&id);
                self.all_durable();
            }
            Op::Revert { vol, snap } => {
                let (Some(id), Some(s)) = (self.pick(vol), self.pick(snap)) else {
                    return Ok(());
                };
                let ok = !self.vols[&id].snapshot
                    && self.vols[&s].snapshot
                    && self.vols[&id].data.len() == self.vols[&s].data.len();
                let r = self.mgmt(move |l| async move { l.revert(id, s).await });
                if ok {
                    prop_assert_eq!(r, Ok(()));
                    let data = self.vols[&s].data.clone();
                    self.vols.get_mut(&id).expect("exists").data = data;
                    self.all_durable();
                } else {
                    prop_assert!(r.is_err(), "revert of {} to {} should be refused", id, s);
                }
            }
            Op::Grow { vol, by } => {
                let Some(id) = self.pick(vol) else {
                    return Ok(());
                };
                let old = self.vols[&id].data.len() as u64;
                let new = old + by * 96 * KIB;
                let r = self.mgmt(move |l| async move { l.resize(id, new).await });
                if self.vols[&id].snapshot {
                    prop_assert!(r.is_err());
                } else {
                    prop_assert_eq!(r, Ok(()));
                    // Open channels keep the old size: reopen the bdev.
                    self.bdevs.remove(&id);
                    let v = self.vols.get_mut(&id).expect("exists");
                    v.data.resize(new as usize, 0);
                    v.maybe.resize(new as usize / 512, Vec::new());
                    self.all_durable();
                }
            }
            Op::Reopen => {
                self.mgmt(|l| async move { l.flush().await.expect("flush") });
                self.all_durable();
                self.reopen();
            }
            Op::Crash { mode, seed } => {
                let mode = [
                    CrashMode::DropAll,
                    CrashMode::KeepAll,
                    CrashMode::Random,
                    CrashMode::TornLast,
                ][mode as usize % 4];
                self.bdevs.clear();
                self.crash.crash(mode, seed);
                self.reopen();
                // Every block holds its durable contents or one written since.
                let ids: Vec<u64> = self.vols.keys().copied().collect();
                for id in ids {
                    let len = self.vols[&id].data.len() as u64;
                    let bdev = self.bdev(id);
                    let got = on(&self.engine, 0, move || async move {
                        let ch = bdev.open().expect("channel");
                        read_at(&ch, 0, len).await
                    });
                    let v = self.vols.get_mut(&id).expect("exists");
                    for (i, blk) in got.chunks(512).enumerate() {
                        let d = &v.durable[i * 512..(i + 1) * 512];
                        let h = block_hash(blk);
                        prop_assert!(
                            blk == d || v.maybe[i].contains(&h),
                            "volume {} block {} after a {:?} crash holds neither its flushed \
                             contents nor anything written to it since",
                            id,
                            i,
                            mode
                        );
                    }
                    v.data = got;
                }
                self.all_durable();
            }
        }
        Ok(())
    }
}

fn run_ops(initial: &[(u64, bool)], ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for &(size, thick) in initial {
        let name = h.name();
        let id =
            h.mgmt(
                move |l| async move { l.create_volume(&name, size, thick).await.expect("volume") },
            );
        h.vols.insert(id, MVol::new(vec![0; size as usize], false));
    }
    for op in ops {
        h.run(op)?;
    }
    h.mgmt(|l| async move { l.flush().await.expect("flush") });
    let report = h.lvs.check();
    prop_assert!(report.problems.is_empty(), "{:?}", report);
    h.bdevs.clear();
    h.reopen();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random sequences of I/O (from two cores), snapshots, clones, deletes, reverts, growth,
    /// reopens and power cuts of every kind, against a model: reads always match, and after a
    /// power cut every block holds its flushed contents or something written since.
    #[test]
    fn volumes_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(&[(MIB, false), (640 * KIB, false), (512 * KIB, true)], ops)?;
    }
}

#[test]
fn a_failed_commit_stops_the_store_until_it_is_reopened() {
    use basalt_bdev::IoKind;
    use basalt_bdev::modules::error::{ErrorBdev, ErrorRule};
    let e = engine();
    let ram = malloc(16);
    let faulty = Arc::new(ErrorBdev::new("faulty", ram.clone(), Vec::new(), 1).expect("no rules"));
    let base: Arc<dyn Bdev> = faulty.clone();
    let f2 = faulty.clone();
    on(&e, 0, move || async move {
        let lvs = LvStore::create(base, "pool", 64 * KIB as u32)
            .await
            .expect("create");
        let id = lvs.create_volume("v", MIB, false).await.expect("volume");
        let bdev = lvs.open_volume(id).expect("open");
        let ch = bdev.open().expect("channel");
        write_at(&ch, 0, &pattern(64 * KIB, 1), false)
            .await
            .expect("write");
        lvs.flush().await.expect("flush");
        write_at(&ch, 64 * KIB, &pattern(64 * KIB, 2), false)
            .await
            .expect("write");
        f2.set_rules(vec![ErrorRule::always(&[IoKind::Flush])])
            .expect("rules");
        let err = ch.flush().await.1.expect_err("the flush fails");
        assert!(matches!(err, IoError::Media { .. }), "{err:?}");
        // Stopped: management and first writes fail clearly; nothing pretends to work.
        assert!(matches!(
            lvs.snapshot(id, "s").await,
            Err(crate::StoreError::Failed(_))
        ));
        assert!(
            write_at(&ch, 256 * KIB, &pattern(4 * KIB, 3), false)
                .await
                .is_err()
        );
    });
    // Reopened on the healthy device: the last durable commit, consistent.
    let lvs = on(&e, 1, move || async move {
        LvStore::open(ram).await.expect("reopen")
    });
    assert!(lvs.check().problems.is_empty(), "{:?}", lvs.check());
    let id = lvs.find("v").expect("the volume").id;
    on(&e, 1, move || async move {
        let bdev = lvs.open_volume(id).expect("open");
        let ch = bdev.open().expect("channel");
        assert_eq!(read_at(&ch, 0, 64 * KIB).await, pattern(64 * KIB, 1));
    });
}

/// Two cores rewrite interleaved 4 KiB blocks (so they share 16 KiB subclusters) round after
/// round while snapshots are taken and deleted: every write must survive. Deleting a snapshot
/// makes clusters exclusive again while slow-path writes that decided to copy them are still
/// running; a fast-path write must not land in a cluster being copied away.
#[test]
fn writes_racing_snapshot_churn_all_land() {
    let e = engine();
    // A slow device widens the windows in which slow-path writes run.
    let base: Arc<dyn Bdev> = Arc::new(basalt_bdev::modules::delay::DelayBdev::new(
        "slow",
        malloc(256),
        20,
        100,
        300,
    ));
    let lvs = on(&e, 0, move || async move {
        LvStore::create(base, "pool", MIB as u32)
            .await
            .expect("create")
    });
    let l2 = lvs.clone();
    let id = on(&e, 0, move || async move {
        l2.create_volume("v", 16 * MIB, false)
            .await
            .expect("volume")
    });
    let bdev = lvs.open_volume(id).expect("open");
    const ROUNDS: u64 = 4;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for core in 0..2usize {
        let bdev = bdev.clone();
        writers.push(
            e.reactor(core)
                .spawn(move || async move {
                    let ch = bdev.open().expect("channel");
                    let pool = current().pool().clone();
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ core as u64;
                    for round in 1..=ROUNDS {
                        let mut blocks: Vec<u64> = (core as u64..4096).step_by(2).collect();
                        for i in (1..blocks.len()).rev() {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            blocks.swap(i, (x % (i as u64 + 1)) as usize);
                        }
                        for chunk in blocks.chunks(32) {
                            let mut futs = Vec::new();
                            for &b in chunk {
                                let mut buf = pool.alloc(4096).expect("fits").await;
                                buf.fill(round as u8);
                                futs.push(ch.write(Lba(b * 8), [buf].into_iter().collect(), false));
                            }
                            for f in futs {
                                f.await.1.expect("write");
                            }
                        }
                    }
                })
                .expect("spawn"),
        );
    }
    let (l3, s2) = (lvs.clone(), stop.clone());
    let churn = e
        .reactor(0)
        .spawn(move || async move {
            // Snapshot, let some writes copy, delete: the clusters the writes did not reach
            // become the volume's alone again while writes are still deciding about them.
            let mut n = 0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let s = l3.snapshot(id, &format!("s{n}")).await.expect("snapshot");
                n += 1;
                l3.delete(s).await.expect("delete");
            }
            n
        })
        .expect("spawn");
    for w in writers {
        w.wait().expect("writer");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let snapshots = churn.wait().expect("churn");
    assert!(
        snapshots >= 3,
        "snapshots were taken during the writes ({snapshots})"
    );
    on(&e, 1, move || async move {
        let ch = bdev.open().expect("channel");
        let mut got = Vec::new();
        for m in 0..16 {
            got.extend(read_at(&ch, m * MIB, MIB).await);
        }
        for (i, blk) in got.chunks(4096).enumerate() {
            assert!(
                blk.iter().all(|&x| x == ROUNDS as u8),
                "block {i} holds round {} after {snapshots} snapshots",
                blk[0]
            );
        }
    });
}
