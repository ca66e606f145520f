//! Errors of the engine.

use std::io;

/// What can go wrong when starting or running the engine.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum EngineError {
    /// io_uring is disabled on this host (kernel.io_uring_disabled = {0}); Basalt needs it
    UringDisabled(u32),
    /// cannot create an io_uring ({0}); a seccomp filter or container policy may forbid it
    UringUnavailable(String),
    /// this kernel lacks io_uring features Basalt needs: {missing:?} (Linux 6.1 or newer is required)
    KernelTooOld {
        /// Human-readable names of the missing features or opcodes.
        missing: Vec<&'static str>,
    },
    /// could not create an io_uring with {entries} entries
    RingSetup {
        /// Submission queue size asked for.
        entries: u32,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// could not pin reactor {reactor} to cpu {cpu}
    Pin {
        /// Reactor index.
        reactor: usize,
        /// The cpu asked for.
        cpu: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// could not map a buffer arena of {bytes} bytes
    ArenaMap {
        /// Size of the arena.
        bytes: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// could not register buffers with io_uring: each reactor pins 8 KiB x small_count + 128 KiB x large_count; raise `ulimit -l` (RLIMIT_MEMLOCK) or lower engine.buffers
    RegisterBuffers(#[source] io::Error),
    /// could not register the fixed-file table with io_uring
    RegisterFiles(#[source] io::Error),
    /// could not create the wake-up eventfd
    EventFd(#[source] io::Error),
    /// could not start reactor thread {0}
    Spawn(usize, #[source] io::Error),
    /// invalid engine configuration: {0}
    Config(&'static str),
    /// the fixed-file table of this reactor is full ({0} slots)
    FixedFilesFull(u32),
    /// reactor {0} has stopped
    Stopped(usize),
    /// the task sent to reactor {0} panicked or was cancelled before it finished
    TaskLost(usize),
}
