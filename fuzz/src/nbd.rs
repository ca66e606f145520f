//! Fuzz target for the NBD target's connection state machine.
//!
//! - [`nbd_conn`]: a whole connection fed hostile bytes in chunks (client flags, options,
//!   then requests and write payloads), against a catalog of two exports (one read-only),
//!   answering every command it hands out: reads with data (in one or two chunks), writes,
//!   block status, the rest with success or, by the seed byte, with errors.

use std::collections::HashSet;

use basalt_nbd::conn::{Command, ConnConfig, Connection, Event, ExportInfo, Op};
use basalt_nbd::spec::{Errno, Extent, state};

/// What one run did (for the seed tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Commands handed out.
    pub commands: usize,
    /// Whether transmission began.
    pub attached: bool,
    /// Bytes the server sent.
    pub sent: usize,
}

fn catalog() -> Vec<ExportInfo> {
    let e = |id, name: &str, read_only| ExportInfo {
        id,
        name: name.into(),
        description: format!("fuzz export {name}"),
        size: 1 << 20,
        block_size: 512,
        preferred_block_size: 4096,
        read_only,
        trim: true,
    };
    vec![e(1, "vol", false), e(2, "ro", true)]
}

/// `nbd_conn`: byte 0 = chunk size (low 6 bits) and reply style (bit 6: answer every other
/// command with an error; bit 7: small limits, so back-pressure kicks in); the rest is fed
/// to one connection.
pub fn nbd_conn(data: &[u8]) {
    let _ = run_nbd_conn(data);
}

fn answer(conn: &mut Connection, cmd: Command, fail: bool, structured: bool) {
    if fail {
        if let Op::Write { data, .. } = cmd.op {
            conn.release_write(data);
        }
        conn.reply_error(cmd.cookie, Errno::EIO, "fuzz", Some(cmd.offset));
        return;
    }
    match cmd.op {
        Op::Read { df } => {
            let d = vec![0x5a; cmd.length as usize];
            if structured && !df && d.len() >= 1024 {
                let half = d.len() / 2;
                let at = cmd.offset + half as u64;
                conn.reply_read(cmd.cookie, at, &[&d[half..]], false);
                conn.reply_read(cmd.cookie, cmd.offset, &[&d[..half]], true);
            } else {
                conn.reply_read(cmd.cookie, cmd.offset, &[&d], true);
            }
        }
        Op::Write { data, .. } => {
            assert_eq!(
                data.len(),
                cmd.length as usize,
                "write payload of its length"
            );
            conn.release_write(data);
            conn.reply_ok(cmd.cookie);
        }
        Op::BlockStatus { .. } => conn.reply_block_status(
            cmd.cookie,
            &[Extent {
                length: cmd.length,
                flags: state::HOLE | state::ZERO,
            }],
        ),
        Op::Flush | Op::Trim { .. } | Op::WriteZeroes { .. } | Op::Cache => {
            conn.reply_ok(cmd.cookie)
        }
    }
}

/// The body of [`nbd_conn`].
pub fn run_nbd_conn(data: &[u8]) -> Run {
    let mut run = Run::default();
    let Some((&seed, rest)) = data.split_first() else {
        return run;
    };
    let cfg = if seed & 0x80 != 0 {
        ConnConfig {
            max_payload: 64 << 10,
            max_option: 256,
            max_in_flight: 4,
            max_held: 8 << 10,
            max_output: 16 << 10,
        }
    } else {
        ConnConfig::default()
    };
    let max_in_flight = cfg.max_in_flight;
    let cat = catalog();
    let mut conn = Connection::new(cfg);
    let mut out = Vec::new();
    conn.transmit(&mut out);
    assert_eq!(&out[..8], b"NBDMAGIC", "the greeting comes first");
    run.sent += out.len();
    let chunk = usize::from(seed & 0x3f) * 16 + 1;
    let mut pending: Vec<u8> = Vec::new();
    let mut closed = false;
    let mut ids = HashSet::new();
    let mut n = 0usize;
    for piece in rest.chunks(chunk) {
        pending.extend_from_slice(piece);
        // Offer the bytes until the connection takes no more (it pauses while throttled;
        // answering commands below lets it go on).
        loop {
            let used = conn.receive(&pending, &cat);
            assert!(used <= pending.len(), "consumed more than it was given");
            pending.drain(..used);
            let mut progressed = used > 0;
            while let Some(ev) = conn.next_event() {
                assert!(!closed, "an event after Close: {ev:?}");
                progressed = true;
                match ev {
                    Event::Close => closed = true,
                    Event::Attach(e) => {
                        assert!(!run.attached, "attached twice");
                        assert!(ids.insert(e.id) && cat.iter().any(|c| c == &e));
                        run.attached = true;
                    }
                    Event::Command(cmd) => {
                        let e = conn.export().expect("commands only in transmission");
                        assert!(
                            cmd.offset + u64::from(cmd.length) <= e.size,
                            "a command past the end: {cmd:?}"
                        );
                        let bs = u64::from(e.block_size);
                        assert!(
                            cmd.offset.is_multiple_of(bs)
                                && u64::from(cmd.length).is_multiple_of(bs)
                        );
                        let writes = matches!(
                            cmd.op,
                            Op::Write { .. } | Op::Trim { .. } | Op::WriteZeroes { .. }
                        );
                        assert!(!(writes && e.read_only), "a write to a read-only export");
                        assert!(conn.outstanding() <= max_in_flight, "too many in flight");
                        run.commands += 1;
                        n += 1;
                        let structured = conn.structured();
                        answer(&mut conn, cmd, seed & 0x40 != 0 && n % 2 == 0, structured);
                    }
                }
            }
            out.clear();
            conn.transmit(&mut out);
            run.sent += out.len();
            if !progressed || pending.is_empty() || conn.is_closed() {
                break;
            }
        }
        if conn.is_closed() {
            break;
        }
    }
    run
}
