//! Login conversations, driven through a [`crate::conn::Connection`] by the test initiator.

use std::sync::Arc;
use std::time::Instant;

use crate::Access;
use crate::chap::ChapAlgorithm;
use crate::conn::testkit::*;
use crate::conn::{Event, Limits};
use crate::pdu::{Bhs, CmdSn, Tsih};
use crate::session::SessionTable;
use crate::text;

fn status(r: &crate::pdu::LoginResponse) -> (u8, u8) {
    (r.status_class, r.status_detail)
}

fn chap_access() -> Access {
    Access {
        initiators: None,
        chap: Some(creds("alice", "alice-secret-1")),
        mutual_chap: Some(creds("target-user", "target-secret-1")),
    }
}

fn with_target(access: Access) -> Initiator {
    Initiator::new(config(
        directory(vec![target(TARGET, access)]),
        Arc::new(SessionTable::new()),
        Limits::default(),
    ))
}

fn closed(i: &mut Initiator) -> bool {
    i.drain_events();
    i.conn.is_closed() && i.events.iter().any(|e| matches!(e, Event::Close))
}

#[test]
fn operational_only_login_negotiates_every_key() {
    let mut i = Initiator::new(default_config());
    let req = i.login_req(1, 3, true, false);
    let pairs = [
        ("InitiatorName", INITIATOR),
        ("InitiatorAlias", "host1"),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "CRC32C,None"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "20"),
        ("MaxOutstandingR2T", "16"),
        ("ErrorRecoveryLevel", "2"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "65536"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("X-com.example.foo", "bar"),
        ("X#Thing", "1"),
        ("Frobnicate", "Yes"),
    ];
    i.send(Bhs::LoginRequest(req), &[], &kv(&pairs));
    let rx = i.recv();
    assert_eq!(rx.len(), 1);
    let Bhs::LoginResponse(r) = rx[0].bhs else {
        panic!("login response expected");
    };
    let ans = answers(&rx[0].data);
    assert_eq!(status(&r), (0, 0));
    assert!(r.transit && !r.cont);
    assert_eq!((r.csg, r.nsg), (1, 3));
    assert_eq!((r.version_max, r.version_active), (0, 0));
    assert_eq!(r.isid, i.isid);
    assert_ne!(r.tsih, Tsih(0));
    assert_eq!(r.itt, req.itt);
    assert_eq!(r.stat_sn, req.exp_stat_sn);
    assert_eq!(r.exp_cmd_sn, req.cmd_sn);
    assert_eq!(r.max_cmd_sn, req.cmd_sn.wrapping_add(127));
    let expect = [
        ("TargetPortalGroupTag", "1"),
        ("TargetAlias", "vol-one"),
        ("HeaderDigest", "None"),
        ("DataDigest", "CRC32C"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "65536"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "8"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("X-com.example.foo", "NotUnderstood"),
        ("X#Thing", "NotUnderstood"),
        ("Frobnicate", "NotUnderstood"),
        ("MaxRecvDataSegmentLength", "262144"),
    ];
    let want: Vec<(String, String)> = expect
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(ans, want);
    i.drain_events();
    let Some(Event::SessionStarted { session }) = i.events.pop_front() else {
        panic!("session started");
    };
    assert_eq!(session.tsih(), r.tsih);
    assert_eq!(session.initiator_alias(), Some("host1"));
    assert_eq!(
        session.nexus().initiator_port,
        format!("{INITIATOR},i,0x801234560001")
    );
    assert_eq!(session.nexus().target_port, format!("{TARGET},t,0x0001"));
    let p = session.params();
    assert!(!p.initial_r2t && p.immediate_data);
    assert_eq!(
        (
            p.max_burst_length,
            p.first_burst_length,
            p.max_outstanding_r2t
        ),
        (262_144, 65_536, 8)
    );
    assert_eq!(p.error_recovery_level, 0);
    assert!(Arc::ptr_eq(i.conn.session().expect("session"), &session));
}

#[test]
fn security_then_operational_with_auth_none() {
    let mut i = Initiator::new(default_config());
    let (r, ans) = i.login_step(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("SessionType", "Normal"),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(status(&r), (0, 0));
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg), (0, 1));
    assert_eq!(r.tsih, Tsih(0), "TSIH only in the final response");
    assert_eq!(get(&ans, "AuthMethod"), Some("None"));
    assert_eq!(get(&ans, "TargetPortalGroupTag"), Some("1"));
    assert_eq!(
        get(&ans, "MaxRecvDataSegmentLength"),
        None,
        "declared in stage 1"
    );
    // libiscsi repeats InitiatorName and TargetName in every request.
    let (r2, ans2) = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("HeaderDigest", "None"),
        ],
    );
    assert_eq!(status(&r2), (0, 0));
    assert_eq!(r2.stat_sn, r.stat_sn.next());
    assert_eq!((r2.csg, r2.nsg, r2.transit), (1, 3, true));
    assert_ne!(r2.tsih, Tsih(0));
    assert_eq!(get(&ans2, "MaxRecvDataSegmentLength"), Some("262144"));
    assert_eq!(
        get(&ans2, "TargetPortalGroupTag"),
        None,
        "first response only"
    );
}

