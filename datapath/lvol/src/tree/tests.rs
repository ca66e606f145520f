use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

const UUID: [u8; 16] = *b"basalt-tree-test";
const CLUSTERS: u64 = 2048;
const CLUSTER_SIZE: u32 = 64 * 1024;

fn bounds() -> StoreBounds {
    StoreBounds {
        uuid: UUID,
        total_clusters: CLUSTERS,
        total_pages: CLUSTERS * 16,
        cluster_size: CLUSTER_SIZE,
        block_size: 512,
    }
}

/// The forest plus a simulated disk of committed pages.
struct Harness {
    forest: Forest,
    disk: HashMap<PageNo, Vec<u8>>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            forest: Forest::new(SpaceMap::new(CLUSTERS, CLUSTER_SIZE), 1),
            disk: HashMap::new(),
        }
    }

    fn commit(&mut self) {
        for (p, bytes) in self.forest.seal(&UUID) {
            self.disk.insert(p, bytes.to_vec());
        }
        self.forest.commit_durable();
    }

    fn load(&self, maps: &[Map]) -> Result<Forest, LoadError> {
        Forest::load(
            SpaceMap::new(CLUSTERS, CLUSTER_SIZE),
            self.forest.generation,
            &bounds(),
            maps,
            |p| {
                self.disk
                    .get(&p)
                    .cloned()
                    .ok_or_else(|| "never written".into())
            },
        )
    }
}

fn own(c: u64, bits: u64) -> MapEntry {
    MapEntry {
        own: c,
        own_bits: bits,
        ..MapEntry::default()
    }
}

#[test]
fn snapshots_share_until_written_and_deletes_return_space() {
    let mut h = Harness::new();
    let f = &mut h.forest;
    let mut vol = Map::empty(1);
    let c = f.alloc_cluster().expect("space");
    f.set(&mut vol, 3, own(c, 1)).expect("space");
    let pages_before = f.space().used_pages();
    let snap = f.share(&vol);
    assert_eq!(
        f.space().used_pages(),
        pages_before,
        "a snapshot copies nothing"
    );
    assert_eq!(
        f.cluster_refs(c),
        1,
        "one leaf names the cluster, shared by two maps"
    );

    // Writing the volume copies its leaf; the cluster is now named by both leaves.
    let d = f.alloc_cluster().expect("space");
    f.set(
        &mut vol,
        3,
        MapEntry {
            own: d,
            own_bits: 1,
            back: c,
            back_bits: 2,
        },
    )
    .expect("space");
    assert_ne!(vol.root, snap.root);
    assert_eq!(
        f.get(&snap, 3),
        own(c, 1),
        "the snapshot keeps its point in time"
    );
    assert_eq!(f.get(&vol, 3).own, d);
    assert_eq!(f.cluster_refs(c), 2);

    // Deleting the snapshot (which has a "clone": the volume) just drops references.
    f.drop_map(snap);
    assert_eq!(f.cluster_refs(c), 1, "still the volume's backing cluster");
    f.drop_map(vol);
    assert_eq!(f.cluster_refs(c), 0);
    f.seal(&UUID);
    f.commit_durable();
    assert_eq!(f.space().used_clusters(), 1, "only cluster 0 remains");
    assert_eq!(f.space().used_pages(), 2, "only the superblocks remain");
}

#[test]
fn reads_do_not_depend_on_snapshot_depth() {
    let mut h = Harness::new();
    let f = &mut h.forest;
    let mut vol = Map::empty(2);
    let c = f.alloc_cluster().expect("space");
    f.set(&mut vol, 1000, own(c, u64::MAX)).expect("space");
    let mut snaps = Vec::new();
    for i in 0..256u64 {
        snaps.push(f.share(&vol));
        let d = f.alloc_cluster().expect("space");
        f.set(&mut vol, i, own(d, 1)).expect("space");
    }
    // The volume's map is still a two-level tree; the oldest snapshot too.
    assert_eq!(f.get(&vol, 1000), own(c, u64::MAX));
    assert_eq!(f.get(&snaps[0], 1000), own(c, u64::MAX));
    assert_eq!(f.get(&snaps[0], 5), MapEntry::default());
    assert_eq!(f.get(&snaps[200], 5).own_bits, 1);
    assert_eq!(vol.height, 2);
}

