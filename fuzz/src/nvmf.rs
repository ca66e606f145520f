//! Fuzz targets for the NVMe/TCP target's decoders and its connection state machine.
//!
//! - [`nvmf_pdu`]: bytes through the PDU decoder with the digests chosen by the first byte.
//! - [`nvmf_cmd`]: a 64-byte submission entry plus data through the I/O and admin command
//!   decoders and the Connect data decoder.
//! - [`nvmf_conn`]: a whole queue-pair connection fed hostile bytes in chunks (ICReq, then
//!   anything), completing every command it asks to run.

use basalt_nvmf::conn::{ConnConfig, Connection, Event};
use basalt_nvmf::spec::fabrics::ConnectData;
use basalt_nvmf::spec::{Cqe, Digests, Sqe, decode_admin, decode_io, decode_pdu};

/// `nvmf_pdu`: byte 0 bit 0 = header digest, bit 1 = data digest; the rest is the stream.
pub fn nvmf_pdu(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let digests = Digests {
        header: flags & 1 != 0,
        data: flags & 2 != 0,
    };
    // Walk the stream PDU by PDU, as a connection does.
    for _ in 0..64 {
        match decode_pdu(rest, digests) {
            Ok(Some((_, used))) => {
                assert!(used > 0 && used <= rest.len(), "used {used} of {}", rest.len());
                rest = &rest[used..];
            }
            Ok(None) => return,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        }
    }
}

/// `nvmf_cmd`: 64 bytes of submission entry (zero-padded), then its data.
pub fn nvmf_cmd(data: &[u8]) {
    let mut sqe = [0u8; 64];
    let n = data.len().min(64);
    sqe[..n].copy_from_slice(&data[..n]);
    let sqe = Sqe(sqe);
    let payload = &data[n..];
    let _ = decode_io(&sqe, payload);
    let _ = decode_admin(&sqe, payload);
    let _ = ConnectData::decode(payload);
}

/// `nvmf_conn`: byte 0 = chunking seed; the rest is fed to one connection in chunks.
pub fn nvmf_conn(data: &[u8]) {
    let _ = run_nvmf_conn(data);
}

/// The body of [`nvmf_conn`]; returns how many commands the connection delivered.
pub fn run_nvmf_conn(data: &[u8]) -> usize {
    let mut commands = 0;
    let Some((&seed, rest)) = data.split_first() else {
        return commands;
    };
    let mut conn = Connection::new(ConnConfig::default());
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let chunk = usize::from(seed & 0x3f) * 16 + 1;
    for piece in rest.chunks(chunk) {
        pending.extend_from_slice(piece);
        let used = conn.receive(&pending);
        assert!(used <= pending.len(), "consumed more than it was given");
        pending.drain(..used);
        while let Some(ev) = conn.next_event() {
            match ev {
                Event::Command { sqe, .. } | Event::Reject { sqe, .. } => {
                    commands += 1;
                    let mut cqe = Cqe::default();
                    cqe.cid = sqe.cid();
                    conn.complete(cqe);
                }
                Event::Close => {}
            }
        }
        out.clear();
        conn.transmit(&mut out);
        if conn.is_closed() {
            break;
        }
    }
    commands
}
