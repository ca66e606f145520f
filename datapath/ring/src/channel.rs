//! The two ends of a pairing: [`Endpoint::create`] (control) and [`Endpoint::attach`]
//! (datapath).
//!
//! | ring        | producer | consumer | wakes          |
//! |-------------|----------|----------|----------------|
//! | commands    | control  | datapath | datapath's fd  |
//! | completions | datapath | control  | control's fd   |
//! | events      | datapath | control  | control's fd   |
//!
//! [`Endpoint::send`] puts a message on this side's outbound ring (commands for control,
//! completions for the datapath) and signals the peer's eventfd only if the peer said it is
//! going to sleep. [`Endpoint::try_recv`] takes the next inbound message, decoded and with its
//! epoch checked. [`Endpoint::wait`] blocks until a message may be there, the timeout passes,
//! or the peer hangs up; it never spins.
//!
//! # Waiting from an event loop
//!
//! A tokio task or an io_uring reactor waits on [`Endpoint::wake_fd`] (readable when the peer
//! signalled) and [`Endpoint::peer_fd`] (readable or hung up when the peer went away):
//!
//! 1. drain with `try_recv` until it returns `None`;
//! 2. call [`Endpoint::prepare_wait`]: if it returns true, something arrived meanwhile, go to 1;
//! 3. wait for either fd (tokio `AsyncFd`, an io_uring `READ` / `POLL_ADD`);
//! 4. call [`Endpoint::after_wake`] (clears the flag, drains the eventfd, checks the peer) and
//!    go to 1.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::bootstrap;
use crate::error::{BootstrapError, RecvError, RingError, SendError, WaitError};
use crate::msg::{self, FLAG_ERROR, Frame, Header, KIND_REJECT, Reject};
use crate::region::{Epoch, Geometry, Region};
use crate::slots::Slots;
use crate::spsc::{self, Consumer, Producer, ShmRing};

/// Which side an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `basalt control`: creates the region, sends commands.
    Control,
    /// `basalt datapath`: attaches, answers commands, sends events.
    Datapath,
}

/// Which ring a message came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Control → datapath.
    Commands,
    /// Datapath → control, one per command.
    Completions,
    /// Datapath → control, unsolicited.
    Events,
}

/// A received message; the payload borrows the endpoint's buffer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The ring it came by.
    pub lane: Lane,
    /// The message.
    pub frame: Frame<'a>,
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent.
    pub sent: u64,
    /// Messages received (decoded or not).
    pub received: u64,
    /// Eventfd signals sent to the peer.
    pub wakeups_sent: u64,
    /// Times this side went to sleep in `wait`.
    pub sleeps: u64,
}

/// The inbound and outbound rings of one side, without fds: what is left of an endpoint when
/// nobody waits (tests, the fuzz target, a reactor that polls).
#[derive(Debug)]
pub struct Mailbox {
    role: Role,
    region: Region,
    tx: Producer<ShmRing>,
    tx_events: Option<Producer<ShmRing>>,
    rx: Consumer<ShmRing>,
    rx_events: Option<Consumer<ShmRing>>,
    buf: Vec<u8>,
    events_first: bool,
    stats: Stats,
}

impl Mailbox {
    /// Takes this side's ends of the rings of `region`. Make one mailbox per side of a
    /// region: a second one for the same side breaks the single-producer / single-consumer
    /// rule, which garbles messages (never memory safety; the seed writer of the fuzz target
    /// uses both sides in one process on purpose).
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the region's counters are impossible already.
    pub fn new(region: Region, role: Role) -> Result<Mailbox, RingError> {
        let shm = region.shm().clone();
        let l = *region.layout();
        let ring = |r| ShmRing::new(shm.clone(), r);
        let (tx, tx_events, rx, rx_events) = match role {
            Role::Control => (
                Producer::new(ring(l.commands))?,
                None,
                Consumer::new(ring(l.completions))?,
                Some(Consumer::new(ring(l.events))?),
            ),
            Role::Datapath => (
                Producer::new(ring(l.completions))?,
                Some(Producer::new(ring(l.events))?),
                Consumer::new(ring(l.commands))?,
                None,
            ),
        };
        let max = rx
            .max_message()
            .max(rx_events.as_ref().map_or(0, Consumer::max_message));
        Ok(Mailbox {
            role,
            region,
            tx,
            tx_events,
            rx,
            rx_events,
            buf: vec![0; max],
            events_first: false,
            stats: Stats::default(),
        })
    }

