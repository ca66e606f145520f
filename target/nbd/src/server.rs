//! The NBD listener on the engine's reactors.
//!
//! One reactor accepts; each accepted connection is handed, round robin, to a reactor where it
//! lives until it closes. On its reactor a connection is a reader (socket bytes into
//! [`Connection::receive`]), a writer ([`Connection::transmit`] to the socket) and a pool of
//! worker tasks, started as commands need them and reused (at most one per command in
//! flight), that run reads, writes, flushes, trims and write-zeroes against the export's
//! device channel on this reactor. `CACHE` and `BLOCK_STATUS` are answered inline (the latter
//! from the device's allocation map in memory). When too much is in flight the reader stops
//! reading until replies drain. A removed export's connections are shut down through a
//! message to their reactor.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};

use basalt_bdev::{IoChannel, Lba};
use basalt_engine::{Signal, TcpStream};

use crate::conn::{Command, Connection, Event, ExportInfo, Op};
use crate::export::{Export, LiveConn, NbdTarget};
use crate::io::{self, Failure};
use crate::spec::{Cookie, Extent, state};

/// Listens on `listener` (accepting on the first reactor) and serves `target` from every
/// reactor until the engine stops.
///
/// # Errors
/// The engine has stopped (or the target has no reactors).
pub fn serve(
    target: Arc<NbdTarget>,
    listener: std::net::TcpListener,
) -> Result<(), basalt_engine::EngineError> {
    let reactors = target.reactors().to_vec();
    basalt_engine::serve_spread(reactors, listener, "NBD", move |index, stream, peer| {
        tracing::debug!(%peer, reactor = index, "NBD connection");
        basalt_engine::spawn(run_conn(target.clone(), index, stream));
    })
}

thread_local! {
    /// This reactor's connections, by id, for messages from other threads.
    static LOCAL_CONNS: RefCell<HashMap<u64, Weak<ConnState>>> = RefCell::new(HashMap::new());
}

/// Shuts down connections `(id, reactor)` on their reactors (an export was removed).
pub(crate) fn close_connections(target: &NbdTarget, conns: &[(u64, usize)]) {
    for &(id, reactor) in conns {
        let Some(r) = target.reactors().get(reactor) else {
            continue;
        };
        let _ = r.send(move || {
            let st = LOCAL_CONNS.with(|m| m.borrow().get(&id).and_then(Weak::upgrade));
            if let Some(st) = st {
                st.shut();
            }
        });
    }
}

/// Most extents in one `BLOCK_STATUS` reply (the protocol asks for at most 2^20).
const MAX_EXTENTS: usize = 4096;

/// Largest receive per call.
const RECV_CHUNK: usize = 256 * 1024;

/// The export's device, opened on this reactor when transmission began.
struct Device {
    export: Arc<Export>,
    chan: IoChannel,
    chunk: usize,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.export.detached();
    }
}

#[derive(Default)]
struct Worker {
    job: RefCell<Option<Command>>,
    waker: RefCell<Option<Waker>>,
}

impl Worker {
    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

struct ConnState {
    id: u64,
    reactor: usize,
    target: Arc<NbdTarget>,
    stream: TcpStream,
    conn: RefCell<Connection>,
    /// Output is queued (or the connection is closing): wakes the writer.
    out: Signal,
    /// Replies drained: wakes a throttled reader.
    resume: Signal,
    closing: Cell<bool>,
    dev: RefCell<Option<Rc<Device>>>,
    workers: RefCell<Vec<Rc<Worker>>>,
    idle: RefCell<Vec<usize>>,
    /// Commands waiting for a worker (none unless every worker is busy).
    backlog: RefCell<VecDeque<Command>>,
}

/// A worker: waits for a command, runs it, and goes back to the idle list.
async fn worker(st: Rc<ConnState>, idx: usize, me: Rc<Worker>) {
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
            st.run(job).await;
            let next = st.backlog.borrow_mut().pop_front();
            match next {
                Some(j) => job = j,
                None => break,
            }
        }
        st.idle.borrow_mut().push(idx);
    }
}

impl ConnState {
    fn kick(&self) {
        if self.conn.borrow().has_output() || self.closing.get() {
            self.out.notify();
        }
    }

    /// Ends the connection after sending what is queued.
    fn close(&self) {
        self.closing.set(true);
        self.out.notify();
        self.resume.notify();
        for w in self.workers.borrow().iter() {
            w.wake();
        }
    }

    /// Ends the connection now (its export went away): replies still queued are dropped.
    fn shut(&self) {
        self.close();
        let _ = self.stream.shutdown();
    }

    fn handle_events(self: &Rc<Self>) {
        loop {
            let ev = self.conn.borrow_mut().next_event();
            match ev {
                None => break,
                Some(Event::Close) => self.close(),
                Some(Event::Attach(info)) => self.attach(&info),
                Some(Event::Command(cmd)) => self.command(cmd),
            }
        }
        self.kick();
    }

