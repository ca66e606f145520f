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

/// A fresh 256 MiB store (1 MiB clusters, 512-byte blocks) in `dir`; returns its path.
fn new_store(dir: &tempfile::TempDir) -> String {
    let img = dir.path().join("store.img");
    std::fs::File::create(&img)
        .expect("create")
        .set_len(256 << 20)
        .expect("size");
    let path = img.to_str().expect("utf-8").to_owned();
    ok(&["create", "--path", &path, "--name", "pool"]);
    path
}

/// Runs `basalt lvol ARGS`, requires success and returns stdout.
fn ok(args: &[&str]) -> String {
    let (code, out, err) = lvol(args);
    assert_eq!(code, Some(0), "{args:?}: {out}{err}");
    out
}

/// Runs `basalt lvol ARGS`, requires exit status 1 without a panic and returns stderr.
fn fails(args: &[&str]) -> String {
    let (code, out, err) = lvol(args);
    assert_eq!(code, Some(1), "{args:?} should fail: {out}{err}");
    assert!(err.starts_with("basalt: error: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

/// `basalt lvol check` finds no problem.
fn check_clean(path: &str) {
    let out = ok(&["check", "--path", path]);
    assert!(!out.contains("PROBLEM"), "{out}");
    assert!(out.contains("is consistent"), "{out}");
}

/// The value of `field` in `basalt lvol inspect` output (`provisioned  123 bytes` -> `123`).
fn inspect_field(path: &str, field: &str) -> String {
    let out = ok(&["inspect", "--path", path]);
    let line = out
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field:?} in {out}"));
    line[field.len()..]
        .split_whitespace()
        .next()
        .expect("a value")
        .to_owned()
}

/// The `basalt lvol list` row of `name`: id, name, size, kind, parent.
fn list_row(path: &str, name: &str) -> Option<Vec<String>> {
    let out = ok(&["list", "--path", path]);
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.get(1).is_some_and(|n| n == name))
}

#[test]
fn revert_goes_back_to_a_snapshot_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = &new_store(&dir);
    let p = path.as_str();
    ok(&[
        "volume-create",
        "--path",
        p,
        "--name",
        "vol-1",
        "--size",
        "64M",
    ]);
    ok(&[
        "snapshot", "--path", p, "--volume", "vol-1", "--name", "snap-1",
    ]);
    ok(&[
        "volume-create",
        "--path",
        p,
        "--name",
        "vol-2",
        "--size",
        "64M",
    ]);
    ok(&[
        "snapshot", "--path", p, "--volume", "vol-2", "--name", "snap-2",
    ]);
    ok(&[
        "clone", "--path", p, "--volume", "snap-1", "--name", "clone-1",
    ]);
    let vol = list_row(p, "vol-1").expect("vol-1 listed");
    let provisioned = inspect_field(p, "provisioned");
    let used = inspect_field(p, "clusters");

    let out = ok(&[
        "revert",
        "--path",
        p,
        "--volume",
        "vol-1",
        "--snapshot",
        "snap-1",
    ]);
    assert_eq!(out.trim(), r#"reverted "vol-1" to snapshot "snap-1""#);
    // Same volume (id, size, kind, no parent), the snapshot kept and still its child; the
    // store's accounting unchanged (these volumes hold no data yet).
    assert_eq!(list_row(p, "vol-1"), Some(vol.clone()));
    let snap = list_row(p, "snap-1").expect("snap-1 kept");
    assert_eq!(snap[3], "snapshot");
    assert_eq!(snap[4], vol[0], "snap-1's parent is vol-1");
    assert_eq!(vol[2], "67108864");
    assert_eq!(vol[4], "-");
    assert_eq!(inspect_field(p, "provisioned"), provisioned);
    assert_eq!(inspect_field(p, "clusters"), used);
    assert_eq!(inspect_field(p, "volumes"), "5");
    check_clean(p);

    // Not a snapshot of this volume, not a snapshot at all, unknown names.
    let err = fails(&[
        "revert",
        "--path",
        p,
        "--volume",
        "vol-1",
        "--snapshot",
        "snap-2",
    ]);
    assert!(
        err.contains(r#"cannot revert "vol-1" to "snap-2""#)
            && err.contains(r#"a snapshot of "vol-2", not of "vol-1""#),
        "{err}"
    );
    let err = fails(&[
        "revert",
        "--path",
        p,
        "--volume",
        "vol-1",
        "--snapshot",
        "clone-1",
    ]);
    assert!(err.contains(r#""clone-1" is not a snapshot"#), "{err}");
    let err = fails(&[
        "revert",
        "--path",
        p,
        "--volume",
        "vol-1",
        "--snapshot",
        "nope",
    ]);
    assert!(err.contains(r#"no snapshot named "nope""#), "{err}");
    let err = fails(&[
        "revert",
        "--path",
        p,
        "--volume",
        "nope",
        "--snapshot",
        "snap-1",
    ]);
    assert!(err.contains(r#"no volume named "nope""#), "{err}");

    // A read-only volume is refused, and so is one resized since the snapshot.
    ok(&["read-only", "--path", p, "--volume", "vol-2"]);
    let err = fails(&[
        "revert",
        "--path",
        p,
        "--volume",
        "vol-2",
        "--snapshot",
        "snap-2",
    ]);
    assert!(
        err.contains(r#"cannot revert "vol-2" to "snap-2""#) && err.contains("read-only"),
        "{err}"
    );
    ok(&["resize", "--path", p, "--volume", "vol-1", "--size", "128M"]);
    let err = fails(&[
        "revert",
        "--path",
        p,
        "--volume",
        "vol-1",
        "--snapshot",
        "snap-1",
    ]);
    assert!(
        err.contains(r#"cannot revert "vol-1" to "snap-1""#)
            && err.contains("134217728")
            && err.contains("67108864"),
        "{err}"
    );
    // Refusals change nothing.
    assert_eq!(list_row(p, "vol-1").expect("vol-1")[2], "134217728");
    check_clean(p);
}

#[test]
fn resize_grows_and_refuses_to_shrink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = &new_store(&dir);
    let p = path.as_str();
    ok(&[
        "volume-create",
        "--path",
        p,
        "--name",
        "vol-1",
        "--size",
        "1G",
    ]);

    let out = ok(&["resize", "--path", p, "--volume", "vol-1", "--size", "2G"]);
    assert_eq!(
        out.trim(),
        r#"resized "vol-1" from 1073741824 to 2147483648 bytes"#
    );
    assert_eq!(list_row(p, "vol-1").expect("vol-1")[2], "2147483648");
    assert_eq!(inspect_field(p, "provisioned"), "2147483648");
    // Thin: far beyond the store's 256 MiB is fine.
    ok(&["resize", "--path", p, "--volume", "vol-1", "--size", "4T"]);
    assert_eq!(
        list_row(p, "vol-1").expect("vol-1")[2],
        (4u64 << 40).to_string()
    );

    let err = fails(&["resize", "--path", p, "--volume", "vol-1", "--size", "1G"]);
    assert!(
        err.contains(r#"cannot resize "vol-1""#)
            && err.contains(&(4u64 << 40).to_string())
            && err.contains("1073741824"),
        "shrink: {err}"
    );
    let err = fails(&[
        "resize",
        "--path",
        p,
        "--volume",
        "vol-1",
        "--size",
        "5000000000001",
    ]);
    assert!(err.contains("block size"), "{err}");
    let err = fails(&["resize", "--path", p, "--volume", "nope", "--size", "8T"]);
    assert!(err.contains(r#"no volume named "nope""#), "{err}");
    // A bad size is a usage error (status 2), caught by the same parser as volume-create.
    let (code, _, err) = lvol(&["resize", "--path", p, "--volume", "vol-1", "--size", "5X"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown size unit"), "{err}");

    // Snapshots (always read-only) are not resized.
    ok(&[
        "snapshot", "--path", p, "--volume", "vol-1", "--name", "snap-1",
    ]);
    let err = fails(&["resize", "--path", p, "--volume", "snap-1", "--size", "8T"]);
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(
        list_row(p, "vol-1").expect("vol-1")[2],
        (4u64 << 40).to_string()
    );
    check_clean(p);
}

#[test]
fn rename_and_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = &new_store(&dir);
    let p = path.as_str();
    ok(&[
        "volume-create",
        "--path",
        p,
        "--name",
        "vol-1",
        "--size",
        "1G",
    ]);
    ok(&[
        "volume-create",
        "--path",
        p,
        "--name",
        "vol-2",
        "--size",
        "1G",
    ]);
    ok(&[
        "snapshot", "--path", p, "--volume", "vol-1", "--name", "snap-1",
    ]);
    let id = list_row(p, "vol-1").expect("vol-1")[0].clone();

    let out = ok(&["rename", "--path", p, "--volume", "vol-1", "--name", "data"]);
    assert_eq!(out.trim(), r#"renamed "vol-1" to "data""#);
    assert_eq!(list_row(p, "vol-1"), None);
    assert_eq!(list_row(p, "data").expect("renamed")[0], id, "same id");
    // The snapshot still names its parent by id.
    assert_eq!(list_row(p, "snap-1").expect("snap-1")[4], id);
    let err = fails(&["rename", "--path", p, "--volume", "data", "--name", "vol-2"]);
    assert!(
        err.contains(r#"cannot rename "data" to "vol-2""#)
            && err.contains(r#"a volume named "vol-2" exists already"#),
        "{err}"
    );
    let err = fails(&["rename", "--path", p, "--volume", "vol-1", "--name", "x"]);
    assert!(err.contains(r#"no volume named "vol-1""#), "{err}");
    let long = "n".repeat(65);
    fails(&["rename", "--path", p, "--volume", "data", "--name", &long]);
    assert!(list_row(p, "data").is_some());

    let out = ok(&["read-only", "--path", p, "--volume", "data"]);
    assert_eq!(out.trim(), r#""data" is now read-only"#);
    assert_eq!(list_row(p, "data").expect("data")[3], "read-only");
    let err = fails(&["resize", "--path", p, "--volume", "data", "--size", "2G"]);
    assert!(err.contains("read-only"), "{err}");
    let out = ok(&["read-only", "--path", p, "--volume", "data", "--off"]);
    assert_eq!(out.trim(), r#""data" is now writable"#);
    assert_eq!(list_row(p, "data").expect("data")[3], "volume");
    ok(&["resize", "--path", p, "--volume", "data", "--size", "2G"]);

    let err = fails(&["read-only", "--path", p, "--volume", "snap-1", "--off"]);
    assert!(
        err.contains(r#"cannot make "snap-1" writable"#) && err.contains("snapshot"),
        "{err}"
    );
    assert_eq!(list_row(p, "snap-1").expect("snap-1")[3], "snapshot");
    ok(&["read-only", "--path", p, "--volume", "snap-1"]);
    let err = fails(&["read-only", "--path", p, "--volume", "nope"]);
    assert!(err.contains(r#"no volume named "nope""#), "{err}");
    check_clean(p);
}

/// `property ARGS`.
fn prop<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["property"];
    all.extend_from_slice(args);
    all
}

#[test]
fn properties_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = &new_store(&dir);
    let p = path.as_str();
    ok(&[
        "volume-create",
        "--path",
        p,
        "--name",
        "vol-1",
        "--size",
        "1G",
    ]);
    let vol = ["--path", p, "--volume", "vol-1"];
    let set = |key: &str, value: &str| {
        ok(&prop(
            &[&["set"][..], &vol, &["--key", key, "--value", value]].concat(),
        ))
    };
    let get = |key: &str| ok(&prop(&[&["get"][..], &vol, &["--key", key]].concat()));
    let list = || ok(&prop(&[&["list"][..], &vol].concat()));

    assert_eq!(
        list(),
        "KEY                      VALUE\n",
        "only the header"
    );

    let out = set("cinder:id", "a1 b2");
    assert_eq!(out.trim(), r#"set property cinder:id of "vol-1" (5 bytes)"#);
    set("owner", "alice");
    set("owner", "bob");
    set("empty", "");
    set("line", "two\nlines");
    ok(&prop(
        &[
            &["set"][..],
            &vol,
            &["--key", "blob", "--value", "00FF0a", "--hex"],
        ]
        .concat(),
    ));

    assert_eq!(get("cinder:id"), "a1 b2\n");
    assert_eq!(get("owner"), "bob\n");
    assert_eq!(get("empty"), "\n");
    // Not UTF-8, or control characters: `hex:` and the bytes; --hex: always bare hex.
    assert_eq!(get("blob"), "hex:00ff0a\n");
    assert_eq!(get("line"), "hex:74776f0a6c696e6573\n");
    let out = ok(&prop(
        &[&["get"][..], &vol, &["--key", "cinder:id", "--hex"]].concat(),
    ));
    assert_eq!(out, "6131206232\n");

    let rows: Vec<Vec<String>> = list()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["KEY", "VALUE"],
            vec!["blob", "hex:00ff0a"],
            vec!["cinder:id", "a1", "b2"],
            vec!["empty"],
            vec!["line", "hex:74776f0a6c696e6573"],
            vec!["owner", "bob"],
        ],
    );

    let out = ok(&prop(&[&["unset"][..], &vol, &["--key", "owner"]].concat()));
    assert_eq!(out.trim(), r#"unset property owner of "vol-1""#);
    let err = fails(&prop(&[&["get"][..], &vol, &["--key", "owner"]].concat()));
    assert!(err.contains(r#""vol-1" has no property "owner""#), "{err}");
    let err = fails(&prop(&[&["unset"][..], &vol, &["--key", "owner"]].concat()));
    assert!(err.contains(r#""vol-1" has no property "owner""#), "{err}");
    let out = list();
    assert!(!out.contains("owner") && out.contains("cinder:id"), "{out}");
    check_clean(p);

    // Properties follow a rename, and belong to one volume.
    ok(&[
        "rename", "--path", p, "--volume", "vol-1", "--name", "vol-9",
    ]);
    let out = ok(&prop(&[
        "get",
        "--path",
        p,
        "--volume",
        "vol-9",
        "--key",
        "cinder:id",
    ]));
    assert_eq!(out, "a1 b2\n");
    ok(&["clone", "--path", p, "--volume", "vol-9", "--name", "clone"]);
    let out = ok(&prop(&["list", "--path", p, "--volume", "clone"]));
    assert_eq!(out.lines().count(), 1, "{out}");

    // Bad input, refused before anything changes.
    let vol = ["--path", p, "--volume", "vol-9"];
    for (args, why) in [
        (
            &["--key", "k", "--value", "0g", "--hex"][..],
            "not a hex digit",
        ),
        (
            &["--key", "k", "--value", "abc", "--hex"],
            "odd number of digits",
        ),
        (&["--key", "", "--value", "x"], "1 to 255 bytes"),
        (
            &["--key", "k", "--value", &"x".repeat(5000)],
            "does not fit",
        ),
    ] {
        let err = fails(&prop(&[&["set"][..], &vol, args].concat()));
        assert!(err.contains(why), "{args:?}: {err}");
    }
    for verb in ["list", "get", "unset", "set"] {
        let mut args = vec![verb, "--path", p, "--volume", "nope"];
        if verb != "list" {
            args.extend(["--key", "k"]);
        }
        if verb == "set" {
            args.extend(["--value", "v"]);
        }
        let err = fails(&prop(&args));
        assert!(err.contains(r#"no volume named "nope""#), "{verb}: {err}");
    }
    let out = ok(&prop(&["list", "--path", p, "--volume", "vol-9"]));
    assert_eq!(out.lines().count(), 5, "{out}");
    check_clean(p);
}

#[test]
fn the_new_verbs_explain_themselves() {
    for (verb, needles) in [
        (
            &["revert"][..],
            &["--volume <NAME>", "--snapshot <NAME>", "resized"][..],
        ),
        (
            &["resize"],
            &["--size <SIZE>", "never shrink", "K, M, G, T"],
        ),
        (&["rename"], &["--name <NAME>", "lineage"]),
        (&["read-only"], &["--off", "Snapshots are always read-only"]),
        (&["property"], &["set", "get", "unset", "list"]),
        (&["property", "get"], &["--key <KEY>", "hex:", "--hex"]),
        (&["property", "set"], &["--value <VALUE>", "--hex"]),
    ] {
        let mut args = verb.to_vec();
        args.push("--help");
        let out = ok(&args);
        for n in needles {
            assert!(out.contains(n), "{verb:?} --help lacks {n:?}:\n{out}");
        }
    }
    let out = ok(&["--help"]);
    for verb in ["revert", "resize", "rename", "read-only", "property"] {
        assert!(out.contains(verb), "lvol --help lacks {verb}:\n{out}");
    }
}

#[test]
fn a_store_grows_with_its_file_and_refuses_a_truncated_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = new_store(&dir);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(512 << 20).expect("grow the file");
    let out = ok(&["grow", "--path", &path]);
    assert!(out.contains("has 512 clusters (was 256)"), "{out}");
    check_clean(&path);
    file.set_len(300 << 20).expect("cut the file short");
    let (code, out, _) = lvol(&["check", "--path", &path]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("PROBLEM: ") && out.contains("truncated"),
        "{out}"
    );
}