    /// The region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The epoch every message must carry.
    pub fn epoch(&self) -> Epoch {
        self.region.epoch()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Largest payload `send` takes.
    pub fn max_payload(&self) -> usize {
        self.tx.max_message() - msg::HEADER_LEN
    }

    fn own_flag(&self) -> &std::sync::atomic::AtomicU32 {
        let h = self.region.header();
        match self.role {
            Role::Control => &h.control_waiting.0,
            Role::Datapath => &h.datapath_waiting.0,
        }
    }

    fn peer_flag(&self) -> &std::sync::atomic::AtomicU32 {
        let h = self.region.header();
        match self.role {
            Role::Control => &h.datapath_waiting.0,
            Role::Datapath => &h.control_waiting.0,
        }
    }

    /// Sends a message with `header` as given (its epoch included) on the outbound ring, or
    /// the events ring; returns whether the peer must be signalled.
    fn push(&mut self, events: bool, header: Header, payload: &[u8]) -> Result<bool, SendError> {
        let tx = if events {
            self.tx_events.as_mut().ok_or(SendError::NotDatapath)?
        } else {
            &mut self.tx
        };
        let len = u32::try_from(payload.len()).map_err(|_| RingError::TooLarge {
            len: payload.len(),
            max: tx.max_message(),
        })?;
        tx.try_push(&[&header.encode(len), payload])?;
        self.stats.sent += 1;
        Ok(spsc::needs_wake(self.peer_flag()))
    }

    /// Sends `payload` as a message of `kind` for `request_id` on this side's outbound ring;
    /// returns whether the peer must be signalled (an [`Endpoint`] does that itself).
    ///
    /// # Errors
    ///
    /// [`SendError::Ring`]: `Full`, `TooLarge`, or `Corrupt` (the peer broke the ring).
    pub fn send(&mut self, kind: u16, request_id: u64, payload: &[u8]) -> Result<bool, SendError> {
        let epoch = self.epoch().0;
        self.push(
            false,
            Header {
                kind,
                flags: 0,
                request_id,
                epoch,
            },
            payload,
        )
    }

    /// Sends a message with an explicit header (flags and epoch as given). Normal code uses
    /// [`Mailbox::send`]; this is for error replies with operation-defined payloads and tests.
    ///
    /// # Errors
    ///
    /// As [`Mailbox::send`].
    pub fn send_header(&mut self, header: Header, payload: &[u8]) -> Result<bool, SendError> {
        self.push(false, header, payload)
    }

    /// Sends a [`KIND_REJECT`] reply for `request_id`.
    ///
    /// # Errors
    ///
    /// As [`Mailbox::send`].
    pub fn reject(&mut self, request_id: u64, reject: Reject) -> Result<bool, SendError> {
        let h = Header {
            kind: KIND_REJECT,
            flags: FLAG_ERROR,
            request_id,
            epoch: self.epoch().0,
        };
        self.push(false, h, &reject.encode())
    }

    /// Sends an event (datapath only; request id 0).
    ///
    /// # Errors
    ///
    /// [`SendError::NotDatapath`] on control, else as [`Mailbox::send`].
    pub fn send_event(&mut self, kind: u16, payload: &[u8]) -> Result<bool, SendError> {
        let epoch = self.epoch().0;
        self.push(
            true,
            Header {
                kind,
                flags: 0,
                request_id: 0,
                epoch,
            },
            payload,
        )
    }

    /// Whether an inbound message is waiting.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`].
    pub fn has_inbound(&mut self) -> Result<bool, RingError> {
        if self.rx.has_frame()? {
            return Ok(true);
        }
        match &mut self.rx_events {
            Some(rx) => rx.has_frame(),
            None => Ok(false),
        }
    }

    /// Takes the next inbound message, if any. Completions and events alternate when both
    /// wait, so neither starves the other.
    ///
    /// # Errors
    ///
    /// [`RecvError::Ring`] if the peer broke a ring (tear the pairing down),
    /// [`RecvError::Malformed`] or [`RecvError::StaleEpoch`] for one bad message (it is
    /// consumed; reply with [`Mailbox::reject`] if it has a request id, and go on).
    pub fn try_recv(&mut self) -> Result<Option<Received<'_>>, RecvError> {
        let Mailbox {
            rx,
            rx_events,
            buf,
            events_first,
            stats,
            region,
            role,
            ..
        } = self;
        let main_lane = match role {
            Role::Control => Lane::Completions,
            Role::Datapath => Lane::Commands,
        };
        let mut popped = None;
        for pass in 0..2 {
            let events = (pass == 0) == *events_first;
            let got = match (events, rx_events.as_mut()) {
                (true, Some(ev)) => ev.try_pop(buf)?.map(|n| (Lane::Events, n)),
                (true, None) => None,
                (false, _) => rx.try_pop(buf)?.map(|n| (main_lane, n)),
            };
            if got.is_some() {
                popped = got;
                break;
            }
        }
        let Some((lane, n)) = popped else {
            return Ok(None);
        };
        if rx_events.is_some() {
            *events_first = lane != Lane::Events;
        }
        stats.received += 1;
        let bytes = &buf[..n];
        let frame = msg::decode(bytes).map_err(|source| RecvError::Malformed {
            request_id: msg::peek_request_id(bytes),
            source,
        })?;
        let current = region.epoch().0;
        if frame.header.epoch != current {
            return Err(RecvError::StaleEpoch {
                request_id: frame.header.request_id,
                kind: frame.header.kind,
                found: frame.header.epoch,
                current,
            });
        }
        Ok(Some(Received { lane, frame }))
    }
}

