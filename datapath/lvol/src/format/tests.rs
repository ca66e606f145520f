use proptest::prelude::*;

use super::*;

const UUID: [u8; 16] = *b"basalt-test-uuid";

fn sb() -> Superblock {
    Superblock {
        flags: SUPER_FLAG_CLEAN,
        uuid: UUID,
        name: "cinder-volumes".into(),
        generation: 7,
        block_size: 512,
        cluster_size: 1 << 20,
        total_clusters: 1024,
        volume_table: PageNo(300),
        allocated_clusters: 10,
        provisioned_bytes: 5 << 30,
        next_volume_id: 4,
        created_ns: 1,
        committed_ns: 2,
    }
}

fn bounds() -> StoreBounds {
    StoreBounds::from(&sb())
}

fn volume(id: u64) -> VolumeRecord {
    VolumeRecord {
        id,
        uuid: [id as u8; 16],
        name: format!("volume-{id}"),
        flags: 0,
        map_height: 1,
        size_bytes: 10 << 20,
        map_root: PageNo(400 + id),
        parent_id: 0,
        created_ns: 5,
        properties: PageNo::NONE,
    }
}

#[test]
fn the_layout_constants_fill_a_page() {
    assert_eq!(LEAF_FANOUT, 126);
    assert_eq!(NODE_FANOUT, 505);
    assert_eq!(VOLUMES_PER_PAGE, 15);
    const { assert!(HEADER_LEN + LEAF_FANOUT * ENTRY_LEN <= CRC_OFFSET) };
    assert_eq!(map_height_for(1), 1);
    assert_eq!(map_height_for(126), 1);
    assert_eq!(map_height_for(127), 2);
    // 1 PiB of 64 KiB clusters still fits well below the height limit.
    assert!(map_height_for((1u64 << 50) / u64::from(MIN_CLUSTER_SIZE)) < MAX_MAP_HEIGHT);
}

#[test]
fn superblock_round_trips_and_any_flipped_byte_is_caught() {
    let page = sb().encode();
    assert_eq!(Superblock::decode(&*page), Ok(sb()));
    for i in 0..PAGE_SIZE {
        let mut bad = page.clone();
        bad[i] ^= 0x40;
        assert!(
            Superblock::decode(&*bad).is_err(),
            "flip at byte {i} went unnoticed"
        );
    }
    assert_eq!(
        Superblock::decode(&[0u8; PAGE_SIZE]),
        Err(FormatError::NotAStore)
    );
    assert!(matches!(
        Superblock::decode(&page[..100]),
        Err(FormatError::Length { .. })
    ));
}

#[test]
fn superblock_fields_are_checked_against_each_other() {
    let bad = |f: &dyn Fn(&mut Superblock)| {
        let mut s = sb();
        f(&mut s);
        Superblock::decode(&*s.encode()).expect_err("refused")
    };
    assert!(matches!(
        bad(&|s| s.block_size = 1024),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.cluster_size = 3 << 20),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.cluster_size = 4096),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.total_clusters = 1),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.volume_table = PageNo(1)),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.volume_table = PageNo(1 << 40)),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.allocated_clusters = 5000),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.flags = 0x80),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.next_volume_id = 0),
        FormatError::Invalid { .. }
    ));
    assert!(matches!(
        bad(&|s| s.total_clusters = u64::MAX),
        FormatError::Invalid { .. }
    ));
    let mut newer = sb().encode();
    newer[8] = 2;
    seal(&mut newer);
    assert_eq!(
        Superblock::decode(&*newer),
        Err(FormatError::UnsupportedVersion(2))
    );
}

#[test]
fn names_are_checked() {
    assert!(check_name("n", "").is_err());
    assert!(check_name("n", &"x".repeat(65)).is_err());
    assert!(check_name("n", "tab\there").is_err());
    assert!(check_name("n", "volume-éß-1").is_ok());
}

