//! The `basalt` daemon as a user runs it.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::process::Command;
use std::time::Duration;

use basalt_tests::{Daemon, bin, cpu_time};
use rustix::process::Signal;

#[test]
fn basalt_up_creates_its_data_dir_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for round in 0..2 {
        let mut cmd = Command::new(bin("basalt"));
        cmd.args(["up", "--pool-size", "64M", "--no-pin", "--data-dir"])
            .arg(&data);
        let mut d = Daemon::spawn(cmd);
        d.wait_for("block device ready", Duration::from_secs(30));
        // The control plane found this machine's node and reported its pool.
        d.wait_for("node up", Duration::from_secs(30));
        let (code, log) = d.stop(if round == 0 {
            Signal::TERM
        } else {
            Signal::INT
        });
        assert_eq!(code, Some(0), "clean exit; log:\n{}", log.join("\n"));
        for needle in ["control plane stopped", "datapath stopped"] {
            assert!(
                log.iter().any(|l| l.contains(needle)),
                "{needle}: {}",
                log.join("\n")
            );
        }
    }
    let pool = std::fs::metadata(data.join("pool.img")).expect("pool file");
    assert_eq!(pool.len(), 64 << 20);
    let conf = std::fs::read_to_string(data.join("datapath.toml")).expect("config written");
    assert!(conf.contains("module = \"uring\""), "{conf}");
    let control = std::fs::read_to_string(data.join("control.toml")).expect("control config");
    assert!(control.contains("[[node]]"), "{control}");
    assert!(data.join("basalt.db").exists());
}

#[test]
fn an_idle_datapath_with_two_reactors_sleeps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("pool.img");
    std::fs::File::create(&img)
        .expect("create")
        .set_len(64 << 20)
        .expect("size");
    let conf = dir.path().join("dp.toml");
    std::fs::write(
        &conf,
        format!(
            "[engine]\ncores = 2\npin = false\n[[bdev]]\nmodule = \"uring\"\nname = \"p\"\npath = \"{}\"\n",
            img.display()
        ),
    )
    .expect("write config");
    let mut cmd = Command::new(bin("basalt"));
    cmd.args(["datapath", "--config"]).arg(&conf);
    let mut d = Daemon::spawn(cmd);
    d.wait_for("block device ready", Duration::from_secs(30));
    let window = Duration::from_secs(10);
    let before = cpu_time(d.pid());
    std::thread::sleep(window);
    let used = cpu_time(d.pid()) - before;
    let share = used.as_secs_f64() / window.as_secs_f64();
    eprintln!(
        "idle datapath (2 reactors): {used:?} CPU over {window:?} = {:.3}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.01,
        "idle datapath used {:.2}% of a core",
        share * 100.0
    );
    let (code, _) = d.stop(Signal::TERM);
    assert_eq!(code, Some(0));
}

#[test]
fn configuration_mistakes_are_named_and_exit_nonzero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[engine]\ncores = 2\ncpu = [1]\n", "unknown field `cpu`"),
        (
            "[[bdev]]\nmodule = \"uring\"\nname = \"p\"\npath = \"/nonexistent/x.img\"\n",
            "/nonexistent/x.img",
        ),
        (
            "[[bdev]]\nmodule = \"malloc\"\nname = \"m\"\nsize = \"1000\"\n",
            "not a multiple",
        ),
        (
            "[[bdev]]\nmodule = \"delay\"\nname = \"d\"\nbase = \"nothing\"\n",
            "nothing",
        ),
        ("[engine\n", "TOML"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let conf = dir.path().join(format!("{i}.toml"));
        std::fs::write(&conf, text).expect("write");
        let out = Command::new(bin("basalt"))
            .args(["datapath", "--no-pin", "--config"])
            .arg(&conf)
            .env("NO_COLOR", "1")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {stderr}");
        assert!(
            stderr.contains(needle),
            "case {i}: expected {needle:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "case {i}: {stderr}");
    }
}

#[test]
fn help_explains_every_subcommand() {
    for args in [
        &["--help"][..],
        &["up", "--help"],
        &["datapath", "--help"],
        &["control", "--help"],
        &["admin", "--help"],
        &["lvol", "--help"],
        &["identity", "--help"],
        &["identity", "user", "create", "--help"],
        &["identity", "role", "add", "--help"],
    ] {
        let out = Command::new(bin("basalt"))
            .args(args)
            .output()
            .expect("runs");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: basalt"), "{text}");
    }
    let out = Command::new(bin("basalt"))
        .args(["datapath", "--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--cores",
        "--cpus",
        "--no-pin",
        "--busy-poll",
        "--log",
    ] {
        assert!(text.contains(flag), "{flag} missing from datapath --help");
    }
    let out = Command::new(bin("basalt"))
        .args(["--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["up", "datapath", "control", "lvol", "admin"] {
        assert!(text.contains(sub), "{sub} missing from basalt --help");
    }
}
