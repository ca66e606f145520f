//! A small blocking iSCSI initiator for end-to-end tests: login (with or without CHAP) and
//! SCSI commands with immediate data, R2T-solicited data and Data-In, built on the target's
//! own PDU codec. It also sends raw bytes, so tests can send what no real initiator would.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use basalt_iscsi::chap::ChapAlgorithm;
use basalt_iscsi::pdu::{
    self, Bhs, CmdSn, DataOut, DataSn, Digests, Isid, Itt, LoginRequest, Lun, ScsiCommand, StatSn,
    Tsih, Ttt,
};
use basalt_iscsi::text;

/// Our MaxRecvDataSegmentLength.
const MAX_RECV: u32 = 262_144;

/// A login that failed: the target's status class and detail (RFC 7143 §11.13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStatus {
    /// Status-Class.
    pub class: u8,
    /// Status-Detail.
    pub detail: u8,
}

/// What a SCSI command came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// SCSI status.
    pub status: u8,
    /// Data-In bytes.
    pub data: Vec<u8>,
    /// Sense data (without the 2-byte length).
    pub sense: Vec<u8>,
}

/// One login step's outcome: the target's T bit, NSG and keys, or why the login ended.
type StepResult = Result<(bool, u8, Vec<(String, String)>), Result<LoginStatus, io::Error>>;

/// One logged-in session with one connection.
#[derive(Debug)]
pub struct Initiator {
    s: TcpStream,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    /// The target's MaxRecvDataSegmentLength.
    target_max_recv: u32,
    first_burst: u32,
    immediate_data: bool,
    initial_r2t: bool,
}

fn write_pdu(s: &mut TcpStream, bhs: &Bhs, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(pdu::BHS_LEN + data.len() + 4);
    pdu::encode_pdu(&mut out, bhs, &[], &[data], Digests::default());
    s.write_all(&out)
}

/// Reads one PDU (no digests).
///
/// # Errors
/// The connection failed or closed, or the target sent something that does not parse.
pub fn read_pdu(s: &mut TcpStream) -> io::Result<(Bhs, Vec<u8>)> {
    let mut buf = vec![0u8; pdu::BHS_LEN];
    s.read_exact(&mut buf)?;
    loop {
        match pdu::frame(&buf, Digests::default(), 16 << 20) {
            pdu::Frame::Complete(n) => {
                let p = pdu::parse_pdu(&buf[..n], Digests::default(), 16 << 20)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                return Ok((p.bhs, p.data.to_vec()));
            }
            pdu::Frame::Need(more) => {
                let at = buf.len();
                buf.resize(at + more, 0);
                s.read_exact(&mut buf[at..])?;
            }
            pdu::Frame::Malformed(e) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        }
    }
}

