//! The logical unit shared by every core: identity, mode parameters, reservations, unit
//! attentions, sanitize state.
//!
//! # State
//! Everything that changes is in one `Mutex<LuState>`, taken only on slow paths (commands other
//! than the data path, or data-path commands while a flag below is set). The data path reads
//! atomics instead:
//!
//! * `flags`: [`F_RESERVED`] (an SPC-2 or persistent reservation exists), [`F_SANITIZE`] (a
//!   sanitize runs or failed), [`F_WRITE_PROTECT`] (read-only or SWP), [`F_WRITE_THROUGH`] (WCE
//!   clear), [`F_D_SENSE`] (descriptor sense). Written under the mutex, read with `Acquire`.
//! * `ua_epoch`: bumped whenever a unit attention is established; each [`crate::LuChannel`]
//!   remembers, per I_T nexus, the epoch at which it last found that nexus's queue empty, and
//!   takes the mutex only when the epoch moved.
//! * `capacity_gen`: bumped by [`LogicalUnit::capacity_changed`]; channels reopen their bdev
//!   channel when it moves.
//! * `atomic_active` and the per-channel [`Inflight`] counters: see [`crate::atomic`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::atomic::{Inflight, RangeLock};
use crate::cdb::Cdb;
use crate::inquiry::{self, LuFacts};
use crate::limits;
use crate::mode::ModeParams;
use crate::pr::{self, Identity, OutCdb, PortNames, PrError, PrState};
use crate::sense::{Asc, Sense};
use crate::{LuConfig, Nexus, ResetKind};

/// An SPC-2 or persistent reservation exists.
pub const F_RESERVED: u32 = 1 << 0;
/// A sanitize operation is running or has failed.
pub const F_SANITIZE: u32 = 1 << 1;
/// Writes are refused (read-only LU or SWP).
pub const F_WRITE_PROTECT: u32 = 1 << 2;
/// The write cache is disabled: every write is FUA.
pub const F_WRITE_THROUGH: u32 = 1 << 3;
/// Sense data in descriptor format.
pub const F_D_SENSE: u32 = 1 << 4;

/// Finds other logical units of the same target for EXTENDED COPY.
pub trait CopyTargets: Send + Sync + std::fmt::Debug {
    /// The logical unit whose VPD page 83h carries this designation descriptor (code set,
    /// PIV/association/type, reserved, length, designator bytes; see
    /// [`LogicalUnit::naa_designator`]), if the target has one.
    fn find(&self, designator: &[u8]) -> Option<Arc<LogicalUnit>>;
}

/// Lets PREEMPT AND ABORT abort the tasks of the preempted I_T nexuses, which only the
/// transport can do.
pub trait TaskAborter: Send + Sync + std::fmt::Debug {
    /// Aborts every task that the I_T nexuses `nexus_ids` have on `lu` (as ABORT TASK SET
    /// would, with TAS clear). Called after the PERSISTENT RESERVE OUT completed in the logical
    /// unit, before its response is sent; it must not wait for those tasks.
    fn abort_tasks(&self, lu: &LogicalUnit, nexus_ids: &[u64]);
}

#[derive(Debug)]
pub(crate) struct NexusState {
    pub nexus: Nexus,
    pub ua: VecDeque<Asc>,
    pub prevent: bool,
}

/// Sanitize progress.
#[derive(Debug, Default)]
pub(crate) struct SanitizeState {
    pub running: bool,
    /// The last sanitize failed; `Some(ause)` until a successful one or EXIT FAILURE MODE.
    pub failed: Option<bool>,
}

/// One held EXTENDED COPY result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyResult {
    pub nexus: u64,
    pub list_id: u8,
    pub failed: bool,
    pub segments: u16,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct LuState {
    pub nexuses: HashMap<u64, NexusState>,
    pub ports: HashMap<u16, String>,
    pub spc2_holder: Option<u64>,
    pub pr: PrState,
    pub mode: ModeParams,
    pub sanitize: SanitizeState,
    pub copies: VecDeque<CopyResult>,
}

impl PortNames for HashMap<u16, String> {
    fn target_port(&self, relative_port: u16) -> Option<String> {
        self.get(&relative_port).cloned()
    }
}

