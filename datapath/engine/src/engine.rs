//! Starting, addressing and stopping the reactors.

use std::future::Future;
use std::sync::Arc;
use std::thread;

use crate::error::EngineError;
use crate::oneshot::{self, Closed};
use crate::reactor::{Reactor, ReactorConfig, ReactorStats, Shared};

/// Settings of the whole engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// One reactor per entry, pinned to that CPU (when `pin`).
    pub cpus: Vec<usize>,
    /// Pin each reactor thread to its CPU.
    pub pin: bool,
    /// Settings shared by every reactor.
    pub reactor: ReactorConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cpus: vec![0],
            pin: true,
            reactor: ReactorConfig::default(),
        }
    }
}

impl EngineConfig {
    /// `n` reactors on CPUs `0..n`.
    pub fn with_cores(n: usize) -> EngineConfig {
        EngineConfig {
            cpus: (0..n).collect(),
            ..EngineConfig::default()
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`EngineError::Config`] naming the first problem.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.cpus.is_empty() {
            return Err(EngineError::Config("at least one reactor is needed"));
        }
        let mut sorted = self.cpus.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.cpus.len() && self.pin {
            return Err(EngineError::Config("each pinned reactor needs its own cpu"));
        }
        if self.reactor.ring_entries == 0 || !self.reactor.ring_entries.is_power_of_two() {
            return Err(EngineError::Config("ring_entries must be a power of two"));
        }
        Ok(())
    }
}

/// A thread-safe handle to one reactor: post messages, spawn tasks on it.
#[derive(Debug, Clone)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

/// Output of a task spawned on another reactor: await it or [`oneshot::Receiver::wait`] on it.
pub type Remote<T> = oneshot::Receiver<T>;

impl ReactorHandle {
    /// Index of the reactor.
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// Counters of the reactor.
    pub fn stats(&self) -> &ReactorStats {
        &self.shared.stats
    }

    /// Runs `f` on the reactor's thread.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] if the reactor has stopped.
    pub fn send(&self, f: impl FnOnce() + Send + 'static) -> Result<(), EngineError> {
        self.shared.post(Box::new(f))
    }

    /// Builds a future on the reactor's thread with `f` and spawns it there. The future need not
    /// be `Send`; only `f` and the output cross threads.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] if the reactor has stopped.
    pub fn spawn<F, Fut>(&self, f: F) -> Result<Remote<Fut::Output>, EngineError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(move || {
            let fut = f();
            crate::task::spawn(async move { tx.send(fut.await) });
        })?;
        Ok(rx)
    }

    /// Runs a future built by `f` on the reactor and blocks the calling thread for its output.
    /// For threads outside the engine (the daemon's main thread, tests); never call it from a
    /// reactor.
    ///
    /// # Errors
    /// [`EngineError::Stopped`] if the reactor stopped before the future finished,
    /// [`EngineError::TaskLost`] if the future panicked.
    pub fn block_on<F, Fut>(&self, f: F) -> Result<Fut::Output, EngineError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        debug_assert!(
            crate::reactor::try_current().is_none(),
            "block_on called on a reactor thread"
        );
        self.spawn(f)?.wait().map_err(|Closed| {
            if self.shared.is_stopping() {
                EngineError::Stopped(self.shared.index)
            } else {
                EngineError::TaskLost(self.shared.index)
            }
        })
    }
}

/// The running reactors. Dropping the engine stops them and joins their threads.
#[derive(Debug)]
pub struct Engine {
    handles: Vec<ReactorHandle>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Engine {
    /// Probes the kernel, then starts one pinned reactor thread per configured CPU.
    ///
    /// # Errors
    /// A kernel below the baseline, a bad configuration, or a reactor that failed to start.
    pub fn start(cfg: &EngineConfig) -> Result<Engine, EngineError> {
        cfg.validate()?;
        crate::probe::probe().check()?;
        raise_memlock_limit();
        let mut engine = Engine {
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for (index, &cpu) in cfg.cpus.iter().enumerate() {
            let shared = Arc::new(Shared::new(index)?);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let thread_shared = shared.clone();
            let rcfg = cfg.reactor.clone();
            let pin = cfg.pin;
            let spawned = thread::Builder::new()
                .name(format!("basalt-r{index}"))
                .spawn(move || {
                    if pin {
                        let mut set = rustix::thread::CpuSet::new();
                        set.set(cpu);
                        if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
                            let _ = ready_tx.send(Err(EngineError::Pin {
                                reactor: index,
                                cpu,
                                source: e.into(),
                            }));
                            return;
                        }
                    }
                    match Reactor::install(thread_shared, &rcfg) {
                        Ok(reactor) => {
                            let _ = ready_tx.send(Ok(()));
                            tracing::debug!(reactor = index, cpu, "reactor running");
                            reactor.run();
                            tracing::debug!(reactor = index, "reactor stopped");
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            let thread = match spawned {
                Ok(t) => t,
                Err(e) => return Err(EngineError::Spawn(index, e)),
            };
            engine.threads.push(thread);
            match ready_rx.recv() {
                Ok(Ok(())) => engine.handles.push(ReactorHandle { shared }),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(EngineError::Stopped(index)),
            }
        }
        Ok(engine)
    }

    /// Handles to every reactor, by index.
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// Handle to reactor `index`.
    ///
    /// # Panics
    /// When `index` is out of range.
    pub fn reactor(&self, index: usize) -> &ReactorHandle {
        &self.handles[index]
    }

    /// Stops every reactor (tasks are cancelled, in-flight I/O drains) and joins the threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        for h in &self.handles {
            h.shared.request_stop();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a reactor thread panicked");
            }
        }
        debug_assert!(
            self.handles.iter().all(|h| h.shared.is_stopped()) || self.handles.is_empty()
        );
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Registered buffers are pinned memory, charged against `RLIMIT_MEMLOCK`. Raise the soft limit
/// to the hard one (what `ulimit -l` would allow), so that an unprivileged user with a generous
/// hard limit is not stopped by a small default soft limit.
fn raise_memlock_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Memlock);
    if lim.current != lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        match setrlimit(Resource::Memlock, raised) {
            Ok(()) => {
                tracing::debug!(limit = ?lim.maximum, "raised RLIMIT_MEMLOCK to its hard limit")
            }
            Err(e) => tracing::debug!(error = %e, "could not raise RLIMIT_MEMLOCK"),
        }
    }
}