#[test]
fn security_straight_to_full_feature() {
    let mut i = Initiator::new(default_config());
    let (r, ans) = i.login_step(
        0,
        3,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("AuthMethod", "CHAP,None"),
        ],
    );
    assert_eq!(status(&r), (0, 0));
    assert_eq!((r.csg, r.nsg, r.transit), (0, 3, true));
    assert_eq!(get(&ans, "AuthMethod"), Some("None"));
    assert!(i.conn.session().is_some());
}

/// libiscsi's CHAP conversation: offer, algorithm, response (with its own challenge when
/// mutual), then operational negotiation.
fn chap_login(
    i: &mut Initiator,
    secret: &str,
    mutual: bool,
) -> Result<Vec<(String, String)>, (u8, u8)> {
    let (r, ans) = i.login_step(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("SessionType", "Normal"),
            ("AuthMethod", "CHAP,None"),
        ],
    );
    assert_eq!(status(&r), (0, 0));
    assert!(!r.transit, "authentication not done yet");
    assert_eq!(get(&ans, "AuthMethod"), Some("CHAP"));
    let (r, ans) = i.login_step(
        0,
        1,
        false,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("CHAP_A", "5"),
        ],
    );
    assert_eq!(status(&r), (0, 0));
    assert!(!r.transit);
    assert_eq!(get(&ans, "CHAP_A"), Some("5"));
    let id: u8 = get(&ans, "CHAP_I").expect("CHAP_I").parse().expect("id");
    let challenge = text::decode_binary(get(&ans, "CHAP_C").expect("CHAP_C")).expect("hex");
    assert_eq!(challenge.len(), crate::chap::CHALLENGE_LEN);
    let resp = text::encode_hex(&ChapAlgorithm::Md5.response(id, secret.as_bytes(), &challenge));
    let my_challenge = text::encode_hex(&[0x5a; 32]);
    let mut pairs = vec![
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("CHAP_N", "alice"),
        ("CHAP_R", resp.as_str()),
    ];
    if mutual {
        pairs.push(("CHAP_I", "77"));
        pairs.push(("CHAP_C", my_challenge.as_str()));
    }
    let (r, ans) = i.login_step(0, 1, true, &pairs);
    if status(&r) != (0, 0) {
        return Err(status(&r));
    }
    assert_eq!((r.csg, r.nsg, r.transit), (0, 1, true));
    if mutual {
        assert_eq!(get(&ans, "CHAP_N"), Some("target-user"));
        let want = ChapAlgorithm::Md5.response(77, b"target-secret-1", &[0x5a; 32]);
        assert_eq!(get(&ans, "CHAP_R"), Some(text::encode_hex(&want).as_str()));
    } else {
        assert_eq!(get(&ans, "CHAP_R"), None);
    }
    let (r, ans) = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (0, 0));
    assert!(r.transit);
    Ok(ans)
}

#[test]
fn one_way_chap_login() {
    let mut access = chap_access();
    access.mutual_chap = None;
    let mut i = with_target(access);
    chap_login(&mut i, "alice-secret-1", false).expect("logged in");
    assert!(i.conn.session().is_some());
}

#[test]
fn mutual_chap_login() {
    let mut i = with_target(chap_access());
    chap_login(&mut i, "alice-secret-1", true).expect("logged in");
}

#[test]
fn wrong_chap_secret_fails_with_0201() {
    let mut i = with_target(chap_access());
    assert_eq!(chap_login(&mut i, "wrong-secret", false), Err((2, 1)));
    assert!(closed(&mut i));
}