/// One logical unit; see the crate documentation.
#[derive(Debug)]
pub struct LogicalUnit {
    pub(crate) cfg: LuConfig,
    pub(crate) block_size: u32,
    pub(crate) thin: bool,
    pub(crate) block_erase: bool,
    pub(crate) flags: AtomicU32,
    pub(crate) read_only: AtomicBool,
    pub(crate) ua_epoch: AtomicU64,
    pub(crate) capacity_gen: AtomicU64,
    pub(crate) atomic_active: AtomicU32,
    pub(crate) sanitize_progress: AtomicU16,
    /// SANITIZE OVERWRITE bandwidth cap in bytes per second (0: none).
    pub(crate) sanitize_bandwidth: AtomicU64,
    pub(crate) ranges: RangeLock,
    pub(crate) state: Mutex<LuState>,
    pub(crate) channels: Mutex<Vec<Weak<Inflight>>>,
    pub(crate) copy_targets: Mutex<Option<Arc<dyn CopyTargets>>>,
    pub(crate) aborter: Mutex<Option<Arc<dyn TaskAborter>>>,
}

impl LogicalUnit {
    /// A logical unit over `cfg.bdev`. `thin` is honoured only if the bdev supports unmap;
    /// SANITIZE BLOCK ERASE is offered when it is thin and the bdev reports block status.
    pub fn new(cfg: LuConfig) -> Arc<LogicalUnit> {
        let g = cfg.bdev.geometry();
        let thin = cfg.thin && g.supports_unmap;
        let block_erase = thin && cfg.bdev.block_status(basalt_bdev::Lba(0), 1).is_some();
        let lu = LogicalUnit {
            block_size: g.block_size,
            thin,
            block_erase,
            flags: AtomicU32::new(0),
            read_only: AtomicBool::new(cfg.read_only),
            ua_epoch: AtomicU64::new(0),
            capacity_gen: AtomicU64::new(0),
            atomic_active: AtomicU32::new(0),
            sanitize_progress: AtomicU16::new(0),
            sanitize_bandwidth: AtomicU64::new(0),
            ranges: RangeLock::default(),
            state: Mutex::new(LuState::default()),
            channels: Mutex::new(Vec::new()),
            copy_targets: Mutex::new(None),
            aborter: Mutex::new(None),
            cfg,
        };
        {
            let st = lu.lock();
            lu.update_flags(&st);
        }
        Arc::new(lu)
    }

    /// The configuration.
    pub fn config(&self) -> &LuConfig {
        &self.cfg
    }

    /// The NAA designation descriptor of VPD page 83h (12 bytes), as EXTENDED COPY
    /// identification target descriptors name this logical unit.
    pub fn naa_designator(&self) -> [u8; 12] {
        inquiry::naa_designator(&self.cfg.uuid)
    }

    /// Caps the write bandwidth of SANITIZE OVERWRITE, in bytes per second (`None`: no cap,
    /// the default). A sanitize rewrites the whole device from one reactor in the background;
    /// the cap leaves the device and the core to the other volumes sharing them. It takes
    /// effect at the next chunk of a running sanitize.
    pub fn set_sanitize_bandwidth(&self, bytes_per_sec: Option<u64>) {
        self.sanitize_bandwidth
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
    }

    /// Lets PREEMPT AND ABORT abort the preempted nexuses' tasks. Without it, PREEMPT AND ABORT
    /// acts as PREEMPT.
    pub fn set_task_aborter(&self, aborter: Arc<dyn TaskAborter>) {
        *self.aborter.lock().unwrap_or_else(PoisonError::into_inner) = Some(aborter);
    }

    /// Lets EXTENDED COPY reach the other logical units of the target.
    pub fn set_copy_targets(&self, targets: Arc<dyn CopyTargets>) {
        *self
            .copy_targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(targets);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LuState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn facts(&self) -> LuFacts<'_> {
        LuFacts {
            cfg: &self.cfg,
            block_size: self.block_size,
            thin: self.thin,
            block_erase: self.block_erase,
        }
    }