fn kv(data: &[u8]) -> Vec<(String, String)> {
    text::parse(data)
        .map(|v| {
            v.iter()
                .map(|p| (p.key.to_owned(), p.value.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl Initiator {
    /// Connects and logs in to `target` as `initiator`, with CHAP when `chap` is
    /// `Some((user, secret))`. `isid_low` makes the ISID (and so the session) distinct.
    ///
    /// # Errors
    /// `Err(Ok(status))` when the target refused the login, `Err(Err(io))` when the connection
    /// failed.
    pub fn login(
        addr: SocketAddr,
        initiator: &str,
        target: &str,
        chap: Option<(&str, &str)>,
        isid_low: u16,
    ) -> Result<Initiator, Result<LoginStatus, io::Error>> {
        let s = TcpStream::connect(addr).map_err(Err)?;
        s.set_nodelay(true).map_err(Err)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(Err)?;
        let [hi, lo] = isid_low.to_be_bytes();
        let isid = Isid([0x80, 0x00, 0x01, 0x00, hi, lo]);
        let mut me = Initiator {
            s,
            itt: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
            target_max_recv: 8192,
            first_burst: 65536,
            immediate_data: true,
            initial_r2t: true,
        };
        let step = |me: &mut Initiator,
                    csg: u8,
                    nsg: u8,
                    transit: bool,
                    pairs: &[(&str, &str)]|
         -> StepResult {
            let mut data = Vec::new();
            for (k, v) in pairs {
                text::push(&mut data, k, v);
            }
            let req = Bhs::LoginRequest(LoginRequest {
                transit,
                cont: false,
                csg,
                nsg,
                version_max: 0,
                version_min: 0,
                isid,
                tsih: Tsih(0),
                itt: Itt(0),
                cid: pdu::Cid(0),
                cmd_sn: CmdSn(me.cmd_sn),
                exp_stat_sn: StatSn(me.exp_stat_sn),
            });
            write_pdu(&mut me.s, &req, &data).map_err(Err)?;
            let (bhs, data) = read_pdu(&mut me.s).map_err(Err)?;
            let Bhs::LoginResponse(r) = bhs else {
                return Err(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected a login response, got {bhs:?}"),
                )));
            };
            if r.status_class != 0 {
                return Err(Ok(LoginStatus {
                    class: r.status_class,
                    detail: r.status_detail,
                }));
            }
            me.exp_stat_sn = r.stat_sn.0.wrapping_add(1);
            Ok((r.transit, r.nsg, kv(&data)))
        };
        let base: Vec<(&str, &str)> = vec![
            ("InitiatorName", initiator),
            ("TargetName", target),
            ("SessionType", "Normal"),
        ];
        if let Some((user, secret)) = chap {
            let mut first = base.clone();
            first.push(("AuthMethod", "CHAP,None"));
            let (_, _, got) = step(&mut me, 0, 1, false, &first)?;
            if get(&got, "AuthMethod") != Some("CHAP") {
                return Err(Err(io::Error::other("target did not choose CHAP")));
            }
            let (_, _, got) = step(&mut me, 0, 1, false, &[("CHAP_A", "5")])?;
            let id: u8 = get(&got, "CHAP_I")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Err(io::Error::other("no CHAP_I")))?;
            let challenge = get(&got, "CHAP_C")
                .and_then(text::decode_binary)
                .ok_or_else(|| Err(io::Error::other("no CHAP_C")))?;
            let resp = ChapAlgorithm::Md5.response(id, secret.as_bytes(), &challenge);
            let resp = text::encode_hex(&resp);
            step(
                &mut me,
                0,
                1,
                true,
                &[("CHAP_N", user), ("CHAP_R", resp.as_str())],
            )?;
        }
        let ops: Vec<(&str, &str)> = vec![
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("ImmediateData", "Yes"),
            ("InitialR2T", "No"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "1048576"),
            ("FirstBurstLength", "65536"),
            ("ErrorRecoveryLevel", "0"),
        ];
        if chap.is_none() {
            // The security stage with no authentication, as real initiators do.
            let mut first = base;
            first.push(("AuthMethod", "None"));
            step(&mut me, 0, 1, true, &first)?;
        }
        let mut pairs = ops;
        let mut transit = false;
        let mut got = Vec::new();
        for _ in 0..4 {
            let (t, nsg, g) = step(&mut me, 1, 3, true, &pairs)?;
            got.extend(g);
            if t && nsg == 3 {
                transit = true;
                break;
            }
            pairs = Vec::new();
        }
        if !transit {
            return Err(Err(io::Error::other("target never moved to full feature")));
        }
        let num = |k: &str, d: u32| get(&got, k).and_then(|v| v.parse().ok()).unwrap_or(d);
        me.target_max_recv = num("MaxRecvDataSegmentLength", 8192);
        me.first_burst = num("FirstBurstLength", 65536);
        me.immediate_data = get(&got, "ImmediateData") != Some("No");
        me.initial_r2t = get(&got, "InitialR2T") == Some("Yes");
        Ok(me)
    }

    /// The socket, for raw bytes.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.s
    }

    /// The next CmdSN this session would use.
    pub fn cmd_sn(&self) -> u32 {
        self.cmd_sn
    }

    /// Runs one SCSI command: `write` data goes out as immediate data, then Data-Out for each
    /// R2T; `read_len` bytes of Data-In are expected at most.
    ///
    /// # Errors
    /// The connection failed, or the target broke the protocol.
    pub fn command(
        &mut self,
        lun: u64,
        cdb: &[u8],
        read_len: u32,
        write: &[u8],
    ) -> io::Result<Completion> {
        let itt = self.itt;
        self.itt = self.itt.wrapping_add(1).max(1);
        let mut c = [0u8; 16];
        c[..cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        let edtl = if write.is_empty() {
            read_len
        } else {
            u32::try_from(write.len()).expect("small write")
        };
        let imm = if self.immediate_data {
            write
                .len()
                .min(self.first_burst as usize)
                .min(self.target_max_recv as usize)
        } else {
            0
        };
        let cmd = Bhs::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: self.initial_r2t || imm == write.len(),
            read: read_len > 0,
            write: !write.is_empty(),
            attr: 1,
            lun: Lun::from_number(lun),
            itt: Itt(itt),
            edtl,
            cmd_sn: CmdSn(self.cmd_sn),
            exp_stat_sn: StatSn(self.exp_stat_sn),
            cdb: c,
        });
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        write_pdu(&mut self.s, &cmd, &write[..imm])?;
        let mut sent_unsolicited = imm;
        // Unsolicited Data-Out up to FirstBurstLength when InitialR2T=No.
        if !self.initial_r2t && sent_unsolicited < write.len() {
            let end = write.len().min(self.first_burst as usize);
            let mut sn = 0;
            while sent_unsolicited < end {
                let n = (end - sent_unsolicited).min(self.target_max_recv as usize);
                let d = Bhs::DataOut(DataOut {
                    final_: sent_unsolicited + n == end,
                    lun: Lun::from_number(lun),
                    itt: Itt(itt),
                    ttt: Ttt(pdu::RESERVED_TAG),
                    exp_stat_sn: StatSn(self.exp_stat_sn),
                    data_sn: DataSn(sn),
                    buffer_offset: u32::try_from(sent_unsolicited).expect("small"),
                });
                write_pdu(
                    &mut self.s,
                    &d,
                    &write[sent_unsolicited..sent_unsolicited + n],
                )?;
                sent_unsolicited += n;
                sn += 1;
            }
        }
        let mut data = Vec::new();
        loop {
            let (bhs, seg) = read_pdu(&mut self.s)?;
            match bhs {
                Bhs::DataIn(d) if d.itt.0 == itt => {
                    let off = d.buffer_offset as usize;
                    if data.len() < off + seg.len() {
                        data.resize(off + seg.len(), 0);
                    }
                    data[off..off + seg.len()].copy_from_slice(&seg);
                    if let Some(status) = d.status {
                        self.exp_stat_sn = d.stat_sn.0.wrapping_add(1);
                        return Ok(Completion {
                            status,
                            data,
                            sense: Vec::new(),
                        });
                    }
                }
                Bhs::R2t(r) if r.itt.0 == itt => {
                    let mut off = r.buffer_offset as usize;
                    let end = (off + r.desired_len as usize).min(write.len());
                    let mut sn = 0;
                    while off < end {
                        let n = (end - off).min(self.target_max_recv as usize);
                        let d = Bhs::DataOut(DataOut {
                            final_: off + n == end,
                            lun: Lun::from_number(lun),
                            itt: Itt(itt),
                            ttt: r.ttt,
                            exp_stat_sn: StatSn(self.exp_stat_sn),
                            data_sn: DataSn(sn),
                            buffer_offset: u32::try_from(off).expect("small"),
                        });
                        write_pdu(&mut self.s, &d, &write[off..off + n])?;
                        off += n;
                        sn += 1;
                    }
                }
                Bhs::ScsiResponse(r) if r.itt.0 == itt => {
                    self.exp_stat_sn = r.stat_sn.0.wrapping_add(1);
                    let sense = if seg.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([seg[0], seg[1]]));
                        seg[2..(2 + n).min(seg.len())].to_vec()
                    } else {
                        Vec::new()
                    };
                    return Ok(Completion {
                        status: r.status,
                        data,
                        sense,
                    });
                }
                Bhs::NopIn(n) if n.ttt.0 != pdu::RESERVED_TAG => {
                    // Answer the target's ping.
                    let out = Bhs::NopOut(pdu::NopOut {
                        immediate: true,
                        lun: n.lun,
                        itt: Itt(pdu::RESERVED_TAG),
                        ttt: n.ttt,
                        cmd_sn: CmdSn(self.cmd_sn),
                        exp_stat_sn: StatSn(self.exp_stat_sn),
                    });
                    write_pdu(&mut self.s, &out, &[])?;
                }
                Bhs::NopIn(_) | Bhs::AsyncMessage(_) => {}
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected PDU for task {itt}: {other:?}"),
                    ));
                }
            }
        }
    }

    /// READ(16) of `blocks` 512-byte blocks at `lba`.
    ///
    /// # Errors
    /// As [`Initiator::command`].
    pub fn read16(&mut self, lun: u64, lba: u64, blocks: u32) -> io::Result<Completion> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x88;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
        self.command(lun, &cdb, blocks * 512, &[])
    }

    /// WRITE(16) of `data` (a multiple of 512 bytes) at `lba`.
    ///
    /// # Errors
    /// As [`Initiator::command`].
    pub fn write16(&mut self, lun: u64, lba: u64, data: &[u8]) -> io::Result<Completion> {
        let blocks = u32::try_from(data.len() / 512).expect("small write");
        let mut cdb = [0u8; 16];
        cdb[0] = 0x8a;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
        self.command(lun, &cdb, 0, data)
    }

    /// Sends TEST UNIT READY until it stops reporting unit attentions; returns the last status.
    ///
    /// # Errors
    /// As [`Initiator::command`].
    pub fn clear_unit_attentions(&mut self, lun: u64) -> io::Result<u8> {
        let mut status = 0;
        for _ in 0..8 {
            status = self.command(lun, &[0u8; 6], 0, &[])?.status;
            if status == 0 {
                break;
            }
        }
        Ok(status)
    }

    /// Logs out (close the session) and waits for the response.
    ///
    /// # Errors
    /// The connection failed or the answer was not a logout response.
    pub fn logout(mut self) -> io::Result<()> {
        let req = Bhs::LogoutRequest(pdu::LogoutRequest {
            immediate: true,
            reason: 0,
            itt: Itt(self.itt),
            cid: pdu::Cid(0),
            cmd_sn: CmdSn(self.cmd_sn),
            exp_stat_sn: StatSn(self.exp_stat_sn),
        });
        write_pdu(&mut self.s, &req, &[])?;
        loop {
            match read_pdu(&mut self.s)?.0 {
                Bhs::LogoutResponse(_) => return Ok(()),
                Bhs::NopIn(_) | Bhs::AsyncMessage(_) => {}
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected a logout response, got {other:?}"),
                    ));
                }
            }
        }
    }
}

/// Our MaxRecvDataSegmentLength, as offered at login.
pub fn max_recv() -> u32 {
    MAX_RECV
}