#[test]
fn growing_keeps_the_contents() {
    let mut h = Harness::new();
    let f = &mut h.forest;
    let mut vol = Map::empty(1);
    let c = f.alloc_cluster().expect("space");
    f.set(&mut vol, 100, own(c, 7)).expect("space");
    let snap = f.share(&vol);
    f.grow(&mut vol, 10_000).expect("space");
    assert_eq!(vol.height, 2);
    assert_eq!(f.get(&vol, 100), own(c, 7));
    let d = f.alloc_cluster().expect("space");
    f.set(&mut vol, 9_000, own(d, 1)).expect("space");
    assert_eq!(f.get(&snap, 100), own(c, 7));
    h.commit();
    let loaded = h.load(&[vol, snap]).expect("loads");
    assert_eq!(loaded.get(&vol, 9_000), own(d, 1));
    assert_eq!(loaded.page_refs, h.forest.page_refs);
    assert_eq!(loaded.cluster_refs, h.forest.cluster_refs);
}

#[test]
fn loading_refuses_cycles_and_foreign_levels() {
    let mut h = Harness::new();
    let mut vol = Map::empty(2);
    let c = h.forest.alloc_cluster().expect("space");
    h.forest.set(&mut vol, 0, own(c, 1)).expect("space");
    h.commit();
    // A map that claims to be three levels tall over the same root: the levels disagree.
    let tall = Map {
        root: vol.root,
        height: 3,
    };
    assert!(matches!(
        h.load(&[tall]),
        Err(LoadError::Format(_) | LoadError::Level { .. })
    ));
    // The same root named twice at different heights.
    let short = Map {
        root: vol.root,
        height: 1,
    };
    assert!(h.load(&[vol, short]).is_err());
    // A page that was never written.
    let ghost = Map {
        root: PageNo(999),
        height: 1,
    };
    assert!(matches!(h.load(&[ghost]), Err(LoadError::Read { .. })));
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        slot: usize,
        tall: bool,
    },
    Write {
        slot: usize,
        index: u64,
        bits: u64,
        cow: bool,
    },
    Clear {
        slot: usize,
        index: u64,
    },
    Share {
        from: usize,
        to: usize,
    },
    Drop {
        slot: usize,
    },
    Grow {
        slot: usize,
    },
    Commit,
    CrashAndReload,
}

const SLOTS: usize = 5;

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let index = prop_oneof![0u64..8, 120u64..132, 0u64..400];
    prop_oneof![
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, tall)| Op::Create { slot, tall }),
        6 => (slot.clone(), index.clone(), 1u64..u64::MAX, any::<bool>())
            .prop_map(|(slot, index, bits, cow)| Op::Write { slot, index, bits, cow }),
        1 => (slot.clone(), index).prop_map(|(slot, index)| Op::Clear { slot, index }),
        2 => (slot.clone(), slot.clone()).prop_map(|(from, to)| Op::Share { from, to }),
        1 => slot.clone().prop_map(|slot| Op::Drop { slot }),
        1 => slot.prop_map(|slot| Op::Grow { slot }),
        2 => Just(Op::Commit),
        1 => Just(Op::CrashAndReload),
    ]
}

