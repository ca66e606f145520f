//! basalt-bench: a load generator in the manner of SPDK's bdevperf, running on Basalt's own
//! engine.
//!
//! A [`Job`] (pattern, block size, queue depth, cores, time or size, verify) runs against a
//! [`target::Target`]: one reactor per core, `qd` workers per reactor each keeping one I/O in
//! flight. Results come back as a [`Report`]: IOPS, MiB/s, latency percentiles from an HDR
//! histogram, and CPU time per I/O, as a table or JSON. Targets are block devices of this
//! process or remote ones reached over NVMe/TCP ([`nvmf`]) or iSCSI ([`iscsi`]).

#![deny(missing_docs)]

pub mod cpu;
pub mod iscsi;
pub mod job;
pub mod lvol;
pub mod nvmf;
pub mod report;
pub mod run;
pub mod target;
#[cfg(test)]
mod testutil;
pub mod verify;

pub use job::{Job, Pattern};
pub use report::Report;
pub use run::{RunError, run};
pub use target::{Target, TargetSpec};
