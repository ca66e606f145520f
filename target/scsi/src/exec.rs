//! Command execution on one core: [`LuChannel`].
//!
//! # Order of checks
//! 1. A pending unit attention of the I_T nexus (not for INQUIRY, REPORT LUNS, REQUEST SENSE).
//! 2. A running sanitize: NOT READY / SANITIZE IN PROGRESS (same exceptions).
//! 3. CDB decoding ([`crate::cdb::decode`]): INVALID COMMAND OPERATION CODE, INVALID FIELD IN
//!    CDB.
//! 4. Reservations (SPC-2 and persistent): RESERVATION CONFLICT.
//! 5. The command: transfer length limits, LBA range, write protection, data-out checks, I/O.
//!
//! Steps 1, 2 and 4 cost one atomic load each when nothing is pending, so READ and WRITE take
//! no lock and allocate nothing but their registered buffers.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use basalt_bdev::{BdevError, IoChannel, IoError, IoFuture, IoKind, IoVecs, Lba};
use basalt_engine::BufPool;

use crate::atomic::{Inflight, RangeGuard};
use crate::bufs;
use crate::cdb::{self, Cdb, PrIn, Rw};
use crate::inquiry;
use crate::limits;
use crate::lu::{F_RESERVED, F_SANITIZE, F_WRITE_PROTECT, F_WRITE_THROUGH, LogicalUnit};
use crate::mode::{self, BlockDescriptor};
use crate::pr::{OutCdb, PrError, PrState};
use crate::reply::{Reply, Xfer};
use crate::rsoc;
use crate::sense::{Asc, Sense, SenseKey};
use crate::{Command, DataIn, Nexus, Response, Status, lu};

/// The per-core handle on a [`LogicalUnit`]; see the crate documentation.
#[derive(Debug, Clone)]
pub struct LuChannel(pub(crate) Rc<Chan>);

const UA_CACHE: usize = 8;

pub(crate) struct Chan {
    pub(crate) lu: Arc<LogicalUnit>,
    pub(crate) io: RefCell<IoChannel>,
    pub(crate) pool: BufPool,
    num_blocks: Cell<u64>,
    pub(crate) capacity_seen: Cell<u64>,
    inflight: Arc<Inflight>,
    /// (nexus id, unit attention epoch + 1) pairs known to have no pending unit attention.
    ua_seen: Cell<[(u64, u64); UA_CACHE]>,
    ua_next: Cell<usize>,
}

impl std::fmt::Debug for Chan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chan")
            .field("num_blocks", &self.num_blocks.get())
            .finish_non_exhaustive()
    }
}

impl LogicalUnit {
    /// Opens the per-core handle on the calling reactor.
    ///
    /// # Errors
    /// The bdev refusing to open a channel here.
    ///
    /// # Panics
    /// Outside a reactor thread.
    pub fn open(self: &Arc<Self>) -> Result<LuChannel, BdevError> {
        let generation = self.capacity_gen.load(Ordering::Acquire);
        let io = self.cfg.bdev.open()?;
        let num_blocks = io.geometry().num_blocks;
        let pool = basalt_engine::current().pool().clone();
        let inflight = Arc::new(Inflight::default());
        self.register_channel(&inflight);
        Ok(LuChannel(Rc::new(Chan {
            lu: self.clone(),
            io: RefCell::new(io),
            pool,
            num_blocks: Cell::new(num_blocks),
            capacity_seen: Cell::new(generation),
            inflight,
            ua_seen: Cell::new([(0, 0); UA_CACHE]),
            ua_next: Cell::new(0),
        })))
    }
}

/// Maps a bdev I/O error to sense data: the one place this happens. `lba` goes into the
/// INFORMATION field of medium errors.
pub fn io_sense(e: &IoError, op: IoKind, lba: u64) -> Sense {
    fn medium(kind: IoKind, lba: u64) -> Sense {
        match kind {
            IoKind::Read => {
                Sense::new(SenseKey::MediumError, Asc::UNRECOVERED_READ_ERROR).with_information(lba)
            }
            IoKind::Write | IoKind::Unmap | IoKind::WriteZeroes => {
                Sense::new(SenseKey::MediumError, Asc::WRITE_ERROR).with_information(lba)
            }
            IoKind::Flush => Sense::new(SenseKey::MediumError, Asc::WRITE_ERROR),
        }
    }
    match e {
        IoError::OutOfRange { .. } => Sense::lba_out_of_range(),
        IoError::Misaligned { .. } | IoError::LengthMismatch { .. } => {
            Sense::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE)
        }
        IoError::Unsupported(_) => Sense::new(SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_CDB),
        IoError::Media { kind, .. } => medium(*kind, lba),
        IoError::ShortTransfer { .. } => medium(op, lba),
        IoError::NoSpace => Sense::new(
            SenseKey::DataProtect,
            Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
        ),
        IoError::ReadOnly => Sense::write_protected(),
        IoError::Injected(kind) => medium(*kind, lba),
        IoError::Aborted => Sense::new(SenseKey::AbortedCommand, Asc::NO_ADDITIONAL_SENSE),
    }
}

/// The first byte where `bufs` (read from the medium) and `expected` differ, comparing at most
/// `expected.len()` bytes.
fn first_difference(bufs: &IoVecs, expected: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    for b in bufs.iter() {
        if at >= expected.len() {
            break;
        }
        let n = b.len().min(expected.len() - at);
        if let Some(i) = b[..n]
            .iter()
            .zip(&expected[at..at + n])
            .position(|(a, e)| a != e)
        {
            return Some(at + i);
        }
        at += n;
    }
    None
}

