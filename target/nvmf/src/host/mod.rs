//! A userspace NVMe/TCP host (initiator) on the engine's reactors.
//!
//! [`Controller::connect`] opens the admin queue (ICReq, Connect with the dynamic controller
//! id, CC.EN and CSTS.RDY over Property Set/Get, Identify Controller).
//! [`Controller::create_io_queue`] opens an I/O queue on the calling reactor; each queue is
//! one TCP connection with a reader and a writer task, and any number of tasks on that reactor
//! may have commands in flight on it at once (up to its depth). Used by this crate's tests and
//! by the benchmark.
//!
//! Dropping a command's future before it completes leaks its command id until the queue
//! closes (the target still answers it; the answer is discarded).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use basalt_engine::{Signal, TcpStream};

use crate::spec::cmd::{
    Cqe, SGL_INCAPSULE, SGL_TRANSPORT, SglDesc, Sqe, Status, StatusCode, admin, nvm,
};
use crate::spec::fabrics::{CATTR_DISABLE_SQFLOW, ConnectCmd, ConnectData, PropertyCmd, prop};
use crate::spec::identify::{self, DiscoveryEntry, IdentifyController, IdentifyNamespace};
use crate::spec::pdu::{
    self, DataHdr, Digests, FLAG_DATA_LAST, FLAG_DATA_SUCCESS, IcReq, Pdu, PduError,
};

/// Why a host operation failed.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum HostError {
    /// socket error: {0}
    Io(#[from] std::io::Error),
    /// the target sent a malformed PDU: {0}
    Pdu(PduError),
    /// the target terminated the connection (FES {fes:#x}, FEI {fei})
    Terminated {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// the connection is closed
    Closed,
    /// protocol violation by the target: {0}
    Protocol(&'static str),
    /// command failed: SCT {sct:#x} SC {sc:#x}
    Status {
        /// Status code type.
        sct: u8,
        /// Status code.
        sc: u8,
        /// Completion dword 0.
        dw0: u32,
    },
    /// no free command identifier: more commands in flight than the queue's depth
    QueueFull,
    /// the controller did not become ready
    NotReady,
}

impl HostError {
    /// The typed status of a failed command, if this was one.
    pub fn status_code(&self) -> Option<StatusCode> {
        match self {
            HostError::Status { sct, sc, .. } => Status {
                sct: *sct,
                sc: *sc,
                more: false,
                dnr: false,
            }
            .code(),
            _ => None,
        }
    }
}

/// Host settings.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Ask for header digests.
    pub header_digest: bool,
    /// Ask for data digests.
    pub data_digest: bool,
    /// Keep-alive timeout asked for, milliseconds (0: none).
    pub kato_ms: u32,
    /// Ask the target to disable SQ flow control (lets reads complete with C2HData SUCCESS).
    pub disable_sqflow: bool,
    /// Admin queue depth.
    pub admin_depth: u16,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001".into(),
            hostid: [0x42; 16],
            header_digest: false,
            data_digest: false,
            kato_ms: 0,
            disable_sqflow: true,
            admin_depth: 32,
        }
    }
}

/// A completed command: its completion entry and the data the controller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The completion entry (synthesised for a C2HData SUCCESS).
    pub cqe: Cqe,
    /// Controller-to-host data.
    pub data: Vec<u8>,
}

