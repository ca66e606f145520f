//! Reservations: SPC-4 persistent reservations (§5.13) and the access rules of both
//! persistent and SPC-2 (RESERVE/RELEASE) reservations.
//!
//! # Model
//! [`PrState`] is the persistent reservation state of one logical unit: the registrations, the
//! reservation (if any) and PRGENERATION. It is pure: [`PrState::out`] applies one PERSISTENT
//! RESERVE OUT and returns the unit attentions to establish (as registration identities; the
//! logical unit maps them to its live I_T nexuses), the `read_*` methods build PERSISTENT
//! RESERVE IN data, and [`PrState::conflicts`] answers the SPC-4 access table for a command.
//!
//! A registration belongs to an [`Identity`]: an initiator (one port, or every port of an
//! initiator name when registered through a format 00 iSCSI TransportID) and a target port (or
//! every target port with ALL_TG_PT). APTPL is not supported (PTPL_C is 0): registrations live
//! as long as the process and survive I_T nexus loss, as SPC-4 requires.

use crate::Nexus;
use crate::cdb::{Cdb, PrOut, PrType};
use crate::sense::{Asc, Sense, SenseKey};

/// Which initiator port(s) a registration covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorSpec {
    /// One initiator port (iSCSI `<name>,i,0x<ISID>`), compared ignoring ASCII case.
    Port(String),
    /// Every port of one initiator name (iSCSI TransportID format 00).
    Name(String),
}

/// The I_T nexus (or nexuses) a registration or a reservation belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Initiator side.
    pub initiator: InitiatorSpec,
    /// Target port name; `None` for every target port (ALL_TG_PT).
    pub target_port: Option<String>,
}

impl Identity {
    /// The identity of exactly this nexus.
    pub fn of(n: &Nexus) -> Identity {
        Identity {
            initiator: InitiatorSpec::Port(n.initiator_port.clone()),
            target_port: Some(n.target_port.clone()),
        }
    }

    /// True when `n` is (one of) the I_T nexuses of this identity.
    pub fn matches(&self, n: &Nexus) -> bool {
        let initiator = match &self.initiator {
            InitiatorSpec::Port(p) => p.eq_ignore_ascii_case(&n.initiator_port),
            InitiatorSpec::Name(name) => name.eq_ignore_ascii_case(&n.initiator_name),
        };
        initiator
            && self
                .target_port
                .as_ref()
                .is_none_or(|t| t.eq_ignore_ascii_case(&n.target_port))
    }

    /// True when some I_T nexus could belong to both identities.
    fn overlaps(&self, other: &Identity) -> bool {
        let targets = match (&self.target_port, &other.target_port) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        };
        let name_of = |s: &InitiatorSpec| -> String {
            match s {
                InitiatorSpec::Port(p) => port_name(p).to_ascii_lowercase(),
                InitiatorSpec::Name(n) => n.to_ascii_lowercase(),
            }
        };
        let initiators = match (&self.initiator, &other.initiator) {
            (InitiatorSpec::Port(a), InitiatorSpec::Port(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => name_of(a) == name_of(b),
        };
        targets && initiators
    }
}

/// The initiator name part of an iSCSI initiator port name (`<name>,i,0x<ISID>`).
fn port_name(port: &str) -> &str {
    match port.to_ascii_lowercase().find(",i,0x") {
        Some(at) => &port[..at],
        None => port,
    }
}

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Reservation key (never zero).
    pub key: u64,
    /// Whose.
    pub id: Identity,
    /// RELATIVE TARGET PORT IDENTIFIER reported by READ FULL STATUS (0 with ALL_TG_PT).
    pub relative_port: u16,
}

/// The persistent reservation, when one exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Type.
    pub pr_type: PrType,
    /// The holder; `None` for the all-registrants types, held by every registrant.
    pub holder: Option<Identity>,
}

/// Why a PERSISTENT RESERVE OUT failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrError {
    /// RESERVATION CONFLICT status.
    Conflict,
    /// CHECK CONDITION with this sense.
    Check(Sense),
}

impl From<Sense> for PrError {
    fn from(s: Sense) -> Self {
        PrError::Check(s)
    }
}

