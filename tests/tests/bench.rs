//! basalt-bench as a performance engineer runs it.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use basalt_tests::run;

fn bench(args: &[&str]) -> (Option<i32>, String, String) {
    run("basalt-bench", args)
}

#[test]
fn verify_passes_on_a_file_and_reports_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .expect("create")
        .set_len(32 << 20)
        .expect("size");
    let target = format!("file:{}", img.display());
    for rw in ["randrw", "write", "randwrite"] {
        let (code, out, err) = bench(&[
            "--target", &target, "--rw", rw, "--bs", "8k", "--qd", "16", "--cores", "2",
            "--no-pin", "--time", "1s", "--verify", "--json",
        ]);
        assert_eq!(code, Some(0), "{rw}: {out}\n{err}");
        let r: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
        let v = &r["verify"];
        assert_eq!(v["inline_mismatches"], 0, "{out}");
        assert_eq!(v["read_back_failures"], 0, "{out}");
        assert!(v["read_back_units"].as_u64().expect("count") > 0, "{out}");
        assert!(r["total"]["iops"].as_f64().expect("iops") > 0.0);
        assert!(r["cpu_us_per_io"].as_f64().expect("cpu") > 0.0);
        for p in ["p50", "p90", "p99", "p99_9", "max"] {
            assert!(
                r["total"]["latency_us"][p].as_f64().expect(p) > 0.0,
                "{p}: {out}"
            );
        }
    }
}

#[test]
fn size_bounded_sequential_jobs_move_exactly_that_much() {
    let (code, out, err) = bench(&[
        "--target",
        "malloc:64M",
        "--rw",
        "write",
        "--bs",
        "128k",
        "--qd",
        "4",
        "--size",
        "32M",
        "--no-pin",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(r["write"]["bytes"], 32 << 20);
    assert_eq!(r["write"]["ios"], 256);
    assert_eq!(r["read"]["ios"], 0);
}

#[test]
fn the_table_names_every_percentile() {
    let (code, out, _) = bench(&[
        "--target", "null:1G", "--rw", "randread", "--time", "300ms", "--no-pin",
    ]);
    assert_eq!(code, Some(0));
    for col in ["IOPS", "MiB/s", "p50", "p90", "p99", "p99.9", "max", "CPU"] {
        assert!(out.contains(col), "{col} missing:\n{out}");
    }
}

#[test]
fn bad_jobs_fail_with_a_reason() {
    let cases: [(&[&str], &str); 4] = [
        (&["--target", "malloc:1M", "--bs", "1000"], "multiple"),
        (
            &["--target", "malloc:1M", "--rw", "read", "--verify"],
            "--verify",
        ),
        (&["--target", "file:/nonexistent/disk.img"], "cannot open"),
        (&["--target", "tape:0"], "unknown target"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = bench(args);
        assert_ne!(code, Some(0), "{args:?} succeeded: {out}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