#[test]
fn pages_reject_foreign_misdirected_and_wrong_kind() {
    let leaf = MapLeaf {
        generation: 3,
        entries: Box::new([MapEntry::default(); LEAF_FANOUT]),
    };
    let page = leaf.encode(PageNo(500), &UUID);
    assert_eq!(MapLeaf::decode(&*page, PageNo(500), &bounds()), Ok(leaf));
    assert_eq!(
        MapLeaf::decode(&*page, PageNo(501), &bounds()),
        Err(FormatError::Misdirected {
            page: PageNo(501),
            found: PageNo(500)
        })
    );
    let other = StoreBounds {
        uuid: [9; 16],
        ..bounds()
    };
    assert_eq!(
        MapLeaf::decode(&*page, PageNo(500), &other),
        Err(FormatError::ForeignStore { page: PageNo(500) })
    );
    assert!(matches!(
        MapNode::decode(&*page, PageNo(500), &bounds()),
        Err(FormatError::WrongKind { .. })
    ));
    assert_eq!(
        MapLeaf::decode(&[0u8; PAGE_SIZE], PageNo(500), &bounds()),
        Err(FormatError::NoPageMagic(PageNo(500)))
    );
    let mut torn = page.clone();
    torn[2000..].fill(0);
    assert!(matches!(
        MapLeaf::decode(&*torn, PageNo(500), &bounds()),
        Err(FormatError::Checksum { .. })
    ));
}