/// One side of a pairing: its rings, its two eventfds and the bootstrap socket.
///
/// Dropping the endpoint closes the socket, which is how the peer learns that this side is
/// gone.
#[derive(Debug)]
pub struct Endpoint {
    mailbox: Mailbox,
    slots: Slots,
    /// The eventfd this side sleeps on.
    own_wake: OwnedFd,
    /// The eventfd the peer sleeps on.
    peer_wake: OwnedFd,
    socket: OwnedFd,
    peer_pid: u32,
    peer_gone: bool,
}

fn eventfd() -> Result<OwnedFd, BootstrapError> {
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| BootstrapError::EventFd(e.into()))
}

impl Endpoint {
    /// Control side: creates a region of `geometry` for `epoch`, hands it to the datapath at
    /// the other end of `socket` and waits (at most `timeout`) for it to accept.
    ///
    /// Create a new endpoint, with a new region and the next epoch, for every datapath
    /// (re)start: nothing of the old pairing is reused, so nothing a dead peer left half-done
    /// can leak into the new one.
    ///
    /// # Errors
    ///
    /// [`BootstrapError`]: the region could not be made, the socket failed, the datapath
    /// refused or did not answer in time.
    pub fn create(
        socket: OwnedFd,
        geometry: &Geometry,
        epoch: Epoch,
        timeout: Duration,
    ) -> Result<Endpoint, BootstrapError> {
        let region = Region::create(geometry, epoch)?;
        let to_datapath = eventfd()?;
        let to_control = eventfd()?;
        bootstrap::send_hello(
            socket.as_fd(),
            epoch.0,
            [region.fd(), to_datapath.as_fd(), to_control.as_fd()],
        )?;
        let (peer_pid, answered) = bootstrap::recv_answer(socket.as_fd(), timeout)?;
        if answered != epoch.0 {
            return Err(BootstrapError::EpochMismatch {
                hello: epoch.0,
                region: answered,
            });
        }
        Ok(Endpoint {
            slots: Slots::new(&region),
            mailbox: Mailbox::new(region, Role::Control)?,
            own_wake: to_control,
            peer_wake: to_datapath,
            socket,
            peer_pid,
            peer_gone: false,
        })
    }

