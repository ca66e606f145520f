//! Errors of the ring crate, one type per module that can fail.

use std::io;
use std::time::Duration;

/// A region could not be created, or a received one was refused.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum RegionError {
    /// the {ring} ring's {what} ({value}) is outside the limits (frame count: a power of two in 2..=65536; frame size: a multiple of 64 in 64..=65536)
    BadRing {
        /// Which ring.
        ring: &'static str,
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// the data slots' {what} ({value}) is outside the limits (size: a multiple of 4096 up to 64 MiB; count: up to 65536)
    BadSlots {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// the region would be larger than {max} bytes
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// epoch 0 is reserved (never current)
    BadEpoch,
    /// could not create the shared region: {step} failed
    Create {
        /// The syscall that failed.
        step: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// the region's file descriptor is not a sealable memfd
    NotSealable(#[source] io::Error),
    /// the region's memfd lacks seals: it has {found:#x}, needs {need:#x} (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
    MissingSeals {
        /// Seals present.
        found: u32,
        /// Seals required.
        need: u32,
    },
    /// could not stat the region's memfd
    Stat(#[source] io::Error),
    /// the region's memfd is {len} bytes, smaller than a header
    TooSmall {
        /// File size.
        len: u64,
    },
    /// could not map the region
    Map(#[source] io::Error),
    /// not a Basalt ring region (magic {found:#018x})
    BadMagic {
        /// The first eight bytes, as a little-endian u64.
        found: u64,
    },
    /// the region has layout version {found}; this build speaks version {supported}
    UnsupportedVersion {
        /// Version in the header.
        found: u32,
        /// Version this build speaks.
        supported: u32,
    },
    /// the region header claims to be {found} bytes long
    BadHeaderLen {
        /// Length in the header.
        found: u32,
    },
    /// the region's sizes disagree: header says {declared} bytes, the file is {file}, its geometry needs {computed}
    SizeMismatch {
        /// Total length in the header.
        declared: u64,
        /// Size of the memfd.
        file: u64,
        /// Length the geometry needs.
        computed: u64,
    },
}

/// A ring operation failed.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum RingError {
    /// the ring is full
    Full,
    /// a message of {len} bytes does not fit a frame (at most {max})
    TooLarge {
        /// Message length.
        len: usize,
        /// Largest message a frame holds.
        max: usize,
    },
    /// the peer corrupted the ring: head {head}, tail {tail} in a ring of {frames} frames
    Corrupt {
        /// The head counter seen.
        head: u64,
        /// The tail counter seen.
        tail: u64,
        /// Frames in the ring.
        frames: u64,
    },
    /// the peer wrote a frame of {len} bytes into frames that hold {max}; the frame was skipped
    BadFrameLength {
        /// Length in the frame.
        len: usize,
        /// Largest possible.
        max: usize,
    },
    /// a frame of {need} bytes does not fit the {have}-byte buffer
    BufferTooSmall {
        /// Frame length.
        need: usize,
        /// Buffer length.
        have: usize,
    },
}

/// A message frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum DecodeError {
    /// a message of {len} bytes is shorter than its 32-byte header
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// message version {found} is not supported (this build speaks {supported})
    UnsupportedVersion {
        /// Version in the message.
        found: u16,
        /// Version this build speaks.
        supported: u16,
    },
    /// the message header claims {found} bytes (32 expected)
    BadHeaderLen {
        /// Header length in the message.
        found: u16,
    },
    /// unknown message flags {flags:#06x}
    UnknownFlags {
        /// The flags.
        flags: u16,
    },
    /// a reserved message field is not zero
    ReservedNotZero,
    /// the message declares {declared} payload bytes but carries {actual}
    LengthMismatch {
        /// Length in the header.
        declared: u32,
        /// Bytes present after the header.
        actual: usize,
    },
}

/// A payload field did not decode.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum FieldError {
    /// field at byte {at} needs {need} bytes, {have} left
    Truncated {
        /// Offset of the field.
        at: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// string at byte {at} is not UTF-8
    NotUtf8 {
        /// Offset of the field.
        at: usize,
    },
    /// {left} bytes left over after byte {at}
    Trailing {
        /// Where decoding stopped.
        at: usize,
        /// Bytes not read.
        left: usize,
    },
    /// unknown {what} {tag}
    UnknownTag {
        /// What the tag selects.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
}

/// A data slot access or release was refused.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum SlotError {
    /// slot {slot} does not exist (the region has {count})
    NoSuchSlot {
        /// Slot named.
        slot: u32,
        /// Slots in the region.
        count: u32,
    },
    /// bytes {offset}+{len} are outside a {size}-byte slot
    OutOfSlot {
        /// Offset named.
        offset: u32,
        /// Length named.
        len: u32,
        /// Slot size.
        size: u32,
    },
    /// the span is {span} bytes but the buffer {buf}
    LengthMismatch {
        /// Span length.
        span: u32,
        /// Buffer length.
        buf: usize,
    },
    /// slot {slot} is not lent out
    NotLent {
        /// Slot named.
        slot: u32,
    },
}

/// The request table refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum PendingError {
    /// {capacity} requests are already in flight
    Full {
        /// The table's capacity.
        capacity: usize,
    },
    /// request {request_id} is already in flight
    Duplicate {
        /// The id.
        request_id: u64,
    },
    /// completion of request {request_id} carries epoch {found}, the current one is {current}
    StaleEpoch {
        /// The id.
        request_id: u64,
        /// Epoch in the completion.
        found: u64,
        /// Current epoch.
        current: u64,
    },
    /// no request {request_id} is in flight
    Unknown {
        /// The id.
        request_id: u64,
    },
}

/// Why a request in flight failed without a completion. The request may or may not have been
/// carried out: re-drive it with the same id (see `pending`).
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum RequestError {
    /// the datapath of epoch {epoch} went away with the request in flight
    PeerGone {
        /// The epoch the request was sent in.
        epoch: u64,
    },
    /// the datapath restarted (epoch {old} -> {new}) with the request in flight
    Restarted {
        /// The epoch the request was sent in.
        old: u64,
        /// The new epoch.
        new: u64,
    },
    /// no answer after {after:?}
    TimedOut {
        /// How long it waited.
        after: Duration,
    },
}

/// A message could not be sent.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum SendError {
    /// {0}
    Ring(#[from] RingError),
    /// the peer is gone
    PeerGone,
    /// only the datapath sends events
    NotDatapath,
    /// could not signal the peer's eventfd
    Notify(#[source] io::Error),
}

/// A message could not be received. `Ring` means the pairing is broken (tear it down);
/// `Malformed` and `StaleEpoch` concern one message (reply with a reject and go on).
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum RecvError {
    /// {0}
    Ring(#[from] RingError),
    /// malformed message (request {request_id:?})
    Malformed {
        /// Its request id, if the bytes go that far.
        request_id: Option<u64>,
        /// What is wrong.
        #[source]
        source: DecodeError,
    },
    /// message for request {request_id} (kind {kind:#06x}) carries epoch {found}, the current one is {current}
    StaleEpoch {
        /// Its request id.
        request_id: u64,
        /// Its kind.
        kind: u16,
        /// Its epoch.
        found: u64,
        /// Ours.
        current: u64,
    },
}

/// Waiting for messages failed.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum WaitError {
    /// the peer hung up
    PeerGone,
    /// the ring is broken
    Ring(#[from] RingError),
    /// poll or read of the wake-up fds failed
    Poll(#[source] io::Error),
}

/// Setting up the pairing over the bootstrap socket failed.
#[derive(Debug, displaydoc::Display, thiserror::Error)]
pub enum BootstrapError {
    /// {0}
    Region(#[from] RegionError),
    /// {0}
    Ring(#[from] RingError),
    /// bootstrap socket: {step} failed
    Socket {
        /// What was being done.
        step: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// could not create an eventfd
    EventFd(#[source] io::Error),
    /// the peer did not {step} within {waited:?}
    Timeout {
        /// What was awaited.
        step: &'static str,
        /// How long.
        waited: Duration,
    },
    /// the peer closed the bootstrap socket
    Closed,
    /// the peer's bootstrap message is not one: {what}
    BadMessage {
        /// What is wrong with it.
        what: &'static str,
    },
    /// the hello carried {got} file descriptors, 3 expected (region, two eventfds)
    MissingFds {
        /// How many came.
        got: usize,
    },
    /// the datapath refused the region (code {code}: 1 bad hello, 2 bad region, 3 epoch mismatch)
    Refused {
        /// Its code.
        code: u32,
    },
    /// the hello says epoch {hello}, the region and answer say {region}
    EpochMismatch {
        /// Epoch in the hello.
        hello: u64,
        /// Epoch in the region (or in the answer).
        region: u64,
    },
}
