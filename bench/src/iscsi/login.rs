//! The login phase, initiator side, as a state machine without I/O: [`Login::start`] gives
//! the first Login Request, [`Login::on_response`] takes each Login Response and gives the next
//! request or the negotiated parameters.
//!
//! Security stage only with CHAP credentials (`AuthMethod=CHAP`, `CHAP_A=5` (MD5), then
//! `CHAP_N`/`CHAP_R`); without them the login starts in the operational stage, as libiscsi
//! does. Operational keys offered:
//!
//! | key | offer | result |
//! | --- | --- | --- |
//! | HeaderDigest, DataDigest | `None` | must be `None` |
//! | MaxRecvDataSegmentLength | [`MAX_RECV_SEGMENT`] | declarative: the target's bounds what we send |
//! | FirstBurstLength, MaxBurstLength, MaxOutstandingR2T | 256 KiB, 1 MiB, 4 | the target's answer (a minimum) |
//! | ImmediateData | `Yes` | AND |
//! | InitialR2T | `No` | OR |
//! | ErrorRecoveryLevel, DefaultTime2Wait, DefaultTime2Retain | 0 | |
//!
//! A key the target answers `Reject`, `Irrelevant` or `NotUnderstood` keeps its RFC 7143
//! default.

use basalt_iscsi::chap::ChapAlgorithm;
use basalt_iscsi::pdu::{Bhs, Cid, CmdSn, Isid, Itt, LoginRequest, LoginResponse, StatSn, Tsih};
use basalt_iscsi::text;

/// Our MaxRecvDataSegmentLength: the largest data segment the target may send us.
pub const MAX_RECV_SEGMENT: u32 = 256 * 1024;

/// ITT of every Login Request of a login.
const LOGIN_ITT: Itt = Itt(0x4c00_0000);

/// Most Login Requests one login may take.
const MAX_ROUNDS: u32 = 32;

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, displaydoc::Display, thiserror::Error)]
pub enum LoginError {
    /// the target refused the login: status {class:#04x}{detail:02x} ({what})
    Refused {
        /// Status-Class.
        class: u8,
        /// Status-Detail.
        detail: u8,
        /// What the status means.
        what: &'static str,
    },
    /// the target answered {key}={value:?}, which this initiator cannot accept
    Unacceptable {
        /// The key.
        key: &'static str,
        /// The target's value.
        value: String,
    },
    /// the target's CHAP challenge is missing or malformed
    BadChallenge,
    /// the target requires CHAP; give credentials (USER%SECRET@ in the URL or BASALT_ISCSI_CHAP_USER and BASALT_ISCSI_CHAP_SECRET)
    ChapRequired,
    /// the target sent malformed login text
    BadText,
    /// the login did not finish within 32 requests
    TooLong,
    /// unexpected Login Response (stage {csg}, next {nsg}, transit {transit})
    Unexpected {
        /// CSG.
        csg: u8,
        /// NSG.
        nsg: u8,
        /// T bit.
        transit: bool,
    },
}

fn status_name(class: u8, detail: u8) -> &'static str {
    match (class, detail) {
        (1, _) => "redirection, not supported here",
        (2, 0x01) => "authentication failed",
        (2, 0x02) => "authorization failure: this initiator may not access the target",
        (2, 0x03) => "no such target",
        (2, 0x04) => "target removed",
        (2, 0x05) => "unsupported version",
        (2, 0x06) => "too many connections",
        (2, 0x07) => "missing parameter",
        (2, 0x09) => "session type not supported",
        (2, _) => "initiator error",
        (3, 0x01) => "service unavailable",
        (3, 0x02) => "out of resources",
        (3, _) => "target error",
        _ => "unknown status",
    }
}

/// CHAP credentials of the initiator.
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    /// CHAP_N.
    pub user: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What a login needs.
#[derive(Debug, Clone)]
pub struct LoginParams {
    /// InitiatorName.
    pub initiator: String,
    /// TargetName.
    pub target: String,
    /// ISID: distinct for every session of this initiator to the target.
    pub isid: Isid,
    /// CHAP credentials; `None`: AuthMethod=None.
    pub chap: Option<Chap>,
    /// The session's first CmdSN.
    pub cmd_sn: CmdSn,
}

