//! Results: a human table and JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::job::Job;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest seen.
    pub max: f64,
}

/// One direction (or both) of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OpStats {
    /// Completed I/Os.
    pub ios: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// I/Os per second.
    pub iops: f64,
    /// Mebibytes (2^20 bytes) per second.
    pub mib_s: f64,
    /// Completion latency, from submission to the worker seeing the result, in µs.
    pub latency_us: Latency,
}

impl OpStats {
    /// Summarises a histogram of nanoseconds over `secs` seconds.
    pub fn new(ios: u64, bytes: u64, h: &Histogram<u64>, secs: f64) -> OpStats {
        let us = |ns: u64| ns as f64 / 1000.0;
        let latency_us = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                mean: h.mean() / 1000.0,
                p50: us(h.value_at_quantile(0.50)),
                p90: us(h.value_at_quantile(0.90)),
                p99: us(h.value_at_quantile(0.99)),
                p99_9: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
            }
        };
        OpStats {
            ios,
            bytes,
            iops: ios as f64 / secs,
            mib_s: bytes as f64 / secs / f64::from(1u32 << 20),
            latency_us,
        }
    }
}

/// Where and what went wrong.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorSample {
    /// Byte offset on the target.
    pub offset: u64,
    /// The failure.
    pub what: String,
}

/// Outcome of verify mode.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Reads during the run that were checked (of units this run had written).
    pub inline_checks: u64,
    /// Of those, how many found wrong data.
    pub inline_mismatches: u64,
    /// Units read back and checked after the run.
    pub read_back_units: u64,
    /// Read-back units with wrong data or a failed read.
    pub read_back_failures: u64,
    /// The first few failures.
    pub samples: Vec<ErrorSample>,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.inline_mismatches == 0 && self.read_back_failures == 0
    }
}

/// The whole result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// What was measured.
    pub target: String,
    /// How.
    pub job: Job,
    /// Length of the timed phase.
    pub elapsed_s: f64,
    /// Reads.
    pub read: OpStats,
    /// Writes.
    pub write: OpStats,
    /// Both.
    pub total: OpStats,
    /// User CPU of the whole process during the timed phase.
    pub cpu_user_s: f64,
    /// System CPU of the whole process during the timed phase.
    pub cpu_system_s: f64,
    /// (user + system) / completed I/Os, in µs.
    pub cpu_us_per_io: f64,
    /// I/Os that failed.
    pub io_errors: u64,
    /// The first few failures.
    pub error_samples: Vec<ErrorSample>,
    /// Verify outcome, in verify mode.
    pub verify: Option<VerifyReport>,
    /// Snapshots taken during the run (`lvol:` targets with `snapshot-every`).
    pub snapshots: Option<crate::lvol::SnapshotStats>,
    /// What the volume store did (`lvol:` targets).
    pub lvol: Option<crate::lvol::LvolRunStats>,
}

impl Report {
    /// Whether the run had no I/O error and no verify failure.
    pub fn ok(&self) -> bool {
        self.io_errors == 0 && self.verify.as_ref().is_none_or(VerifyReport::passed)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let j = &self.job;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "target {}  rw={} bs={} qd={} cores={}{}  {:.2}s",
            self.target,
            serde_json::to_value(j.rw)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            j.bs,
            j.qd,
            j.cpus.len(),
            if j.rw == crate::job::Pattern::Randrw {
                format!(" rwmixread={}", j.rwmixread)
            } else {
                String::new()
            },
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "{:<6} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "IOPS", "MiB/s", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, s: &OpStats| {
            let l = &s.latency_us;
            let _ = writeln!(
                out,
                "{:<6} {:>12.0} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                name, s.iops, s.mib_s, l.mean, l.p50, l.p90, l.p99, l.p99_9, l.max
            );
        };
        if self.read.ios > 0 {
            row("read", &self.read);
        }
        if self.write.ios > 0 {
            row("write", &self.write);
        }
        if self.read.ios > 0 && self.write.ios > 0 {
            row("total", &self.total);
        }
        let _ = writeln!(
            out,
            "latency in µs; CPU {:.2} µs per I/O (user {:.2}s, system {:.2}s)",
            self.cpu_us_per_io, self.cpu_user_s, self.cpu_system_s
        );
        if self.io_errors > 0 {
            let _ = writeln!(out, "I/O ERRORS: {}", self.io_errors);
            for e in &self.error_samples {
                let _ = writeln!(out, "  at byte {}: {}", e.offset, e.what);
            }
        }
        if let Some(l) = &self.lvol {
            let _ = writeln!(
                out,
                "volume store: {} slow-path I/Os, {} clusters allocated, {} subclusters copied, \
                 {} filled, {} commits",
                l.slow_ios, l.clusters_allocated, l.cow_subclusters, l.fills, l.commits
            );
        }
        if let Some(s) = &self.snapshots {
            let _ = writeln!(
                out,
                "snapshots under load: {} taken, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                s.count, s.p50_ms, s.p99_ms, s.max_ms
            );
        }
        if let Some(v) = &self.verify {
            let _ = writeln!(
                out,
                "verify: {} during the run ({} bad), {} units read back ({} bad): {}",
                v.inline_checks,
                v.inline_mismatches,
                v.read_back_units,
                v.read_back_failures,
                if v.passed() { "PASSED" } else { "FAILED" }
            );
            for e in &v.samples {
                let _ = writeln!(out, "  at byte {}: {}", e.offset, e.what);
            }
        }
        out
    }
}