#[test]
fn reflected_challenge_fails_with_0201() {
    let mut i = with_target(chap_access());
    i.login_step(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("AuthMethod", "CHAP"),
        ],
    );
    let (_, ans) = i.login_step(0, 1, false, &[("CHAP_A", "7,5")]);
    assert_eq!(get(&ans, "CHAP_A"), Some("7"));
    let id: u8 = get(&ans, "CHAP_I").expect("id").parse().expect("id");
    let c = get(&ans, "CHAP_C").expect("challenge").to_string();
    let ch = text::decode_binary(&c).expect("hex");
    let resp = text::encode_hex(&ChapAlgorithm::Sha256.response(id, b"alice-secret-1", &ch));
    let (r, _) = i.login_step(
        0,
        1,
        true,
        &[
            ("CHAP_N", "alice"),
            ("CHAP_R", &resp),
            ("CHAP_I", "1"),
            ("CHAP_C", &c),
        ],
    );
    assert_eq!(status(&r), (2, 1));
}

#[test]
fn chap_required_but_skipped_or_refused() {
    // Straight to operational negotiation.
    let mut i = with_target(chap_access());
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (2, 1));
    assert!(closed(&mut i));
    // Only AuthMethod=None offered.
    let mut i = with_target(chap_access());
    let (r, _) = i.login_step(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(status(&r), (2, 1));
    // No AuthMethod at all, asking to move on.
    let mut i = with_target(chap_access());
    let (r, _) = i.login_step(
        0,
        1,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (2, 1));
}

#[test]
fn chap_keys_out_of_order_fail() {
    let mut i = with_target(chap_access());
    let (r, _) = i.login_step(
        0,
        1,
        false,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("CHAP_A", "5"),
        ],
    );
    assert_eq!(status(&r), (2, 0));
}

#[test]
fn status_codes() {
    type Case<'a> = (Vec<(&'a str, &'a str)>, (u8, u8));
    let cases: Vec<Case<'_>> = vec![
        (
            vec![("InitiatorName", INITIATOR), ("TargetName", "iqn.nope")],
            (2, 3),
        ),
        (vec![("TargetName", TARGET)], (2, 7)),
        (vec![("InitiatorName", INITIATOR)], (2, 7)),
        (
            vec![("InitiatorName", INITIATOR), ("SessionType", "Bogus")],
            (2, 9),
        ),
        (
            vec![
                ("InitiatorName", INITIATOR),
                ("TargetName", TARGET),
                ("A", "1"),
                ("A", "2"),
            ],
            (2, 0),
        ),
    ];
    for (pairs, want) in cases {
        let mut i = Initiator::new(default_config());
        let (r, ans) = i.login_step(1, 3, true, &pairs);
        assert_eq!(status(&r), want, "{pairs:?}");
        assert!(ans.is_empty());
        assert!(!r.transit);
        assert!(closed(&mut i));
    }
}

#[test]
fn authorization_failure_0202() {
    let access = Access {
        initiators: Some(vec!["iqn.other".into()]),
        ..Access::default()
    };
    let mut i = with_target(access);
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (2, 2));
    // The allow-list is case-insensitive.
    let access = Access {
        initiators: Some(vec![INITIATOR.to_uppercase()]),
        ..Access::default()
    };
    let mut i = with_target(access);
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (0, 0));
}

#[test]
fn unsupported_version_0205() {
    let mut i = Initiator::new(default_config());
    let mut req = i.login_req(1, 3, true, false);
    req.version_min = 1;
    req.version_max = 2;
    i.send(
        Bhs::LoginRequest(req),
        &[],
        &kv(&[("InitiatorName", INITIATOR), ("TargetName", TARGET)]),
    );
    let rx = i.recv();
    let Bhs::LoginResponse(r) = rx[0].bhs else {
        panic!("login response");
    };
    assert_eq!(status(&r), (2, 5));
}

#[test]
fn unknown_tsih_0x020a() {
    let mut i = Initiator::new(default_config());
    i.tsih = Tsih(999);
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (2, 0x0a));
}

#[test]
fn out_of_resources_0302() {
    let cfg = config(
        directory(vec![target(TARGET, Access::default())]),
        Arc::new(SessionTable::with_limit(0)),
        Limits::default(),
    );
    let mut i = Initiator::new(cfg);
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (3, 2));
}