    pub(crate) fn update_flags(&self, st: &LuState) {
        let mut f = 0;
        if st.spc2_holder.is_some() || st.pr.reserved() {
            f |= F_RESERVED;
        }
        if st.sanitize.running || st.sanitize.failed.is_some() {
            f |= F_SANITIZE;
        }
        if st.mode.swp || self.read_only.load(Ordering::Acquire) {
            f |= F_WRITE_PROTECT;
        }
        if !st.mode.wce {
            f |= F_WRITE_THROUGH;
        }
        if st.mode.d_sense {
            f |= F_D_SENSE;
        }
        self.flags.store(f, Ordering::Release);
    }

    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    /// Queues `asc` for every known nexus that `who` selects.
    pub(crate) fn establish_ua(
        &self,
        st: &mut LuState,
        asc: Asc,
        mut who: impl FnMut(&Nexus) -> bool,
    ) {
        let mut any = false;
        for ns in st.nexuses.values_mut() {
            if !who(&ns.nexus) {
                continue;
            }
            any = true;
            if ns.ua.contains(&asc) {
                continue;
            }
            if ns.ua.len() >= limits::MAX_QUEUED_UNIT_ATTENTIONS {
                ns.ua.pop_front();
            }
            ns.ua.push_back(asc);
        }
        if any {
            self.ua_epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Takes the oldest pending unit attention of `n`, registering `n` if it is new.
    pub(crate) fn take_ua(&self, n: &Nexus) -> Option<Asc> {
        let mut st = self.lock();
        self.known(&mut st, n).ua.pop_front()
    }

    pub(crate) fn known<'a>(&self, st: &'a mut LuState, n: &Nexus) -> &'a mut NexusState {
        st.nexuses.entry(n.id).or_insert_with(|| NexusState {
            nexus: n.clone(),
            ua: VecDeque::new(),
            prevent: false,
        })
    }