    fn attach(self: &Rc<Self>, info: &ExportInfo) {
        let Some(export) = self.target.export_by_id(info.id) else {
            // Removed (or replaced) between the handshake's lookup and now.
            self.shut();
            return;
        };
        let chan = match export.bdev.open() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(export = %info.name, error = %e, "NBD: the export's device did not open");
                self.shut();
                return;
            }
        };
        let chunk = io::chunk_size(basalt_engine::current().pool(), chan.geometry().block_size);
        export.attached();
        self.target.register(
            self.id,
            LiveConn {
                reactor: self.reactor,
                export: export.id,
            },
        );
        let removed = export.is_removed();
        *self.dev.borrow_mut() = Some(Rc::new(Device {
            export,
            chan,
            chunk,
        }));
        if removed {
            // Removed while attaching: the removal may not have seen this connection.
            self.shut();
        }
    }

    fn command(self: &Rc<Self>, cmd: Command) {
        let dev = self.dev.borrow().clone();
        let Some(dev) = dev.filter(|d| !d.export.is_removed()) else {
            self.shut();
            return;
        };
        match cmd.op {
            // A hint the device has no use for: reads go to the device anyway.
            Op::Cache => self.conn.borrow_mut().reply_ok(cmd.cookie),
            Op::BlockStatus { req_one } => {
                let extents = block_status(&dev, cmd.offset, cmd.length, req_one);
                self.conn
                    .borrow_mut()
                    .reply_block_status(cmd.cookie, &extents);
            }
            _ => self.queue(cmd),
        }
    }

    fn queue(self: &Rc<Self>, cmd: Command) {
        let idle = self.idle.borrow_mut().pop();
        let w = match idle {
            Some(i) => self.workers.borrow()[i].clone(),
            None if self.workers.borrow().len() < self.target.conn.max_in_flight as usize => {
                let w = Rc::new(Worker::default());
                let idx = {
                    let mut ws = self.workers.borrow_mut();
                    ws.push(w.clone());
                    ws.len() - 1
                };
                basalt_engine::spawn(worker(self.clone(), idx, w.clone()));
                w
            }
            None => {
                self.backlog.borrow_mut().push_back(cmd);
                return;
            }
        };
        *w.job.borrow_mut() = Some(cmd);
        w.wake();
    }

    fn finish(&self, cookie: Cookie, r: Result<(), Failure>) {
        let mut c = self.conn.borrow_mut();
        match r {
            Ok(()) => c.reply_ok(cookie),
            Err(f) => c.reply_error(cookie, f.errno(), &f.error.to_string(), Some(f.offset)),
        }
    }

    async fn run(self: &Rc<Self>, cmd: Command) {
        let dev = self.dev.borrow().clone();
        let Some(dev) = dev else { return };
        let Command {
            cookie,
            offset,
            length,
            op,
        } = cmd;
        match op {
            Op::Read { df } => self.read(&dev, cookie, offset, length as usize, df).await,
            Op::Write { data, fua } => {
                let r = io::write(&dev.chan, offset, &data, fua, dev.chunk).await;
                self.conn.borrow_mut().release_write(data);
                self.finish(cookie, r);
            }
            Op::Flush => self.finish(cookie, io::flush(&dev.chan).await),
            Op::Trim { fua } => {
                let r = io::trim(&dev.chan, offset, u64::from(length), fua).await;
                self.finish(cookie, r);
            }
            Op::WriteZeroes { no_hole, fua } => {
                let thin = dev.export.config.thin;
                let r = io::write_zeroes(
                    &dev.chan,
                    offset,
                    u64::from(length),
                    no_hole,
                    thin,
                    fua,
                    dev.chunk,
                )
                .await;
                self.finish(cookie, r);
            }
            Op::Cache | Op::BlockStatus { .. } => self.conn.borrow_mut().reply_ok(cookie),
        }
        self.resume.notify();
        self.handle_events();
    }

    async fn read(&self, dev: &Device, cookie: Cookie, offset: u64, len: usize, df: bool) {
        let fail = |c: &mut Connection, f: Failure| {
            c.reply_error(cookie, f.errno(), &f.error.to_string(), Some(f.offset));
        };
        if len <= dev.chunk {
            let r = io::read(&dev.chan, offset, len).await;
            let mut c = self.conn.borrow_mut();
            match r {
                Ok(bufs) => {
                    let pieces: smallvec::SmallVec<[&[u8]; 8]> =
                        bufs.iter().map(|b| &b[..]).collect();
                    c.reply_read(cookie, offset, &pieces, true);
                }
                Err(f) => fail(&mut c, f),
            }
            return;
        }
        let structured = self.conn.borrow().structured();
        if structured && !df {
            // One data chunk per piece, sent as each arrives.
            let mut at = 0usize;
            while at < len {
                let n = (len - at).min(dev.chunk);
                let off = offset + at as u64;
                let r = io::read(&dev.chan, off, n).await;
                let mut c = self.conn.borrow_mut();
                match r {
                    Ok(bufs) => {
                        let pieces: smallvec::SmallVec<[&[u8]; 8]> =
                            bufs.iter().map(|b| &b[..]).collect();
                        c.reply_read(cookie, off, &pieces, at + n == len);
                    }
                    Err(f) => {
                        fail(&mut c, f);
                        return;
                    }
                }
                drop(c);
                self.kick();
                at += n;
            }
            return;
        }
        // A simple reply, or DF: the whole read in one piece.
        let mut whole = self.conn.borrow_mut().take_buffer(len);
        let mut at = 0usize;
        while at < len {
            let n = (len - at).min(dev.chunk);
            match io::read(&dev.chan, offset + at as u64, n).await {
                Ok(bufs) => {
                    for b in bufs.iter() {
                        whole.extend_from_slice(b);
                    }
                }
                Err(f) => {
                    let mut c = self.conn.borrow_mut();
                    fail(&mut c, f);
                    c.recycle(whole);
                    return;
                }
            }
            at += n;
        }
        let mut c = self.conn.borrow_mut();
        c.reply_read(cookie, offset, &[&whole], true);
        c.recycle(whole);
    }
}

