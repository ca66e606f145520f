//! The NVMe/TCP listener on the engine's reactors.
//!
//! One reactor accepts; each accepted connection (one queue pair) is handed, round robin, to a
//! reactor where it lives until it closes, so a controller's queues spread over every core. On
//! its reactor a queue is three small tasks around one [`Connection`]: a reader (socket bytes
//! into [`Connection::receive`]), a writer ([`Connection::transmit`] to the socket) and a
//! ticker (keep-alive and asynchronous events on the admin queue, controller death on every
//! queue). Admin and fabrics commands run inline; I/O commands run on a pool of worker tasks
//! (one per queue entry, started at Connect) against the namespace's channel on this reactor,
//! so a command allocates nothing beyond its buffers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use basalt_engine::{Signal, TcpStream};

use crate::conn::{Connection, Event};
use crate::ctrl::{AdminOutcome, Controller};
use crate::io::{self, NsChannel};
use crate::spec::cmd::{Cqe, Sqe, Status, StatusCode, admin};
use crate::spec::fabrics::{
    CATTR_DISABLE_SQFLOW, ConnectCmd, ConnectData, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET,
    FCTYPE_PROPERTY_SET, PropertyCmd,
};
use crate::subsystem::NvmfTarget;

/// Listens on `listener` (accepting on the first reactor) and serves `target` from every
/// reactor until the engine stops.
///
/// # Errors
/// The engine has stopped (or the target has no reactors).
pub fn serve(
    target: Arc<NvmfTarget>,
    listener: std::net::TcpListener,
) -> Result<(), basalt_engine::EngineError> {
    let reactors = target.reactors.clone();
    basalt_engine::serve_spread(reactors, listener, "NVMe/TCP", move |_, stream, _peer| {
        basalt_engine::spawn(run_queue(target.clone(), stream));
    })
}

#[derive(Debug, Default)]
struct NsCache {
    generation: u64,
    map: HashMap<u32, Rc<NsChannel>>,
}

struct QueueState {
    target: Arc<NvmfTarget>,
    conn: RefCell<Connection>,
    out: Signal,
    ctrl: RefCell<Option<Arc<Controller>>>,
    qid: Cell<u16>,
    /// The controller's reset epoch when this queue connected.
    epoch: Cell<u64>,
    /// This I/O queue's counters (for the SMART log).
    stats: RefCell<Option<Arc<crate::ctrl::QueueStats>>>,
    nss: RefCell<NsCache>,
    closing: Cell<bool>,
    local: Option<SocketAddr>,
    /// I/O workers, one per queue entry, started at Connect: commands reuse them instead of
    /// spawning a task each.
    workers: RefCell<Vec<Rc<Worker>>>,
    idle: RefCell<Vec<usize>>,
    /// Commands waiting for a worker (only if a host exceeds its queue size).
    backlog: RefCell<std::collections::VecDeque<Job>>,
}

/// One I/O command for a worker.
struct Job {
    sqe: Sqe,
    data: Vec<u8>,
    nsc: Rc<NsChannel>,
}

#[derive(Default)]
struct Worker {
    job: RefCell<Option<Job>>,
    waker: RefCell<Option<Waker>>,
}