    /// A new I_T nexus can address this LU; see the crate documentation.
    pub fn nexus_added(&self, nexus: &Nexus) {
        let mut st = self.lock();
        st.ports
            .insert(nexus.relative_port, nexus.target_port.clone());
        let mut ua = VecDeque::new();
        ua.push_back(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET);
        st.nexuses.insert(
            nexus.id,
            NexusState {
                nexus: nexus.clone(),
                ua,
                prevent: false,
            },
        );
        self.ua_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The nexus is gone; see the crate documentation.
    pub fn nexus_removed(&self, nexus: &Nexus) {
        let mut st = self.lock();
        st.nexuses.remove(&nexus.id);
        if st.spc2_holder == Some(nexus.id) {
            st.spc2_holder = None;
        }
        st.copies.retain(|c| c.nexus != nexus.id);
        self.update_flags(&st);
    }

    /// LOGICAL UNIT RESET or TARGET WARM/COLD RESET; see the crate documentation.
    ///
    /// Every I_T nexus, `by` included, gets the unit attention (SAM-5 §5.14: the reset is a
    /// condition of the logical unit). A cold reset is a power on: persistent reservations
    /// (not persistent through power loss, as APTPL is not supported) are cleared too.
    pub fn reset(&self, by: &Nexus, kind: ResetKind) {
        let mut st = self.lock();
        self.known(&mut st, by);
        st.spc2_holder = None;
        st.mode = ModeParams::default();
        for ns in st.nexuses.values_mut() {
            ns.prevent = false;
        }
        let asc = match kind {
            ResetKind::LogicalUnit => Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
            ResetKind::TargetWarm => Asc::SCSI_BUS_RESET_OCCURRED,
            ResetKind::TargetCold => {
                st.pr = PrState::default();
                st.copies.clear();
                Asc::POWER_ON_OCCURRED
            }
        };
        self.establish_ua(&mut st, asc, |_| true);
        self.update_flags(&st);
    }

    /// CLEAR TASK SET by `by`; see the crate documentation.
    pub fn task_set_cleared(&self, by: &Nexus) {
        let mut st = self.lock();
        let id = by.id;
        self.establish_ua(&mut st, Asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR, |n| {
            n.id != id
        });
    }

    /// The bdev's size changed; see the crate documentation.
    pub fn capacity_changed(&self) {
        self.capacity_gen.fetch_add(1, Ordering::AcqRel);
        let mut st = self.lock();
        self.establish_ua(&mut st, Asc::CAPACITY_DATA_HAS_CHANGED, |_| true);
    }

    /// Makes the LU read-only (DATA PROTECT / WRITE PROTECTED) or writable.
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::Release);
        let st = self.lock();
        self.update_flags(&st);
    }

    /// True when writes are refused.
    pub fn write_protected(&self) -> bool {
        self.flags() & F_WRITE_PROTECT != 0
    }

    /// The reservation check for `cdb` from `n`: `true` when it is a RESERVATION CONFLICT.
    /// RESERVE and RELEASE are resolved by their own handlers.
    pub(crate) fn reservation_conflict(&self, n: &Nexus, cdb: &Cdb) -> bool {
        if matches!(cdb, Cdb::Reserve | Cdb::Release) {
            return false;
        }
        let st = self.lock();
        if let Some(holder) = st.spc2_holder
            && holder != n.id
            && !pr::spc2_allows(cdb)
        {
            return true;
        }
        st.pr.conflicts(n, pr::access(cdb))
    }

    /// RESERVE(6/10): `Ok(())` for GOOD, `Err(())` for RESERVATION CONFLICT.
    pub(crate) fn spc2_reserve(&self, n: &Nexus) -> Result<(), ()> {
        let mut st = self.lock();
        if let Some(exempt) = st.pr.spc2_exception(n) {
            return if exempt { Ok(()) } else { Err(()) };
        }
        match st.spc2_holder {
            Some(h) if h != n.id => Err(()),
            _ => {
                st.spc2_holder = Some(n.id);
                self.known(&mut st, n);
                self.update_flags(&st);
                Ok(())
            }
        }
    }

    /// RELEASE(6/10).
    pub(crate) fn spc2_release(&self, n: &Nexus) -> Result<(), ()> {
        let mut st = self.lock();
        if let Some(exempt) = st.pr.spc2_exception(n) {
            return if exempt { Ok(()) } else { Err(()) };
        }
        if st.spc2_holder == Some(n.id) {
            st.spc2_holder = None;
            self.update_flags(&st);
        }
        Ok(())
    }

    /// PERSISTENT RESERVE OUT.
    pub(crate) fn persistent_reserve_out(
        &self,
        n: &Nexus,
        cdb: OutCdb,
        params: &[u8],
    ) -> Result<(), PrError> {
        let mut st = self.lock();
        self.known(&mut st, n);
        let ports = st.ports.clone();
        let fx = st.pr.out(n, cdb, params, &ports)?;
        let me = n.id;
        for ua in fx.ua {
            let who: Identity = ua.who;
            self.establish_ua(&mut st, ua.asc, |x| x.id != me && who.matches(x));
        }
        self.update_flags(&st);
        let abort: Vec<u64> = st
            .nexuses
            .values()
            .filter(|x| x.nexus.id != me && fx.abort.iter().any(|who| who.matches(&x.nexus)))
            .map(|x| x.nexus.id)
            .collect();
        drop(st);
        if !abort.is_empty() {
            let aborter = self
                .aborter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(a) = aborter {
                a.abort_tasks(self, &abort);
            }
        }
        Ok(())
    }

    /// Sets mode parameters; other nexuses get MODE PARAMETERS CHANGED if anything changed.
    pub(crate) fn set_mode(&self, n: &Nexus, new: ModeParams) {
        let mut st = self.lock();
        if st.mode != new {
            st.mode = new;
            let me = n.id;
            self.establish_ua(&mut st, Asc::MODE_PARAMETERS_CHANGED, |x| x.id != me);
        }
        self.update_flags(&st);
    }

    pub(crate) fn mode(&self) -> ModeParams {
        self.lock().mode
    }

    /// The sense for a command refused because a sanitize runs, or `None` if `opcode` may run.
    pub(crate) fn sanitize_gate(&self, opcode: u8) -> Option<Sense> {
        let st = self.lock();
        if st.sanitize.running && !Cdb::ignores_unit_attention(opcode) {
            return Some(self.sanitize_sense());
        }
        None
    }

    pub(crate) fn sanitize_sense(&self) -> Sense {
        Sense {
            key: crate::sense::SenseKey::NotReady,
            asc: Asc::SANITIZE_IN_PROGRESS,
            information: None,
            specific: Some(crate::sense::SenseKeySpecific::Progress(
                self.sanitize_progress.load(Ordering::Relaxed),
            )),
        }
    }

    /// True while a sanitize runs.
    pub(crate) fn sanitize_running(&self) -> bool {
        self.lock().sanitize.running
    }

    /// True while the LU is in sanitize failure mode.
    pub(crate) fn sanitize_failed(&self) -> bool {
        self.flags() & F_SANITIZE != 0 && self.lock().sanitize.failed.is_some()
    }

    pub(crate) fn register_channel(&self, c: &Arc<Inflight>) {
        let mut v = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(c));
    }

    /// The in-flight counters of every live channel (for the drain of [`crate::atomic`]).
    pub(crate) fn inflight_counters(&self) -> Vec<Arc<Inflight>> {
        let v = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        v.iter().filter_map(Weak::upgrade).collect()
    }
}