    /// Datapath side: waits (at most `timeout`) for control's hello on `socket`, validates
    /// the region it carries, and accepts it. A region that fails validation is refused (the
    /// answer tells control why) and reported here; it is never used.
    ///
    /// # Errors
    ///
    /// [`BootstrapError`]: no hello in time, a malformed hello, descriptors missing, a region
    /// [`Region::open`] refuses, an epoch mismatch.
    pub fn attach(socket: OwnedFd, timeout: Duration) -> Result<Endpoint, BootstrapError> {
        let refuse = |code: u32, epoch: u64, e: BootstrapError| {
            let _ = bootstrap::send_answer(socket.as_fd(), code, epoch);
            e
        };
        let hello = match bootstrap::recv_hello(socket.as_fd(), timeout) {
            Ok(h) => h,
            Err(e @ (BootstrapError::BadMessage { .. } | BootstrapError::MissingFds { .. })) => {
                return Err(refuse(bootstrap::REFUSE_BAD_HELLO, 0, e));
            }
            Err(e) => return Err(e),
        };
        let got = hello.fds.len();
        let Ok([region_fd, to_datapath, to_control]) = <[OwnedFd; 3]>::try_from(hello.fds) else {
            return Err(refuse(
                bootstrap::REFUSE_BAD_HELLO,
                hello.epoch,
                BootstrapError::MissingFds { got },
            ));
        };
        let region = match Region::open(region_fd) {
            Ok(r) => r,
            Err(e) => return Err(refuse(bootstrap::REFUSE_BAD_REGION, hello.epoch, e.into())),
        };
        if region.epoch().0 != hello.epoch {
            let e = BootstrapError::EpochMismatch {
                hello: hello.epoch,
                region: region.epoch().0,
            };
            return Err(refuse(bootstrap::REFUSE_EPOCH, hello.epoch, e));
        }
        let mailbox = match Mailbox::new(region.clone(), Role::Datapath) {
            Ok(m) => m,
            Err(e) => return Err(refuse(bootstrap::REFUSE_BAD_REGION, hello.epoch, e.into())),
        };
        region.set_attacher_pid();
        bootstrap::send_answer(socket.as_fd(), 0, hello.epoch)?;
        let peer_pid = rustix::net::sockopt::socket_peercred(&socket)
            .map(|c| c.pid.as_raw_nonzero().get() as u32)
            .unwrap_or_else(|_| region.creator_pid());
        Ok(Endpoint {
            slots: Slots::new(&region),
            mailbox,
            own_wake: to_datapath,
            peer_wake: to_control,
            socket,
            peer_pid,
            peer_gone: false,
        })
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.mailbox.role
    }

    /// The epoch of this pairing.
    pub fn epoch(&self) -> Epoch {
        self.mailbox.epoch()
    }

    /// The geometry of the region.
    pub fn geometry(&self) -> &Geometry {
        self.mailbox.region.geometry()
    }

    /// The data slots.
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The peer's PID, as the peer stated it (control) or as the kernel reports it
    /// (`SO_PEERCRED`, datapath).
    pub fn peer_pid(&self) -> u32 {
        self.peer_pid
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.mailbox.stats
    }

    /// Largest payload `send` takes.
    pub fn max_payload(&self) -> usize {
        self.mailbox.max_payload()
    }

