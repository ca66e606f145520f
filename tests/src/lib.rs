//! Helpers for the end-to-end tests in `tests/tests/`: build and find the workspace's binaries,
//! run a daemon and watch its log, read a process's CPU time.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Builds (if needed) and returns the path of a workspace binary, in the same profile as the
/// running test.
///
/// # Panics
/// When the build fails.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // build/<profile>/deps/<test> -> build/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // From the workspace root, `--bin` finds the binary in whichever member defines it.
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd.args(["build", "--quiet", "--bin", name]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// Runs workspace binary `name` with `args` (and `NO_COLOR`) to completion; returns its exit
/// code, stdout and stderr.
///
/// # Panics
/// When it cannot be built or started.
pub fn run(name: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin(name))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running daemon whose stderr is captured line by line.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Every line seen so far.
    pub log: Vec<String>,
}

impl Daemon {
    /// Starts `cmd` with stderr captured.
    ///
    /// # Panics
    /// When the command cannot be spawned.
    pub fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.env("NO_COLOR", "1").env_remove("RUST_LOG");
        let mut child = cmd.spawn().expect("daemon starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child: Some(child),
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`.
    ///
    /// # Panics
    /// When it does not appear within `limit` or the daemon exits first.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {limit:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and waits for the exit; returns the exit code and the rest of the log.
    ///
    /// # Panics
    /// When the daemon does not exit within 30 s.
    pub fn stop(&mut self, signal: rustix::process::Signal) -> (Option<i32>, Vec<String>) {
        let mut child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("nonzero pid");
        let _ = rustix::process::kill_process(pid, signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon ignored {signal:?} for 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        (status.code(), self.log.clone())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// User plus system CPU time of process `pid`, from `/proc/<pid>/stat`.
///
/// # Panics
/// When the file cannot be read or parsed.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process alive");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}
pub mod cloud;
pub mod http;
pub mod iscsi;
pub mod nbd;