#[test]
fn invalid_request_during_login_0x020b() {
    let mut i = Initiator::new(default_config());
    i.scsi_cmd(&[0], false, false, 0, true, &[]);
    let rx = i.recv();
    let Bhs::LoginResponse(r) = rx[0].bhs else {
        panic!("login response");
    };
    assert_eq!(status(&r), (2, 0x0b));
    assert!(closed(&mut i));
}

#[test]
fn bad_stage_transitions_0200() {
    // (csg, nsg, transit, cont) of the first request.
    for (csg, nsg, t, c) in [
        (1, 0, true, false),
        (1, 1, true, false),
        (2, 3, true, false),
        (3, 3, false, false),
        (0, 2, true, false),
        (1, 3, true, true),
    ] {
        let mut i = Initiator::new(default_config());
        let req = i.login_req(csg, nsg, t, c);
        i.send(
            Bhs::LoginRequest(req),
            &[],
            &kv(&[("InitiatorName", INITIATOR), ("TargetName", TARGET)]),
        );
        let rx = i.recv();
        let Bhs::LoginResponse(r) = rx[0].bhs else {
            panic!("login response");
        };
        assert_eq!(status(&r), (2, 0), "{csg} {nsg} {t} {c}");
    }
    // A later request in another stage than the current one.
    let mut i = Initiator::new(default_config());
    let (r, _) = i.login_step(
        0,
        1,
        false,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(status(&r), (0, 0));
    let (r, _) = i.login_step(1, 3, true, &[]);
    assert_eq!(status(&r), (2, 0));
    // A different ISID mid-login.
    let mut i = Initiator::new(default_config());
    i.login_step(
        0,
        1,
        false,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    i.isid.0[5] = 9;
    let (r, _) = i.login_step(0, 1, true, &[]);
    assert_eq!(status(&r), (2, 0));
    // A different InitiatorName mid-login.
    let mut i = Initiator::new(default_config());
    i.login_step(
        0,
        1,
        false,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    let (r, _) = i.login_step(0, 1, true, &[("InitiatorName", "iqn.someone.else")]);
    assert_eq!(status(&r), (2, 0));
}

#[test]
fn security_keys_in_operational_stage_fail() {
    let mut i = Initiator::new(default_config());
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(status(&r), (2, 0));
}

#[test]
fn key_negotiated_twice_fails() {
    let mut i = Initiator::new(default_config());
    i.login_step(
        1,
        3,
        false,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("MaxBurstLength", "8192"),
        ],
    );
    let (r, _) = i.login_step(1, 3, true, &[("MaxBurstLength", "8192")]);
    assert_eq!(status(&r), (2, 0));
}

#[test]
fn values_out_of_range_are_rejected_and_burst_lengths_ordered() {
    let mut i = Initiator::new(default_config());
    let ans = i.login_normal(&[
        ("MaxBurstLength", "4096"),
        ("FirstBurstLength", "65536"),
        ("MaxOutstandingR2T", "0"),
        ("DefaultTime2Wait", "3601"),
        ("InitialR2T", "Maybe"),
        ("HeaderDigest", "MD5"),
    ]);
    assert_eq!(get(&ans, "MaxBurstLength"), Some("4096"));
    assert_eq!(get(&ans, "FirstBurstLength"), Some("4096"));
    assert_eq!(get(&ans, "MaxOutstandingR2T"), Some("Reject"));
    assert_eq!(get(&ans, "DefaultTime2Wait"), Some("Reject"));
    assert_eq!(get(&ans, "InitialR2T"), Some("Reject"));
    assert_eq!(get(&ans, "HeaderDigest"), Some("Reject"));
    let p = *i.conn.session().expect("session").params();
    assert_eq!((p.max_burst_length, p.first_burst_length), (4096, 4096));
    assert_eq!(p.max_outstanding_r2t, 1, "RFC default kept");
    assert!(p.initial_r2t, "RFC default kept");
}

#[test]
fn bad_max_recv_data_segment_length_fails() {
    let mut i = Initiator::new(default_config());
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("MaxRecvDataSegmentLength", "100"),
        ],
    );
    assert_eq!(status(&r), (2, 0));
}