impl Completion {
    /// `Ok(self)` on success, the status as an error otherwise.
    ///
    /// # Errors
    /// [`HostError::Status`] for a failed command.
    pub fn ok(self) -> Result<Completion, HostError> {
        if self.cqe.status.is_success() {
            Ok(self)
        } else {
            Err(HostError::Status {
                sct: self.cqe.status.sct,
                sc: self.cqe.status.sc,
                dw0: self.cqe.dw0,
            })
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    busy: bool,
    waker: Option<Waker>,
    done: Option<Cqe>,
    read: Vec<u8>,
    read_len: usize,
    write: Vec<u8>,
}

#[derive(Debug)]
struct QState {
    out: Vec<u8>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    closed: Option<String>,
    digests: Digests,
    cpda: u8,
    maxh2cdata: u32,
    in_capsule: usize,
}

#[derive(Debug)]
struct Inner {
    st: RefCell<QState>,
    out: Signal,
    stream: TcpStream,
    closing: Cell<bool>,
}

/// One queue pair: a TCP connection carrying commands and their data. Clones share it.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Rc<Inner>,
    /// Queue id.
    pub qid: u16,
}

impl Queue {
    /// Connects and exchanges ICReq/ICResp; `depth` command ids are available.
    ///
    /// # Errors
    /// Socket errors, or an ICResp that is missing or malformed.
    pub async fn open(
        addr: SocketAddr,
        cfg: &HostConfig,
        qid: u16,
        depth: u16,
    ) -> Result<Queue, HostError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let mut b = Vec::with_capacity(128);
        pdu::encode_ic_req(
            &mut b,
            &IcReq {
                pfv: 0,
                hpda: 0,
                digests: Digests {
                    header: cfg.header_digest,
                    data: cfg.data_digest,
                },
                maxr2t: 0,
            },
        );
        let (_, r) = stream.send_all_vec(b, 0).await;
        r?;
        let mut buf = Vec::with_capacity(256);
        let resp = loop {
            let (b, r) = stream.recv_into_vec(buf, 256).await;
            buf = b;
            if r? == 0 {
                return Err(HostError::Closed);
            }
            match pdu::decode_pdu(&buf, Digests::default()) {
                Ok(None) => continue,
                Ok(Some((Pdu::IcResp(r), n))) if n == buf.len() => break r,
                Ok(Some((Pdu::C2HTermReq(t), _))) => {
                    return Err(HostError::Terminated {
                        fes: t.fes,
                        fei: t.fei,
                    });
                }
                Ok(Some(_)) => return Err(HostError::Protocol("expected ICResp")),
                Err(e) => return Err(HostError::Pdu(e)),
            }
        };
        if resp.maxh2cdata < 4096 || resp.pfv != 0 {
            return Err(HostError::Protocol("bad ICResp"));
        }
        let depth = depth.max(1);
        let inner = Rc::new(Inner {
            st: RefCell::new(QState {
                out: Vec::with_capacity(64 * 1024),
                slots: (0..depth).map(|_| Slot::default()).collect(),
                free: (0..depth).rev().collect(),
                closed: None,
                digests: resp.digests,
                cpda: resp.cpda,
                maxh2cdata: resp.maxh2cdata,
                in_capsule: 8192,
            }),
            out: Signal::default(),
            stream,
            closing: Cell::new(false),
        });
        basalt_engine::spawn(reader(inner.clone()));
        basalt_engine::spawn(writer(inner.clone()));
        Ok(Queue { inner, qid })
    }

    /// The digests negotiated.
    pub fn digests(&self) -> Digests {
        self.inner.st.borrow().digests
    }

    fn set_in_capsule(&self, n: usize) {
        self.inner.st.borrow_mut().in_capsule = n;
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.st.borrow().closed.is_some()
    }

    /// Closes the connection (commands in flight fail with [`HostError::Closed`]).
    pub fn close(&self) {
        self.inner.closing.set(true);
        let _ = self.inner.stream.shutdown();
        self.inner.out.notify();
    }

    /// Sends raw bytes (for tests of malformed input).
    pub fn send_raw(&self, bytes: &[u8]) {
        self.inner.st.borrow_mut().out.extend_from_slice(bytes);
        self.inner.out.notify();
    }

