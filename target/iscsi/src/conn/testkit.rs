//! Test helpers: a directory of targets and a tiny initiator that drives a [`Connection`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{ConnConfig, Connection, Event, Limits};
use crate::pdu::{self, Bhs, Cid, CmdSn, Digests, Frame, Isid, Itt, StatSn, Tsih};
use crate::session::SessionTable;
use crate::text;
use crate::{Access, ChapCredentials, Directory, Portal, TargetNode};

#[derive(Debug, Default)]
pub struct TestDir {
    pub targets: Mutex<Vec<Arc<TargetNode>>>,
    pub discovery: Mutex<Access>,
}

impl Directory for TestDir {
    fn target(&self, name: &str) -> Option<Arc<TargetNode>> {
        self.targets
            .lock()
            .expect("test lock")
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .cloned()
    }
    fn targets(&self) -> Vec<Arc<TargetNode>> {
        self.targets.lock().expect("test lock").clone()
    }
    fn discovery_access(&self) -> Access {
        self.discovery.lock().expect("test lock").clone()
    }
}

pub const TARGET: &str = "iqn.2026-11.org.basalt:vol1";
pub const INITIATOR: &str = "iqn.1994-05.com.example:host1";

pub fn creds(user: &str, secret: &str) -> ChapCredentials {
    ChapCredentials {
        user: user.into(),
        secret: secret.into(),
    }
}

pub fn target(name: &str, access: Access) -> Arc<TargetNode> {
    Arc::new(TargetNode {
        name: name.into(),
        alias: Some("vol-one".into()),
        luns: vec![0, 1],
        access,
    })
}

pub fn directory(targets: Vec<Arc<TargetNode>>) -> Arc<TestDir> {
    Arc::new(TestDir {
        targets: Mutex::new(targets),
        discovery: Mutex::new(Access::default()),
    })
}

pub fn config(dir: Arc<TestDir>, sessions: Arc<SessionTable>, limits: Limits) -> ConnConfig {
    ConnConfig {
        portal: Portal {
            tpgt: 1,
            addresses: vec![
                "127.0.0.1:3260".parse().expect("addr"),
                "[::1]:3260".parse().expect("addr"),
            ],
        },
        directory: dir,
        sessions,
        limits,
    }
}

pub fn default_config() -> ConnConfig {
    config(
        directory(vec![target(TARGET, Access::default())]),
        Arc::new(SessionTable::new()),
        Limits::default(),
    )
}

pub fn kv(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in pairs {
        text::push(&mut v, k, val);
    }
    v
}

pub fn answers(data: &[u8]) -> Vec<(String, String)> {
    text::parse(data)
        .expect("target text parses")
        .into_iter()
        .map(|p| (p.key.to_string(), p.value.to_string()))
        .collect()
}

pub fn get<'a>(ans: &'a [(String, String)], key: &str) -> Option<&'a str> {
    ans.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A received PDU, owned.
#[derive(Debug, Clone)]
pub struct Rx {
    pub bhs: Bhs,
    pub data: Vec<u8>,
}

/// A minimal initiator around a [`Connection`].
#[derive(Debug)]
pub struct Initiator {
    pub conn: Connection,
    pub now: Instant,
    pub isid: Isid,
    pub cid: Cid,
    pub tsih: Tsih,
    pub cmd_sn: CmdSn,
    pub itt: u32,
    pub exp_stat_sn: StatSn,
    pub tx_digests: Digests,
    pub rx_digests: Digests,
    pub want_digests: Digests,
    pub rx_buf: Vec<u8>,
    pub events: VecDeque<Event>,
}

pub fn peer() -> SocketAddr {
    "127.0.0.1:51000".parse().expect("addr")
}

impl Initiator {
    pub fn new(cfg: ConnConfig) -> Initiator {
        let now = Instant::now();
        Initiator {
            conn: Connection::new(cfg, peer(), now),
            now,
            isid: Isid([0x80, 0x12, 0x34, 0x56, 0, 1]),
            cid: Cid(0),
            tsih: Tsih(0),
            cmd_sn: CmdSn(1000),
            itt: 1,
            exp_stat_sn: StatSn(0),
            tx_digests: Digests::default(),
            rx_digests: Digests::default(),
            want_digests: Digests::default(),
            rx_buf: Vec::new(),
            events: VecDeque::new(),
        }
    }

    pub fn next_itt(&mut self) -> Itt {
        let i = Itt(self.itt);
        self.itt += 1;
        i
    }

    /// Sends one PDU; checks that the connection consumed all of it.
    pub fn send_raw(&mut self, bytes: &[u8]) -> usize {
        self.conn.receive(bytes, self.now)
    }

    pub fn send(&mut self, bhs: Bhs, ahs: &[u8], data: &[u8]) {
        let mut buf = Vec::new();
        pdu::encode_pdu(&mut buf, &bhs, ahs, &[data], self.tx_digests);
        let used = self.conn.receive(&buf, self.now);
        assert_eq!(used, buf.len(), "connection consumed the whole PDU");
        self.drain_events();
    }

