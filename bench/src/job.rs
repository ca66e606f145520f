//! A job: what to run against a target, the same knobs fio and bdevperf use.

use std::time::Duration;

/// The access pattern (`--rw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Uniformly random reads.
    Randread,
    /// Uniformly random writes.
    Randwrite,
    /// Uniformly random reads and writes, `--rwmixread` percent reads.
    Randrw,
}

impl Pattern {
    /// Whether offsets are drawn at random.
    pub fn random(self) -> bool {
        matches!(
            self,
            Pattern::Randread | Pattern::Randwrite | Pattern::Randrw
        )
    }

    /// Whether the pattern writes.
    pub fn writes(self) -> bool {
        matches!(self, Pattern::Write | Pattern::Randwrite | Pattern::Randrw)
    }
}

/// Everything a run needs besides the target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Job {
    /// Access pattern.
    pub rw: Pattern,
    /// Percentage of reads in `randrw`.
    pub rwmixread: u8,
    /// Bytes per I/O.
    pub bs: u64,
    /// I/Os in flight per core.
    pub qd: usize,
    /// CPUs to run on, one reactor each.
    pub cpus: Vec<usize>,
    /// Pin each reactor to its CPU.
    pub pin: bool,
    /// Reactors spin instead of sleeping when idle.
    pub busy_poll: bool,
    /// Completions a reactor handles per loop pass (the engine's `completion_batch`).
    pub completion_batch: usize,
    /// Stop after this long.
    #[serde(with = "secs")]
    pub time: Option<Duration>,
    /// Stop after this many bytes (all cores together). Without `time` or `size`: one pass
    /// over the span.
    pub size: Option<u64>,
    /// First byte of the region the job touches.
    pub offset: u64,
    /// Bytes of the region (default: from `offset` to the end of the target). Split evenly
    /// between cores.
    pub span: Option<u64>,
    /// Write the verify pattern, check every read of a unit this run wrote, and read back
    /// everything written at the end.
    pub verify: bool,
    /// Keep going after an I/O error (default: stop the run at the first one).
    pub continue_on_error: bool,
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// The region one core works on, in units of `bs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Byte offset of the first unit.
    pub start: u64,
    /// Number of `bs` units.
    pub units: u64,
}

impl Job {
    /// Checks the job against a target and splits its region between the cores.
    ///
    /// # Errors
    /// A message naming the first problem.
    pub fn plan(&self, capacity: u64, block_size: u32) -> Result<Vec<Region>, String> {
        let bsz = u64::from(block_size);
        if self.bs == 0 || !self.bs.is_multiple_of(bsz) {
            return Err(format!(
                "--bs {} is not a multiple of the target's block size {block_size}",
                self.bs
            ));
        }
        if self.bs > 16 << 20 {
            return Err("--bs is limited to 16M".into());
        }
        if self.qd == 0 || self.qd > 4096 {
            return Err("--qd must be between 1 and 4096".into());
        }
        if self.cpus.is_empty() {
            return Err("at least one core is needed".into());
        }
        if self.rwmixread > 100 {
            return Err("--rwmixread is a percentage (0..=100)".into());
        }
        if self.verify && !self.rw.writes() {
            return Err(
                "--verify checks data this run wrote; use write, randwrite or randrw".into(),
            );
        }
        if !self.offset.is_multiple_of(bsz) {
            return Err(format!("--offset must be a multiple of {block_size}"));
        }
        if self.offset >= capacity {
            return Err(format!(
                "--offset {} is beyond the target ({capacity} bytes)",
                self.offset
            ));
        }
        let span = self.span.unwrap_or(capacity - self.offset);
        if span > capacity - self.offset {
            return Err(format!(
                "--offset + --span end beyond the target ({capacity} bytes)"
            ));
        }
        let cores = self.cpus.len() as u64;
        let units_per_core = span / self.bs / cores;
        if units_per_core == 0 {
            return Err(format!(
                "the region ({span} bytes) holds fewer than one {}-byte I/O per core",
                self.bs
            ));
        }
        Ok((0..cores)
            .map(|i| Region {
                start: self.offset + i * units_per_core * self.bs,
                units: units_per_core,
            })
            .collect())
    }

    /// I/Os each core performs before stopping, when the job is bounded by size (or by one
    /// pass); `None` when bounded by time only.
    pub fn ios_per_core(&self, region: Region) -> Option<u64> {
        let cores = self.cpus.len() as u64;
        match (self.size, self.time) {
            (Some(size), _) => Some((size / self.bs / cores).max(1)),
            (None, Some(_)) => None,
            (None, None) => Some(region.units),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn job() -> Job {
        Job {
            rw: Pattern::Randread,
            rwmixread: 50,
            bs: 4096,
            qd: 32,
            cpus: vec![0, 1],
            pin: false,
            busy_poll: false,
            completion_batch: 4,
            time: None,
            size: None,
            offset: 0,
            span: None,
            verify: false,
            continue_on_error: false,
        }
    }

    #[test]
    fn regions_split_evenly_and_stay_inside() {
        let r = job().plan(1 << 20, 512).expect("valid");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Region {
                start: 0,
                units: 128
            }
        );
        assert_eq!(
            r[1],
            Region {
                start: 128 * 4096,
                units: 128
            }
        );
        let j = Job {
            offset: 4096,
            span: Some(8192 * 2),
            ..job()
        };
        let r = j.plan(1 << 20, 512).expect("valid");
        assert_eq!(
            r[1],
            Region {
                start: 4096 + 8192,
                units: 2
            }
        );
        assert_eq!(j.ios_per_core(r[0]), Some(2));
    }

    #[test]
    fn bad_jobs_are_explained() {
        let e = |j: Job| j.plan(1 << 20, 4096).expect_err("refused");
        assert!(e(Job { bs: 1000, ..job() }).contains("multiple"));
        assert!(e(Job { qd: 0, ..job() }).contains("--qd"));
        assert!(
            e(Job {
                verify: true,
                ..job()
            })
            .contains("--verify")
        );
        assert!(
            e(Job {
                offset: 1 << 20,
                ..job()
            })
            .contains("beyond")
        );
        assert!(
            e(Job {
                span: Some(2 << 20),
                ..job()
            })
            .contains("beyond")
        );
        assert!(
            e(Job {
                span: Some(4096),
                ..job()
            })
            .contains("fewer than one")
        );
        assert!(
            e(Job {
                rwmixread: 101,
                ..job()
            })
            .contains("percentage")
        );
    }
}