    /// Submits `sqe` (its CID and SGL are filled in) with optional host data and room for
    /// `read_len` bytes of controller data, and waits for its completion. Data up to the
    /// in-capsule size rides in the capsule; more goes out when the target asks (R2T).
    ///
    /// # Errors
    /// The connection closed or failed, or every command id is in use. A command that
    /// completes with an error status is `Ok` here: see [`Completion::ok`].
    pub async fn submit(
        &self,
        sqe: Sqe,
        write: &[u8],
        read_len: usize,
    ) -> Result<Completion, HostError> {
        self.submit_with(sqe, write, Vec::new(), read_len).await
    }

    /// [`Queue::submit`], receiving controller data into `read_buf` (cleared first), which
    /// comes back in [`Completion::data`]: a caller that recycles it allocates nothing per
    /// command.
    ///
    /// # Errors
    /// As for [`Queue::submit`].
    pub async fn submit_with(
        &self,
        mut sqe: Sqe,
        write: &[u8],
        mut read_buf: Vec<u8>,
        read_len: usize,
    ) -> Result<Completion, HostError> {
        read_buf.clear();
        let cid = {
            let mut st = self.inner.st.borrow_mut();
            if st.closed.is_some() {
                return Err(HostError::Closed);
            }
            let cid = st.free.pop().ok_or(HostError::QueueFull)?;
            sqe.set_cid(cid);
            let in_capsule = st.in_capsule;
            let digests = st.digests;
            let cpda = st.cpda;
            let st = &mut *st;
            let slot = &mut st.slots[usize::from(cid)];
            slot.busy = true;
            slot.done = None;
            slot.read = read_buf;
            slot.read.reserve(read_len);
            slot.read_len = read_len;
            slot.write.clear();
            let len = u32::try_from(write.len().max(read_len)).unwrap_or(u32::MAX);
            if !write.is_empty() && write.len() <= in_capsule {
                sqe.set_sgl(SglDesc {
                    addr: 0,
                    len,
                    sgl_type: SGL_INCAPSULE,
                });
                pdu::encode_capsule_cmd(&mut st.out, &sqe, &[write], digests, cpda);
            } else {
                if !write.is_empty() {
                    slot.write.extend_from_slice(write);
                }
                sqe.set_sgl(SglDesc {
                    addr: 0,
                    len,
                    sgl_type: SGL_TRANSPORT,
                });
                pdu::encode_capsule_cmd(&mut st.out, &sqe, &[], digests, cpda);
            }
            cid
        };
        self.inner.out.notify();
        let inner = &self.inner;
        std::future::poll_fn(|cx| {
            let mut st = inner.st.borrow_mut();
            let closed = st.closed.is_some();
            let slot = &mut st.slots[usize::from(cid)];
            if let Some(cqe) = slot.done.take() {
                let data = std::mem::take(&mut slot.read);
                slot.busy = false;
                slot.write.clear();
                st.free.push(cid);
                return Poll::Ready(Ok(Completion { cqe, data }));
            }
            if closed {
                return Poll::Ready(Err(HostError::Closed));
            }
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

fn fail_all(inner: &Inner, why: String) {
    let wakers: Vec<Waker> = {
        let mut st = inner.st.borrow_mut();
        if st.closed.is_none() {
            st.closed = Some(why);
        }
        st.slots.iter_mut().filter_map(|s| s.waker.take()).collect()
    };
    for w in wakers {
        w.wake();
    }
    inner.out.notify();
}

/// Handles one PDU from the target; returns a waker to wake, or an error that ends the queue.
fn on_pdu(st: &mut QState, p: Pdu<'_>) -> Result<Option<Waker>, HostError> {
    match p {
        Pdu::CapsuleResp(cqe) => {
            let slot = st
                .slots
                .get_mut(usize::from(cqe.cid))
                .filter(|s| s.busy)
                .ok_or(HostError::Protocol("response for an unknown command"))?;
            slot.done = Some(cqe);
            Ok(slot.waker.take())
        }
        Pdu::C2HData { hdr, flags, data } => {
            let slot = st
                .slots
                .get_mut(usize::from(hdr.cccid))
                .filter(|s| s.busy)
                .ok_or(HostError::Protocol("data for an unknown command"))?;
            let end = hdr.datao as usize + data.len();
            if hdr.datao as usize != slot.read.len() || end > slot.read_len {
                return Err(HostError::Protocol("C2H data out of range"));
            }
            slot.read.extend_from_slice(data);
            if flags & FLAG_DATA_SUCCESS != 0 {
                if flags & FLAG_DATA_LAST == 0 {
                    return Err(HostError::Protocol("SUCCESS without LAST"));
                }
                slot.done = Some(Cqe {
                    cid: hdr.cccid,
                    ..Default::default()
                });
                return Ok(slot.waker.take());
            }
            Ok(None)
        }
        Pdu::R2T(r) => {
            let digests = st.digests;
            let cpda = st.cpda;
            let max = st.maxh2cdata as usize;
            let slot = st
                .slots
                .get(usize::from(r.cccid))
                .filter(|s| s.busy)
                .ok_or(HostError::Protocol("R2T for an unknown command"))?;
            let start = r.r2to as usize;
            let end = start + r.r2tl as usize;
            let data = slot
                .write
                .get(start..end)
                .ok_or(HostError::Protocol("R2T out of range"))?;
            let mut off = start;
            let mut out = std::mem::take(&mut st.out);
            for chunk in data.chunks(max.max(1)) {
                let last = off + chunk.len() == end;
                pdu::encode_h2c_data(
                    &mut out,
                    &DataHdr {
                        cccid: r.cccid,
                        ttag: r.ttag,
                        datao: off as u32,
                        datal: chunk.len() as u32,
                    },
                    last,
                    &[chunk],
                    digests,
                    cpda,
                );
                off += chunk.len();
            }
            st.out = out;
            Ok(None)
        }
        Pdu::C2HTermReq(t) => Err(HostError::Terminated {
            fes: t.fes,
            fei: t.fei,
        }),
        _ => Err(HostError::Protocol("unexpected PDU type")),
    }
}

async fn reader(inner: Rc<Inner>) {
    let mut buf: Vec<u8> = Vec::with_capacity(pdu::MAX_PDU_LEN);
    let why = loop {
        let (b, r) = inner.stream.recv_into_vec(buf, pdu::MAX_PDU_LEN).await;
        buf = b;
        match r {
            Ok(0) => break "closed by the target".to_owned(),
            Err(e) => break e.to_string(),
            Ok(_) => {}
        }
        let mut used = 0usize;
        let mut wake: Vec<Waker> = Vec::new();
        let mut failed = None;
        {
            let mut st = inner.st.borrow_mut();
            let digests = st.digests;
            loop {
                match pdu::decode_pdu(&buf[used..], digests) {
                    Ok(None) => break,
                    Ok(Some((p, n))) => {
                        used += n;
                        match on_pdu(&mut st, p) {
                            Ok(Some(w)) => wake.push(w),
                            Ok(None) => {}
                            Err(e) => {
                                failed = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        buf.drain(..used);
        for w in wake {
            w.wake();
        }
        inner.out.notify();
        if let Some(f) = failed {
            break f;
        }
    };
    tracing::debug!(reason = %why, "NVMe/TCP host queue closed");
    fail_all(&inner, why);
    let _ = inner.stream.shutdown();
}

async fn writer(inner: Rc<Inner>) {
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        out.clear();
        {
            let mut st = inner.st.borrow_mut();
            std::mem::swap(&mut out, &mut st.out);
        }
        if out.is_empty() {
            if inner.closing.get() || inner.st.borrow().closed.is_some() {
                break;
            }
            inner.out.wait().await;
            continue;
        }
        let (b, r) = inner.stream.send_all_vec(out, 0).await;
        out = b;
        if r.is_err() {
            break;
        }
    }
}

/// What a namespace looks like to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsInfo {
    /// Namespace id.
    pub nsid: u32,
    /// Block size, bytes.
    pub block_size: u32,
    /// Size in blocks.
    pub blocks: u64,
}

/// A controller reached over its admin queue.
#[derive(Debug)]
pub struct Controller {
    admin: Queue,
    addr: SocketAddr,
    cfg: HostConfig,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Controller id the target allocated.
    pub cntlid: u16,
    /// Identify Controller data.
    pub identify: IdentifyController,
}

impl Controller {
    /// Connects the admin queue to `subnqn` at `addr`, enables the controller and identifies
    /// it.
    ///
    /// # Errors
    /// Transport failures, a refused Connect ([`HostError::Status`] with the Connect status),
    /// or a controller that does not become ready.
    pub async fn connect(
        addr: SocketAddr,
        subnqn: &str,
        cfg: &HostConfig,
    ) -> Result<Controller, HostError> {
        let admin = Queue::open(addr, cfg, 0, cfg.admin_depth).await?;
        let cntlid = connect_queue(&admin, cfg, subnqn, 0, cfg.admin_depth, 0xFFFF).await?;
        let mut ctrl = Controller {
            admin,
            addr,
            cfg: cfg.clone(),
            subnqn: subnqn.to_owned(),
            cntlid,
            identify: IdentifyController::default(),
        };
        let _cap = ctrl.property_get(prop::CAP, true).await?;
        // EN, CSS NVM, MPS 4 KiB, IOSQES 6, IOCQES 4.
        ctrl.property_set(prop::CC, (6 << 16) | (4 << 20) | 1, false)
            .await?;
        let mut ready = false;
        for _ in 0..100 {
            if ctrl.property_get(prop::CSTS, false).await? & 1 != 0 {
                ready = true;
                break;
            }
            basalt_engine::sleep(Duration::from_millis(10)).await;
        }
        if !ready {
            return Err(HostError::NotReady);
        }
        ctrl.identify = IdentifyController::decode(
            &ctrl
                .identify_raw(identify::CNS_CONTROLLER, 0)
                .await?
                .ok()?
                .data,
        );
        Ok(ctrl)
    }

    /// A handle on the admin queue (for commands that wait, like Asynchronous Event Requests).
    pub fn admin_queue(&self) -> Queue {
        self.admin.clone()
    }

    /// Runs a raw admin command.
    ///
    /// # Errors
    /// See [`Queue::submit`].
    pub async fn admin(
        &self,
        sqe: Sqe,
        write: &[u8],
        read_len: usize,
    ) -> Result<Completion, HostError> {
        self.admin.submit(sqe, write, read_len).await
    }

    /// Property Get.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn property_get(&self, offset: u32, eight: bool) -> Result<u64, HostError> {
        let mut sqe = Sqe::default();
        PropertyCmd {
            eight,
            offset,
            value: 0,
        }
        .write(&mut sqe, false);
        let c = self.admin(sqe, &[], 0).await?.ok()?;
        Ok(u64::from(c.cqe.dw0) | (u64::from(c.cqe.dw1) << 32))
    }

    /// Property Set.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn property_set(
        &self,
        offset: u32,
        value: u64,
        eight: bool,
    ) -> Result<(), HostError> {
        let mut sqe = Sqe::default();
        PropertyCmd {
            eight,
            offset,
            value,
        }
        .write(&mut sqe, true);
        self.admin(sqe, &[], 0).await?.ok().map(|_| ())
    }

    /// Identify with any CNS (4096 bytes asked for).
    ///
    /// # Errors
    /// Transport failure.
    pub async fn identify_raw(&self, cns: u8, nsid: u32) -> Result<Completion, HostError> {
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::IDENTIFY);
        sqe.set_nsid(nsid);
        sqe.set_cdw(10, u32::from(cns));
        self.admin(sqe, &[], identify::IDENTIFY_LEN).await
    }

    /// Identify Namespace, as [`NsInfo`] and the full structure.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn identify_namespace(
        &self,
        nsid: u32,
    ) -> Result<(NsInfo, IdentifyNamespace), HostError> {
        let c = self
            .identify_raw(identify::CNS_NAMESPACE, nsid)
            .await?
            .ok()?;
        let id = IdentifyNamespace::decode(&c.data);
        let info = NsInfo {
            nsid,
            block_size: 1u32.checked_shl(u32::from(id.lbads)).unwrap_or(0),
            blocks: id.nsze,
        };
        Ok((info, id))
    }

    /// Active namespace ids above `from`.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn active_namespaces(&self, from: u32) -> Result<Vec<u32>, HostError> {
        let c = self
            .identify_raw(identify::CNS_ACTIVE_NS_LIST, from)
            .await?
            .ok()?;
        Ok(identify::decode_nsid_list(&c.data))
    }

    /// Namespace identification descriptors.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn ns_descriptors(&self, nsid: u32) -> Result<Vec<(u8, Vec<u8>)>, HostError> {
        let c = self
            .identify_raw(identify::CNS_NS_DESC_LIST, nsid)
            .await?
            .ok()?;
        Ok(identify::decode_ns_descriptors(&c.data))
    }

    /// Get Log Page: `len` bytes (a multiple of 4) from `offset`.
    ///
    /// # Errors
    /// Transport failure (an error status comes back in the completion).
    pub async fn get_log_page(
        &self,
        lid: u8,
        len: usize,
        offset: u64,
        rae: bool,
    ) -> Result<Completion, HostError> {
        let numd = (len / 4).saturating_sub(1) as u32;
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::GET_LOG_PAGE);
        sqe.set_nsid(u32::MAX);
        sqe.set_cdw(
            10,
            u32::from(lid) | (u32::from(rae) << 15) | ((numd & 0xFFFF) << 16),
        );
        sqe.set_cdw(11, numd >> 16);
        sqe.set_cdw(12, offset as u32);
        sqe.set_cdw(13, (offset >> 32) as u32);
        self.admin(sqe, &[], len).await
    }

    /// The discovery log page (on a discovery controller).
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn discovery_log(&self) -> Result<(u64, Vec<DiscoveryEntry>), HostError> {
        let hdr = self
            .get_log_page(crate::spec::cmd::log::DISCOVERY, 1024, 0, false)
            .await?
            .ok()?;
        let (_, numrec, _) = identify::decode_discovery_log(&hdr.data);
        let len = 1024 + 1024 * usize::try_from(numrec.min(1024)).unwrap_or(0);
        let all = self
            .get_log_page(crate::spec::cmd::log::DISCOVERY, len, 0, false)
            .await?
            .ok()?;
        let (genctr, _, entries) = identify::decode_discovery_log(&all.data);
        Ok((genctr, entries))
    }

    /// Get Features (`sel`: 0 current, 1 default, 2 saved, 3 capabilities).
    ///
    /// # Errors
    /// Transport failure (an error status comes back in the completion).
    pub async fn get_features(
        &self,
        fid: u8,
        sel: u8,
        cdw11: u32,
        read_len: usize,
    ) -> Result<Completion, HostError> {
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::GET_FEATURES);
        sqe.set_cdw(10, u32::from(fid) | (u32::from(sel & 7) << 8));
        sqe.set_cdw(11, cdw11);
        self.admin(sqe, &[], read_len).await
    }