/// A plain write's claim: the fast in-flight count or a held range (see [`crate::atomic`]).
enum WriteClaim<'a> {
    Fast(&'a Inflight),
    Locked(#[allow(dead_code)] RangeGuard<'a>),
}

impl Drop for WriteClaim<'_> {
    fn drop(&mut self) {
        if let WriteClaim::Fast(c) = self {
            c.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An atomic command's claim: `atomic_active` raised and its range held.
pub(crate) struct AtomicClaim<'a> {
    lu: &'a LogicalUnit,
    range: Option<RangeGuard<'a>>,
}

impl Drop for AtomicClaim<'_> {
    fn drop(&mut self) {
        self.range.take();
        self.lu.atomic_active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LuChannel {
    /// The logical unit.
    pub fn lu(&self) -> &Arc<LogicalUnit> {
        &self.0.lu
    }

    /// Executes one command; see the crate documentation.
    pub async fn execute(&self, cmd: Command<'_>) -> Response {
        let reply = self.run(&cmd).await;
        let descriptor = self.0.lu.flags() & lu::F_D_SENSE != 0;
        reply.into_response(&cmd, descriptor)
    }

    async fn run(&self, cmd: &Command<'_>) -> Reply {
        let c = &*self.0;
        if let Err(s) = c.refresh() {
            return Reply::check(s, Xfer::None);
        }
        let opcode = cmd.cdb.first().copied().unwrap_or(0xFF);
        let exempt = Cdb::ignores_unit_attention(opcode);
        if !exempt && let Some(asc) = c.pending_ua(cmd.nexus) {
            return Reply::check(Sense::unit_attention(asc), Xfer::None);
        }
        let flags = c.lu.flags();
        if flags & F_SANITIZE != 0
            && let Some(s) = c.lu.sanitize_gate(opcode)
        {
            return Reply::check(s, Xfer::None);
        }
        let cdb = match cdb::decode(cmd.cdb) {
            Ok(cdb) => cdb,
            Err(s) => return Reply::check(s, Xfer::None),
        };
        if flags & F_RESERVED != 0 && c.lu.reservation_conflict(cmd.nexus, &cdb) {
            return Reply::conflict(c.implied(&cdb));
        }
        if flags & F_SANITIZE != 0 && medium_access(&cdb) && c.lu.sanitize_failed() {
            return Reply::check(
                Sense::new(SenseKey::MediumError, Asc::SANITIZE_COMMAND_FAILED),
                c.implied(&cdb),
            );
        }
        match cdb {
            Cdb::Read(rw) => c.read(cmd, rw).await,
            Cdb::Write(rw) => c.write(cmd, rw).await,
            // Boxed so the data path's future stays small: the other commands' state is only
            // allocated when one of them runs.
            _ => Box::pin(self.run_other(cmd, cdb)).await,
        }
    }

    async fn run_other(&self, cmd: &Command<'_>, cdb: Cdb) -> Reply {
        let c = &*self.0;
        let x = c.implied(&cdb);
        let out = match cdb {
            Cdb::Read(rw) => return c.read(cmd, rw).await,
            Cdb::Write(rw) => return c.write(cmd, rw).await,
            Cdb::TestUnitReady => Ok(Reply::good(Xfer::None)),
            Cdb::RequestSense { desc, alloc_len } => {
                Ok(c.request_sense(cmd.nexus, desc, alloc_len))
            }
            Cdb::Inquiry {
                evpd,
                page,
                alloc_len,
            } => c.inquiry(cmd.nexus, evpd, page, alloc_len),
            Cdb::ModeSense {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc_len,
            } => {
                let params = c.lu.mode();
                let wp = c.lu.flags() & F_WRITE_PROTECT != 0;
                let desc = c.descriptor();
                mode::mode_sense(ten, dbd, llbaa, pc, page, subpage, &params, wp, desc)
                    .map(|d| Reply::data_alloc(d, alloc_len))
            }
            Cdb::ModeSelect {
                ten,
                pf,
                sp,
                param_len,
            } => c.mode_select(cmd, ten, pf, sp, param_len),
            Cdb::StartStopUnit {
                power_condition,
                no_flush,
                loej,
                start,
                ..
            } => c.start_stop(power_condition, no_flush, loej, start).await,
            Cdb::PreventAllow { prevent } => {
                let mut st = c.lu.lock();
                c.lu.known(&mut st, cmd.nexus).prevent = prevent;
                Ok(Reply::good(Xfer::None))
            }
            Cdb::ReadCapacity10 => {
                let last = c.num_blocks.get().saturating_sub(1);
                let last = u32::try_from(last).unwrap_or(u32::MAX);
                let mut d = Vec::with_capacity(8);
                d.extend_from_slice(&last.to_be_bytes());
                d.extend_from_slice(&c.lu.block_size.to_be_bytes());
                Ok(Reply::data(d))
            }
            Cdb::ReadCapacity16 { alloc_len } => {
                let mut d = vec![0u8; 32];
                d[..8].copy_from_slice(&c.num_blocks.get().saturating_sub(1).to_be_bytes());
                d[8..12].copy_from_slice(&c.lu.block_size.to_be_bytes());
                if c.lu.thin {
                    d[14] = 0x80 | 0x40; // LBPME, LBPRZ
                }
                Ok(Reply::data_alloc(d, alloc_len))
            }
            Cdb::WriteAndVerify { rw, bytchk } => c.write_and_verify(cmd, rw, bytchk).await,
            Cdb::Verify { rw, bytchk } => c.verify(cmd, rw, bytchk).await,
            Cdb::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
                sixteen,
            } => c.write_same(cmd, lba, blocks, unmap, ndob, sixteen).await,
            Cdb::Unmap { param_len } => c.unmap(cmd, param_len).await,
            Cdb::GetLbaStatus { lba, alloc_len } => c.get_lba_status(lba, alloc_len),
            Cdb::CompareAndWrite { lba, blocks, fua } => {
                c.compare_and_write(cmd, lba, blocks, fua).await
            }
            Cdb::OrWrite(rw) => c.orwrite(cmd, rw).await,
            Cdb::SynchronizeCache { lba, blocks, immed } => c.sync_cache(lba, blocks, immed).await,
            Cdb::PreFetch { lba, blocks } => c.count_to_end(lba, blocks).map(|_| Reply {
                status: Status::ConditionMet,
                sense: None,
                data: DataIn::default(),
                xfer: Xfer::None,
            }),
            Cdb::ReadDefectData {
                twelve,
                plist,
                glist,
                format,
                alloc_len,
            } => {
                let flags = (u8::from(plist) << 4) | (u8::from(glist) << 3) | format;
                let d = if twelve {
                    vec![0, flags, 0, 0, 0, 0, 0, 0]
                } else {
                    vec![0, flags, 0, 0]
                };
                Ok(Reply::data_alloc(d, alloc_len))
            }
            Cdb::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                sa,
                alloc_len,
            } => rsoc::report(&c.lu, rctd, options, opcode, sa)
                .map(|d| Reply::data_alloc(d, alloc_len)),
            Cdb::ReportLuns { select, alloc_len } => {
                // The transport answers REPORT LUNS for the target; alone, this LU is LUN 0.
                Ok(crate::luns::report_luns_reply(select, alloc_len, &[0]))
            }
            Cdb::Reserve => Ok(match c.lu.spc2_reserve(cmd.nexus) {
                Ok(()) => Reply::good(Xfer::None),
                Err(()) => Reply::conflict(Xfer::None),
            }),
            Cdb::Release => Ok(match c.lu.spc2_release(cmd.nexus) {
                Ok(()) => Reply::good(Xfer::None),
                Err(()) => Reply::conflict(Xfer::None),
            }),
            Cdb::PersistentReserveIn { action, alloc_len } => {
                let st = c.lu.lock();
                let d = match action {
                    PrIn::ReadKeys => st.pr.read_keys(),
                    PrIn::ReadReservation => st.pr.read_reservation(),
                    PrIn::ReportCapabilities => PrState::report_capabilities(),
                    PrIn::ReadFullStatus => st.pr.read_full_status(),
                };
                Ok(Reply::data_alloc(d, alloc_len))
            }
            Cdb::PersistentReserveOut {
                action,
                scope,
                pr_type,
                param_len,
            } => {
                let params = param_bytes(cmd, param_len);
                let out = OutCdb {
                    action,
                    scope,
                    pr_type,
                    param_len,
                };
                match c.lu.persistent_reserve_out(cmd.nexus, out, params) {
                    Ok(()) => Ok(Reply::good(x)),
                    Err(PrError::Conflict) => Ok(Reply::conflict(x)),
                    Err(PrError::Check(s)) => Err(s),
                }
            }
            Cdb::Sanitize {
                immed,
                ause,
                action,
                param_len,
            } => return crate::sanitize::sanitize(self, cmd, immed, ause, action, param_len).await,
            Cdb::ExtendedCopy { param_len } => {
                return crate::xcopy::extended_copy(self, cmd, param_len).await;
            }
            Cdb::ReceiveCopyResults {
                operating_parameters,
                list_id,
                alloc_len,
            } => crate::xcopy::receive_copy_results(
                &c.lu,
                cmd.nexus,
                operating_parameters,
                list_id,
                alloc_len,
            ),
        };
        out.unwrap_or_else(|s| Reply::check(s, x))
    }
}

/// Commands that touch the medium (refused in sanitize failure mode).
fn medium_access(cdb: &Cdb) -> bool {
    matches!(
        cdb,
        Cdb::Read(_)
            | Cdb::Write(_)
            | Cdb::WriteAndVerify { .. }
            | Cdb::Verify { .. }
            | Cdb::WriteSame { .. }
            | Cdb::Unmap { .. }
            | Cdb::GetLbaStatus { .. }
            | Cdb::CompareAndWrite { .. }
            | Cdb::OrWrite(_)
            | Cdb::PreFetch { .. }
            | Cdb::ExtendedCopy { .. }
    )
}

/// The parameter list: the data-out bytes, cut to `param_len`.
pub(crate) fn param_bytes<'a>(cmd: &'a Command<'_>, param_len: u32) -> &'a [u8] {
    let n = usize::try_from(param_len).unwrap_or(usize::MAX);
    &cmd.data_out[..cmd.data_out.len().min(n)]
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

impl Chan {
    pub(crate) fn block_size(&self) -> u64 {
        u64::from(self.lu.block_size)
    }

    pub(crate) fn num_blocks(&self) -> u64 {
        self.num_blocks.get()
    }

    fn descriptor(&self) -> BlockDescriptor {
        BlockDescriptor {
            blocks: self.num_blocks.get(),
            block_len: self.lu.block_size,
        }
    }

    /// Reopens the bdev channel after a capacity change.
    fn refresh(&self) -> Result<(), Sense> {
        let generation = self.lu.capacity_gen.load(Ordering::Acquire);
        if generation == self.capacity_seen.get() {
            return Ok(());
        }
        match self.lu.cfg.bdev.open() {
            Ok(io) => {
                self.num_blocks.set(io.geometry().num_blocks);
                *self.io.borrow_mut() = io;
                self.capacity_seen.set(generation);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the bdev after a capacity change");
                Err(Sense::new(
                    SenseKey::HardwareError,
                    Asc::INTERNAL_TARGET_FAILURE,
                ))
            }
        }
    }

    /// A pending unit attention of `n`, taken; the mutex only when the epoch moved.
    fn pending_ua(&self, n: &Nexus) -> Option<Asc> {
        let tag = self.lu.ua_epoch.load(Ordering::Acquire).wrapping_add(1);
        let mut seen = self.ua_seen.get();
        if seen.iter().any(|&(id, t)| id == n.id && t == tag) {
            return None;
        }
        let ua = self.lu.take_ua(n);
        if ua.is_none() {
            let slot = match seen.iter().position(|&(id, _)| id == n.id) {
                Some(i) => i,
                None => {
                    let i = self.ua_next.get();
                    self.ua_next.set((i + 1) % UA_CACHE);
                    i
                }
            };
            seen[slot] = (n.id, tag);
            self.ua_seen.set(seen);
        }
        ua
    }

    /// The transfer a CDB implies (for the residual of a refused command).
    fn implied(&self, cdb: &Cdb) -> Xfer {
        let bs = self.block_size();
        match *cdb {
            Cdb::Read(rw) => Xfer::In(u64::from(rw.blocks) * bs),
            Cdb::Write(rw) | Cdb::OrWrite(rw) | Cdb::WriteAndVerify { rw, .. } => {
                Xfer::Out(u64::from(rw.blocks) * bs)
            }
            Cdb::Verify { rw, bytchk } => match bytchk {
                0 => Xfer::None,
                3 => Xfer::Out(if rw.blocks > 0 { bs } else { 0 }),
                _ => Xfer::Out(u64::from(rw.blocks) * bs),
            },
            Cdb::WriteSame { ndob, .. } => Xfer::Out(if ndob { 0 } else { bs }),
            Cdb::CompareAndWrite { blocks, .. } => Xfer::Out(2 * u64::from(blocks) * bs),
            Cdb::Unmap { param_len }
            | Cdb::ModeSelect { param_len, .. }
            | Cdb::PersistentReserveOut { param_len, .. }
            | Cdb::Sanitize { param_len, .. }
            | Cdb::ExtendedCopy { param_len } => Xfer::Out(u64::from(param_len)),
            _ => Xfer::None,
        }
    }

    pub(crate) fn check_lba(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.num_blocks.get() => Ok(()),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    /// Resolves "0 blocks means to the end" and checks the range.
    fn count_to_end(&self, lba: u64, blocks: u32) -> Result<u64, Sense> {
        let cap = self.num_blocks.get();
        if lba > cap {
            return Err(Sense::lba_out_of_range());
        }
        let count = if blocks == 0 {
            cap - lba
        } else {
            u64::from(blocks)
        };
        self.check_lba(lba, count)?;
        Ok(count)
    }

    fn check_xfer(&self, rw: &Rw) -> Result<(), Sense> {
        if u64::from(rw.blocks) * self.block_size() > u64::from(limits::MAX_TRANSFER_BYTES) {
            return Err(Sense::invalid_field_in_cdb(u16::from(rw.len_field), None));
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<(), Sense> {
        if self.lu.flags() & F_WRITE_PROTECT != 0 {
            return Err(Sense::write_protected());
        }
        Ok(())
    }

    fn fua(&self, fua: bool) -> bool {
        fua || self.write_through()
    }

    /// True when the write cache is disabled (caching mode page WCE clear).
    pub(crate) fn write_through(&self) -> bool {
        self.lu.flags() & F_WRITE_THROUGH != 0
    }

    /// Whole blocks of data-out usable for an implied transfer of `implied` bytes.
    fn usable_blocks(&self, cmd: &Command<'_>, implied: u64) -> u64 {
        if !cmd.write {
            return 0;
        }
        let have = implied
            .min(u64::from(cmd.expected_len))
            .min(cmd.data_out.len() as u64);
        have / self.block_size()
    }

    /// Runs a modifying I/O under the plain-write protocol of [`crate::atomic`].
    pub(crate) async fn guarded(
        &self,
        lba: u64,
        blocks: u64,
        op: impl FnOnce(&IoChannel) -> IoFuture,
    ) -> (IoVecs, Result<(), IoError>) {
        self.inflight.0.fetch_add(1, Ordering::SeqCst);
        let claim = if self.lu.atomic_active.load(Ordering::SeqCst) == 0 {
            WriteClaim::Fast(&self.inflight)
        } else {
            self.inflight.0.fetch_sub(1, Ordering::SeqCst);
            let end = lba.saturating_add(blocks);
            WriteClaim::Locked(self.lu.ranges.lock(lba, end).await)
        };
        let fut = op(&self.io.borrow());
        let out = fut.await;
        drop(claim);
        out
    }

    /// Starts an atomic read-modify-write of `lba..lba+blocks`: raises `atomic_active`, waits
    /// for the plain writes in flight, takes the range.
    pub(crate) async fn atomic_begin(&self, lba: u64, blocks: u64) -> AtomicClaim<'_> {
        self.lu.atomic_active.fetch_add(1, Ordering::SeqCst);
        let mut claim = AtomicClaim {
            lu: &self.lu,
            range: None,
        };
        for counter in self.lu.inflight_counters() {
            while counter.0.load(Ordering::SeqCst) != 0 {
                basalt_engine::sleep(Duration::from_micros(20)).await;
            }
        }
        claim.range = Some(self.lu.ranges.lock(lba, lba.saturating_add(blocks)).await);
        claim
    }

    /// Reads `blocks` blocks at `lba` into fresh buffers.
    pub(crate) async fn read_blocks(&self, lba: u64, blocks: u64) -> Result<IoVecs, Sense> {
        let bytes = usize::try_from(blocks * self.block_size()).unwrap_or(usize::MAX);
        let bufs = bufs::alloc(&self.pool, bytes).await;
        let fut = self.io.borrow().read(Lba(lba), bufs);
        let (bufs, res) = fut.await;
        res.map_err(|e| io_sense(&e, IoKind::Read, lba))?;
        Ok(bufs)
    }

    /// Reads `lba..lba+blocks` in chunks, calling `f(byte offset, data)` for each.
    pub(crate) async fn for_each_chunk(
        &self,
        lba: u64,
        blocks: u64,
        mut f: impl FnMut(u64, &IoVecs) -> Result<(), Sense>,
    ) -> Result<(), Sense> {
        let bs = self.block_size();
        let per = (u64::from(limits::CHUNK_BYTES) / bs).max(1);
        let mut done = 0;
        while done < blocks {
            let n = per.min(blocks - done);
            let bufs = self.read_blocks(lba + done, n).await?;
            f(done * bs, &bufs)?;
            done += n;
        }
        Ok(())
    }

    /// Writes `data` (whole blocks) at `lba` under the plain-write protocol.
    pub(crate) async fn write_data(&self, lba: u64, data: &[u8], fua: bool) -> Result<(), Sense> {
        let blocks = data.len() as u64 / self.block_size();
        if blocks == 0 {
            return Ok(());
        }
        let bufs = bufs::alloc_copy(&self.pool, data).await;
        let (_, res) = self
            .guarded(lba, blocks, |io| io.write(Lba(lba), bufs, fua))
            .await;
        res.map_err(|e| io_sense(&e, IoKind::Write, lba))
    }

    async fn read(&self, cmd: &Command<'_>, rw: Rw) -> Reply {
        let bs = self.block_size();
        let implied = u64::from(rw.blocks) * bs;
        let x = Xfer::In(implied);
        if let Err(s) = self
            .check_xfer(&rw)
            .and_then(|()| self.check_lba(rw.lba, u64::from(rw.blocks)))
        {
            return Reply::check(s, x);
        }
        let want = if cmd.read {
            implied.min(u64::from(cmd.expected_len))
        } else {
            0
        };
        let blocks = want.div_ceil(bs);
        if blocks == 0 {
            return Reply::good(x);
        }
        match self.read_blocks(rw.lba, blocks).await {
            Ok(bufs) => Reply {
                status: Status::Good,
                sense: None,
                data: DataIn::Bufs(bufs, usize::try_from(want).unwrap_or(usize::MAX)),
                xfer: x,
            },
            Err(s) => Reply::check(s, x),
        }
    }

    async fn write(&self, cmd: &Command<'_>, rw: Rw) -> Reply {
        let bs = self.block_size();
        let implied = u64::from(rw.blocks) * bs;
        let x = Xfer::Out(implied);
        if let Err(s) = self
            .check_xfer(&rw)
            .and_then(|()| self.check_lba(rw.lba, u64::from(rw.blocks)))
            .and_then(|()| self.check_writable())
        {
            return Reply::check(s, x);
        }
        let blocks = self.usable_blocks(cmd, implied);
        let bytes = usize::try_from(blocks * bs).unwrap_or(usize::MAX);
        match self
            .write_data(rw.lba, &cmd.data_out[..bytes], self.fua(rw.fua))
            .await
        {
            Ok(()) => Reply::good(x),
            Err(s) => Reply::check(s, x),
        }
    }

    async fn write_and_verify(
        &self,
        cmd: &Command<'_>,
        rw: Rw,
        bytchk: bool,
    ) -> Result<Reply, Sense> {
        let bs = self.block_size();
        let x = Xfer::Out(u64::from(rw.blocks) * bs);
        self.check_xfer(&rw)?;
        self.check_lba(rw.lba, u64::from(rw.blocks))?;
        self.check_writable()?;
        let blocks = self.usable_blocks(cmd, u64::from(rw.blocks) * bs);
        let data = &cmd.data_out[..usize::try_from(blocks * bs).unwrap_or(usize::MAX)];
        self.write_data(rw.lba, data, true).await?;
        let mut miscompare = None;
        self.for_each_chunk(rw.lba, blocks, |off, bufs| {
            if bytchk
                && miscompare.is_none()
                && let Some(i) = first_difference(bufs, &data[off as usize..])
            {
                miscompare = Some(off + i as u64);
            }
            Ok(())
        })
        .await?;
        if let Some(off) = miscompare {
            return Err(Sense::miscompare(off));
        }
        Ok(Reply::good(x))
    }

    async fn verify(&self, cmd: &Command<'_>, rw: Rw, bytchk: u8) -> Result<Reply, Sense> {
        let bs = self.block_size();
        self.check_xfer(&rw)?;
        self.check_lba(rw.lba, u64::from(rw.blocks))?;
        let n = u64::from(rw.blocks);
        let x = self.implied(&Cdb::Verify { rw, bytchk });
        if n == 0 {
            return Ok(Reply::good(x));
        }
        let cmp_blocks = match bytchk {
            0 => 0,
            3 => {
                if self.usable_blocks(cmd, bs) == 1 {
                    n
                } else {
                    0
                }
            }
            _ => self.usable_blocks(cmd, n * bs),
        };
        let single = bytchk == 3;
        let data = &cmd.data_out;
        let mut miscompare = None;
        self.for_each_chunk(rw.lba, n, |off, bufs| {
            if miscompare.is_some() || off / bs >= cmp_blocks {
                return Ok(());
            }
            if single {
                let mut at = 0u64;
                for b in bufs.iter() {
                    for (i, blk) in b.chunks(bs as usize).enumerate() {
                        if let Some(j) = blk
                            .iter()
                            .zip(&data[..bs as usize])
                            .position(|(a, e)| a != e)
                        {
                            miscompare = Some(off + at + i as u64 * bs + j as u64);
                            return Ok(());
                        }
                    }
                    at += b.len() as u64;
                }
            } else {
                let end = usize::try_from(cmp_blocks * bs).unwrap_or(usize::MAX);
                if let Some(i) = first_difference(bufs, &data[off as usize..end]) {
                    miscompare = Some(off + i as u64);
                }
            }
            Ok(())
        })
        .await?;
        match miscompare {
            Some(off) => Err(Sense::miscompare(off)),
            None => Ok(Reply::good(x)),
        }
    }

    async fn write_same(
        &self,
        cmd: &Command<'_>,
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
        sixteen: bool,
    ) -> Result<Reply, Sense> {
        let bs = self.block_size();
        let x = Xfer::Out(if ndob { 0 } else { bs });
        if unmap && !self.lu.thin {
            return Err(Sense::invalid_field_in_cdb(1, Some(3)));
        }
        let cap = self.num_blocks.get();
        if lba > cap {
            return Err(Sense::lba_out_of_range());
        }
        let count = if blocks == 0 {
            cap - lba
        } else {
            u64::from(blocks)
        };
        if count > limits::MAX_WRITE_SAME_BLOCKS {
            return Err(Sense::invalid_field_in_cdb(
                if sixteen { 10 } else { 7 },
                None,
            ));
        }
        self.check_lba(lba, count)?;
        self.check_writable()?;
        let zeros = [0u8; 0];
        let pattern: &[u8] = if ndob {
            &zeros
        } else {
            // WRITE SAME transfers exactly one logical block: a Data-Out of another size is
            // refused, not truncated or padded.
            if u64::from(cmd.expected_len) != bs || self.usable_blocks(cmd, bs) == 0 {
                return Err(Sense::invalid_field_in_cdb(
                    if sixteen { 10 } else { 7 },
                    None,
                ));
            }
            &cmd.data_out[..bs as usize]
        };
        if count == 0 {
            return Ok(Reply::good(x));
        }
        let all_zero = pattern.iter().all(|&b| b == 0);
        let geometry = self.io.borrow().geometry().clone();
        if unmap {
            // SBC-3: with UNMAP set a thin LU deallocates the blocks whatever the data (they
            // then read back as zeros, LBPRZ).
            let (_, res) = self
                .guarded(lba, count, |io| io.unmap(Lba(lba), count))
                .await;
            res.map_err(|e| io_sense(&e, IoKind::Unmap, lba))?;
            return Ok(Reply::good(x));
        }
        if all_zero && geometry.supports_write_zeroes {
            let (_, res) = self
                .guarded(lba, count, |io| io.write_zeroes(Lba(lba), count))
                .await;
            res.map_err(|e| io_sense(&e, IoKind::WriteZeroes, lba))?;
            return Ok(Reply::good(x));
        }
        let per = (u64::from(limits::CHUNK_BYTES) / bs).max(1).min(count);
        let mut chunk = vec![0u8; usize::try_from(per * bs).unwrap_or(0)];
        if !all_zero {
            for blk in chunk.chunks_mut(bs as usize) {
                blk.copy_from_slice(pattern);
            }
        }
        let fua = self.fua(false);
        let mut done = 0;
        while done < count {
            let n = per.min(count - done);
            self.write_data(lba + done, &chunk[..(n * bs) as usize], fua)
                .await?;
            done += n;
        }
        Ok(Reply::good(x))
    }

    async fn unmap(&self, cmd: &Command<'_>, param_len: u32) -> Result<Reply, Sense> {
        let x = Xfer::Out(u64::from(param_len));
        if !self.lu.thin {
            return Err(Sense::invalid_opcode());
        }
        self.check_writable()?;
        if param_len == 0 {
            return Ok(Reply::good(x));
        }
        let p = param_bytes(cmd, param_len);
        if p.len() < 8 {
            return Err(Sense::parameter_list_length());
        }
        let bd_len = usize::from(be16(p, 2));
        if bd_len > p.len() - 8 {
            return Err(Sense::parameter_list_length());
        }
        let count = bd_len / 16;
        if count > limits::MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::invalid_field_in_param(2, None));
        }
        for i in 0..count {
            let d = 8 + 16 * i;
            let lba = be64(p, d);
            let n = u64::from(be32(p, d + 8));
            if n > u64::from(limits::MAX_UNMAP_BLOCKS) {
                return Err(Sense::invalid_field_in_param((d + 8) as u16, None));
            }
            self.check_lba(lba, n)?;
        }
        for i in 0..count {
            let d = 8 + 16 * i;
            let lba = be64(p, d);
            let n = u64::from(be32(p, d + 8));
            if n == 0 {
                continue;
            }
            let (_, res) = self.guarded(lba, n, |io| io.unmap(Lba(lba), n)).await;
            res.map_err(|e| io_sense(&e, IoKind::Unmap, lba))?;
        }
        Ok(Reply::good(x))
    }

    fn get_lba_status(&self, lba: u64, alloc_len: u32) -> Result<Reply, Sense> {
        let cap = self.num_blocks.get();
        if lba >= cap {
            return Err(Sense::lba_out_of_range());
        }
        let max = usize::try_from(alloc_len.saturating_sub(8) / 16)
            .unwrap_or(1)
            .clamp(1, 256);
        let mut descs: Vec<(u64, u64, bool)> = Vec::with_capacity(max.min(16));
        let mut at = lba;
        while at < cap {
            let left = cap - at;
            let ask = left.min(u64::from(u32::MAX));
            // A fully provisioned LU reports every block mapped, whatever the bdev tracks.
            let status = if self.lu.thin {
                self.lu.cfg.bdev.block_status(Lba(at), ask)
            } else {
                None
            };
            let (mapped, run) = match status {
                Some(s) => (s.mapped, s.blocks.clamp(1, ask)),
                None => (true, ask),
            };
            match descs.last_mut() {
                Some(last) if last.2 == mapped && last.1 + run <= u64::from(u32::MAX) => {
                    last.1 += run;
                }
                _ => {
                    if descs.len() == max {
                        break;
                    }
                    descs.push((at, run, mapped));
                }
            }
            at += run;
        }
        let mut d = Vec::with_capacity(8 + 16 * descs.len());
        d.extend_from_slice(
            &u32::try_from(4 + 16 * descs.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        d.extend_from_slice(&[0, 0, 0, 0]);
        for (start, n, mapped) in descs {
            d.extend_from_slice(&start.to_be_bytes());
            d.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
            d.push(if mapped { 0 } else { 1 });
            d.extend_from_slice(&[0, 0, 0]);
        }
        Ok(Reply::data_alloc(d, alloc_len))
    }

    async fn compare_and_write(
        &self,
        cmd: &Command<'_>,
        lba: u64,
        blocks: u8,
        fua: bool,
    ) -> Result<Reply, Sense> {
        let bs = self.block_size();
        let n = u64::from(blocks);
        let implied = 2 * n * bs;
        let x = Xfer::Out(implied);
        if u32::from(blocks) > u32::from(limits::MAX_COMPARE_AND_WRITE) {
            return Err(Sense::invalid_field_in_cdb(13, None));
        }
        if u64::from(cmd.expected_len) != implied {
            return Err(Sense::invalid_field_in_cdb(13, None));
        }
        self.check_lba(lba, n)?;
        self.check_writable()?;
        if n == 0 {
            return Ok(Reply::good(x));
        }
        if !cmd.write || (cmd.data_out.len() as u64) < implied {
            return Err(Sense::new(SenseKey::AbortedCommand, Asc::DATA_PHASE_ERROR));
        }
        let half = (n * bs) as usize;
        let (verify, write) = cmd.data_out[..2 * half].split_at(half);
        let claim = self.atomic_begin(lba, n).await;
        let current = self.read_blocks(lba, n).await?;
        if let Some(off) = first_difference(&current, verify) {
            drop(claim);
            return Err(Sense::miscompare(off as u64));
        }
        drop(current);
        let bufs = bufs::alloc_copy(&self.pool, write).await;
        let fut = self.io.borrow().write(Lba(lba), bufs, self.fua(fua));
        let (_, res) = fut.await;
        drop(claim);
        res.map_err(|e| io_sense(&e, IoKind::Write, lba))?;
        Ok(Reply::good(x))
    }

    async fn orwrite(&self, cmd: &Command<'_>, rw: Rw) -> Result<Reply, Sense> {
        let bs = self.block_size();
        let implied = u64::from(rw.blocks) * bs;
        let x = Xfer::Out(implied);
        self.check_xfer(&rw)?;
        self.check_lba(rw.lba, u64::from(rw.blocks))?;
        self.check_writable()?;
        let blocks = self.usable_blocks(cmd, implied);
        if blocks == 0 {
            return Ok(Reply::good(x));
        }
        let claim = self.atomic_begin(rw.lba, blocks).await;
        let mut bufs = self.read_blocks(rw.lba, blocks).await?;
        let mut at = 0;
        for b in bufs.iter_mut() {
            for (m, d) in b.iter_mut().zip(&cmd.data_out[at..]) {
                *m |= *d;
            }
            at += b.len();
        }
        let fut = self.io.borrow().write(Lba(rw.lba), bufs, self.fua(rw.fua));
        let (_, res) = fut.await;
        drop(claim);
        res.map_err(|e| io_sense(&e, IoKind::Write, rw.lba))?;
        Ok(Reply::good(x))
    }

    async fn sync_cache(&self, lba: u64, blocks: u32, immed: bool) -> Result<Reply, Sense> {
        self.count_to_end(lba, blocks)?;
        let fut = self.io.borrow().flush();
        if immed {
            drop(basalt_engine::spawn(async move {
                let (_, res) = fut.await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "SYNCHRONIZE CACHE with IMMED failed");
                }
            }));
            return Ok(Reply::good(Xfer::None));
        }
        let (_, res) = fut.await;
        res.map_err(|e| io_sense(&e, IoKind::Flush, lba))?;
        Ok(Reply::good(Xfer::None))
    }

    async fn start_stop(
        &self,
        power_condition: u8,
        no_flush: bool,
        loej: bool,
        start: bool,
    ) -> Result<Reply, Sense> {
        if loej && !start {
            let st = self.lu.lock();
            if st.nexuses.values().any(|n| n.prevent) {
                return Err(Sense::new(
                    SenseKey::IllegalRequest,
                    Asc::MEDIUM_REMOVAL_PREVENTED,
                ));
            }
        }
        if !start && power_condition == 0 && !no_flush {
            let fut = self.io.borrow().flush();
            let (_, res) = fut.await;
            res.map_err(|e| io_sense(&e, IoKind::Flush, 0))?;
        }
        Ok(Reply::good(Xfer::None))
    }

    fn request_sense(&self, n: &Nexus, desc: bool, alloc_len: u32) -> Reply {
        let sense = if self.lu.flags() & F_SANITIZE != 0 && self.lu.sanitize_running() {
            self.lu.sanitize_sense()
        } else if let Some(asc) = self.lu.take_ua(n) {
            Sense::unit_attention(asc)
        } else {
            Sense::new(SenseKey::NoSense, Asc::NO_ADDITIONAL_SENSE)
        };
        Reply::data_alloc(sense.encode(desc), alloc_len)
    }

    fn inquiry(&self, n: &Nexus, evpd: bool, page: u8, alloc_len: u32) -> Result<Reply, Sense> {
        let d = if evpd {
            inquiry::vpd(page, &self.lu.facts(), n)?
        } else {
            inquiry::standard(&self.lu.cfg, true)
        };
        Ok(Reply::data_alloc(d, alloc_len))
    }

    fn mode_select(
        &self,
        cmd: &Command<'_>,
        ten: bool,
        pf: bool,
        sp: bool,
        param_len: u32,
    ) -> Result<Reply, Sense> {
        let x = Xfer::Out(u64::from(param_len));
        if sp {
            return Err(Sense::invalid_field_in_cdb(1, Some(0)));
        }
        if param_len == 0 {
            return Ok(Reply::good(x));
        }
        if !pf {
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        }
        let p = param_bytes(cmd, param_len);
        if (p.len() as u64) < u64::from(param_len) {
            return Err(Sense::parameter_list_length());
        }
        let cur = self.lu.mode();
        let new = mode::mode_select(ten, p, &cur, self.descriptor())?;
        self.lu.set_mode(cmd.nexus, new);
        Ok(Reply::good(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_io_error_maps_to_the_documented_sense() {
        let cases = [
            (
                IoError::OutOfRange {
                    lba: 1,
                    blocks: 1,
                    capacity: 1,
                },
                IoKind::Read,
                SenseKey::IllegalRequest,
                Asc::LBA_OUT_OF_RANGE,
            ),
            (
                IoError::Media {
                    kind: IoKind::Read,
                    errno: 5,
                },
                IoKind::Read,
                SenseKey::MediumError,
                Asc::UNRECOVERED_READ_ERROR,
            ),
            (
                IoError::Media {
                    kind: IoKind::Write,
                    errno: 5,
                },
                IoKind::Write,
                SenseKey::MediumError,
                Asc::WRITE_ERROR,
            ),
            (
                IoError::ShortTransfer {
                    done: 1,
                    expected: 2,
                },
                IoKind::Read,
                SenseKey::MediumError,
                Asc::UNRECOVERED_READ_ERROR,
            ),
            (
                IoError::NoSpace,
                IoKind::Write,
                SenseKey::DataProtect,
                Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
            ),
            (
                IoError::ReadOnly,
                IoKind::Write,
                SenseKey::DataProtect,
                Asc::WRITE_PROTECTED,
            ),
            (
                IoError::Injected(IoKind::Unmap),
                IoKind::Unmap,
                SenseKey::MediumError,
                Asc::WRITE_ERROR,
            ),
            (
                IoError::Aborted,
                IoKind::Read,
                SenseKey::AbortedCommand,
                Asc::NO_ADDITIONAL_SENSE,
            ),
            (
                IoError::LengthMismatch {
                    bytes: 1,
                    expected: 2,
                },
                IoKind::Write,
                SenseKey::HardwareError,
                Asc::INTERNAL_TARGET_FAILURE,
            ),
        ];
        for (e, op, key, asc) in cases {
            let s = io_sense(&e, op, 77);
            assert_eq!((s.key, s.asc), (key, asc), "{e:?}");
            if key == SenseKey::MediumError {
                assert_eq!(s.information, Some(77));
            }
        }
    }
}