/// A unit attention to establish for every live I_T nexus of `who` other than the one that
/// sent the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaFor {
    /// Whose nexuses.
    pub who: Identity,
    /// ASC/ASCQ.
    pub asc: Asc,
}

/// What a successful PERSISTENT RESERVE OUT asks of the logical unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrEffects {
    /// Unit attentions to establish.
    pub ua: Vec<UaFor>,
    /// PREEMPT AND ABORT: tasks of these identities' nexuses are to be aborted.
    pub abort: Vec<Identity>,
}

/// How a command accesses the medium, for the reservation access tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never conflicts (INQUIRY, REPORT LUNS, PERSISTENT RESERVE IN/OUT, TEST UNIT READY, ...).
    Any,
    /// Conflicts under exclusive access reservations.
    Read,
    /// Conflicts under every reservation type.
    Write,
}

/// Classifies a command for the SPC-4 / SBC-3 persistent reservation tables.
pub fn access(cdb: &Cdb) -> Access {
    match cdb {
        Cdb::TestUnitReady
        | Cdb::RequestSense { .. }
        | Cdb::Inquiry { .. }
        | Cdb::ReportLuns { .. }
        | Cdb::ReportSupportedOpcodes { .. }
        | Cdb::PersistentReserveIn { .. }
        | Cdb::PersistentReserveOut { .. }
        | Cdb::ReadCapacity10
        | Cdb::ReadCapacity16 { .. }
        | Cdb::PreventAllow { prevent: false }
        | Cdb::Reserve
        | Cdb::Release => Access::Any,
        Cdb::StartStopUnit {
            start: true,
            power_condition: 0,
            ..
        } => Access::Any,
        Cdb::Read(_)
        | Cdb::Verify { .. }
        | Cdb::PreFetch { .. }
        | Cdb::ModeSense { .. }
        | Cdb::ReadDefectData { .. }
        | Cdb::GetLbaStatus { .. }
        | Cdb::ReceiveCopyResults { .. } => Access::Read,
        Cdb::Write(_)
        | Cdb::WriteAndVerify { .. }
        | Cdb::WriteSame { .. }
        | Cdb::Unmap { .. }
        | Cdb::CompareAndWrite { .. }
        | Cdb::OrWrite(_)
        | Cdb::SynchronizeCache { .. }
        | Cdb::ModeSelect { .. }
        | Cdb::Sanitize { .. }
        | Cdb::ExtendedCopy { .. }
        | Cdb::PreventAllow { prevent: true }
        | Cdb::StartStopUnit { .. } => Access::Write,
    }
}

/// True when an SPC-2 reservation held by another I_T nexus lets `cdb` through.
pub fn spc2_allows(cdb: &Cdb) -> bool {
    matches!(
        cdb,
        Cdb::Inquiry { .. } | Cdb::RequestSense { .. } | Cdb::ReportLuns { .. } | Cdb::Release
    )
}

/// Resolves a RELATIVE TARGET PORT IDENTIFIER to the target port's name (REGISTER AND MOVE).
pub trait PortNames {
    /// The name of the target port with this identifier, if the logical unit knows it.
    fn target_port(&self, relative_port: u16) -> Option<String>;
}

/// The fields of a PERSISTENT RESERVE OUT CDB that [`PrState::out`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutCdb {
    /// Service action.
    pub action: PrOut,
    /// SCOPE field.
    pub scope: u8,
    /// TYPE field.
    pub pr_type: u8,
    /// PARAMETER LIST LENGTH.
    pub param_len: u32,
}

/// Persistent reservation state of one logical unit. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrState {
    /// PRGENERATION.
    pub generation: u32,
    /// Registrations, in registration order.
    pub registrations: Vec<Registration>,
    /// The reservation.
    pub reservation: Option<Reservation>,
}

/// Most TransportIDs one SPEC_I_PT REGISTER may name.
const MAX_SPEC_I_PT: usize = 256;