/// `base:allocation` of `[offset, offset + length)` from the device's map: holes read as
/// zeros; a device that does not track allocation reports everything as data.
fn block_status(
    dev: &Device,
    offset: u64,
    length: u32,
    req_one: bool,
) -> smallvec::SmallVec<[Extent; 8]> {
    let bs = u64::from(dev.chan.geometry().block_size.max(1));
    let max = if req_one { 1 } else { MAX_EXTENTS };
    let mut at = offset / bs;
    let end = (offset + u64::from(length)) / bs;
    let mut out: smallvec::SmallVec<[Extent; 8]> = smallvec::SmallVec::new();
    while at < end {
        let left = end - at;
        let (mapped, n) = match dev.export.bdev.block_status(Lba(at), left) {
            Some(s) => (s.mapped, s.blocks.clamp(1, left)),
            None => (true, left),
        };
        let flags = if mapped { 0 } else { state::HOLE | state::ZERO };
        // n * bs <= length, which fits in 32 bits.
        let bytes = u32::try_from(n * bs).unwrap_or(u32::MAX);
        match out.last_mut() {
            Some(e) if e.flags == flags => e.length = e.length.saturating_add(bytes),
            _ => {
                if out.len() == max {
                    break;
                }
                out.push(Extent {
                    length: bytes,
                    flags,
                });
            }
        }
        at += n;
    }
    out
}

async fn run_conn(target: Arc<NbdTarget>, reactor: usize, stream: std::net::TcpStream) {
    let stream = TcpStream::from_std(stream);
    let _ = stream.set_nodelay(true);
    let id = target.next_conn_id();
    let st = Rc::new(ConnState {
        id,
        reactor,
        conn: RefCell::new(Connection::new(target.conn.clone())),
        target: target.clone(),
        stream: stream.clone(),
        out: Signal::default(),
        resume: Signal::default(),
        closing: Cell::new(false),
        dev: RefCell::new(None),
        workers: RefCell::new(Vec::new()),
        idle: RefCell::new(Vec::new()),
        backlog: RefCell::new(VecDeque::new()),
    });
    LOCAL_CONNS.with(|m| m.borrow_mut().insert(id, Rc::downgrade(&st)));
    let writer = basalt_engine::spawn(write_loop(st.clone()));
    st.kick();
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_CHUNK);
    loop {
        if st.closing.get() {
            break;
        }
        let used = st.conn.borrow_mut().receive(&buf, &*target);
        buf.drain(..used.min(buf.len()));
        st.handle_events();
        if st.closing.get() {
            break;
        }
        if st.conn.borrow().throttled() {
            st.resume.wait().await;
            continue;
        }
        let (b, res) = stream.recv_into_vec(buf, RECV_CHUNK).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    st.close();
    let _ = writer.await;
    LOCAL_CONNS.with(|m| m.borrow_mut().remove(&id));
    target.unregister(id);
    tracing::debug!(conn = id, "NBD connection closed");
}

async fn write_loop(st: Rc<ConnState>) {
    basalt_engine::write_loop(&st.stream, &st.out, &st.closing, |out| {
        st.conn.borrow_mut().transmit(out);
        st.resume.notify();
    })
    .await;
    st.resume.notify();
}
