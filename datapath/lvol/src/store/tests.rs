use std::collections::HashMap;

use super::*;
use crate::format::MapEntry;

/// A device with a volatile write cache: writes land in the cache, a flush makes them durable,
/// a crash drops what is not. `power_fails_after` fails every write and flush after that many
/// (writes and flushes counted together).
#[derive(Debug, Default, Clone)]
struct MemDisk {
    size: u64,
    durable: HashMap<u64, Vec<u8>>,
    cache: Vec<(u64, Vec<u8>)>,
    writes: usize,
    power_fails_after: Option<usize>,
}

impl MemDisk {
    fn new(size: u64) -> MemDisk {
        MemDisk {
            size,
            ..MemDisk::default()
        }
    }

    /// Power is lost. Unflushed writes vanish, or some land, in any order (a volatile cache
    /// writes back in its own order): see [`Landing`].
    fn crash(&mut self, how: Landing) {
        let n = self.cache.len();
        for (i, (p, bytes)) in std::mem::take(&mut self.cache).into_iter().enumerate() {
            let last = i + 1 == n;
            match how {
                Landing::OnlyLast if last => {
                    self.durable.insert(p, bytes);
                }
                Landing::AllButLast if !last => {
                    self.durable.insert(p, bytes);
                }
                Landing::TornLast if last => {
                    let mut torn = self
                        .durable
                        .get(&p)
                        .cloned()
                        .unwrap_or_else(|| vec![0; PAGE_SIZE]);
                    torn[..PAGE_SIZE / 2].copy_from_slice(&bytes[..PAGE_SIZE / 2]);
                    self.durable.insert(p, torn);
                }
                _ => {}
            }
        }
        self.power_fails_after = None;
        self.writes = 0;
    }
}