    /// Set Features.
    ///
    /// # Errors
    /// Transport failure (an error status comes back in the completion).
    pub async fn set_features(
        &self,
        fid: u8,
        cdw11: u32,
        data: &[u8],
    ) -> Result<Completion, HostError> {
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::SET_FEATURES);
        sqe.set_cdw(10, u32::from(fid));
        sqe.set_cdw(11, cdw11);
        self.admin(sqe, data, 0).await
    }

    /// Asks for `n` I/O queues; returns how many were granted.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn set_num_queues(&self, n: u16) -> Result<u16, HostError> {
        let m = u32::from(n.max(1) - 1);
        let c = self
            .set_features(crate::spec::cmd::feature::NUM_QUEUES, m | (m << 16), &[])
            .await?
            .ok()?;
        Ok(((c.cqe.dw0 & 0xFFFF) as u16).saturating_add(1))
    }

    /// Keep Alive.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn keep_alive(&self) -> Result<(), HostError> {
        let mut sqe = Sqe::default();
        sqe.set_opcode(admin::KEEP_ALIVE);
        self.admin(sqe, &[], 0).await?.ok().map(|_| ())
    }

    /// Spawns a task on this reactor sending Keep Alive every `kato / 2` until the admin queue
    /// closes.
    pub fn start_keep_alive(&self) {
        let kato = self.cfg.kato_ms;
        if kato == 0 {
            return;
        }
        let q = self.admin.clone();
        basalt_engine::spawn(async move {
            loop {
                basalt_engine::sleep(Duration::from_millis(u64::from(kato / 2).max(1))).await;
                let mut sqe = Sqe::default();
                sqe.set_opcode(admin::KEEP_ALIVE);
                if q.submit(sqe, &[], 0).await.is_err() {
                    break;
                }
            }
        });
    }

    /// Opens I/O queue `qid` with `depth` entries on the calling reactor.
    ///
    /// # Errors
    /// Transport failure or a refused Connect.
    pub async fn create_io_queue(&self, qid: u16, depth: u16) -> Result<IoQueue, HostError> {
        let q = Queue::open(self.addr, &self.cfg, qid, depth).await?;
        let ioccsz = self.identify.ioccsz as usize;
        q.set_in_capsule((ioccsz * 16).saturating_sub(64));
        connect_queue(&q, &self.cfg, &self.subnqn, qid, depth, self.cntlid).await?;
        Ok(IoQueue { q })
    }

    /// Normal shutdown (CC.SHN) and close.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn shutdown(self) -> Result<(), HostError> {
        let cc = self.property_get(prop::CC, false).await?;
        self.property_set(prop::CC, (cc & !(3 << 14)) | (1 << 14), false)
            .await?;
        for _ in 0..100 {
            if (self.property_get(prop::CSTS, false).await? >> 2) & 3 == 2 {
                break;
            }
            basalt_engine::sleep(Duration::from_millis(10)).await;
        }
        self.admin.close();
        Ok(())
    }

    /// Closes the admin queue without a shutdown.
    pub fn disconnect(&self) {
        self.admin.close();
    }
}

