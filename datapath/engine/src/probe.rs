//! Kernel feature probe.
//!
//! Basalt's baseline is what Linux 6.1 offers: a single-issuer ring with deferred task running,
//! extended wait arguments (timeouts on the wait itself), registered buffers and files, and the
//! opcodes the data path and the network targets issue. [`probe`] asks the running kernel and
//! [`Probe::check`] refuses, naming every missing piece, when the kernel falls short.

use io_uring::{IoUring, opcode};

use crate::error::EngineError;

/// Opcodes the engine and its users issue (block I/O today; the socket opcodes are for the
/// network targets), with the names printed when one is missing.
const REQUIRED_OPCODES: &[(u8, &str)] = &[
    (opcode::Nop::CODE, "NOP"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::ReadFixed::CODE, "READ_FIXED"),
    (opcode::WriteFixed::CODE, "WRITE_FIXED"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Fallocate::CODE, "FALLOCATE"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::MsgRingData::CODE, "MSG_RING"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::Close::CODE, "CLOSE"),
];

/// What the kernel offers, as far as Basalt cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `kernel.io_uring_disabled` (0 = enabled for everyone).
    pub disabled: u32,
    /// Whether a ring with `SINGLE_ISSUER | DEFER_TASKRUN` could be created.
    pub defer_taskrun: bool,
    /// `IORING_FEAT_EXT_ARG`: a timeout can be passed to the wait.
    pub ext_arg: bool,
    /// `IORING_FEAT_NODROP`: completions are never dropped on CQ overflow.
    pub nodrop: bool,
    /// `IORING_FEAT_SUBMIT_STABLE`: submitted SQE data need not outlive the submit call.
    pub submit_stable: bool,
    /// `IORING_SETUP_NO_SQARRAY` (6.6) is accepted.
    pub no_sqarray: bool,
    /// Required opcodes the kernel does not know.
    pub missing_opcodes: Vec<&'static str>,
    /// Why no ring at all could be created (errno text), if so.
    pub setup_error: Option<String>,
}

impl Probe {
    /// Everything missing from the baseline, as names for an error message.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.defer_taskrun {
            missing.push("IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN");
        }
        if !self.ext_arg {
            missing.push("IORING_FEAT_EXT_ARG");
        }
        if !self.nodrop {
            missing.push("IORING_FEAT_NODROP");
        }
        if !self.submit_stable {
            missing.push("IORING_FEAT_SUBMIT_STABLE");
        }
        missing.extend(self.missing_opcodes.iter().copied());
        missing
    }

    /// Refuses a kernel below the baseline.
    ///
    /// # Errors
    /// [`EngineError::UringDisabled`] when the sysctl forbids io_uring,
    /// [`EngineError::KernelTooOld`] listing every missing feature otherwise.
    pub fn check(&self) -> Result<(), EngineError> {
        // 1 restricts io_uring to a group; only refuse if this process was in fact refused.
        if self.disabled == 2 || (self.disabled == 1 && self.setup_error.is_some()) {
            return Err(EngineError::UringDisabled(self.disabled));
        }
        if let Some(e) = &self.setup_error {
            return Err(EngineError::UringUnavailable(e.clone()));
        }
        let missing = self.missing();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(EngineError::KernelTooOld { missing })
        }
    }
}

/// Asks the running kernel what it supports.
pub fn probe() -> Probe {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut out = Probe {
        disabled,
        ..Probe::default()
    };
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8);
    let ring = match ring {
        Ok(ring) => {
            out.defer_taskrun = true;
            ring
        }
        Err(_) => match IoUring::new(8) {
            Ok(ring) => ring,
            Err(e) => {
                out.setup_error = Some(e.to_string());
                return out;
            }
        },
    };
    let params = ring.params();
    out.ext_arg = params.is_feature_ext_arg();
    out.nodrop = params.is_feature_nodrop();
    out.submit_stable = params.is_feature_submit_stable();
    let mut probe = io_uring::Probe::new();
    if ring.submitter().register_probe(&mut probe).is_ok() {
        out.missing_opcodes = REQUIRED_OPCODES
            .iter()
            .filter(|(code, _)| !probe.is_supported(*code))
            .map(|(_, name)| *name)
            .collect();
    } else {
        out.missing_opcodes = vec!["IORING_REGISTER_PROBE"];
    }
    out.no_sqarray = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_no_sqarray()
        .build(8)
        .is_ok();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_meets_the_baseline() {
        let p = probe();
        assert!(
            p.check().is_ok(),
            "kernel below baseline: {:?}",
            p.missing()
        );
    }

    #[test]
    fn missing_features_are_named() {
        let p = Probe {
            defer_taskrun: false,
            ext_arg: true,
            nodrop: true,
            submit_stable: true,
            missing_opcodes: vec!["MSG_RING"],
            ..Probe::default()
        };
        match p.check() {
            Err(EngineError::KernelTooOld { missing }) => {
                assert_eq!(
                    missing,
                    vec!["IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN", "MSG_RING"]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let off = Probe {
            disabled: 2,
            ..p.clone()
        };
        assert!(matches!(off.check(), Err(EngineError::UringDisabled(2))));
        let blocked = Probe {
            setup_error: Some("Operation not permitted (os error 1)".into()),
            ..Probe::default()
        };
        assert!(matches!(
            blocked.check(),
            Err(EngineError::UringUnavailable(_))
        ));
        let group_only = Probe {
            disabled: 1,
            ..blocked
        };
        assert!(matches!(
            group_only.check(),
            Err(EngineError::UringDisabled(1))
        ));
        let group_member = Probe { disabled: 1, ..p };
        assert!(matches!(
            group_member.check(),
            Err(EngineError::KernelTooOld { .. })
        ));
    }
}