type Model = Vec<Option<(Map, BTreeMap<u64, MapEntry>)>>;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random map operations, commits and crashes against a model of each volume's entries.
    /// After every commit, a fresh load of the committed pages must give the very same
    /// reference counts as the live forest (no count drifts, nothing leaks).
    #[test]
    fn matches_a_model_across_commits_and_crashes(ops in proptest::collection::vec(op(), 1..120)) {
        let mut h = Harness::new();
        let mut model: Model = vec![None; SLOTS];
        let mut committed: Model = vec![None; SLOTS];
        for op in ops {
            match op {
                Op::Create { slot, tall } => {
                    if let Some((m, _)) = model[slot].take() {
                        h.forest.drop_map(m);
                    }
                    model[slot] = Some((Map::empty(if tall { 2 } else { 1 }), BTreeMap::new()));
                }
                Op::Write { slot, index, bits, cow } => {
                    let Some((map, entries)) = model[slot].as_mut() else { continue };
                    if index >= map.capacity() { continue }
                    let Ok(c) = h.forest.alloc_cluster() else { continue };
                    let old = h.forest.get(map, index);
                    let entry = if cow && old.own != 0 && old.own_bits & !bits != 0 {
                        MapEntry { own: c, own_bits: bits, back: old.own, back_bits: old.own_bits & !bits }
                    } else {
                        own(c, bits)
                    };
                    if h.forest.set(map, index, entry).is_err() {
                        h.forest.abandon_cluster(c);
                        continue;
                    }
                    entries.insert(index, entry);
                }
                Op::Clear { slot, index } => {
                    let Some((map, entries)) = model[slot].as_mut() else { continue };
                    if index >= map.capacity() { continue }
                    h.forest.set(map, index, MapEntry::default()).expect("clearing frees");
                    entries.remove(&index);
                }
                Op::Share { from, to } => {
                    if from == to { continue }
                    let Some((map, entries)) = model[from].clone() else { continue };
                    if let Some((m, _)) = model[to].take() {
                        h.forest.drop_map(m);
                    }
                    model[to] = Some((h.forest.share(&map), entries));
                }
                Op::Drop { slot } => {
                    if let Some((m, _)) = model[slot].take() {
                        h.forest.drop_map(m);
                    }
                }
                Op::Grow { slot } => {
                    let Some((map, _)) = model[slot].as_mut() else { continue };
                    if map.height < 3 {
                        let want = map.capacity() + 1;
                        h.forest.grow(map, want).expect("space");
                    }
                }
                Op::Commit => {
                    h.commit();
                    committed = model.clone();
                    let maps: Vec<Map> = model.iter().flatten().map(|(m, _)| *m).collect();
                    let loaded = h.load(&maps).expect("committed metadata loads");
                    prop_assert_eq!(&loaded.page_refs, &h.forest.page_refs);
                    prop_assert_eq!(&loaded.cluster_refs, &h.forest.cluster_refs);
                    prop_assert_eq!(loaded.space().used_clusters(), h.forest.space().used_clusters(), "no leaked cluster");
                    prop_assert_eq!(loaded.space().used_pages(), h.forest.space().used_pages(), "no leaked page");
                }
                Op::CrashAndReload => {
                    // Everything since the last commit is lost; reopen from the disk.
                    model = committed.clone();
                    let maps: Vec<Map> = model.iter().flatten().map(|(m, _)| *m).collect();
                    let loaded = h.load(&maps).expect("committed metadata loads");
                    h.forest = loaded;
                }
            }
            for (map, entries) in model.iter().flatten() {
                for (&i, e) in entries {
                    prop_assert_eq!(h.forest.get(map, i), *e, "entry {}", i);
                }
                for i in [0, 1, 125, 126, 127, 399] {
                    if i < map.capacity() && !entries.contains_key(&i) {
                        prop_assert_eq!(h.forest.get(map, i), MapEntry::default());
                    }
                }
            }
        }
    }
}

#[test]
fn rewriting_a_committed_page_keeps_its_clusters_exclusive() {
    let mut h = Harness::new();
    let mut vol = Map::empty(2);
    let (a, b) = (
        h.forest.alloc_cluster().expect("space"),
        h.forest.alloc_cluster().expect("space"),
    );
    h.forest.set(&mut vol, 0, own(a, 1)).expect("space");
    h.forest.set(&mut vol, 1, own(b, 1)).expect("space");
    h.commit();
    // Shadow paging copies the committed leaf; nothing else shares it, so its other clusters
    // stay writable in place (no copy-on-write because of a commit).
    h.forest.set(&mut vol, 0, own(a, 3)).expect("space");
    assert!(
        h.forest.lookup(&vol, 1).own_exclusive,
        "b is still the volume's alone"
    );
    assert!(h.forest.lookup(&vol, 0).own_exclusive);
    // A snapshot does make them shared.
    let snap = h.forest.share(&vol);
    assert!(!h.forest.lookup(&vol, 1).own_exclusive);
    h.forest.drop_map(snap);
    // ... and after the snapshot is gone, only a durable commit makes them exclusive again.
    assert!(
        !h.forest.lookup(&vol, 1).own_exclusive,
        "fragile until durable"
    );
    h.commit();
    assert!(h.forest.lookup(&vol, 1).own_exclusive);
}