    pub fn drain_events(&mut self) {
        while let Some(e) = self.conn.poll_event() {
            self.events.push_back(e);
        }
    }

    /// Every PDU the target has sent since the last call.
    pub fn recv(&mut self) -> Vec<Rx> {
        let mut out = Vec::new();
        self.conn.transmit(&mut self.rx_buf);
        loop {
            match pdu::frame(&self.rx_buf, self.rx_digests, 16 * 1024 * 1024) {
                Frame::Complete(n) => {
                    let p = pdu::parse_pdu(&self.rx_buf[..n], self.rx_digests, 16 * 1024 * 1024)
                        .expect("target PDU parses");
                    let rx = Rx {
                        bhs: p.bhs,
                        data: p.data.to_vec(),
                    };
                    self.rx_buf.drain(..n);
                    if let Bhs::LoginResponse(r) = rx.bhs
                        && r.transit
                        && r.nsg == 3
                        && r.status_class == 0
                    {
                        self.rx_digests = self.want_digests;
                        self.tx_digests = self.want_digests;
                        self.tsih = r.tsih;
                    }
                    out.push(rx);
                }
                Frame::Need(_) => break,
                Frame::Malformed(e) => panic!("target sent a malformed PDU: {e}"),
            }
        }
        self.drain_events();
        out
    }

    pub fn login_req(&self, csg: u8, nsg: u8, transit: bool, cont: bool) -> pdu::LoginRequest {
        pdu::LoginRequest {
            transit,
            cont,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt: Itt(0x1000),
            cid: self.cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        }
    }

    /// One login exchange: returns the single Login Response.
    pub fn login_step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        pairs: &[(&str, &str)],
    ) -> (pdu::LoginResponse, Vec<(String, String)>) {
        let req = self.login_req(csg, nsg, transit, false);
        self.send(Bhs::LoginRequest(req), &[], &kv(pairs));
        let rx = self.recv();
        assert_eq!(rx.len(), 1, "one login response: {rx:?}");
        match &rx[0].bhs {
            Bhs::LoginResponse(r) => {
                self.exp_stat_sn = r.stat_sn.next();
                (*r, answers(&rx[0].data))
            }
            other => panic!("expected a login response, got {other:?}"),
        }
    }

    /// A normal login straight into operational negotiation, as libiscsi does without CHAP.
    pub fn login_normal(&mut self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("SessionType", "Normal"),
            ("HeaderDigest", "None,CRC32C"),
            ("DataDigest", "None"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "262144"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxOutstandingR2T", "1"),
        ];
        for (k, v) in extra {
            if let Some(p) = pairs.iter_mut().find(|p| p.0 == *k) {
                p.1 = v;
            } else {
                pairs.push((k, v));
            }
        }
        let hd = pairs
            .iter()
            .find(|p| p.0 == "HeaderDigest")
            .is_some_and(|p| p.1.starts_with("CRC32C"));
        let dd = pairs
            .iter()
            .find(|p| p.0 == "DataDigest")
            .is_some_and(|p| p.1.starts_with("CRC32C"));
        self.want_digests = Digests {
            header: hd,
            data: dd,
        };
        let (r, ans) = self.login_step(1, 3, true, &pairs);
        assert_eq!((r.status_class, r.status_detail), (0, 0), "{ans:?}");
        assert!(r.transit && r.nsg == 3);
        ans
    }

    pub fn scsi_cmd(
        &mut self,
        cdb: &[u8],
        read: bool,
        write: bool,
        edtl: u32,
        final_: bool,
        data: &[u8],
    ) -> Itt {
        let itt = self.next_itt();
        let mut c = [0u8; 16];
        c[..cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        let sn = self.cmd_sn;
        self.cmd_sn = sn.next();
        self.send(
            Bhs::ScsiCommand(pdu::ScsiCommand {
                immediate: false,
                final_,
                read,
                write,
                attr: 1,
                lun: pdu::Lun::from_number(0),
                itt,
                edtl,
                cmd_sn: sn,
                exp_stat_sn: self.exp_stat_sn,
                cdb: c,
            }),
            &[],
            data,
        );
        itt
    }

    pub fn data_out(
        &mut self,
        itt: Itt,
        ttt: pdu::Ttt,
        data_sn: u32,
        offset: u32,
        final_: bool,
        data: &[u8],
    ) {
        self.send(
            Bhs::DataOut(pdu::DataOut {
                final_,
                lun: pdu::Lun::from_number(0),
                itt,
                ttt,
                exp_stat_sn: self.exp_stat_sn,
                data_sn: pdu::DataSn(data_sn),
                buffer_offset: offset,
            }),
            &[],
            data,
        );
    }

    pub fn take_execute(&mut self) -> super::Task {
        match self.events.pop_front() {
            Some(Event::Execute(t)) => t,
            other => panic!("expected Execute, got {other:?}"),
        }
    }
}
