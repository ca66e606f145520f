//! `basalt lvol`: the offline volume-store tool, as an admin runs it.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use basalt_tests::run;

fn lvol(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["lvol"];
    all.extend_from_slice(args);
    run("basalt", &all)
}

#[test]
fn create_manage_list_check_and_refuse_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("store.img");
    std::fs::File::create(&img)
        .expect("create")
        .set_len(256 << 20)
        .expect("size");
    let path = img.to_str().expect("utf-8");

    let (code, out, err) = lvol(&["create", "--path", path, "--name", "cinder-volumes"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("256 clusters of 1048576 bytes"), "{out}");
    let (code, _, err) = lvol(&["create", "--path", path, "--name", "again"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already holds a volume store"), "{err}");

    for args in [
        &[
            "volume-create",
            "--path",
            path,
            "--name",
            "vol-1",
            "--size",
            "10G",
        ][..],
        &[
            "snapshot", "--path", path, "--volume", "vol-1", "--name", "snap-1",
        ],
        &[
            "clone", "--path", path, "--volume", "snap-1", "--name", "clone-1",
        ],
        &[
            "clone", "--path", path, "--volume", "snap-1", "--name", "clone-2",
        ],
        &["delete", "--path", path, "--volume", "snap-1"],
    ] {
        let (code, out, err) = lvol(args);
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
    }
    let (code, out, _) = lvol(&["list", "--path", path]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("vol-1") && out.contains("clone-1") && out.contains("clone-2"),
        "{out}"
    );
    assert!(!out.contains("snap-1"), "{out}");

    let (code, out, err) = lvol(&["check", "--path", path]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("is consistent: 3 volumes"), "{out}");

    let (code, out, _) = lvol(&["inspect", "--path", path]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("cinder-volumes") && out.contains("volumes      3"),
        "{out}"
    );

    let (code, _, err) = lvol(&[
        "volume-create",
        "--path",
        path,
        "--name",
        "vol-1",
        "--size",
        "1G",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("exists already"), "{err}");

    // Garbage over both superblocks: check reports it and exits 1; nothing panics.
    let garbage = vec![0x5au8; 8192];
    std::fs::write(dir.path().join("garbage.img"), &garbage).expect("write");
    let g = dir.path().join("garbage.img");
    let (code, out, err) = lvol(&["check", "--path", g.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("no valid superblock"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
}