/// The session's parameters after a successful login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The target's MaxRecvDataSegmentLength: the most data in one PDU we send.
    pub target_max_segment: u32,
    /// FirstBurstLength.
    pub first_burst: u32,
    /// MaxBurstLength.
    pub max_burst: u32,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// ImmediateData.
    pub immediate_data: bool,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// TSIH the target assigned.
    pub tsih: Tsih,
    /// CmdSN of the first command.
    pub cmd_sn: CmdSn,
    /// MaxCmdSN.
    pub max_cmd_sn: CmdSn,
    /// ExpStatSN.
    pub exp_stat_sn: StatSn,
}

impl Default for Negotiated {
    /// RFC 7143's defaults.
    fn default() -> Self {
        Negotiated {
            target_max_segment: 8192,
            first_burst: 65536,
            max_burst: 262_144,
            max_outstanding_r2t: 1,
            immediate_data: true,
            initial_r2t: true,
            tsih: Tsih(0),
            cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
            exp_stat_sn: StatSn(0),
        }
    }
}

/// What to do after a Login Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this Login Request (the whole PDU).
    Send(Vec<u8>),
    /// Full feature phase.
    Done(Negotiated),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sent AuthMethod=CHAP.
    AuthMethod,
    /// Sent CHAP_A.
    ChapA,
    /// Sent CHAP_N and CHAP_R.
    ChapR,
    /// In the operational stage.
    Operational,
}

/// One login in progress.
#[derive(Debug)]
pub struct Login {
    params: LoginParams,
    state: State,
    neg: Negotiated,
    /// Text of a response split with the C bit.
    partial: Vec<u8>,
    rounds: u32,
}