impl Worker {
    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// A worker: waits for a job, runs it, completes it, and goes back to the idle list.
async fn worker(st: Rc<QueueState>, idx: usize, me: Rc<Worker>) {
    loop {
        let job = std::future::poll_fn(|cx| {
            if let Some(job) = me.job.borrow_mut().take() {
                return Poll::Ready(Some(job));
            }
            if st.closing.get() {
                return Poll::Ready(None);
            }
            *me.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(mut job) = job else { break };
        loop {
            st.run_job(job).await;
            // Take more work if some is queued, else go idle.
            let next = st.backlog.borrow_mut().pop_front();
            match next {
                Some(j) => job = j,
                None => break,
            }
        }
        st.idle.borrow_mut().push(idx);
    }
}

impl QueueState {
    fn kick(&self) {
        if self.conn.borrow().has_output() || self.closing.get() {
            self.out.notify();
        }
    }

    fn complete_status(&self, sqe: &Sqe, status: Status, dw0: u32) {
        self.conn.borrow_mut().complete(Cqe {
            dw0,
            cid: sqe.cid(),
            status,
            ..Default::default()
        });
    }

    fn handle_events(self: &Rc<Self>) {
        loop {
            let ev = self.conn.borrow_mut().next_event();
            match ev {
                None => break,
                Some(Event::Close) => self.closing.set(true),
                Some(Event::Reject { sqe, status }) => {
                    self.complete_status(&sqe, status.status(), 0)
                }
                Some(Event::Command { sqe, data }) => self.command(sqe, data),
            }
        }
        self.kick();
    }

    fn command(self: &Rc<Self>, sqe: Sqe, data: Vec<u8>) {
        if sqe.opcode() == admin::FABRICS {
            self.fabrics(&sqe, &data);
            self.conn.borrow_mut().recycle(data);
            return;
        }
        let Some(ctrl) = self.ctrl.borrow().clone() else {
            self.complete_status(&sqe, StatusCode::CommandSequenceError.status(), 0);
            return;
        };
        if self.qid.get() == 0 {
            let out = ctrl.admin(&self.target, &sqe, &data, self.local, Instant::now());
            self.conn.borrow_mut().recycle(data);
            match out {
                AdminOutcome::Deferred => {}
                AdminOutcome::Done {
                    status,
                    dw0,
                    dw1,
                    data,
                } => {
                    let cqe = Cqe {
                        dw0,
                        dw1,
                        cid: sqe.cid(),
                        status,
                        ..Default::default()
                    };
                    let n = data.len().min(sqe.sgl().len as usize);
                    if status.is_success() && n > 0 {
                        self.conn.borrow_mut().send_data(cqe, &[&data[..n]]);
                    } else {
                        self.conn.borrow_mut().complete(cqe);
                    }
                }
            }
            return;
        }
        if !ctrl.is_ready() {
            self.complete_status(&sqe, StatusCode::CommandSequenceError.status(), 0);
            self.conn.borrow_mut().recycle(data);
            return;
        }
        let nsc = match self.namespace(&ctrl, sqe.nsid()) {
            Ok(n) => n,
            Err(code) => {
                self.complete_status(&sqe, code.status(), 0);
                self.conn.borrow_mut().recycle(data);
                return;
            }
        };
        let job = Job { sqe, data, nsc };
        let idle = self.idle.borrow_mut().pop();
        match idle {
            Some(i) => {
                let w = self.workers.borrow()[i].clone();
                *w.job.borrow_mut() = Some(job);
                w.wake();
            }
            None => self.backlog.borrow_mut().push_back(job),
        }
    }

    async fn run_job(&self, job: Job) {
        let Job { sqe, data, nsc } = job;
        let out = io::execute(&nsc, &sqe, &data).await;
        if out.status.is_success()
            && let Some(stats) = &*self.stats.borrow()
        {
            use std::sync::atomic::Ordering::Relaxed;
            match sqe.opcode() {
                crate::spec::cmd::nvm::READ => {
                    stats.reads.fetch_add(1, Relaxed);
                    let n: usize = out.data.iter().flatten().map(|b| b.len()).sum();
                    stats.read_bytes.fetch_add(n as u64, Relaxed);
                }
                crate::spec::cmd::nvm::WRITE => {
                    stats.writes.fetch_add(1, Relaxed);
                    stats.write_bytes.fetch_add(data.len() as u64, Relaxed);
                }
                _ => {}
            }
        }
        let cqe = Cqe {
            cid: sqe.cid(),
            status: out.status,
            ..Default::default()
        };
        {
            let mut conn = self.conn.borrow_mut();
            conn.recycle(data);
            match &out.data {
                Some(bufs) => {
                    let pieces: smallvec::SmallVec<[&[u8]; 4]> =
                        bufs.iter().map(|b| &b[..]).collect();
                    conn.send_data(cqe, &pieces);
                }
                None => conn.complete(cqe),
            }
        }
        self.kick();
    }

    fn start_workers(self: &Rc<Self>, n: usize) {
        let mut workers = self.workers.borrow_mut();
        let mut idle = self.idle.borrow_mut();
        for i in 0..n {
            let w = Rc::new(Worker::default());
            workers.push(w.clone());
            idle.push(i);
            basalt_engine::spawn(worker(self.clone(), i, w));
        }
    }

    fn stop_workers(&self) {
        for w in self.workers.borrow().iter() {
            w.wake();
        }
    }

    fn namespace(&self, ctrl: &Controller, nsid: u32) -> Result<Rc<NsChannel>, StatusCode> {
        let generation = self.target.generation();
        let mut cache = self.nss.borrow_mut();
        if cache.generation != generation {
            cache.map.clear();
            cache.generation = generation;
        }
        if let Some(n) = cache.map.get(&nsid) {
            return Ok(n.clone());
        }
        let ns = self
            .target
            .namespace(&ctrl.subnqn, nsid)
            .ok_or(StatusCode::InvalidNamespace)?;
        let nsc = Rc::new(NsChannel::open(ns).map_err(|e| {
            tracing::warn!(error = %e, nsid, "namespace channel failed to open");
            StatusCode::NamespaceNotReady
        })?);
        cache.map.insert(nsid, nsc.clone());
        Ok(nsc)
    }

    fn fabrics(self: &Rc<Self>, sqe: &Sqe, data: &[u8]) {
        match sqe.fctype() {
            FCTYPE_CONNECT => {
                if self.ctrl.borrow().is_some() {
                    self.complete_status(sqe, StatusCode::CommandSequenceError.status(), 0);
                    return;
                }
                let cmd = ConnectCmd::parse(sqe);
                let cd = match ConnectData::decode(data) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::debug!(error = %e, "bad Connect data");
                        let ipo: u32 = match e {
                            crate::spec::fabrics::ConnectDataError::Length(_) => 0,
                            crate::spec::fabrics::ConnectDataError::BadNqn(at) => at,
                        };
                        self.complete_status(
                            sqe,
                            StatusCode::ConnectInvalidParameters.status(),
                            1 | (ipo << 16),
                        );
                        return;
                    }
                };
                match self.target.connect(&cmd, &cd, Instant::now()) {
                    Ok(ctrl) => {
                        self.qid.set(cmd.qid);
                        self.epoch.set(ctrl.epoch());
                        *self.stats.borrow_mut() = ctrl.queue_stats(cmd.qid);
                        self.conn.borrow_mut().set_queue(
                            cmd.qid,
                            cmd.sqsize,
                            cmd.cattr & CATTR_DISABLE_SQFLOW != 0,
                        );
                        let cntlid = ctrl.cntlid;
                        tracing::debug!(
                            cntlid,
                            qid = cmd.qid,
                            subnqn = %cd.subnqn,
                            hostnqn = %cd.hostnqn,
                            "NVMe-oF connect"
                        );
                        *self.ctrl.borrow_mut() = Some(ctrl);
                        if cmd.qid != 0 {
                            self.start_workers(usize::from(cmd.sqsize) + 1);
                        }
                        self.complete_status(sqe, Status::SUCCESS, u32::from(cntlid));
                    }
                    Err(r) => {
                        tracing::debug!(status = ?r.status, subnqn = %cd.subnqn, hostnqn = %cd.hostnqn, "NVMe-oF connect refused");
                        self.complete_status(sqe, r.status.status(), r.dw0);
                    }
                }
            }
            FCTYPE_PROPERTY_GET | FCTYPE_PROPERTY_SET => {
                let ctrl = self.ctrl.borrow().clone();
                let Some(ctrl) = ctrl.filter(|_| self.qid.get() == 0) else {
                    self.complete_status(sqe, StatusCode::CommandSequenceError.status(), 0);
                    return;
                };
                let set = sqe.fctype() == FCTYPE_PROPERTY_SET;
                match ctrl.property(&PropertyCmd::parse(sqe), set) {
                    AdminOutcome::Done {
                        status, dw0, dw1, ..
                    } => self.conn.borrow_mut().complete(Cqe {
                        dw0,
                        dw1,
                        cid: sqe.cid(),
                        status,
                        ..Default::default()
                    }),
                    AdminOutcome::Deferred => {}
                }
            }
            _ => self.complete_status(sqe, StatusCode::InvalidOpcode.status(), 0),
        }
    }
}

/// Largest receive per call: a whole maximal PDU plus room.
const RECV_CHUNK: usize = 256 * 1024 + 1024;

async fn run_queue(target: Arc<NvmfTarget>, stream: std::net::TcpStream) {
    let local = stream.local_addr().ok();
    let stream = TcpStream::from_std(stream);
    let _ = stream.set_nodelay(true);
    let st = Rc::new(QueueState {
        conn: RefCell::new(Connection::new(target.config.conn.clone())),
        target: target.clone(),
        out: Signal::default(),
        ctrl: RefCell::new(None),
        qid: Cell::new(0),
        epoch: Cell::new(0),
        stats: RefCell::new(None),
        nss: RefCell::new(NsCache::default()),
        closing: Cell::new(false),
        local,
        workers: RefCell::new(Vec::new()),
        idle: RefCell::new(Vec::new()),
        backlog: RefCell::new(std::collections::VecDeque::new()),
    });
    let writer = basalt_engine::spawn(write_loop(st.clone(), stream.clone()));
    let ticker = basalt_engine::spawn(tick_loop(st.clone()));
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_CHUNK);
    loop {
        if st.closing.get() {
            break;
        }
        let (b, res) = stream.recv_into_vec(buf, RECV_CHUNK).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let used = st.conn.borrow_mut().receive(&buf);
        buf.drain(..used.min(buf.len()));
        st.handle_events();
    }
    st.closing.set(true);
    st.out.notify();
    st.stop_workers();
    let _ = writer.await;
    // The ticker sees `closing` within one period and ends.
    drop(ticker);
    let ctrl = st.ctrl.borrow_mut().take();
    if let Some(ctrl) = ctrl {
        if st.qid.get() == 0 {
            // The admin queue is gone: so is the controller.
            ctrl.kill();
            target.drop_controller(ctrl.cntlid);
        } else {
            ctrl.detach_io_queue(st.qid.get());
        }
    }
}

async fn write_loop(st: Rc<QueueState>, stream: TcpStream) {
    basalt_engine::write_loop(&stream, &st.out, &st.closing, |out| {
        st.conn.borrow_mut().transmit(out);
    })
    .await;
}

async fn tick_loop(st: Rc<QueueState>) {
    loop {
        basalt_engine::sleep(Duration::from_millis(100)).await;
        if st.closing.get() {
            break;
        }
        let ctrl = st.ctrl.borrow().clone();
        let Some(ctrl) = ctrl else { continue };
        if st.qid.get() == 0 {
            match ctrl.poll(Instant::now()) {
                Some(cqes) => {
                    let mut conn = st.conn.borrow_mut();
                    for c in cqes {
                        conn.complete(c);
                    }
                }
                None => {
                    st.target.drop_controller(ctrl.cntlid);
                    st.closing.set(true);
                }
            }
        } else if ctrl.is_dead() || ctrl.epoch() != st.epoch.get() {
            st.closing.set(true);
        }
        st.kick();
    }
}
