//! One NBD connection, without I/O.
//!
//! Bytes from the socket go into [`Connection::receive`] together with the [`Catalog`] of
//! exports; what the driver must do comes out of [`Connection::next_event`]; replies go in
//! through [`Connection::reply_ok`], [`Connection::reply_error`], [`Connection::reply_read`]
//! and [`Connection::reply_block_status`]; bytes for the socket come out of
//! [`Connection::transmit`]. The greeting is queued by [`Connection::new`].
//!
//! # Handshake
//!
//! Fixed newstyle only (the server sets `FIXED_NEWSTYLE` and `NO_ZEROES`; a client that does
//! not set `C_FIXED_NEWSTYLE` is still answered in fixed newstyle, which the protocol allows).
//! Options: `EXPORT_NAME`, `ABORT`, `LIST`, `INFO`, `GO` (answering `NBD_INFO_EXPORT`, `_NAME`,
//! `_DESCRIPTION` and `_BLOCK_SIZE`), `STRUCTURED_REPLY`, `LIST_META_CONTEXT` and
//! `SET_META_CONTEXT` (the one context is `base:allocation`). `STARTTLS` is refused with
//! `NBD_REP_ERR_POLICY`: there is no TLS, so NBD is for the local host only. Every other option
//! is answered `NBD_REP_ERR_UNSUP` and negotiation goes on. Option data larger than
//! [`ConnConfig::max_option`] is skipped and answered `NBD_REP_ERR_TOO_BIG`.
//!
//! # Transmission
//!
//! Requests are checked here, so the driver only ever sees commands it can run: flags valid
//! for the command, the range inside the export and aligned to its block size, no writes to a
//! read-only export, a metadata context before `BLOCK_STATUS`. A refused request is answered
//! at once (`EINVAL`, `ENOSPC` for writes past the end, `EPERM` on a read-only export), its
//! write payload read and dropped. Replies may go out in any order: many commands are in
//! flight at once, each answered when it completes. A request with a bad magic, or a read or
//! write larger than [`ConnConfig::max_payload`] (after its error reply), ends the connection.
//!
//! # Back-pressure
//!
//! [`Connection::throttled`] turns true while too many commands are in flight, too much write
//! data is held, or too many reply bytes wait for the socket; `receive` then stops at the next
//! message boundary, and the driver should wait for replies to drain before offering bytes
//! again. Write payloads are copied into recycled buffers ([`Connection::release_write`] gives
//! them back).

use std::collections::VecDeque;

use crate::spec::{
    self, Chunk, Cmd, Cookie, DecodeError, Errno, Extent, Info, InfoRequest, MetaRequest, Opt,
    OptionHeader, REQUEST_LEN, Rep, RequestHeader, client, cmd_flags, handshake, reply_flags, tx,
};

/// The only metadata context: which blocks hold data.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id `base:allocation` gets when selected.
pub const ALLOCATION_CONTEXT_ID: u32 = 1;

/// What the handshake needs to know about an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Unique for the life of the process (the registry hands it out); tells an export from
    /// another later added under the same name.
    pub id: u64,
    /// The export's name.
    pub name: String,
    /// A description for people (may be empty).
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Block size: the smallest addressable unit and alignment (512 or 4096).
    pub block_size: u32,
    /// Preferred I/O size (a power of two, at least `block_size`).
    pub preferred_block_size: u32,
    /// Writes are refused.
    pub read_only: bool,
    /// Discards reach the device (`NBD_FLAG_SEND_TRIM`).
    pub trim: bool,
}

/// The exports a connection can see.
pub trait Catalog {
    /// The export called `name`.
    fn find(&self, name: &str) -> Option<ExportInfo>;
    /// Every export, for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<ExportInfo>;
}

impl Catalog for Vec<ExportInfo> {
    fn find(&self, name: &str) -> Option<ExportInfo> {
        self.iter().find(|e| e.name == name).cloned()
    }
    fn list(&self) -> Vec<ExportInfo> {
        self.clone()
    }
}

/// Connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// Largest read or write accepted, bytes (advertised as the maximum payload). Larger ones
    /// get an error reply and end the connection.
    pub max_payload: u32,
    /// Largest option data read, bytes; larger options are skipped (`ERR_TOO_BIG`).
    pub max_option: u32,
    /// Commands in flight before `receive` pauses.
    pub max_in_flight: u32,
    /// Write payload bytes held before `receive` pauses.
    pub max_held: u64,
    /// Reply bytes waiting for the socket before `receive` pauses.
    pub max_output: usize,
}