struct Basic {
    key: u64,
    sa_key: u64,
    spec_i_pt: bool,
    all_tg_pt: bool,
    aptpl: bool,
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses one iSCSI TransportID (SPC-4 §7.6.4.6) at the start of `b`, returning the initiator
/// it names and its length. `base` is its offset in the parameter list (for field pointers).
///
/// # Errors
/// INVALID FIELD IN PARAMETER LIST for anything but a well-formed format 00 or 01 iSCSI
/// TransportID.
pub fn parse_transport_id(b: &[u8], base: usize) -> Result<(InitiatorSpec, usize), Sense> {
    let bad = |off: usize, bit: Option<u8>| {
        Sense::invalid_field_in_param(u16::try_from(base + off).unwrap_or(u16::MAX), bit)
    };
    if b.len() < 4 {
        return Err(bad(0, None));
    }
    let format = b[0] >> 6;
    if b[0] & 0x30 != 0 {
        return Err(bad(0, Some(5)));
    }
    if b[0] & 0x0F != 0x05 {
        return Err(bad(0, Some(3)));
    }
    if format > 1 {
        return Err(bad(0, Some(7)));
    }
    if b[1] != 0 {
        return Err(bad(1, None));
    }
    let add = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if add < 20 || add % 4 != 0 || b.len() < 4 + add {
        return Err(bad(2, None));
    }
    let body = &b[4..4 + add];
    let Some(nul) = body.iter().position(|&c| c == 0) else {
        return Err(bad(4, None));
    };
    if body[nul..].iter().any(|&c| c != 0) {
        return Err(bad(4 + nul, None));
    }
    let text = &body[..nul];
    if text.is_empty() || !text.iter().all(|&c| (0x21..0x7F).contains(&c)) {
        return Err(bad(4, None));
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return Err(bad(4, None));
    };
    let spec = if format == 0 {
        if text.contains(',') {
            return Err(bad(4, None));
        }
        InitiatorSpec::Name(text.to_owned())
    } else {
        let lower = text.to_ascii_lowercase();
        let Some(at) = lower.find(",i,0x") else {
            return Err(bad(4, None));
        };
        let isid = &text[at + 5..];
        if at == 0 || isid.len() != 12 || !isid.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(4 + at, None));
        }
        InitiatorSpec::Port(text.to_owned())
    };
    Ok((spec, 4 + add))
}

/// Encodes an iSCSI TransportID for READ FULL STATUS.
pub fn encode_transport_id(spec: &InitiatorSpec, out: &mut Vec<u8>) {
    let (format, text) = match spec {
        InitiatorSpec::Name(n) => (0u8, n.as_str()),
        InitiatorSpec::Port(p) => (1u8, p.as_str()),
    };
    let len = (text.len() + 1).max(20).div_ceil(4) * 4;
    out.push((format << 6) | 0x05);
    out.push(0);
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(text.as_bytes());
    out.resize(start + len, 0);
}

fn check_scope_type(scope: u8, pr_type: u8) -> Result<PrType, Sense> {
    if scope != 0 {
        return Err(Sense::invalid_field_in_cdb(2, Some(7)));
    }
    PrType::from_code(pr_type).ok_or(Sense::invalid_field_in_cdb(2, Some(3)))
}

impl PrState {
    /// Index of the registration covering `n`.
    pub fn find(&self, n: &Nexus) -> Option<usize> {
        self.registrations.iter().position(|r| r.id.matches(n))
    }

    /// True when `n` is registered.
    pub fn registered(&self, n: &Nexus) -> bool {
        self.find(n).is_some()
    }

    /// True when `n` holds the reservation (any registrant, for the all-registrants types).
    pub fn is_holder(&self, n: &Nexus) -> bool {
        match &self.reservation {
            None => false,
            Some(Reservation { holder: None, .. }) => self.registered(n),
            Some(Reservation {
                holder: Some(h), ..
            }) => self.find(n).is_some_and(|i| self.registrations[i].id == *h),
        }
    }

    /// True when a persistent reservation exists.
    pub fn reserved(&self) -> bool {
        self.reservation.is_some()
    }

