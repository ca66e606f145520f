//! The volume store's crash loop: `kill -9` a verifying writer (`lvol-crash write`) at a
//! random moment, then reopen, check and read everything back (`lvol-crash verify`). No write
//! completed before a completed flush, and no completed FUA write, may be lost; nothing may be
//! corrupt; the checker must find nothing.
//!
//! `BASALT_CRASH_ITERATIONS` (default 6) sets the kills, `BASALT_CRASH_SEED` the seed (default:
//! from the clock, printed), `BASALT_CRASH_CLUSTER` the store's cluster size (default 64K),
//! `BASALT_CRASH_FUA_PERCENT` the share of FUA writes (default 5).
//! A failing iteration leaves the store file, journal and logs in `/tmp/lvol-crash-fail-*`.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

const VOLUME_MIB: u64 = 64;
/// Per-iteration counts of `verify` summed over the run.
const SUMMED: [&str; 3] = ["blocks", "durable_blocks", "snapshot_blocks"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

/// splitmix64, for the kill delays and the writers' seeds.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Run {
    exe: PathBuf,
    dir: tempfile::TempDir,
    fua_percent: String,
}

impl Run {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn writer(&self, seed: u64, args: &[&str]) -> (Child, String) {
        let log = self.path(&format!("write-{seed}.log"));
        let (file, journal) = (self.path("store"), self.path("journal"));
        let child = Command::new(&self.exe)
            .args(["write", "--file", &file, "--journal", &journal])
            .args([
                "--seed",
                &seed.to_string(),
                "--size",
                &format!("{VOLUME_MIB}M"),
                "--fua-percent",
                &self.fua_percent,
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("writer starts");
        (child, log)
    }

    /// Runs `verify` against `journal`; returns its exit code, JSON line and stderr.
    fn verify(&self, journal: &str) -> (Option<i32>, serde_json::Value, String) {
        let file = self.path("store");
        let out = Command::new(&self.exe)
            .args(["verify", "--file", &file, "--journal", journal])
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = (stdout.lines().last())
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no JSON from verify: {stdout}{stderr}"));
        (out.status.code(), json, stderr)
    }

    /// Copies the store, journal and logs where they outlive the test.
    fn keep(&self, iteration: u64) -> PathBuf {
        let dest = format!("/tmp/lvol-crash-fail-{}-{iteration}", std::process::id());
        std::fs::create_dir_all(&dest).expect("failure directory");
        for e in std::fs::read_dir(self.dir.path()).expect("dir").flatten() {
            std::fs::copy(e.path(), Path::new(&dest).join(e.file_name())).expect("copy");
        }
        dest.into()
    }
}

/// Fails if the writer exited (it runs until killed).
fn alive(child: &mut Child, log: &str) {
    if let Some(status) = child.try_wait().expect("wait") {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("the writer exited on its own ({status}):\n{log}");
    }
}

fn kill9(mut child: Child, log: &str) {
    alive(&mut child, log);
    let pid = Pid::from_raw(child.id() as i32).expect("nonzero pid");
    kill_process(pid, Signal::KILL).expect("kill");
    child.wait().expect("reaped");
}

fn field(v: &serde_json::Value, name: &str) -> f64 {
    v[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} missing in {v}"))
}

#[test]
fn kill_9_loses_no_flushed_write() {
    let iterations = env_or("BASALT_CRASH_ITERATIONS", 6);
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let seed = env_or(
        "BASALT_CRASH_SEED",
        clock.expect("clock").as_nanos() as u64 % 1_000_000,
    );
    let cluster = std::env::var("BASALT_CRASH_CLUSTER").unwrap_or_else(|_| "64K".into());
    let fua = env_or("BASALT_CRASH_FUA_PERCENT", 5);
    println!(
        "lvol crash loop: {iterations} iterations, seed {seed}, cluster {cluster}, {fua}% FUA"
    );
    let dir = tempfile::Builder::new()
        .prefix("lvol-crash-")
        .tempdir_in("/tmp");
    let run = Run {
        exe: basalt_tests::bin("lvol-crash"),
        dir: dir.expect("temp dir"),
        fua_percent: fua.to_string(),
    };
    // The live volume and up to five snapshots may each name two clusters (own and backing)
    // per volume cluster, plus metadata: room for all of it. The file is sparse.
    let store = File::create(run.path("store")).expect("store file");
    store.set_len((16 * VOLUME_MIB + 64) << 20).expect("size");

    // Create the store and run until the first generation is flushed.
    let (mut w, log) = run.writer(seed, &["--create", "--cluster", &cluster]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(run.path("journal")).is_ok_and(|j| j.contains("flushed")) {
        assert!(Instant::now() < deadline, "no generation flushed in 60 s");
        alive(&mut w, &log);
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(w, &log);

    let (mut opens, mut sums, mut flushed, mut last) = (Vec::new(), BTreeMap::new(), 0.0, 0.0);
    for i in 1..=iterations {
        let wseed = mix(seed ^ i.rotate_left(40));
        let delay = Duration::from_millis(150 + mix(wseed) % 751);
        let (w, log) = run.writer(wseed, &[]);
        std::thread::sleep(delay);
        kill9(w, &log);
        let (code, v, stderr) = run.verify(&run.path("journal"));
        let bad = ["lost", "corrupt", "check_problems"].map(|k| field(&v, k));
        if code != Some(0) || bad != [0.0; 3] {
            // Exit 0 means clean; the counts are checked too, in case the two disagree.
            panic!(
                "iteration {i} (test seed {seed}, writer seed {wseed}, killed after {delay:?}): \
                 verify exited {code:?}: {v}\n{stderr}\nfiles kept in {}",
                run.keep(i).display()
            );
        }
        for k in SUMMED {
            *sums.entry(k).or_insert(0.0) += field(&v, k);
        }
        let new = field(&v, "generations_flushed") - flushed;
        flushed += new;
        opens.push(field(&v, "open_ms"));
        last = field(&v, "max_generation");
        println!(
            "iteration {i}: writer seed {wseed}, killed after {delay:?}: open {:.1} ms, \
             +{new} generations flushed ({flushed} in all), {} snapshots, lost 0, corrupt 0, \
             check problems 0, {} of {} clusters used",
            field(&v, "open_ms"),
            field(&v, "snapshots"),
            field(&v, "used_clusters"),
            field(&v, "total_clusters"),
        );
    }
    opens.sort_by(f64::total_cmp);
    let median = opens.get(opens.len() / 2).copied().unwrap_or(0.0);
    let max = opens.last().copied().unwrap_or(0.0);
    println!(
        "total: {iterations} kills, {flushed} generations flushed, {sums:?}, open max \
         {max:.1} ms, median {median:.1} ms; lost 0, corrupt 0, check problems 0"
    );
    assert!(
        flushed > 0.0,
        "no generation was flushed: nothing was checked"
    );
    assert!(
        sums["durable_blocks"] > 0.0,
        "no block had a durable write to check"
    );

    // The checker itself: a flushed write the store never saw must count as lost.
    let mut j = std::fs::read_to_string(run.path("journal")).expect("journal");
    j.truncate(j.rfind('\n').map_or(0, |n| n + 1));
    let g = last as u64 + 1;
    j.push_str(&format!("w {g} 0\nflushed {g}\n"));
    std::fs::write(run.path("journal-forged"), j).expect("forged journal");
    let (code, v, _) = run.verify(&run.path("journal-forged"));
    assert_eq!((code, field(&v, "lost")), (Some(1), 1.0), "{v}");
}
