//! Fuzz targets for the iSCSI target's decoders and state machines, and the SCSI CDB decoder.
//!
//! - [`iscsi_pdu`]: one PDU through `frame` and `parse_pdu` with the digests chosen by the
//!   first byte; a decoded header must encode back to bytes that decode to the same header.
//! - [`iscsi_text`]: login/text `key=value` data through the text parser and value decoders;
//!   whatever parses must encode and parse back to the same pairs.
//! - [`iscsi_conn`]: a whole connection state machine fed hostile bytes in chunks (login, then
//!   anything): it must never panic, and everything it sends must be well-formed PDUs.
//! - [`scsi_cdb`]: the CDB decoder on any bytes; an error carries ILLEGAL REQUEST sense.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_iscsi::conn::{ConnConfig, Connection, Limits};
use basalt_iscsi::pdu::{self, Digests, Frame};
use basalt_iscsi::session::SessionTable;
use basalt_iscsi::{Access, ChapCredentials, Directory, Portal, TargetNode, text};

/// `iscsi_pdu`: byte 0 bit 0 = header digest, bit 1 = data digest; the rest is the PDU.
pub fn iscsi_pdu(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let digests = Digests {
        header: flags & 1 != 0,
        data: flags & 2 != 0,
    };
    let max = 256 * 1024;
    match pdu::frame(rest, digests, max) {
        Frame::Need(n) => assert!(n > 0, "Need(0)"),
        Frame::Complete(n) => {
            assert!(n <= rest.len() && n >= pdu::BHS_LEN, "frame said {n} of {}", rest.len());
            if let Ok(p) = pdu::parse_pdu(&rest[..n], digests, max) {
                let mut out = Vec::new();
                pdu::encode_pdu(&mut out, &p.bhs, p.ahs, &[p.data], digests);
                let again = pdu::parse_pdu(&out, digests, max).expect("an encoded PDU parses");
                assert_eq!(again.bhs, p.bhs, "header changed in an encode round trip");
                assert_eq!(again.data, p.data, "data changed in an encode round trip");
            }
        }
        Frame::Malformed(e) => assert!(!e.to_string().is_empty()),
    }
    let _ = pdu::parse_pdu(rest, digests, max);
    if let Some(b) = rest.first_chunk::<{ pdu::BHS_LEN }>() {
        let _ = pdu::decode_bhs(b);
    }
    let _ = pdu::parse_ahs(rest);
}

/// `iscsi_text`: the bytes are a text data segment.
pub fn iscsi_text(data: &[u8]) {
    let Ok(pairs) = text::parse(data) else {
        return;
    };
    let mut out = Vec::new();
    for kv in &pairs {
        assert!(text::valid_key(kv.key), "parsed an invalid key {:?}", kv.key);
        let _ = text::parse_number(kv.value);
        let _ = text::parse_range(kv.value);
        let _ = text::parse_bool(kv.value);
        let _ = text::decode_binary(kv.value);
        let _ = text::list(kv.value).count();
        text::push(&mut out, kv.key, kv.value);
    }
    let again = text::parse(&out).expect("encoded pairs parse");
    assert_eq!(again, pairs, "text round trip changed the pairs");
}

#[derive(Debug)]
struct FuzzDirectory {
    nodes: Vec<Arc<TargetNode>>,
}

impl Directory for FuzzDirectory {
    fn target(&self, name: &str) -> Option<Arc<TargetNode>> {
        self.nodes
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
            .cloned()
    }
    fn targets(&self) -> Vec<Arc<TargetNode>> {
        self.nodes.clone()
    }
    fn discovery_access(&self) -> Access {
        Access::default()
    }
}

/// Targets the connection fuzzer logs in to: an open one, a CHAP one, an allow-listed one.
fn directory() -> Arc<FuzzDirectory> {
    let node = |name: &str, access: Access| {
        Arc::new(TargetNode {
            name: name.into(),
            alias: None,
            luns: vec![0],
            access,
        })
    };
    Arc::new(FuzzDirectory {
        nodes: vec![
            node("iqn.2026-11.org.basalt:open", Access::default()),
            node(
                "iqn.2026-11.org.basalt:chap",
                Access {
                    initiators: None,
                    chap: Some(ChapCredentials {
                        user: "alice".into(),
                        secret: "alice-secret-42".into(),
                    }),
                    mutual_chap: None,
                },
            ),
            node(
                "iqn.2026-11.org.basalt:acl",
                Access {
                    initiators: Some(vec!["iqn.2026-11.test:allowed".into()]),
                    chap: None,
                    mutual_chap: None,
                },
            ),
        ],
    })
}