    /// True when the persistent reservation makes `n`'s command of `access` a conflict.
    pub fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        let Some(r) = &self.reservation else {
            return false;
        };
        if access == Access::Any || self.is_holder(n) {
            return false;
        }
        if r.pr_type.registrants_have_access() && self.registered(n) {
            return false;
        }
        match access {
            Access::Any => false,
            Access::Write => true,
            Access::Read => r.pr_type.exclusive_access(),
        }
    }

    /// RESERVE(6/10) or RELEASE(6/10) while persistent reservation state exists (SPC-4 §5.9.3):
    /// `Some(true)` completes with GOOD and no effect, `Some(false)` is a reservation conflict,
    /// `None` means there is no persistent state and SPC-2 rules apply.
    pub fn spc2_exception(&self, n: &Nexus) -> Option<bool> {
        if self.registrations.is_empty() && self.reservation.is_none() {
            return None;
        }
        let exempt = self.is_holder(n)
            || (self.registered(n)
                && self
                    .reservation
                    .as_ref()
                    .is_some_and(|r| r.pr_type.registrants_have_access()));
        Some(exempt)
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn others(&self, except: Option<usize>, asc: Asc) -> Vec<UaFor> {
        self.registrations
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .map(|(_, r)| UaFor {
                who: r.id.clone(),
                asc,
            })
            .collect()
    }

    /// Removes registration `i`, releasing the reservation if it goes with it (SPC-4
    /// §5.13.11.2.3). Returns the unit attentions that causes.
    fn unregister(&mut self, i: usize) -> Vec<UaFor> {
        let reg = self.registrations.remove(i);
        let mut ua = Vec::new();
        let release = match &self.reservation {
            Some(Reservation {
                holder: Some(h),
                pr_type,
            }) if *h == reg.id => {
                if matches!(
                    pr_type,
                    PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
                ) {
                    ua = self.others(None, Asc::RESERVATIONS_RELEASED);
                }
                true
            }
            Some(Reservation { holder: None, .. }) => self.registrations.is_empty(),
            _ => false,
        };
        if release {
            self.reservation = None;
        }
        ua
    }

    /// Applies one PERSISTENT RESERVE OUT from `n`. `params` is the parameter list cut to the
    /// PARAMETER LIST LENGTH.
    ///
    /// # Errors
    /// [`PrError::Conflict`] for RESERVATION CONFLICT, [`PrError::Check`] for CHECK CONDITION.
    pub fn out(
        &mut self,
        n: &Nexus,
        cdb: OutCdb,
        params: &[u8],
        ports: &dyn PortNames,
    ) -> Result<PrEffects, PrError> {
        let OutCdb {
            action,
            scope,
            pr_type,
            param_len,
        } = cdb;
        let typed = matches!(
            action,
            PrOut::Reserve | PrOut::Release | PrOut::Preempt | PrOut::PreemptAndAbort
        );
        let pr_type = if typed {
            Some(check_scope_type(scope, pr_type)?)
        } else {
            None
        };
        if usize::try_from(param_len).map_or(true, |l| params.len() < l) {
            return Err(Sense::parameter_list_length().into());
        }
        if action == PrOut::RegisterAndMove {
            return self.register_and_move(n, params, ports);
        }
        if params.len() < 24 {
            return Err(Sense::parameter_list_length().into());
        }
        let p = Basic {
            key: be64(params, 0),
            sa_key: be64(params, 8),
            spec_i_pt: params[20] & 0x08 != 0,
            all_tg_pt: params[20] & 0x04 != 0,
            aptpl: params[20] & 0x01 != 0,
        };
        let registering = matches!(
            action,
            PrOut::Register | PrOut::RegisterAndIgnoreExistingKey
        );
        if p.spec_i_pt && action != PrOut::Register {
            return Err(Sense::invalid_field_in_param(20, Some(3)).into());
        }
        if !p.spec_i_pt && params.len() != 24 {
            return Err(Sense::parameter_list_length().into());
        }
        if registering && p.aptpl {
            return Err(Sense::invalid_field_in_param(20, Some(0)).into());
        }
        let me = self.find(n);
        match action {
            PrOut::Register | PrOut::RegisterAndIgnoreExistingKey => {
                let ignore = action == PrOut::RegisterAndIgnoreExistingKey;
                self.register(n, me, &p, ignore, params)
            }
            PrOut::Reserve => {
                let i = self.check_key(me, p.key)?;
                let pr_type = pr_type.ok_or(PrError::Conflict)?;
                match &self.reservation {
                    None => {
                        let holder = if pr_type.all_registrants() {
                            None
                        } else {
                            Some(self.registrations[i].id.clone())
                        };
                        self.reservation = Some(Reservation { pr_type, holder });
                        Ok(PrEffects::default())
                    }
                    Some(r) if self.is_holder(n) && r.pr_type == pr_type => {
                        Ok(PrEffects::default())
                    }
                    Some(_) => Err(PrError::Conflict),
                }
            }
            PrOut::Release => {
                self.check_key(me, p.key)?;
                let pr_type = pr_type.ok_or(PrError::Conflict)?;
                let Some(r) = &self.reservation else {
                    return Ok(PrEffects::default());
                };
                if !self.is_holder(n) {
                    return Ok(PrEffects::default());
                }
                if r.pr_type != pr_type {
                    return Err(Sense::new(
                        SenseKey::IllegalRequest,
                        Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
                    )
                    .into());
                }
                let notify = r.pr_type.registrants_have_access();
                self.reservation = None;
                let ua = if notify {
                    self.others(me, Asc::RESERVATIONS_RELEASED)
                } else {
                    Vec::new()
                };
                Ok(PrEffects {
                    ua,
                    abort: Vec::new(),
                })
            }
            PrOut::Clear => {
                let i = self.check_key(me, p.key)?;
                let ua = self.others(Some(i), Asc::RESERVATIONS_PREEMPTED);
                self.registrations.clear();
                self.reservation = None;
                self.bump();
                Ok(PrEffects {
                    ua,
                    abort: Vec::new(),
                })
            }
            PrOut::Preempt | PrOut::PreemptAndAbort => {
                let i = self.check_key(me, p.key)?;
                let pr_type = pr_type.ok_or(PrError::Conflict)?;
                let mut fx = self.preempt(i, pr_type, p.sa_key)?;
                if action == PrOut::PreemptAndAbort {
                    fx.abort = fx
                        .ua
                        .iter()
                        .filter(|u| u.asc == Asc::REGISTRATIONS_PREEMPTED)
                        .map(|u| u.who.clone())
                        .collect();
                }
                self.bump();
                Ok(fx)
            }
            PrOut::RegisterAndMove => Err(PrError::Conflict),
        }
    }

    fn check_key(&self, me: Option<usize>, key: u64) -> Result<usize, PrError> {
        match me {
            Some(i) if self.registrations[i].key == key => Ok(i),
            _ => Err(PrError::Conflict),
        }
    }

    fn register(
        &mut self,
        n: &Nexus,
        me: Option<usize>,
        p: &Basic,
        ignore: bool,
        params: &[u8],
    ) -> Result<PrEffects, PrError> {
        match me {
            None => {
                if !ignore && p.key != 0 {
                    return Err(PrError::Conflict);
                }
                if p.sa_key == 0 {
                    if p.spec_i_pt {
                        return Err(Sense::invalid_field_in_param(8, None).into());
                    }
                    return Ok(PrEffects::default());
                }
                let target_port = (!p.all_tg_pt).then(|| n.target_port.clone());
                let relative_port = if p.all_tg_pt { 0 } else { n.relative_port };
                let mine = Identity {
                    initiator: InitiatorSpec::Port(n.initiator_port.clone()),
                    target_port: target_port.clone(),
                };
                let mut new = vec![Registration {
                    key: p.sa_key,
                    id: mine,
                    relative_port,
                }];
                if p.spec_i_pt {
                    if params.len() < 28 {
                        return Err(Sense::parameter_list_length().into());
                    }
                    let tid_len = be32(params, 24) as usize;
                    if Some(params.len()) != 28usize.checked_add(tid_len) {
                        return Err(Sense::parameter_list_length().into());
                    }
                    let mut at = 28;
                    while at < params.len() {
                        let (spec, used) = parse_transport_id(&params[at..], at)?;
                        let id = Identity {
                            initiator: spec,
                            target_port: target_port.clone(),
                        };
                        let taken = self.registrations.iter().map(|r| &r.id);
                        let clash = taken
                            .chain(new.iter().map(|r| &r.id))
                            .any(|other| other.overlaps(&id));
                        if clash || new.len() > MAX_SPEC_I_PT {
                            let at = u16::try_from(at).unwrap_or(u16::MAX);
                            return Err(Sense::invalid_field_in_param(at, None).into());
                        }
                        new.push(Registration {
                            key: p.sa_key,
                            id,
                            relative_port,
                        });
                        at += used;
                    }
                }
                self.registrations.extend(new);
                self.bump();
                Ok(PrEffects::default())
            }
            Some(i) => {
                if !ignore && self.registrations[i].key != p.key {
                    return Err(PrError::Conflict);
                }
                if p.spec_i_pt {
                    return Err(Sense::invalid_field_in_param(20, Some(3)).into());
                }
                let ua = if p.sa_key == 0 {
                    self.unregister(i)
                } else {
                    self.registrations[i].key = p.sa_key;
                    Vec::new()
                };
                self.bump();
                Ok(PrEffects {
                    ua,
                    abort: Vec::new(),
                })
            }
        }
    }

    fn preempt(&mut self, me: usize, pr_type: PrType, sa_key: u64) -> Result<PrEffects, PrError> {
        let my_id = self.registrations[me].id.clone();
        let preempt_reservation = match &self.reservation {
            None => false,
            Some(Reservation { holder: None, .. }) => sa_key == 0,
            Some(Reservation {
                holder: Some(h), ..
            }) => self
                .registrations
                .iter()
                .any(|r| r.id == *h && r.key == sa_key),
        };
        if !preempt_reservation && sa_key == 0 {
            return Err(Sense::invalid_field_in_param(8, None).into());
        }
        let removed: Vec<Identity> = if preempt_reservation
            && self
                .reservation
                .as_ref()
                .is_some_and(|r| r.holder.is_none())
        {
            // All registrants reservation preempted with a zero key: every other registration
            // goes.
            self.registrations
                .iter()
                .filter(|r| r.id != my_id)
                .map(|r| r.id.clone())
                .collect()
        } else {
            self.registrations
                .iter()
                .filter(|r| r.key == sa_key)
                .map(|r| r.id.clone())
                .collect()
        };
        if removed.is_empty() && !preempt_reservation {
            return Err(PrError::Conflict);
        }
        let mut ua: Vec<UaFor> = removed
            .iter()
            .filter(|id| **id != my_id)
            .map(|id| UaFor {
                who: id.clone(),
                asc: Asc::REGISTRATIONS_PREEMPTED,
            })
            .collect();
        self.registrations.retain(|r| !removed.contains(&r.id));
        let still_registered = self.registrations.iter().any(|r| r.id == my_id);
        if preempt_reservation {
            let old = self.reservation.take();
            if still_registered {
                let holder = (!pr_type.all_registrants()).then(|| my_id.clone());
                self.reservation = Some(Reservation { pr_type, holder });
            }
            if old.is_some_and(|o| o.pr_type != pr_type) {
                ua.extend(
                    self.registrations
                        .iter()
                        .filter(|r| r.id != my_id)
                        .map(|r| UaFor {
                            who: r.id.clone(),
                            asc: Asc::RESERVATIONS_RELEASED,
                        }),
                );
            }
        } else if let Some(Reservation {
            holder: Some(h), ..
        }) = &self.reservation
            && !self.registrations.iter().any(|r| r.id == *h)
        {
            self.reservation = None;
        } else if self
            .reservation
            .as_ref()
            .is_some_and(|r| r.holder.is_none())
            && self.registrations.is_empty()
        {
            self.reservation = None;
        }
        Ok(PrEffects {
            ua,
            abort: Vec::new(),
        })
    }

    fn register_and_move(
        &mut self,
        n: &Nexus,
        params: &[u8],
        ports: &dyn PortNames,
    ) -> Result<PrEffects, PrError> {
        if params.len() < 24 {
            return Err(Sense::parameter_list_length().into());
        }
        let key = be64(params, 0);
        let sa_key = be64(params, 8);
        let unreg = params[17] & 0x02 != 0;
        let aptpl = params[17] & 0x01 != 0;
        let rel = u16::from_be_bytes([params[18], params[19]]);
        let tid_len = be32(params, 20) as usize;
        if params.len() != 24usize.saturating_add(tid_len) {
            return Err(Sense::parameter_list_length().into());
        }
        let me = self.check_key(self.find(n), key)?;
        match &self.reservation {
            Some(Reservation {
                holder: Some(h), ..
            }) if *h == self.registrations[me].id => {}
            _ => return Err(PrError::Conflict),
        }
        if sa_key == 0 {
            return Err(Sense::invalid_field_in_param(8, None).into());
        }
        if aptpl {
            return Err(Sense::invalid_field_in_param(17, Some(0)).into());
        }
        let (spec, used) = parse_transport_id(&params[24..], 24)?;
        if used != tid_len {
            return Err(Sense::parameter_list_length().into());
        }
        let Some(target) = ports.target_port(rel) else {
            return Err(Sense::invalid_field_in_param(18, None).into());
        };
        let dest = Identity {
            initiator: spec,
            target_port: Some(target),
        };
        let src = self.registrations[me].id.clone();
        if dest.overlaps(&src) {
            return Err(Sense::invalid_field_in_param(24, None).into());
        }
        if let Some(d) = self.registrations.iter().position(|r| r.id.overlaps(&dest)) {
            if self.registrations[d].id != dest {
                return Err(Sense::invalid_field_in_param(24, None).into());
            }
        } else {
            self.registrations.push(Registration {
                key: sa_key,
                id: dest.clone(),
                relative_port: rel,
            });
        }
        if let Some(r) = self.reservation.as_mut() {
            r.holder = Some(dest);
        }
        if unreg && let Some(i) = self.registrations.iter().position(|r| r.id == src) {
            self.registrations.remove(i);
        }
        self.bump();
        Ok(PrEffects::default())
    }

    /// PERSISTENT RESERVE IN / READ KEYS parameter data.
    pub fn read_keys(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * self.registrations.len());
        out.extend_from_slice(&self.generation.to_be_bytes());
        let len = u32::try_from(8 * self.registrations.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        for r in &self.registrations {
            out.extend_from_slice(&r.key.to_be_bytes());
        }
        out
    }

    /// PERSISTENT RESERVE IN / READ RESERVATION parameter data.
    pub fn read_reservation(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.generation.to_be_bytes());
        match &self.reservation {
            None => out.extend_from_slice(&0u32.to_be_bytes()),
            Some(r) => {
                out.extend_from_slice(&16u32.to_be_bytes());
                let key = match &r.holder {
                    None => 0,
                    Some(h) => self
                        .registrations
                        .iter()
                        .find(|reg| reg.id == *h)
                        .map_or(0, |reg| reg.key),
                };
                out.extend_from_slice(&key.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0, 0, r.pr_type.code(), 0, 0]);
            }
        }
        out
    }

    /// PERSISTENT RESERVE IN / REPORT CAPABILITIES parameter data: CRH, SIP_C and ATP_C set,
    /// PTPL_C clear, TMV set with every type.
    pub fn report_capabilities() -> Vec<u8> {
        vec![0, 8, 0x10 | 0x08 | 0x04, 0x80, 0xEA, 0x01, 0, 0]
    }

    /// PERSISTENT RESERVE IN / READ FULL STATUS parameter data.
    pub fn read_full_status(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 48 * self.registrations.len());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        for r in &self.registrations {
            let holder = match &self.reservation {
                Some(Reservation { holder: None, .. }) => true,
                Some(Reservation {
                    holder: Some(h), ..
                }) => *h == r.id,
                None => false,
            };
            out.extend_from_slice(&r.key.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            let mut flags = 0u8;
            if r.id.target_port.is_none() {
                flags |= 0x02;
            }
            if holder {
                flags |= 0x01;
            }
            out.push(flags);
            out.push(match (&self.reservation, holder) {
                (Some(res), true) => res.pr_type.code(),
                _ => 0,
            });
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&r.relative_port.to_be_bytes());
            let len_at = out.len();
            out.extend_from_slice(&[0, 0, 0, 0]);
            let tid_at = out.len();
            encode_transport_id(&r.id.initiator, &mut out);
            let tid_len = u32::try_from(out.len() - tid_at).unwrap_or(u32::MAX);
            out[len_at..len_at + 4].copy_from_slice(&tid_len.to_be_bytes());
        }
        let len = u32::try_from(out.len() - 8).unwrap_or(u32::MAX);
        out[4..8].copy_from_slice(&len.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests;