async fn connect_queue(
    q: &Queue,
    cfg: &HostConfig,
    subnqn: &str,
    qid: u16,
    depth: u16,
    cntlid: u16,
) -> Result<u16, HostError> {
    let mut sqe = Sqe::default();
    ConnectCmd {
        recfmt: 0,
        qid,
        sqsize: depth.max(2) - 1,
        cattr: if cfg.disable_sqflow {
            CATTR_DISABLE_SQFLOW
        } else {
            0
        },
        kato: if qid == 0 { cfg.kato_ms } else { 0 },
    }
    .write(&mut sqe);
    let data = ConnectData {
        hostid: cfg.hostid,
        cntlid,
        subnqn: subnqn.to_owned(),
        hostnqn: cfg.hostnqn.clone(),
    }
    .encode();
    let c = q.submit(sqe, &data, 0).await?.ok()?;
    Ok((c.cqe.dw0 & 0xFFFF) as u16)
}

/// An I/O queue on the reactor that created it.
#[derive(Debug, Clone)]
pub struct IoQueue {
    q: Queue,
}

fn rw_sqe(opc: u8, ns: &NsInfo, slba: u64, blocks: u32) -> Sqe {
    let mut sqe = Sqe::default();
    sqe.set_opcode(opc);
    sqe.set_nsid(ns.nsid);
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, blocks.saturating_sub(1) & 0xFFFF);
    sqe
}