    /// The eventfd this side sleeps on: readable when the peer signalled.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.own_wake.as_fd()
    }

    /// The bootstrap socket: readable or hung up when the peer went away.
    pub fn peer_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    fn notify(&mut self, needed: bool) -> Result<(), SendError> {
        if needed {
            self.mailbox.stats.wakeups_sent += 1;
            match rustix::io::write(&self.peer_wake, &1u64.to_ne_bytes()) {
                // EAGAIN: the counter is saturated, so the peer is signalled already.
                Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
                Err(e) => return Err(SendError::Notify(e.into())),
            }
        }
        Ok(())
    }

    fn check_gone(&mut self) -> Result<(), SendError> {
        if self.peer_gone {
            return Err(SendError::PeerGone);
        }
        Ok(())
    }

    /// Sends `payload` as a message of `kind` for `request_id`: a command (control) or a
    /// completion (datapath), stamped with this pairing's epoch.
    ///
    /// # Errors
    ///
    /// [`SendError::PeerGone`] once the peer is known gone; [`SendError::Ring`] (`Full`,
    /// `TooLarge`, `Corrupt`); [`SendError::Notify`].
    pub fn send(&mut self, kind: u16, request_id: u64, payload: &[u8]) -> Result<(), SendError> {
        self.check_gone()?;
        let needed = self.mailbox.send(kind, request_id, payload)?;
        self.notify(needed)
    }

    /// Sends a message with an explicit header (see [`Mailbox::send_header`]).
    ///
    /// # Errors
    ///
    /// As [`Endpoint::send`].
    pub fn send_header(&mut self, header: Header, payload: &[u8]) -> Result<(), SendError> {
        self.check_gone()?;
        let needed = self.mailbox.send_header(header, payload)?;
        self.notify(needed)
    }

    /// Refuses a message: a [`KIND_REJECT`] reply for `request_id`.
    ///
    /// # Errors
    ///
    /// As [`Endpoint::send`].
    pub fn reject(&mut self, request_id: u64, reject: Reject) -> Result<(), SendError> {
        self.check_gone()?;
        let needed = self.mailbox.reject(request_id, reject)?;
        self.notify(needed)
    }

    /// Sends an event (datapath only).
    ///
    /// # Errors
    ///
    /// [`SendError::NotDatapath`] on control; else as [`Endpoint::send`].
    pub fn send_event(&mut self, kind: u16, payload: &[u8]) -> Result<(), SendError> {
        self.check_gone()?;
        let needed = self.mailbox.send_event(kind, payload)?;
        self.notify(needed)
    }

    /// Takes the next inbound message (see [`Mailbox::try_recv`]). Messages already in the
    /// ring are still delivered after the peer died.
    ///
    /// # Errors
    ///
    /// As [`Mailbox::try_recv`].
    pub fn try_recv(&mut self) -> Result<Option<Received<'_>>, RecvError> {
        self.mailbox.try_recv()
    }

    /// Whether the peer is gone (checks the socket without blocking).
    pub fn peer_alive(&mut self) -> bool {
        if !self.peer_gone && bootstrap::hung_up(self.socket.as_fd()) {
            self.peer_gone = true;
        }
        !self.peer_gone
    }

    /// Step 2 of waiting from an event loop (see the module docs): announces that this side
    /// is going to sleep; returns true if a message arrived meanwhile (then do not sleep).
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`].
    pub fn prepare_wait(&mut self) -> Result<bool, RingError> {
        // `arm` needs the flag and the rings at once; the flag lives in the mapping, so a
        // second handle on the region (an `Arc` clone) lends it without borrowing the mailbox.
        let region = self.mailbox.region.clone();
        let flag = match self.mailbox.role {
            Role::Control => &region.header().control_waiting.0,
            Role::Datapath => &region.header().datapath_waiting.0,
        };
        let mailbox = &mut self.mailbox;
        let mut corrupt = None;
        let ready = spsc::arm(flag, || match mailbox.has_inbound() {
            Ok(r) => r,
            Err(e) => {
                corrupt = Some(e);
                true
            }
        });
        match corrupt {
            Some(e) => Err(e),
            None => Ok(ready),
        }
    }

    /// Step 4 of waiting from an event loop: clears the waiting flag and the eventfd.
    ///
    /// # Errors
    ///
    /// [`WaitError::PeerGone`] if the peer hung up.
    pub fn after_wake(&mut self) -> Result<(), WaitError> {
        use std::sync::atomic::Ordering;
        self.mailbox.own_flag().store(0, Ordering::Relaxed);
        let mut v = [0u8; 8];
        match rustix::io::read(&self.own_wake, &mut v) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(WaitError::Poll(e.into())),
        }
        if !self.peer_alive() {
            return Err(WaitError::PeerGone);
        }
        Ok(())
    }

    /// Blocks until an inbound message may be there (true), `timeout` passes (false; `None`
    /// waits without limit), or the peer hangs up. Sleeps in `poll(2)` on the eventfd and the
    /// socket; never spins. Wake-ups may be spurious: `try_recv` may then find nothing.
    ///
    /// # Errors
    ///
    /// [`WaitError::PeerGone`] once the peer hung up and nothing is left to read;
    /// [`WaitError::Ring`]; [`WaitError::Poll`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, WaitError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.prepare_wait()? {
                return Ok(true);
            }
            if self.peer_gone {
                self.after_wake()?;
                return Err(WaitError::PeerGone);
            }
            let ts = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    Some(rustix::event::Timespec::try_from(left).unwrap_or(
                        rustix::event::Timespec {
                            tv_sec: i64::MAX,
                            tv_nsec: 0,
                        },
                    ))
                }
                None => None,
            };
            self.mailbox.stats.sleeps += 1;
            let mut fds = [
                PollFd::new(&self.own_wake, PollFlags::IN),
                PollFd::new(&self.socket, PollFlags::IN),
            ];
            let n = match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => 0,
                Err(e) => return Err(WaitError::Poll(e.into())),
            };
            let woken = !fds[0].revents().is_empty();
            match self.after_wake() {
                Ok(()) => {}
                // Messages sent before the peer died are still delivered first.
                Err(WaitError::PeerGone) if self.mailbox.has_inbound()? => return Ok(true),
                Err(e) => return Err(e),
            }
            if woken {
                return Ok(true);
            }
            if n == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::RejectCode;
    use crate::region::RingGeometry;
    use crate::slots::{SlotId, SlotSpan};
    use std::thread;

    const T: Duration = Duration::from_secs(5);

    fn geometry() -> Geometry {
        Geometry {
            commands: RingGeometry {
                frames: 4,
                frame_size: 128,
            },
            completions: RingGeometry {
                frames: 4,
                frame_size: 128,
            },
            events: RingGeometry {
                frames: 2,
                frame_size: 64,
            },
            slot_size: 4096,
            slot_count: 2,
        }
    }

    fn pair(epoch: Epoch) -> (Endpoint, Endpoint) {
        let (a, b) = bootstrap::socketpair().expect("pair");
        let dp = thread::spawn(move || Endpoint::attach(b, T).expect("attach"));
        let control = Endpoint::create(a, &geometry(), epoch, T).expect("create");
        (control, dp.join().expect("no panic"))
    }

    #[test]
    fn request_completion_and_event() {
        let (mut c, mut d) = pair(Epoch(4));
        assert_eq!(c.peer_pid(), std::process::id());
        assert_eq!(d.epoch(), Epoch(4));
        assert!(matches!(c.send_event(1, b""), Err(SendError::NotDatapath)));
        c.send(7, 100, b"do it").expect("send");
        let got = d.try_recv().expect("ok").expect("a command");
        assert_eq!(got.lane, Lane::Commands);
        assert_eq!(
            (got.frame.header.kind, got.frame.header.request_id),
            (7, 100)
        );
        assert_eq!(got.frame.payload, b"do it");
        assert!(d.try_recv().expect("ok").is_none());
        d.send(7, 100, b"done").expect("complete");
        d.send_event(9, b"ev").expect("event");
        let got = c.try_recv().expect("ok").expect("a message");
        assert_eq!(got.lane, Lane::Completions);
        let got = c.try_recv().expect("ok").expect("a message");
        assert_eq!((got.lane, got.frame.payload), (Lane::Events, &b"ev"[..]));
        // Slots are shared.
        let span = SlotSpan::new(SlotId(1), 5);
        d.slots().write(span, b"bytes").expect("write");
        let mut out = [0u8; 5];
        c.slots().read(span, &mut out).expect("read");
        assert_eq!(&out, b"bytes");
    }

    #[test]
    fn full_ring_is_reported_not_overwritten() {
        let (mut c, mut d) = pair(Epoch(1));
        for i in 0..4 {
            c.send(1, i, b"x").expect("room");
        }
        assert!(matches!(
            c.send(1, 9, b"x"),
            Err(SendError::Ring(RingError::Full))
        ));
        assert!(matches!(
            c.send(1, 9, &[0; 200]),
            Err(SendError::Ring(RingError::TooLarge { .. }))
        ));
        for i in 0..4 {
            assert_eq!(
                d.try_recv()
                    .expect("ok")
                    .expect("msg")
                    .frame
                    .header
                    .request_id,
                i
            );
        }
    }

    #[test]
    fn stale_epoch_and_malformed_are_rejected_and_replied() {
        let (mut c, mut d) = pair(Epoch(5));
        let stale = Header {
            kind: 3,
            flags: 0,
            request_id: 11,
            epoch: 4,
        };
        c.send_header(stale, b"old").expect("send");
        match d.try_recv() {
            Err(RecvError::StaleEpoch {
                request_id: 11,
                found: 4,
                current: 5,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        d.reject(
            11,
            Reject {
                code: RejectCode::StaleEpoch,
                detail: 4,
            },
        )
        .expect("reply");
        let got = c.try_recv().expect("ok").expect("reply");
        assert!(got.frame.is_error());
        assert_eq!(got.frame.header.kind, KIND_REJECT);
        assert_eq!(
            Reject::decode(got.frame.payload),
            Ok(Reject {
                code: RejectCode::StaleEpoch,
                detail: 4
            })
        );
        // A frame that is not a message: unknown flags.
        let bad = Header {
            kind: 3,
            flags: 0x8000,
            request_id: 12,
            epoch: 5,
        };
        c.send_header(bad, b"").expect("send");
        assert!(matches!(
            d.try_recv(),
            Err(RecvError::Malformed {
                request_id: Some(12),
                ..
            })
        ));
        // The ring goes on.
        c.send(3, 13, b"").expect("send");
        assert_eq!(
            d.try_recv()
                .expect("ok")
                .expect("msg")
                .frame
                .header
                .request_id,
            13
        );
    }

    #[test]
    fn wait_sleeps_until_signalled() {
        let (mut c, mut d) = pair(Epoch(1));
        assert!(!d.wait(Some(Duration::from_millis(20))).expect("no error"));
        let t = thread::spawn(move || {
            let mut n = 0;
            while n < 100 {
                d.wait(None).expect("peer alive");
                while let Some(m) = d.try_recv().expect("ok") {
                    let id = m.frame.header.request_id;
                    d.send(1, id, b"").expect("room");
                    n += 1;
                }
            }
            d
        });
        let mut got = 0;
        let mut next = 0;
        while got < 100 {
            while next < 100 && next - got < 4 {
                c.send(1, next, b"").expect("room");
                next += 1;
            }
            c.wait(Some(T)).expect("answered");
            while let Some(m) = c.try_recv().expect("ok") {
                assert_eq!(m.frame.header.request_id, got);
                got += 1;
            }
        }
        let d = t.join().expect("no panic");
        // Wake-ups were suppressed at least sometimes, and never lost (we finished).
        assert!(c.stats().wakeups_sent <= 100 && d.stats().wakeups_sent <= 100);
    }

    #[test]
    fn peer_drop_is_seen_at_once() {
        let (mut c, d) = pair(Epoch(1));
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            let mut d = d;
            d.send(1, 1, b"last words").expect("send");
            drop(d);
        });
        let start = Instant::now();
        // The message sent before the hang-up is delivered, then the hang-up.
        let mut seen = false;
        loop {
            match c.wait(Some(T)) {
                Ok(_) => {
                    while let Some(m) = c.try_recv().expect("ok") {
                        assert_eq!(m.frame.payload, b"last words");
                        seen = true;
                    }
                }
                Err(WaitError::PeerGone) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(seen);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(matches!(c.send(1, 2, b""), Err(SendError::PeerGone)));
        assert!(!c.peer_alive());
        t.join().expect("no panic");
    }

    #[test]
    fn attach_refuses_a_bad_region_and_says_so() {
        let (a, b) = bootstrap::socketpair().expect("pair");
        let dp = thread::spawn(move || Endpoint::attach(b, T));
        // A memfd that is not sealed.
        let fd = rustix::fs::memfd_create("bad", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 8192).expect("size");
        let e = eventfd().expect("efd");
        bootstrap::send_hello(a.as_fd(), 1, [fd.as_fd(), e.as_fd(), e.as_fd()]).expect("hello");
        let answer = bootstrap::recv_answer(a.as_fd(), T);
        assert!(
            matches!(answer, Err(BootstrapError::Refused { code: 2 })),
            "{answer:?}"
        );
        let err = dp.join().expect("no panic").expect_err("refused");
        assert!(
            matches!(
                err,
                BootstrapError::Region(crate::RegionError::MissingSeals { .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn attach_times_out_and_create_sees_refusal() {
        let (a, b) = bootstrap::socketpair().expect("pair");
        assert!(matches!(
            Endpoint::attach(b, Duration::from_millis(10)),
            Err(BootstrapError::Timeout { .. })
        ));
        // The datapath end is gone now: create fails cleanly.
        assert!(Endpoint::create(a, &geometry(), Epoch(1), T).is_err());
    }
}