impl MetaDisk for MemDisk {
    fn size_bytes(&self) -> u64 {
        self.size
    }
    fn read_page(&mut self, page: PageNo) -> Result<Vec<u8>, String> {
        if let Some((_, b)) = self.cache.iter().rev().find(|(p, _)| *p == page.0) {
            return Ok(b.clone());
        }
        Ok(self
            .durable
            .get(&page.0)
            .cloned()
            .unwrap_or_else(|| vec![0; PAGE_SIZE]))
    }
    fn write_page(&mut self, page: PageNo, bytes: &[u8]) -> Result<(), String> {
        self.writes += 1;
        if self.power_fails_after.is_some_and(|n| self.writes > n) {
            return Err("power failed".into());
        }
        self.cache.push((page.0, bytes.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), String> {
        // A flush is an event too: power can fail with everything written but not flushed.
        self.writes += 1;
        if self.power_fails_after.is_some_and(|n| self.writes > n) {
            return Err("power failed".into());
        }
        for (p, b) in self.cache.drain(..) {
            self.durable.insert(p, b);
        }
        Ok(())
    }
}

/// Which unflushed writes reach the medium when power fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landing {
    None,
    OnlyLast,
    AllButLast,
    TornLast,
}

const LANDINGS: [Landing; 4] = [
    Landing::None,
    Landing::OnlyLast,
    Landing::AllButLast,
    Landing::TornLast,
];

const CLUSTER: u32 = 64 * 1024;

fn new_store() -> (MemDisk, Store) {
    let mut disk = MemDisk::new(512 * u64::from(CLUSTER));
    let store = Store::create(&mut disk, "cinder-volumes", CLUSTER, 512).expect("created");
    (disk, store)
}

/// What a test compares after reopening: names, flags, sizes, parents, properties and the
/// first entries of each map.
/// One volume as [`summary`] sees it: name, flags, size, parent, properties, first entries.
type VolumeSummary = (String, u32, u64, u64, Vec<(String, Vec<u8>)>, Vec<MapEntry>);

fn summary(s: &Store) -> Vec<VolumeSummary> {
    s.volumes()
        .map(|v| {
            let entries = (0..8.min(v.map.capacity()))
                .map(|i| s.forest().get(&v.map, i))
                .collect();
            (
                v.record.name.clone(),
                v.record.flags,
                v.record.size_bytes,
                v.record.parent_id,
                v.properties.clone().into_iter().collect(),
                entries,
            )
        })
        .collect()
}

fn write_cluster(s: &mut Store, id: u64, index: u64, bits: u64) {
    let mut map = s.volume(id).expect("exists").map;
    let c = s.forest_mut().alloc_cluster().expect("space");
    s.forest_mut()
        .set(
            &mut map,
            index,
            MapEntry {
                own: c,
                own_bits: bits,
                back: 0,
                back_bits: 0,
            },
        )
        .expect("space");
    s.volumes.get_mut(&id).expect("exists").map = map;
}

#[test]
fn a_committed_store_reopens_as_it_was() {
    let (mut disk, mut s) = new_store();
    let vol = s.create_volume("volume-1", 100 << 20).expect("created");
    write_cluster(&mut s, vol, 0, 0b11);
    s.set_property(vol, "cinder.volume_id", Some(b"8d3c"))
        .expect("set");
    let snap = s.snapshot(vol, "snap-1").expect("snapshot");
    write_cluster(&mut s, vol, 0, 0b1);
    let clone = s.clone_volume(snap, "clone-1").expect("clone");
    s.resize(clone, 300 << 20).expect("grown");
    for i in 0..40 {
        s.create_volume(&format!("bulk-{i}"), 1 << 20)
            .expect("created");
    }
    s.commit(&mut disk).expect("committed");
    let before = summary(&s);
    let reopened = Store::open(&mut disk).expect("opens");
    assert_eq!(reopened.check(), CheckReport::default());
    assert_eq!(summary(&reopened), before);
    assert_eq!(reopened.superblock().generation, 2);
    assert_eq!(
        reopened.forest().space().used_clusters(),
        s.forest().space().used_clusters()
    );
    let snap_rec = &reopened.volume(snap).expect("there").record;
    assert_eq!(snap_rec.flags, VOLUME_SNAPSHOT | VOLUME_READ_ONLY);
    assert_eq!(snap_rec.parent_id, vol);
}

#[test]
fn uncommitted_changes_vanish_in_a_crash() {
    let (mut disk, mut s) = new_store();
    let vol = s.create_volume("keep", 1 << 20).expect("created");
    s.commit(&mut disk).expect("committed");
    let committed = summary(&s);
    s.create_volume("lost", 1 << 20).expect("created");
    s.delete(vol).expect("deleted");
    disk.crash(Landing::None);
    let reopened = Store::open(&mut disk).expect("opens");
    assert_eq!(summary(&reopened), committed);
}

/// Power fails at every possible write of a commit, and the cache lands nothing, everything but
/// the last write, only the last write, or the last one torn: the store always reopens, at the
/// old commit or the new one, never anything else.
#[test]
fn power_loss_at_any_point_of_a_commit_leaves_one_of_the_two_commits() {
    let (mut disk, mut s) = new_store();
    let a = s.create_volume("a", 10 << 20).expect("created");
    write_cluster(&mut s, a, 1, 0xff);
    s.commit(&mut disk).expect("committed");
    let old = summary(&s);
    // The change to commit: a snapshot, writes, a clone, a delete, properties.
    let prepare = |s: &mut Store| {
        let snap = s.snapshot(a, "snap").expect("snapshot");
        write_cluster(s, a, 1, 0x0f);
        write_cluster(s, a, 2, 0x01);
        s.clone_volume(snap, "clone").expect("clone");
        s.set_property(a, "k", Some(b"v")).expect("set");
    };
    let mut probe = Store::open(&mut disk.clone()).expect("opens");
    prepare(&mut probe);
    let mut counting = disk.clone();
    probe.commit(&mut counting).expect("commits");
    let new = summary(&probe);
    let total = counting.writes;
    assert!(total >= 4);
    for n in 0..=total {
        for tear in LANDINGS {
            let mut d = disk.clone();
            let mut s2 = Store::open(&mut d).expect("opens");
            prepare(&mut s2);
            d.power_fails_after = Some(n);
            let result = s2.commit(&mut d);
            d.crash(tear);
            let reopened = Store::open(&mut d)
                .unwrap_or_else(|e| panic!("power loss after {n} writes ({tear:?}): {e}"));
            let report = reopened.check();
            assert!(
                report.problems.is_empty(),
                "after {n} writes ({tear:?}): {report:?}"
            );
            let got = summary(&reopened);
            assert!(
                got == old || got == new,
                "power loss after {n} writes ({tear:?}) gave a third state"
            );
            if result.is_ok() {
                assert_eq!(got, new, "a completed commit is durable");
            }
        }
    }
}

#[test]
fn any_snapshot_can_be_deleted_and_space_comes_back() {
    let (mut disk, mut s) = new_store();
    let used_empty = s.forest().space().used_clusters();
    let vol = s.create_volume("v", 10 << 20).expect("created");
    write_cluster(&mut s, vol, 0, 1);
    let snap = s.snapshot(vol, "s").expect("snapshot");
    let c1 = s.clone_volume(snap, "c1").expect("clone");
    let c2 = s.clone_volume(snap, "c2").expect("clone");
    write_cluster(&mut s, c1, 0, 2);
    s.delete(snap)
        .expect("a snapshot with two clones can be deleted");
    s.commit(&mut disk).expect("committed");
    let reopened = Store::open(&mut disk).expect("opens");
    let report = reopened.check();
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(
        report.notes.len(),
        2,
        "both clones lost their parent: {report:?}"
    );
    assert_eq!(reopened.volumes().count(), 3);
    let v = reopened.volume(c2).expect("there");
    assert_eq!(
        reopened.forest().get(&v.map, 0).own_bits,
        1,
        "c2 still sees the data"
    );
    for id in [vol, c1, c2] {
        s.delete(id).expect("deleted");
    }
    s.commit(&mut disk).expect("committed");
    s.commit(&mut disk)
        .expect("the table pages of the previous commit are freed too");
    assert_eq!(
        s.forest().space().used_clusters(),
        used_empty,
        "everything came back"
    );
}

#[test]
fn revert_resize_rename_and_flags_behave() {
    let (mut disk, mut s) = new_store();
    let vol = s.create_volume("v", 10 << 20).expect("created");
    write_cluster(&mut s, vol, 0, 1);
    let snap = s.snapshot(vol, "s").expect("snapshot");
    write_cluster(&mut s, vol, 0, 2);
    s.revert(vol, snap).expect("reverted");
    let v = s.volume(vol).expect("there");
    assert_eq!(s.forest().get(&v.map, 0).own_bits, 1);
    let snap2 = s.snapshot(vol, "s2").expect("snapshot");
    assert_eq!(s.revert(snap, snap2), Err(StoreError::ReadOnly(snap)));
    assert!(
        matches!(s.revert(snap, vol), Err(StoreError::Invalid(_))),
        "only a snapshot is reverted to"
    );
    assert_eq!(s.resize(snap, 20 << 20), Err(StoreError::ReadOnly(snap)));
    assert!(matches!(
        s.resize(vol, 5 << 20),
        Err(StoreError::Shrink { .. })
    ));
    s.resize(vol, 20 << 20).expect("grown");
    assert!(
        matches!(s.revert(vol, snap), Err(StoreError::Invalid(_))),
        "sizes differ"
    );
    assert_eq!(s.rename(vol, "s"), Err(StoreError::NameTaken("s".into())));
    s.rename(vol, "renamed").expect("renamed");
    assert!(s.set_read_only(snap, false).is_err());
    s.set_read_only(vol, true).expect("set");
    assert!(matches!(
        s.create_volume("bad", 1000),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_volume("", 4096),
        Err(StoreError::Format(_))
    ));
    assert!(s.set_property(vol, "k", Some(&vec![0; 5000])).is_err());
    s.commit(&mut disk).expect("committed");
    let r = Store::open(&mut disk).expect("opens");
    assert_eq!(
        r.find("renamed").expect("there").record.flags,
        VOLUME_READ_ONLY
    );
}

#[test]
fn garbage_is_not_a_store() {
    let mut disk = MemDisk::new(64 << 20);
    assert!(matches!(
        Store::open(&mut disk),
        Err(StoreError::NoSuperblock { .. })
    ));
    disk.durable.insert(0, vec![0xAB; PAGE_SIZE]);
    assert!(matches!(
        Store::open(&mut disk),
        Err(StoreError::NoSuperblock { .. })
    ));
    let mut tiny = MemDisk::new(CLUSTER as u64);
    assert!(
        Store::create(&mut tiny, "x", CLUSTER, 512).is_err(),
        "one cluster is too small"
    );
}

#[test]
fn the_store_grows_with_its_device_and_refuses_a_truncated_one() {
    let mut disk = MemDisk::new(8 << 20);
    let mut s = Store::create(&mut disk, "grow", 1 << 20, 512).expect("create");
    assert_eq!(s.forest().space().total_clusters(), 8);
    let v = s
        .create_volume("v", 64 << 20)
        .expect("thin volumes may overcommit");
    for i in 0..7 {
        let c = s.alloc_cluster().expect("space");
        s.set_entry(
            v,
            i,
            MapEntry {
                own: c,
                own_bits: 1,
                back: 0,
                back_bits: 0,
            },
        )
        .expect("set");
    }
    assert_eq!(s.alloc_cluster(), Err(StoreError::NoSpace), "full");
    s.commit(&mut disk).expect("commit");
    // The device grows: the store takes the new clusters, durably.
    disk.size = 20 << 20;
    assert_eq!(s.grow_store(disk.size), Ok(20));
    s.commit(&mut disk).expect("commit");
    let mut s = Store::open(&mut disk).expect("reopen");
    assert_eq!(s.superblock().total_clusters, 20);
    assert!(s.alloc_cluster().is_ok(), "room again");
    assert!(s.check().problems.is_empty(), "{:?}", s.check());
    assert!(
        matches!(s.grow_store(4 << 20), Err(StoreError::Invalid(_))),
        "never shrinks"
    );
    // A device cut short is refused, not read past its end.
    disk.size = 10 << 20;
    let err = Store::open(&mut disk).expect_err("truncated");
    assert!(err.to_string().contains("truncated"), "{err}");
}