/// The operational keys we offer.
fn operational_keys(out: &mut Vec<u8>) {
    for (k, v) in [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("MaxBurstLength", "1048576"),
        ("ImmediateData", "Yes"),
        ("InitialR2T", "No"),
        ("MaxOutstandingR2T", "4"),
        ("MaxConnections", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("ErrorRecoveryLevel", "0"),
        ("DefaultTime2Wait", "0"),
        ("DefaultTime2Retain", "0"),
    ] {
        text::push(out, k, v);
    }
}

impl Login {
    /// Starts a login; returns the first Login Request to send.
    pub fn start(params: LoginParams) -> (Login, Vec<u8>) {
        let mut l = Login {
            neg: Negotiated {
                cmd_sn: params.cmd_sn,
                max_cmd_sn: params.cmd_sn,
                ..Negotiated::default()
            },
            state: State::Operational,
            params,
            partial: Vec::new(),
            rounds: 1,
        };
        let mut kv = Vec::with_capacity(512);
        text::push(&mut kv, "InitiatorName", &l.params.initiator);
        text::push(&mut kv, "TargetName", &l.params.target);
        text::push(&mut kv, "SessionType", "Normal");
        let first = if l.params.chap.is_some() {
            l.state = State::AuthMethod;
            text::push(&mut kv, "AuthMethod", "CHAP");
            l.request(0, 1, false, &kv)
        } else {
            operational_keys(&mut kv);
            l.request(1, 3, true, &kv)
        };
        (l, first)
    }

    fn request(&self, csg: u8, nsg: u8, transit: bool, kv: &[u8]) -> Vec<u8> {
        let req = LoginRequest {
            transit,
            cont: false,
            csg,
            nsg: if transit { nsg } else { 0 },
            version_max: 0,
            version_min: 0,
            isid: self.params.isid,
            tsih: Tsih(0),
            itt: LOGIN_ITT,
            cid: Cid(0),
            cmd_sn: self.params.cmd_sn,
            exp_stat_sn: self.neg.exp_stat_sn,
        };
        let mut out = Vec::with_capacity(48 + kv.len() + 4);
        basalt_iscsi::pdu::encode_pdu(
            &mut out,
            &Bhs::LoginRequest(req),
            &[],
            &[kv],
            basalt_iscsi::pdu::Digests::default(),
        );
        out
    }

    /// Takes one Login Response and its data segment.
    ///
    /// # Errors
    /// A refused login, an answer we cannot accept, or a target that does not follow the
    /// protocol.
    pub fn on_response(&mut self, r: &LoginResponse, data: &[u8]) -> Result<Step, LoginError> {
        if r.status_class != 0 {
            if (r.status_class, r.status_detail) == (2, 1) && self.params.chap.is_none() {
                return Err(LoginError::ChapRequired);
            }
            return Err(LoginError::Refused {
                class: r.status_class,
                detail: r.status_detail,
                what: status_name(r.status_class, r.status_detail),
            });
        }
        self.rounds += 1;
        if self.rounds > MAX_ROUNDS {
            return Err(LoginError::TooLong);
        }
        self.neg.exp_stat_sn = r.stat_sn.next();
        self.neg.tsih = r.tsih;
        if r.max_cmd_sn.wrapping_add(1).ge(r.exp_cmd_sn) {
            self.neg.cmd_sn = r.exp_cmd_sn;
            self.neg.max_cmd_sn = r.max_cmd_sn;
        }
        if r.cont {
            // More text follows: ask for it with an empty request.
            self.partial.extend_from_slice(data);
            return Ok(Step::Send(self.request(r.csg, 0, false, &[])));
        }
        let whole;
        let data = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(data);
            whole = std::mem::take(&mut self.partial);
            &whole[..]
        };
        let pairs = text::parse(data).map_err(|_| LoginError::BadText)?;
        let get = |key: &str| pairs.iter().find(|p| p.key == key).map(|p| p.value);
        let unexpected = LoginError::Unexpected {
            csg: r.csg,
            nsg: r.nsg,
            transit: r.transit,
        };
        match self.state {
            State::AuthMethod | State::ChapA | State::ChapR if r.transit && r.nsg == 1 => {
                if self.state != State::ChapR && get("AuthMethod") != Some("None") {
                    return Err(unexpected);
                }
                self.enter_operational()
            }
            State::AuthMethod => match get("AuthMethod") {
                Some("CHAP") => {
                    let mut kv = Vec::new();
                    text::push(&mut kv, "CHAP_A", "5");
                    self.state = State::ChapA;
                    Ok(Step::Send(self.request(0, 1, false, &kv)))
                }
                Some("None") => Ok(Step::Send(self.request(0, 1, true, &[]))),
                other => Err(LoginError::Unacceptable {
                    key: "AuthMethod",
                    value: other.unwrap_or_default().to_owned(),
                }),
            },
            State::ChapA => {
                if get("CHAP_A") != Some("5") {
                    return Err(LoginError::Unacceptable {
                        key: "CHAP_A",
                        value: get("CHAP_A").unwrap_or_default().to_owned(),
                    });
                }
                let id = get("CHAP_I")
                    .and_then(text::parse_number)
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or(LoginError::BadChallenge)?;
                let challenge = get("CHAP_C")
                    .and_then(text::decode_binary)
                    .filter(|c| !c.is_empty())
                    .ok_or(LoginError::BadChallenge)?;
                let chap = self.params.chap.as_ref().ok_or(LoginError::ChapRequired)?;
                let response = ChapAlgorithm::Md5.response(id, chap.secret.as_bytes(), &challenge);
                let mut kv = Vec::new();
                text::push(&mut kv, "CHAP_N", &chap.user);
                text::push(&mut kv, "CHAP_R", &text::encode_hex(&response));
                self.state = State::ChapR;
                Ok(Step::Send(self.request(0, 1, true, &kv)))
            }
            State::ChapR => {
                // The target wants another round in the security stage: nothing more to say.
                Ok(Step::Send(self.request(0, 1, true, &[])))
            }
            State::Operational => {
                self.apply(&pairs)?;
                if r.transit && r.nsg == 3 {
                    Ok(Step::Done(self.neg))
                } else if r.csg == 1 {
                    Ok(Step::Send(self.request(1, 3, true, &[])))
                } else {
                    Err(unexpected)
                }
            }
        }
    }

    fn enter_operational(&mut self) -> Result<Step, LoginError> {
        self.state = State::Operational;
        let mut kv = Vec::with_capacity(512);
        operational_keys(&mut kv);
        Ok(Step::Send(self.request(1, 3, true, &kv)))
    }

    fn apply(&mut self, pairs: &[text::KeyValue<'_>]) -> Result<(), LoginError> {
        let special =
            |v: &str| v == text::REJECT || v == text::IRRELEVANT || v == text::NOT_UNDERSTOOD;
        let number = |key: &'static str, v: &str| {
            text::parse_number(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or(LoginError::Unacceptable {
                    key,
                    value: v.to_owned(),
                })
        };
        let boolean = |key: &'static str, v: &str| {
            text::parse_bool(v).ok_or(LoginError::Unacceptable {
                key,
                value: v.to_owned(),
            })
        };
        for p in pairs {
            if special(p.value) {
                continue;
            }
            match p.key {
                "HeaderDigest" | "DataDigest" if p.value != "None" => {
                    return Err(LoginError::Unacceptable {
                        key: if p.key == "HeaderDigest" {
                            "HeaderDigest"
                        } else {
                            "DataDigest"
                        },
                        value: p.value.to_owned(),
                    });
                }
                "MaxRecvDataSegmentLength" => {
                    self.neg.target_max_segment = number("MaxRecvDataSegmentLength", p.value)?
                        .min(basalt_iscsi::pdu::MAX_DATA_SEGMENT);
                }
                "FirstBurstLength" => {
                    self.neg.first_burst = number("FirstBurstLength", p.value)?;
                }
                "MaxBurstLength" => self.neg.max_burst = number("MaxBurstLength", p.value)?,
                "MaxOutstandingR2T" => {
                    self.neg.max_outstanding_r2t = number("MaxOutstandingR2T", p.value)?;
                }
                "ImmediateData" => self.neg.immediate_data = boolean("ImmediateData", p.value)?,
                "InitialR2T" => self.neg.initial_r2t = boolean("InitialR2T", p.value)?,
                "ErrorRecoveryLevel" if p.value != "0" => {
                    return Err(LoginError::Unacceptable {
                        key: "ErrorRecoveryLevel",
                        value: p.value.to_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use basalt_iscsi::pdu::{self, Digests};

    use super::*;

    fn params(chap: bool) -> LoginParams {
        LoginParams {
            initiator: "iqn.2026-11.org.basalt:bench".into(),
            target: "iqn.2026-11.org.basalt:t".into(),
            isid: Isid([0x80, 1, 2, 3, 0, 1]),
            chap: chap.then(|| Chap {
                user: "u".into(),
                secret: "secretsecret".into(),
            }),
            cmd_sn: CmdSn(1),
        }
    }

    fn parse_req(b: &[u8]) -> (LoginRequest, Vec<(String, String)>) {
        let p = pdu::parse_pdu(b, Digests::default(), 1 << 20).expect("our PDU parses");
        let Bhs::LoginRequest(r) = p.bhs else {
            panic!("not a login request")
        };
        let kv = text::parse(p.data)
            .expect("text")
            .iter()
            .map(|k| (k.key.to_owned(), k.value.to_owned()))
            .collect();
        (r, kv)
    }

    fn resp(csg: u8, nsg: u8, transit: bool) -> LoginResponse {
        LoginResponse {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_active: 0,
            isid: Isid([0x80, 1, 2, 3, 0, 1]),
            tsih: Tsih(7),
            itt: LOGIN_ITT,
            stat_sn: StatSn(100),
            exp_cmd_sn: CmdSn(1),
            max_cmd_sn: CmdSn(64),
            status_class: 0,
            status_detail: 0,
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (k, val) in pairs {
            text::push(&mut v, k, val);
        }
        v
    }

    #[test]
    fn operational_login_applies_the_answers() {
        let (mut l, first) = Login::start(params(false));
        let (r, keys) = parse_req(&first);
        assert_eq!((r.csg, r.nsg, r.transit), (1, 3, true));
        assert!(
            keys.iter()
                .any(|(k, v)| k == "InitiatorName" && v.ends_with(":bench"))
        );
        let answer = kv(&[
            ("MaxRecvDataSegmentLength", "65536"),
            ("FirstBurstLength", "65536"),
            ("MaxBurstLength", "262144"),
            ("ImmediateData", "Yes"),
            ("InitialR2T", "Yes"),
            ("MaxOutstandingR2T", "1"),
            ("HeaderDigest", "None"),
            ("TargetPortalGroupTag", "1"),
            ("DefaultTime2Wait", "Reject"),
        ]);
        let Step::Done(n) = l.on_response(&resp(1, 3, true), &answer).expect("ok") else {
            panic!("login should be done")
        };
        assert_eq!(n.target_max_segment, 65536);
        assert_eq!((n.first_burst, n.max_burst), (65536, 262_144));
        assert!(n.immediate_data && n.initial_r2t);
        assert_eq!(n.tsih, Tsih(7));
        assert_eq!(n.exp_stat_sn, StatSn(101));
        assert_eq!((n.cmd_sn, n.max_cmd_sn), (CmdSn(1), CmdSn(64)));
    }

    #[test]
    fn table_of_refusals() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("HeaderDigest", "CRC32C")], "HeaderDigest"),
            (&[("ErrorRecoveryLevel", "1")], "ErrorRecoveryLevel"),
            (
                &[("MaxRecvDataSegmentLength", "zero")],
                "MaxRecvDataSegmentLength",
            ),
            (&[("ImmediateData", "Maybe")], "ImmediateData"),
        ];
        for (answer, key) in cases {
            let (mut l, _) = Login::start(params(false));
            let e = l
                .on_response(&resp(1, 3, true), &kv(answer))
                .expect_err("refused");
            assert!(e.to_string().contains(key), "{e}");
        }
        let (mut l, _) = Login::start(params(false));
        let mut r = resp(1, 3, false);
        r.status_class = 2;
        r.status_detail = 1;
        assert_eq!(l.on_response(&r, &[]), Err(LoginError::ChapRequired));
        r.status_detail = 3;
        let e = l.on_response(&r, &[]).expect_err("refused");
        assert!(e.to_string().contains("no such target"), "{e}");
    }

    #[test]
    fn chap_exchange() {
        let (mut l, first) = Login::start(params(true));
        let (r, keys) = parse_req(&first);
        assert_eq!((r.csg, r.transit), (0, false));
        assert!(keys.contains(&("AuthMethod".into(), "CHAP".into())));
        let Step::Send(b) = l
            .on_response(&resp(0, 0, false), &kv(&[("AuthMethod", "CHAP")]))
            .expect("ok")
        else {
            panic!("expected a request")
        };
        assert!(parse_req(&b).1.contains(&("CHAP_A".into(), "5".into())));
        let challenge = [9u8; 16];
        let Step::Send(b) = l
            .on_response(
                &resp(0, 0, false),
                &kv(&[
                    ("CHAP_A", "5"),
                    ("CHAP_I", "42"),
                    ("CHAP_C", &text::encode_hex(&challenge)),
                ]),
            )
            .expect("ok")
        else {
            panic!("expected a request")
        };
        let (r, keys) = parse_req(&b);
        assert!(r.transit && r.nsg == 1);
        let want = ChapAlgorithm::Md5.response(42, b"secretsecret", &challenge);
        let got = keys.iter().find(|(k, _)| k == "CHAP_R").expect("CHAP_R");
        assert_eq!(text::decode_binary(&got.1), Some(want));
        let Step::Send(b) = l.on_response(&resp(0, 1, true), &[]).expect("ok") else {
            panic!("expected the operational request")
        };
        let (r, keys) = parse_req(&b);
        assert_eq!((r.csg, r.nsg, r.transit), (1, 3, true));
        assert!(keys.iter().any(|(k, _)| k == "MaxBurstLength"));
        assert!(matches!(
            l.on_response(&resp(1, 3, true), &[]),
            Ok(Step::Done(_))
        ));
    }
}