#[test]
fn request_text_split_with_c_bit() {
    let mut i = Initiator::new(default_config());
    let all = kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("HeaderDigest", "CRC32C"),
    ]);
    // Split in the middle of a key.
    let (a, b) = all.split_at(20);
    let req = i.login_req(1, 3, false, true);
    i.send(Bhs::LoginRequest(req), &[], a);
    let rx = i.recv();
    let Bhs::LoginResponse(r) = rx[0].bhs else {
        panic!("login response");
    };
    assert_eq!(status(&r), (0, 0));
    assert!(!r.transit && !r.cont);
    assert!(rx[0].data.is_empty());
    i.want_digests.header = true;
    let req = i.login_req(1, 3, true, false);
    i.send(Bhs::LoginRequest(req), &[], b);
    let rx = i.recv();
    let Bhs::LoginResponse(r) = rx[0].bhs else {
        panic!("login response");
    };
    assert_eq!(status(&r), (0, 0));
    assert!(r.transit);
    let ans = answers(&rx[0].data);
    assert_eq!(get(&ans, "HeaderDigest"), Some("CRC32C"));
}

#[test]
fn long_response_split_with_c_bit() {
    let mut i = Initiator::new(default_config());
    let keys: Vec<String> = (0..300)
        .map(|n| format!("X-com.example.key-number-{n:04}"))
        .collect();
    let mut pairs: Vec<(&str, &str)> = vec![("InitiatorName", INITIATOR), ("TargetName", TARGET)];
    for k in &keys {
        pairs.push((k, "1"));
    }
    let req = i.login_req(1, 3, true, false);
    i.send(Bhs::LoginRequest(req), &[], &kv(&pairs));
    let mut text = Vec::new();
    let mut parts = 0;
    loop {
        let rx = i.recv();
        assert_eq!(rx.len(), 1);
        let Bhs::LoginResponse(r) = rx[0].bhs else {
            panic!("login response");
        };
        assert_eq!(status(&r), (0, 0));
        assert!(rx[0].data.len() <= crate::login::LOGIN_SEGMENT);
        text.extend_from_slice(&rx[0].data);
        parts += 1;
        if !r.cont {
            assert!(r.transit, "the last part carries the transition");
            break;
        }
        assert!(!r.transit);
        let req = i.login_req(1, 3, true, false);
        i.send(Bhs::LoginRequest(req), &[], &[]);
    }
    assert!(parts >= 2);
    let ans = answers(&text);
    assert_eq!(
        get(&ans, "X-com.example.key-number-0299"),
        Some("NotUnderstood")
    );
    assert!(i.conn.session().is_some());
}

#[test]
fn discovery_session() {
    let dir = directory(vec![target(TARGET, Access::default())]);
    let mut i = Initiator::new(config(
        dir,
        Arc::new(SessionTable::new()),
        Limits::default(),
    ));
    let (r, ans) = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("SessionType", "Discovery"),
            ("HeaderDigest", "None"),
            ("MaxBurstLength", "262144"),
            ("InitialR2T", "Yes"),
            ("MaxConnections", "1"),
            ("ErrorRecoveryLevel", "0"),
        ],
    );
    assert_eq!(status(&r), (0, 0));
    assert_ne!(r.tsih, Tsih(0));
    assert_eq!(get(&ans, "TargetPortalGroupTag"), None);
    assert_eq!(get(&ans, "MaxBurstLength"), Some("Irrelevant"));
    assert_eq!(get(&ans, "InitialR2T"), Some("Irrelevant"));
    assert_eq!(get(&ans, "MaxConnections"), Some("Irrelevant"));
    assert_eq!(get(&ans, "ErrorRecoveryLevel"), Some("0"));
    assert_eq!(get(&ans, "HeaderDigest"), Some("None"));
    assert!(
        i.conn.session().is_none(),
        "discovery sessions are not normal sessions"
    );
    i.drain_events();
    assert!(i.events.is_empty(), "no SessionStarted for discovery");
}

#[test]
fn discovery_access_is_enforced() {
    let dir = directory(vec![target(TARGET, Access::default())]);
    *dir.discovery.lock().expect("lock") = Access {
        initiators: Some(vec![]),
        ..Access::default()
    };
    let mut i = Initiator::new(config(
        dir,
        Arc::new(SessionTable::new()),
        Limits::default(),
    ));
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("SessionType", "Discovery")],
    );
    assert_eq!(status(&r), (2, 2));
}