#[test]
fn map_entries_must_be_consistent_and_inside_the_store() {
    let enc = |e: MapEntry| {
        let mut entries = Box::new([MapEntry::default(); LEAF_FANOUT]);
        entries[5] = e;
        MapLeaf {
            generation: 1,
            entries,
        }
        .encode(PageNo(10), &UUID)
    };
    let ok = MapEntry {
        own: 3,
        own_bits: 0b1010,
        back: 4,
        back_bits: 0b0101,
    };
    assert!(MapLeaf::decode(&*enc(ok), PageNo(10), &bounds()).is_ok());
    for bad in [
        MapEntry { own: 0, ..ok },
        MapEntry { own_bits: 0, ..ok },
        MapEntry { own: 1024, ..ok },
        MapEntry { back: 0, ..ok },
        MapEntry {
            back_bits: 0b0010,
            ..ok
        },
        MapEntry { back: 3, ..ok },
    ] {
        assert!(
            MapLeaf::decode(&*enc(bad), PageNo(10), &bounds()).is_err(),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn map_nodes_keep_children_inside_and_levels_sane() {
    let mut children = Box::new([PageNo::NONE; NODE_FANOUT]);
    children[0] = PageNo(20);
    children[504] = PageNo(21);
    let node = MapNode {
        generation: 2,
        level: 1,
        children,
    };
    assert_eq!(
        MapNode::decode(&*node.encode(PageNo(30), &UUID), PageNo(30), &bounds()),
        Ok(node.clone())
    );
    let mut own = node.clone();
    own.children[1] = PageNo(30);
    assert!(MapNode::decode(&*own.encode(PageNo(30), &UUID), PageNo(30), &bounds()).is_err());
    let mut out = node.clone();
    out.children[1] = PageNo(1 << 30);
    assert!(MapNode::decode(&*out.encode(PageNo(30), &UUID), PageNo(30), &bounds()).is_err());
    let flat = MapNode { level: 0, ..node };
    assert!(MapNode::decode(&*flat.encode(PageNo(30), &UUID), PageNo(30), &bounds()).is_err());
}

#[test]
fn volume_tables_round_trip_and_records_are_checked() {
    let table = VolumeTablePage {
        generation: 9,
        next: PageNo(77),
        volumes: (1..=VOLUMES_PER_PAGE as u64).map(volume).collect(),
    };
    let page = table.encode(PageNo(300), &UUID);
    assert_eq!(
        VolumeTablePage::decode(&*page, PageNo(300), &bounds()),
        Ok(table)
    );
    let bad = |f: &dyn Fn(&mut VolumeRecord)| {
        let mut v = volume(1);
        f(&mut v);
        let t = VolumeTablePage {
            generation: 1,
            next: PageNo::NONE,
            volumes: vec![v],
        };
        VolumeTablePage::decode(&*t.encode(PageNo(300), &UUID), PageNo(300), &bounds())
            .expect_err("refused")
    };
    bad(&|v| v.id = 0);
    bad(&|v| v.size_bytes = 1000);
    bad(&|v| v.map_height = 3);
    bad(&|v| v.flags = VOLUME_SNAPSHOT);
    bad(&|v| v.flags = 64);
    bad(&|v| v.parent_id = 1);
    bad(&|v| v.map_root = PageNo(0x7fff_ffff));
    let self_link = VolumeTablePage {
        generation: 1,
        next: PageNo(300),
        volumes: vec![],
    };
    assert!(
        VolumeTablePage::decode(
            &*self_link.encode(PageNo(300), &UUID),
            PageNo(300),
            &bounds()
        )
        .is_err()
    );
}

#[test]
fn properties_round_trip_and_refuse_overruns_and_duplicates() {
    let props = PropertiesPage {
        generation: 4,
        next: PageNo::NONE,
        pairs: vec![
            ("cinder.volume_id".into(), b"9b1d7c3e-aaaa".to_vec()),
            ("empty".into(), Vec::new()),
        ],
    };
    let page = props.encode(PageNo(50), &UUID).expect("fits");
    assert_eq!(
        PropertiesPage::decode(&*page, PageNo(50), &bounds()),
        Ok(props)
    );
    let dup = PropertiesPage {
        generation: 4,
        next: PageNo::NONE,
        pairs: vec![("k".into(), vec![1]), ("k".into(), vec![2])],
    };
    assert!(
        PropertiesPage::decode(
            &*dup.encode(PageNo(50), &UUID).expect("fits"),
            PageNo(50),
            &bounds()
        )
        .is_err()
    );
    let big = PropertiesPage {
        generation: 4,
        next: PageNo::NONE,
        pairs: vec![("k".into(), vec![0; 5000])],
    };
    assert!(big.encode(PageNo(50), &UUID).is_err());
    // A count that claims more pairs than the page holds.
    let mut lying = page.clone();
    lying[6] = 200;
    seal(&mut lying);
    assert!(PropertiesPage::decode(&*lying, PageNo(50), &bounds()).is_err());
}

fn entry() -> impl Strategy<Value = MapEntry> {
    (0u64..1024, any::<u64>(), 0u64..1024, any::<u64>()).prop_map(|(own, ob, back, bb)| {
        let (own, own_bits) = if own == 0 || ob == 0 {
            (0, 0)
        } else {
            (own, ob)
        };
        let back_bits = bb & !own_bits;
        let (back, back_bits) = if back == 0 || back_bits == 0 || back == own {
            (0, 0)
        } else {
            (back, back_bits)
        };
        MapEntry {
            own,
            own_bits,
            back,
            back_bits,
        }
    })
}

proptest! {
    #[test]
    fn leaves_round_trip(entries in proptest::collection::vec(entry(), LEAF_FANOUT), gen_: u64, page in 2u64..(1024 * 256)) {
        let mut arr = Box::new([MapEntry::default(); LEAF_FANOUT]);
        arr.copy_from_slice(&entries);
        let leaf = MapLeaf { generation: gen_, entries: arr };
        let bytes = leaf.encode(PageNo(page), &UUID);
        prop_assert_eq!(MapLeaf::decode(&*bytes, PageNo(page), &bounds()), Ok(leaf));
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), PAGE_SIZE), kind in 1u8..=4, fix_crc: bool) {
        // Give the decoders a chance to get past the framing: valid magic, uuid and address.
        bytes[0..4].copy_from_slice(&PAGE_MAGIC);
        bytes[4] = kind;
        bytes[16..32].copy_from_slice(&UUID);
        bytes[32..40].copy_from_slice(&42u64.to_le_bytes());
        if fix_crc {
            let crc = crc32c::crc32c(&bytes[..CRC_OFFSET]);
            bytes[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        }
        let b = bounds();
        let _ = MapLeaf::decode(&bytes, PageNo(42), &b);
        let _ = MapNode::decode(&bytes, PageNo(42), &b);
        let _ = VolumeTablePage::decode(&bytes, PageNo(42), &b);
        let _ = PropertiesPage::decode(&bytes, PageNo(42), &b);
        let _ = Superblock::decode(&bytes);
    }
}