/// The protocol's suggested maximum payload, 32 MiB.
pub const MAX_PAYLOAD: u32 = 32 << 20;

impl Default for ConnConfig {
    fn default() -> ConnConfig {
        ConnConfig {
            max_payload: MAX_PAYLOAD,
            max_option: 64 << 10,
            max_in_flight: 256,
            max_held: 64 << 20,
            max_output: 8 << 20,
        }
    }
}

/// A checked command for the driver to run.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// The client's tag, for the reply.
    pub cookie: Cookie,
    /// Byte offset (block-aligned, inside the export; 0 for a flush).
    pub offset: u64,
    /// Byte length (block-aligned; nonzero but for a flush, which has 0).
    pub length: u32,
    /// What to do.
    pub op: Op,
}

/// The operation of a [`Command`].
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `length` bytes; answer with [`Connection::reply_read`].
    Read {
        /// At most one content chunk (structured replies only).
        df: bool,
    },
    /// Write `data` (`length` bytes); give `data` back with [`Connection::release_write`].
    Write {
        /// The payload.
        data: Vec<u8>,
        /// Reply only once it is durable.
        fua: bool,
    },
    /// Make completed writes durable.
    Flush,
    /// Discard (advisory).
    Trim {
        /// Reply only once it is durable.
        fua: bool,
    },
    /// Make the range read as zeros.
    WriteZeroes {
        /// Keep the range allocated.
        no_hole: bool,
        /// Reply only once it is durable.
        fua: bool,
    },
    /// A prefetch hint.
    Cache,
    /// Report `base:allocation`; answer with [`Connection::reply_block_status`].
    BlockStatus {
        /// Exactly one extent, no longer than `length`.
        req_one: bool,
    },
}

/// What the connection asks its driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Transmission begins on this export: open its device.
    Attach(ExportInfo),
    /// Run a command and reply to it.
    Command(Command),
    /// Send what is queued, then close the socket.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    Transmission,
    /// `NBD_CMD_DISC` seen: finish what is in flight, then close.
    Draining,
    Closed,
}

#[derive(Debug)]
enum Partial {
    None,
    /// Option data too large to hold: skipped, then answered `ERR_TOO_BIG`.
    SkipOption {
        option: Opt,
        left: u64,
    },
    /// A write's payload arriving.
    Write {
        hdr: RequestHeader,
        data: Vec<u8>,
        left: usize,
    },
    /// A refused write's payload, read and dropped before the error reply.
    Discard {
        hdr: RequestHeader,
        left: usize,
        errno: Errno,
        msg: &'static str,
    },
}

#[derive(Debug)]
struct MetaSelection {
    export: String,
    allocation: bool,
}

#[derive(Debug)]
struct Bound {
    info: ExportInfo,
    allocation: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnConfig,
    phase: Phase,
    partial: Partial,
    no_zeroes: bool,
    structured: bool,
    meta: Option<MetaSelection>,
    export: Option<Bound>,
    outstanding: u32,
    held: u64,
    out: Vec<u8>,
    events: VecDeque<Event>,
    spare: Vec<Vec<u8>>,
}

/// Recycled buffers kept per connection.
const MAX_SPARE: usize = 64;
/// Recycled buffers larger than this are freed instead of kept.
const MAX_SPARE_CAPACITY: usize = 4 << 20;