#[test]
fn session_reinstatement_closes_the_old_session() {
    let cfg = default_config();
    let mut a = Initiator::new(cfg.clone());
    a.login_normal(&[]);
    let old = Arc::clone(a.conn.session().expect("session"));
    let mut b = Initiator::new(cfg.clone());
    b.login_normal(&[]);
    let new = Arc::clone(b.conn.session().expect("session"));
    assert!(!Arc::ptr_eq(&old, &new));
    assert!(old.close_requested());
    assert_ne!(old.nexus().id, new.nexus().id);
    assert_eq!(old.nexus().initiator_port, new.nexus().initiator_port);
    // The old connection notices on its next tick and reports the session ended.
    a.conn.tick(a.now);
    a.drain_events();
    let ended = a
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionEnded { session } if Arc::ptr_eq(session, &old)));
    assert!(ended, "{:?}", a.events);
    assert!(matches!(a.events.back(), Some(Event::Close)));
    assert_eq!(cfg.sessions.len(), 1);
    assert!(Arc::ptr_eq(
        &cfg.sessions.lookup(new.tsih()).expect("new"),
        &new
    ));
    // Another ISID is another session, not a reinstatement.
    let mut c = Initiator::new(cfg.clone());
    c.isid.0[5] = 2;
    c.login_normal(&[]);
    assert!(!new.close_requested());
    assert_eq!(cfg.sessions.len(), 2);
}

#[test]
fn mcs_join_and_connection_limits() {
    let cfg = default_config();
    let mut a = Initiator::new(cfg.clone());
    let ans = a.login_normal(&[("MaxConnections", "2")]);
    assert_eq!(get(&ans, "MaxConnections"), Some("2"));
    let session = Arc::clone(a.conn.session().expect("session"));

    let mut b = Initiator::new(cfg.clone());
    b.tsih = session.tsih();
    b.cid = crate::pdu::Cid(1);
    b.cmd_sn = CmdSn(1000);
    let (r, ans) = b.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", TARGET),
            ("MaxBurstLength", "4096"),
            ("HeaderDigest", "None"),
        ],
    );
    assert_eq!(status(&r), (0, 0));
    assert_eq!(r.tsih, session.tsih());
    assert_eq!(
        get(&ans, "MaxBurstLength"),
        Some("Irrelevant"),
        "leading-only key"
    );
    assert_eq!(get(&ans, "HeaderDigest"), Some("None"));
    b.drain_events();
    assert!(
        matches!(b.events.pop_front(), Some(Event::ConnectionJoined { session: s }) if Arc::ptr_eq(&s, &session))
    );
    assert_eq!(session.connection_count(), 2);

    // A third connection exceeds MaxConnections=2.
    let mut c = Initiator::new(cfg.clone());
    c.tsih = session.tsih();
    c.cid = crate::pdu::Cid(2);
    let (r, _) = c.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (2, 6));

    // Connection reinstatement: CID 1 again replaces b.
    let mut d = Initiator::new(cfg.clone());
    d.tsih = session.tsih();
    d.cid = crate::pdu::Cid(1);
    let (r, _) = d.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (0, 0));
    b.conn.tick(b.now);
    b.drain_events();
    assert!(b.conn.is_closed());
    assert!(
        !b.events
            .iter()
            .any(|e| matches!(e, Event::SessionEnded { .. }))
    );

    // Joining with the wrong ISID: the session does not exist for it.
    let mut e = Initiator::new(cfg.clone());
    e.tsih = session.tsih();
    e.isid.0[0] = 0x40;
    let (r, _) = e.login_step(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", TARGET)],
    );
    assert_eq!(status(&r), (2, 0x0a));

    // The session ends when its last connection goes.
    a.conn.connection_lost(Instant::now());
    a.drain_events();
    assert!(
        !a.events
            .iter()
            .any(|e| matches!(e, Event::SessionEnded { .. }))
    );
    d.conn.connection_lost(Instant::now());
    d.drain_events();
    assert!(
        d.events
            .iter()
            .any(|e| matches!(e, Event::SessionEnded { .. }))
    );
    assert!(cfg.sessions.is_empty());
}

#[test]
fn login_timeout_closes() {
    let mut i = Initiator::new(default_config());
    let start = i.now;
    assert_eq!(
        i.conn.tick(start),
        Some(start + Limits::default().login_timeout)
    );
    assert!(!i.conn.is_closed());
    assert_eq!(i.conn.tick(start + Limits::default().login_timeout), None);
    assert!(closed(&mut i));
}
