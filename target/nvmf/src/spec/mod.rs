//! Wire types of NVMe over Fabrics on TCP: PDUs ([`pdu`]), queue entries and status codes
//! ([`cmd`]), typed commands ([`command`]), fabrics commands ([`fabrics`]), Identify data and log pages ([`identify`]).
//! Everything here is pure: bytes in, typed values out, never a panic.

pub mod cmd;
pub mod command;
pub mod fabrics;
pub mod identify;
pub mod pdu;

pub use cmd::{Cqe, SglDesc, Sqe, Status, StatusCode};
pub use command::{decode_admin, decode_io};
pub use pdu::{Digests, Pdu, PduError, decode_pdu};