type Refusal = (Errno, &'static str);

impl Connection {
    /// A new connection with the server's greeting queued.
    pub fn new(cfg: ConnConfig) -> Connection {
        let mut out = Vec::with_capacity(64 * 1024);
        spec::encode_greeting(&mut out, handshake::FIXED_NEWSTYLE | handshake::NO_ZEROES);
        Connection {
            cfg,
            phase: Phase::ClientFlags,
            partial: Partial::None,
            no_zeroes: false,
            structured: false,
            meta: None,
            export: None,
            outstanding: 0,
            held: 0,
            out,
            events: VecDeque::with_capacity(64),
            spare: Vec::new(),
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether structured replies were negotiated.
    pub fn structured(&self) -> bool {
        self.structured
    }

    /// The export of the transmission phase, once it began.
    pub fn export(&self) -> Option<&ExportInfo> {
        self.export.as_ref().map(|b| &b.info)
    }

    /// Commands handed out and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Whether `receive` pauses until replies drain (see the module documentation).
    pub fn throttled(&self) -> bool {
        self.out.len() >= self.cfg.max_output
            || self.outstanding >= self.cfg.max_in_flight
            || self.held >= self.cfg.max_held
    }

    /// The next thing to do, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Moves queued bytes for the socket into `out` (appending).
    pub fn transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
    }

    /// Whether bytes are queued for the socket.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// A buffer of at least `cap` bytes' capacity, recycled when possible.
    pub fn take_buffer(&mut self, cap: usize) -> Vec<u8> {
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.reserve(cap);
        v
    }

    /// Gives a buffer back for reuse.
    pub fn recycle(&mut self, v: Vec<u8>) {
        if self.spare.len() < MAX_SPARE && v.capacity() > 0 && v.capacity() <= MAX_SPARE_CAPACITY {
            self.spare.push(v);
        }
    }

    /// Gives a write's payload back once the write is done (it no longer counts as held).
    pub fn release_write(&mut self, data: Vec<u8>) {
        self.held = self.held.saturating_sub(data.len() as u64);
        self.recycle(data);
    }

    /// Feeds received bytes; returns how many were consumed. The rest must be offered again
    /// with more bytes appended (after the connection stops being throttled). Once closed, or
    /// after `NBD_CMD_DISC`, everything is consumed and ignored.
    pub fn receive(&mut self, buf: &[u8], catalog: &dyn Catalog) -> usize {
        let mut used = 0usize;
        loop {
            if matches!(self.phase, Phase::Closed | Phase::Draining) {
                return buf.len();
            }
            let rest = &buf[used..];
            if !matches!(self.partial, Partial::None) {
                used += self.continue_partial(rest);
                if !matches!(self.partial, Partial::None) {
                    break;
                }
                continue;
            }
            if self.throttled() {
                break;
            }
            let step = match self.phase {
                Phase::ClientFlags => self.on_client_flags(rest),
                Phase::Options => self.on_option_bytes(rest, catalog),
                Phase::Transmission => self.on_request_bytes(rest),
                Phase::Draining | Phase::Closed => Some(rest.len()),
            };
            match step {
                Some(n) => used += n,
                None => break,
            }
        }
        if self.phase == Phase::Closed {
            buf.len()
        } else {
            used
        }
    }

    fn close(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.partial = Partial::None;
            self.events.push_back(Event::Close);
        }
    }

    fn hard_close(&mut self, why: &dyn std::fmt::Display) -> usize {
        tracing::debug!(%why, "NBD connection ended by the server");
        self.close();
        0
    }

    fn continue_partial(&mut self, rest: &[u8]) -> usize {
        match &mut self.partial {
            Partial::None => 0,
            Partial::SkipOption { option, left } => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                *left -= n as u64;
                if *left == 0 {
                    let option = *option;
                    self.partial = Partial::None;
                    self.option_error(option, Rep::ERR_TOO_BIG, "option data too large");
                }
                n
            }
            Partial::Write { data, left, .. } => {
                let n = (*left).min(rest.len());
                data.extend_from_slice(&rest[..n]);
                *left -= n;
                if *left == 0
                    && let Partial::Write { hdr, data, .. } =
                        std::mem::replace(&mut self.partial, Partial::None)
                {
                    self.emit(Command {
                        cookie: hdr.cookie,
                        offset: hdr.offset,
                        length: hdr.length,
                        op: Op::Write {
                            data,
                            fua: hdr.flags & cmd_flags::FUA != 0,
                        },
                    });
                }
                n
            }
            Partial::Discard { left, .. } => {
                let n = (*left).min(rest.len());
                *left -= n;
                if *left == 0
                    && let Partial::Discard {
                        hdr, errno, msg, ..
                    } = std::mem::replace(&mut self.partial, Partial::None)
                {
                    self.refuse(hdr.cookie, errno, msg);
                }
                n
            }
        }
    }

    fn emit(&mut self, cmd: Command) {
        self.outstanding += 1;
        self.events.push_back(Event::Command(cmd));
    }

    // ---- handshake ----

    fn on_client_flags(&mut self, rest: &[u8]) -> Option<usize> {
        if rest.len() < spec::CLIENT_FLAGS_LEN {
            return None;
        }
        let flags = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if flags & !client::KNOWN != 0 {
            // The protocol says to drop a client that sets flags it does not know.
            return Some(self.hard_close(&format_args!("unknown client flags {flags:#x}")));
        }
        self.no_zeroes = flags & client::NO_ZEROES != 0;
        self.phase = Phase::Options;
        Some(spec::CLIENT_FLAGS_LEN)
    }

    fn on_option_bytes(&mut self, rest: &[u8], catalog: &dyn Catalog) -> Option<usize> {
        let h = match OptionHeader::decode(rest) {
            Ok(Some(h)) => h,
            Ok(None) => return None,
            Err(e) => return Some(self.hard_close(&e)),
        };
        if h.length > self.cfg.max_option {
            if h.option == Opt::EXPORT_NAME {
                // No error can be returned to EXPORT_NAME (and no name is this long).
                return Some(self.hard_close(&"NBD_OPT_EXPORT_NAME too long"));
            }
            self.partial = Partial::SkipOption {
                option: h.option,
                left: u64::from(h.length),
            };
            return Some(spec::OPTION_HEADER_LEN);
        }
        let total = spec::OPTION_HEADER_LEN + h.length as usize;
        if rest.len() < total {
            return None;
        }
        self.on_option(h.option, &rest[spec::OPTION_HEADER_LEN..total], catalog);
        Some(total)
    }

    fn option_reply(&mut self, option: Opt, rep: Rep, data: &[&[u8]]) {
        spec::encode_option_reply(&mut self.out, option, rep, data);
    }

    fn option_error(&mut self, option: Opt, rep: Rep, msg: &str) {
        let msg = spec::clip_message(msg);
        self.option_reply(option, rep, &[msg.as_bytes()]);
    }

    fn transmission_flags(&self, e: &ExportInfo) -> u16 {
        let mut f = tx::HAS_FLAGS | tx::SEND_FLUSH | tx::SEND_FUA | tx::CAN_MULTI_CONN;
        f |= tx::SEND_CACHE;
        if e.read_only {
            f |= tx::READ_ONLY;
        } else {
            f |= tx::SEND_WRITE_ZEROES;
            if e.trim {
                f |= tx::SEND_TRIM;
            }
        }
        if self.structured {
            f |= tx::SEND_DF;
        }
        f
    }

    fn on_option(&mut self, option: Opt, data: &[u8], catalog: &dyn Catalog) {
        match option {
            Opt::EXPORT_NAME => {
                let found = std::str::from_utf8(data).ok().and_then(|n| catalog.find(n));
                let Some(e) = found else {
                    // EXPORT_NAME cannot be answered with an error: the session ends.
                    self.hard_close(&"NBD_OPT_EXPORT_NAME names no export");
                    return;
                };
                let flags = self.transmission_flags(&e);
                spec::encode_export_name_reply(&mut self.out, e.size, flags, !self.no_zeroes);
                self.begin_transmission(e);
            }
            Opt::ABORT => {
                self.option_reply(option, Rep::ACK, &[]);
                self.close();
            }
            Opt::LIST => {
                if !data.is_empty() {
                    self.option_error(option, Rep::ERR_INVALID, "NBD_OPT_LIST takes no data");
                    return;
                }
                for e in catalog.list() {
                    let len = u32::try_from(e.name.len()).unwrap_or(0).to_be_bytes();
                    let desc = spec::clip_message(&e.description);
                    self.option_reply(
                        option,
                        Rep::SERVER,
                        &[&len, e.name.as_bytes(), desc.as_bytes()],
                    );
                }
                self.option_reply(option, Rep::ACK, &[]);
            }
            Opt::STARTTLS => self.option_error(
                option,
                Rep::ERR_POLICY,
                "TLS is not offered: this NBD server is for the local host only",
            ),
            Opt::INFO | Opt::GO => self.info_or_go(option, data, catalog),
            Opt::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    self.option_error(
                        option,
                        Rep::ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY takes no data",
                    );
                } else if self.structured {
                    self.option_error(
                        option,
                        Rep::ERR_INVALID,
                        "structured replies are already negotiated",
                    );
                } else {
                    self.structured = true;
                    self.option_reply(option, Rep::ACK, &[]);
                }
            }
            Opt::LIST_META_CONTEXT | Opt::SET_META_CONTEXT => {
                self.meta_context(option, data, catalog);
            }
            _ => self.option_error(option, Rep::ERR_UNSUP, "option not supported"),
        }
    }

    fn info_or_go(&mut self, option: Opt, data: &[u8], catalog: &dyn Catalog) {
        let req = match InfoRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                self.option_error(option, Rep::ERR_INVALID, &e.to_string());
                return;
            }
        };
        let Some(e) = catalog.find(req.name) else {
            self.option_error(option, Rep::ERR_UNKNOWN, "no export of that name");
            return;
        };
        let flags = self.transmission_flags(&e);
        let mut export = [0u8; 12];
        export[..2].copy_from_slice(&Info::EXPORT.0.to_be_bytes());
        export[2..10].copy_from_slice(&e.size.to_be_bytes());
        export[10..].copy_from_slice(&flags.to_be_bytes());
        self.option_reply(option, Rep::INFO, &[&export]);
        if req.requests.contains(&Info::NAME) {
            self.option_reply(
                option,
                Rep::INFO,
                &[&Info::NAME.0.to_be_bytes(), e.name.as_bytes()],
            );
        }
        if req.requests.contains(&Info::DESCRIPTION) && !e.description.is_empty() {
            let desc = spec::clip_message(&e.description);
            self.option_reply(
                option,
                Rep::INFO,
                &[&Info::DESCRIPTION.0.to_be_bytes(), desc.as_bytes()],
            );
        }
        // Always sent: Basalt's minimum block is the device's, not the protocol's default of 1.
        let mut sizes = [0u8; 14];
        sizes[..2].copy_from_slice(&Info::BLOCK_SIZE.0.to_be_bytes());
        sizes[2..6].copy_from_slice(&e.block_size.to_be_bytes());
        sizes[6..10].copy_from_slice(&e.preferred_block_size.max(e.block_size).to_be_bytes());
        sizes[10..].copy_from_slice(&self.cfg.max_payload.to_be_bytes());
        self.option_reply(option, Rep::INFO, &[&sizes]);
        self.option_reply(option, Rep::ACK, &[]);
        if option == Opt::GO {
            self.begin_transmission(e);
        }
    }

    fn meta_context(&mut self, option: Opt, data: &[u8], catalog: &dyn Catalog) {
        let set = option == Opt::SET_META_CONTEXT;
        if set {
            // A SET replaces the selection, even when it fails.
            self.meta = None;
        }
        if !self.structured {
            self.option_error(
                option,
                Rep::ERR_INVALID,
                "negotiate structured replies first",
            );
            return;
        }
        let req = match MetaRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                self.option_error(option, Rep::ERR_INVALID, &e.to_string());
                return;
            }
        };
        if catalog.find(req.name).is_none() {
            self.option_error(option, Rep::ERR_UNKNOWN, "no export of that name");
            return;
        }
        let matches = if set {
            req.queries.contains(&BASE_ALLOCATION)
        } else {
            // Listing: no query lists everything; `base:` is the namespace's wildcard.
            req.queries.is_empty()
                || req
                    .queries
                    .iter()
                    .any(|q| *q == "base:" || *q == BASE_ALLOCATION)
        };
        if matches {
            let id = if set { ALLOCATION_CONTEXT_ID } else { 0 };
            self.option_reply(
                option,
                Rep::META_CONTEXT,
                &[&id.to_be_bytes(), BASE_ALLOCATION.as_bytes()],
            );
        }
        if set {
            self.meta = Some(MetaSelection {
                export: req.name.to_owned(),
                allocation: matches,
            });
        }
        self.option_reply(option, Rep::ACK, &[]);
    }

    fn begin_transmission(&mut self, e: ExportInfo) {
        let allocation = self
            .meta
            .as_ref()
            .is_some_and(|m| m.allocation && m.export == e.name);
        self.events.push_back(Event::Attach(e.clone()));
        self.export = Some(Bound {
            info: e,
            allocation,
        });
        self.phase = Phase::Transmission;
    }

    // ---- transmission ----

    fn on_request_bytes(&mut self, rest: &[u8]) -> Option<usize> {
        match RequestHeader::decode(rest) {
            Ok(Some(h)) => {
                self.on_request(h);
                Some(REQUEST_LEN)
            }
            Ok(None) => None,
            Err(e @ DecodeError::BadMagic { .. }) | Err(e @ DecodeError::Malformed(_)) => {
                Some(self.hard_close(&e))
            }
        }
    }

    /// Checks a request against the export; the error to answer with if it is refused.
    fn check(&self, h: &RequestHeader) -> Result<(), Refusal> {
        let Some(b) = &self.export else {
            return Err((Errno::EINVAL, "no export"));
        };
        let allowed = cmd_flags::FUA
            | match h.cmd {
                Cmd::WRITE_ZEROES => cmd_flags::NO_HOLE,
                Cmd::READ if self.structured => cmd_flags::DF,
                Cmd::BLOCK_STATUS => cmd_flags::REQ_ONE,
                _ => 0,
            };
        match h.cmd {
            Cmd::READ
            | Cmd::WRITE
            | Cmd::FLUSH
            | Cmd::TRIM
            | Cmd::CACHE
            | Cmd::WRITE_ZEROES
            | Cmd::BLOCK_STATUS => {}
            _ => return Err((Errno::EINVAL, "unknown command")),
        }
        if h.flags & !allowed != 0 {
            return Err((Errno::EINVAL, "command flags not valid for this command"));
        }
        let writes = matches!(h.cmd, Cmd::WRITE | Cmd::TRIM | Cmd::WRITE_ZEROES);
        if writes && b.info.read_only {
            return Err((Errno::EPERM, "the export is read-only"));
        }
        if h.cmd == Cmd::FLUSH {
            return Ok(());
        }
        if h.cmd == Cmd::BLOCK_STATUS && !b.allocation {
            return Err((
                Errno::EINVAL,
                "no metadata context was selected for this export",
            ));
        }
        let inside = h
            .offset
            .checked_add(u64::from(h.length))
            .is_some_and(|end| end <= b.info.size);
        if !inside {
            return Err(match h.cmd {
                Cmd::WRITE | Cmd::WRITE_ZEROES => {
                    (Errno::ENOSPC, "the range runs past the end of the export")
                }
                _ => (Errno::EINVAL, "the range runs past the end of the export"),
            });
        }
        let bs = u64::from(b.info.block_size.max(1));
        if !h.offset.is_multiple_of(bs) || !u64::from(h.length).is_multiple_of(bs) {
            return Err((
                Errno::EINVAL,
                "offset and length must be multiples of the export's block size",
            ));
        }
        if h.cmd == Cmd::BLOCK_STATUS && h.length == 0 {
            return Err((Errno::EINVAL, "block status of an empty range"));
        }
        Ok(())
    }

    fn on_request(&mut self, h: RequestHeader) {
        if h.cmd == Cmd::DISC {
            self.phase = Phase::Draining;
            if self.outstanding == 0 {
                self.close();
            }
            return;
        }
        if matches!(h.cmd, Cmd::READ | Cmd::WRITE) && h.length > self.cfg.max_payload {
            // The error, then a hard disconnect: the payload is not worth reading.
            self.refuse(
                h.cookie,
                Errno::EINVAL,
                "request larger than the maximum payload",
            );
            self.hard_close(&format_args!("{}-byte request", h.length));
            return;
        }
        let checked = self.check(&h);
        let len = h.length as usize;
        if h.cmd == Cmd::WRITE {
            match checked {
                Err((errno, msg)) if len > 0 => {
                    self.partial = Partial::Discard {
                        hdr: h,
                        left: len,
                        errno,
                        msg,
                    };
                }
                Err((errno, msg)) => self.refuse(h.cookie, errno, msg),
                Ok(()) if len == 0 => self.simple(Errno::OK, h.cookie),
                Ok(()) => {
                    let data = self.take_buffer(len);
                    self.held += len as u64;
                    self.partial = Partial::Write {
                        hdr: h,
                        data,
                        left: len,
                    };
                }
            }
            return;
        }
        if let Err((errno, msg)) = checked {
            self.refuse(h.cookie, errno, msg);
            return;
        }
        let fua = h.flags & cmd_flags::FUA != 0;
        let op = match h.cmd {
            Cmd::READ if h.length == 0 => {
                // Nothing to read: an empty success.
                if self.structured {
                    spec::encode_chunk_header(
                        &mut self.out,
                        reply_flags::DONE,
                        Chunk::NONE,
                        h.cookie,
                        0,
                    );
                } else {
                    self.simple(Errno::OK, h.cookie);
                }
                return;
            }
            Cmd::READ => Op::Read {
                df: h.flags & cmd_flags::DF != 0,
            },
            Cmd::FLUSH => Op::Flush,
            Cmd::TRIM | Cmd::WRITE_ZEROES | Cmd::CACHE if h.length == 0 => {
                self.simple(Errno::OK, h.cookie);
                return;
            }
            Cmd::TRIM => Op::Trim { fua },
            Cmd::WRITE_ZEROES => Op::WriteZeroes {
                no_hole: h.flags & cmd_flags::NO_HOLE != 0,
                fua,
            },
            Cmd::CACHE => Op::Cache,
            Cmd::BLOCK_STATUS => Op::BlockStatus {
                req_one: h.flags & cmd_flags::REQ_ONE != 0,
            },
            _ => {
                // `check` lets no other command through.
                self.refuse(h.cookie, Errno::EINVAL, "unknown command");
                return;
            }
        };
        // A flush's offset and length are reserved: not passed on.
        let (offset, length) = match op {
            Op::Flush => (0, 0),
            _ => (h.offset, h.length),
        };
        self.emit(Command {
            cookie: h.cookie,
            offset,
            length,
            op,
        });
    }

    fn simple(&mut self, errno: Errno, cookie: Cookie) {
        spec::encode_simple_reply(&mut self.out, errno, cookie);
    }

    /// An error reply for a request that never became a command.
    fn refuse(&mut self, cookie: Cookie, errno: Errno, msg: &str) {
        if self.structured {
            spec::encode_error_chunk(&mut self.out, cookie, errno, msg, None);
        } else {
            self.simple(errno, cookie);
        }
    }

    fn finish_one(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.phase == Phase::Draining && self.outstanding == 0 {
            self.close();
        }
    }

    fn replying(&self) -> bool {
        matches!(self.phase, Phase::Transmission | Phase::Draining)
    }

    /// Answers a command other than a read with success.
    pub fn reply_ok(&mut self, cookie: Cookie) {
        if self.replying() {
            self.simple(Errno::OK, cookie);
            self.finish_one();
        }
    }

    /// Answers a command with an error: an error chunk (at `offset` when given) with
    /// structured replies, a simple reply otherwise.
    pub fn reply_error(&mut self, cookie: Cookie, errno: Errno, msg: &str, offset: Option<u64>) {
        if self.replying() {
            if self.structured {
                spec::encode_error_chunk(&mut self.out, cookie, errno, msg, offset);
            } else {
                self.simple(errno, cookie);
            }
            self.finish_one();
        }
    }

    /// Sends read data for `cookie` starting at byte `offset` of the export, the
    /// concatenation of `data`. With structured replies this is one `OFFSET_DATA` chunk, the
    /// last of the reply when `done`; several calls may answer one read, in any order. With
    /// simple replies the data must be the whole read (`done` true).
    pub fn reply_read(&mut self, cookie: Cookie, offset: u64, data: &[&[u8]], done: bool) {
        if !self.replying() {
            return;
        }
        let len: usize = data.iter().map(|d| d.len()).sum();
        if self.structured {
            let flags = if done { reply_flags::DONE } else { 0 };
            spec::encode_chunk_header(
                &mut self.out,
                flags,
                Chunk::OFFSET_DATA,
                cookie,
                u32::try_from(len + 8).unwrap_or(u32::MAX),
            );
            self.out.extend_from_slice(&offset.to_be_bytes());
        } else {
            debug_assert!(done, "a simple reply carries the whole read");
            self.simple(Errno::OK, cookie);
        }
        self.out.reserve(len);
        for d in data {
            self.out.extend_from_slice(d);
        }
        if done || !self.structured {
            self.finish_one();
        }
    }

    /// Answers a `BLOCK_STATUS` with the extents of `base:allocation` from the command's
    /// offset (at least one).
    pub fn reply_block_status(&mut self, cookie: Cookie, extents: &[Extent]) {
        if !self.replying() {
            return;
        }
        let len = 4 + 8 * extents.len();
        spec::encode_chunk_header(
            &mut self.out,
            reply_flags::DONE,
            Chunk::BLOCK_STATUS,
            cookie,
            u32::try_from(len).unwrap_or(u32::MAX),
        );
        self.out
            .extend_from_slice(&ALLOCATION_CONTEXT_ID.to_be_bytes());
        for e in extents {
            self.out.extend_from_slice(&e.length.to_be_bytes());
            self.out.extend_from_slice(&e.flags.to_be_bytes());
        }
        self.finish_one();
    }
}

#[cfg(test)]
mod tests;