/// A login request PDU (CSG 1 → NSG 3, transit) for `target`, as seeds start with.
pub fn login_pdu(target: &str) -> Vec<u8> {
    let mut data = Vec::new();
    text::push(&mut data, "InitiatorName", "iqn.2026-11.test:fuzz");
    text::push(&mut data, "TargetName", target);
    text::push(&mut data, "SessionType", "Normal");
    text::push(&mut data, "AuthMethod", "None");
    text::push(&mut data, "HeaderDigest", "None");
    text::push(&mut data, "DataDigest", "None");
    text::push(&mut data, "ImmediateData", "Yes");
    text::push(&mut data, "InitialR2T", "No");
    text::push(&mut data, "MaxRecvDataSegmentLength", "262144");
    let mut bhs = [0u8; pdu::BHS_LEN];
    bhs[0] = 0x43; // immediate Login Request
    bhs[1] = 0x80 | (1 << 2) | 3; // T, CSG=operational, NSG=full feature
    let len = data.len() as u32;
    bhs[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
    bhs[8..14].copy_from_slice(&[0x80, 0, 0, 0x12, 0x34, 0x56]); // ISID
    let mut out = bhs.to_vec();
    out.extend_from_slice(&data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

/// `iscsi_conn`: byte 0 = chunking seed; the rest is fed to one connection in chunks, with
/// the clock moving between chunks, completing every command it asks to run. With
/// `BASALT_FUZZ_DEBUG` set, every PDU the target sends is printed (to see how far an input
/// gets).
pub fn iscsi_conn(data: &[u8]) {
    let _ = run_conn(data);
}

/// What [`iscsi_conn`] saw: commands the connection asked to run, and bytes it sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnRun {
    /// SCSI commands executed.
    pub executed: usize,
    /// Task management requests.
    pub task_management: usize,
    /// Bytes sent.
    pub sent: usize,
}

/// The body of [`iscsi_conn`], reporting what happened (for tests that check seeds get far).
pub fn run_conn(data: &[u8]) -> ConnRun {
    let mut run = ConnRun::default();
    let Some((&seed, rest)) = data.split_first() else {
        return run;
    };
    let cfg = ConnConfig {
        portal: Portal {
            tpgt: 1,
            addresses: vec![SocketAddr::from(([127, 0, 0, 1], 3260))],
        },
        directory: directory(),
        sessions: Arc::new(SessionTable::new()),
        limits: Limits::default(),
    };
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut now = Instant::now();
    let mut conn = Connection::new(cfg, peer, now);
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let chunk = usize::from(seed & 0x3f) * 16 + 1;
    for (i, piece) in rest.chunks(chunk).enumerate() {
        pending.extend_from_slice(piece);
        let used = conn.receive(&pending, now);
        assert!(used <= pending.len(), "consumed more than it was given");
        pending.drain(..used);
        while let Some(ev) = conn.poll_event() {
            if let basalt_iscsi::conn::Event::Execute(task) = ev {
                run.executed += 1;
                let data = vec![0u8; task.expected_len.min(1 << 20) as usize];
                conn.complete(task.id, 0, &[], &[&data], basalt_scsi::Residual::None);
            } else if let basalt_iscsi::conn::Event::TaskManagement { id, .. } = ev {
                run.task_management += 1;
                conn.tmf_complete(id, basalt_iscsi::conn::TmfResponse::Complete);
            }
        }
        out.clear();
        conn.transmit(&mut out);
        run.sent += out.len();
        if std::env::var_os("BASALT_FUZZ_DEBUG").is_some() {
            let mut o = &out[..];
            while let Frame::Complete(n) = pdu::frame(o, Digests::default(), 16 << 20) {
                if let Ok(p) = pdu::parse_pdu(&o[..n], Digests::default(), 16 << 20) {
                    eprintln!("sent {:?} data {:?}", p.bhs, String::from_utf8_lossy(&p.data[..p.data.len().min(80)]));
                }
                o = &o[n..];
            }
        }
        check_output(&out);
        // Time moves 10 ms per chunk; with bit 7 of the seed set, 20 s every 32nd chunk, so
        // keep-alive pings and their timeouts happen too.
        now += if seed & 0x80 != 0 && i % 32 == 31 {
            Duration::from_secs(20)
        } else {
            Duration::from_millis(10)
        };
        let _ = conn.tick(now);
        if conn.is_closed() {
            break;
        }
    }
    run
}

/// What a target sends frames as whole PDUs (checked while no digests are negotiated; once
/// they are, the rest is not framed here).
fn check_output(mut out: &[u8]) {
    while !out.is_empty() {
        match pdu::frame(out, Digests::default(), 16 << 20) {
            Frame::Complete(n) => out = &out[n..],
            // Digests may have been negotiated: the rest cannot be framed without them.
            Frame::Need(_) | Frame::Malformed(_) => return,
        }
    }
}

/// `scsi_cdb`: any bytes as a CDB.
pub fn scsi_cdb(data: &[u8]) {
    if let Err(sense) = basalt_scsi::cdb::decode(data) {
        let fixed = sense.encode_fixed();
        assert_eq!(fixed[0] & 0x7f, 0x70, "fixed-format response code");
        let desc = sense.encode_descriptor();
        assert_eq!(desc[0] & 0x7f, 0x72, "descriptor-format response code");
    }
}