impl IoQueue {
    /// The underlying queue.
    pub fn queue(&self) -> &Queue {
        &self.q
    }

    /// Submits a raw I/O command.
    ///
    /// # Errors
    /// See [`Queue::submit`].
    pub async fn submit(
        &self,
        sqe: Sqe,
        write: &[u8],
        read_len: usize,
    ) -> Result<Completion, HostError> {
        self.q.submit(sqe, write, read_len).await
    }

    /// Reads `blocks` blocks at `slba`.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn read(&self, ns: &NsInfo, slba: u64, blocks: u32) -> Result<Vec<u8>, HostError> {
        let len = blocks as usize * ns.block_size as usize;
        let c = self
            .submit(rw_sqe(nvm::READ, ns, slba, blocks), &[], len)
            .await?
            .ok()?;
        if c.data.len() != len {
            return Err(HostError::Protocol("short read data"));
        }
        Ok(c.data)
    }

    /// Writes `data` (whole blocks) at `slba`.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn write(
        &self,
        ns: &NsInfo,
        slba: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(), HostError> {
        let blocks = (data.len() / ns.block_size.max(1) as usize) as u32;
        let mut sqe = rw_sqe(nvm::WRITE, ns, slba, blocks);
        if fua {
            sqe.set_cdw(12, sqe.cdw(12) | (1 << 30));
        }
        self.submit(sqe, data, 0).await?.ok().map(|_| ())
    }

    /// Compares `data` with the blocks at `slba`.
    ///
    /// # Errors
    /// Transport failure or an error status (Compare Failure on a mismatch).
    pub async fn compare(&self, ns: &NsInfo, slba: u64, data: &[u8]) -> Result<(), HostError> {
        let blocks = (data.len() / ns.block_size.max(1) as usize) as u32;
        self.submit(rw_sqe(nvm::COMPARE, ns, slba, blocks), data, 0)
            .await?
            .ok()
            .map(|_| ())
    }

    /// Flush.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn flush(&self, nsid: u32) -> Result<(), HostError> {
        let mut sqe = Sqe::default();
        sqe.set_opcode(nvm::FLUSH);
        sqe.set_nsid(nsid);
        self.submit(sqe, &[], 0).await?.ok().map(|_| ())
    }

    /// Write Zeroes (`deac`: deallocate where possible).
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn write_zeroes(
        &self,
        ns: &NsInfo,
        slba: u64,
        blocks: u32,
        deac: bool,
    ) -> Result<(), HostError> {
        let mut sqe = rw_sqe(nvm::WRITE_ZEROES, ns, slba, blocks);
        if deac {
            sqe.set_cdw(12, sqe.cdw(12) | (1 << 25));
        }
        self.submit(sqe, &[], 0).await?.ok().map(|_| ())
    }

    /// Dataset Management with the deallocate attribute over `(slba, blocks)` ranges.
    ///
    /// # Errors
    /// Transport failure or an error status.
    pub async fn deallocate(&self, nsid: u32, ranges: &[(u64, u32)]) -> Result<(), HostError> {
        let mut data = Vec::with_capacity(ranges.len() * 16);
        for (slba, n) in ranges {
            data.extend_from_slice(&0u32.to_le_bytes());
            data.extend_from_slice(&n.to_le_bytes());
            data.extend_from_slice(&slba.to_le_bytes());
        }
        let mut sqe = Sqe::default();
        sqe.set_opcode(nvm::DSM);
        sqe.set_nsid(nsid);
        sqe.set_cdw(10, (ranges.len().max(1) - 1) as u32);
        sqe.set_cdw(11, 1 << 2);
        self.submit(sqe, &data, 0).await?.ok().map(|_| ())
    }
}
