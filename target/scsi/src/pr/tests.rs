use std::collections::HashMap;

use super::*;

fn nexus(id: u64, name: &str, isid: u64, tpgt: u16) -> Nexus {
    Nexus {
        id,
        initiator_name: name.into(),
        initiator_port: format!("{name},i,0x{isid:012x}"),
        target_port: format!("iqn.t,t,0x{tpgt:04x}"),
        relative_port: tpgt,
    }
}

fn a() -> Nexus {
    nexus(1, "iqn.a", 1, 1)
}
fn b() -> Nexus {
    nexus(2, "iqn.b", 2, 1)
}
fn c() -> Nexus {
    nexus(3, "iqn.c", 3, 1)
}

fn ports() -> HashMap<u16, String> {
    let mut m = HashMap::new();
    m.insert(1, "iqn.t,t,0x0001".to_owned());
    m.insert(2, "iqn.t,t,0x0002".to_owned());
    m
}

fn cdb(action: PrOut, scope: u8, pr_type: u8, param_len: u32) -> OutCdb {
    OutCdb {
        action,
        scope,
        pr_type,
        param_len,
    }
}

fn basic(key: u64, sa_key: u64, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    p
}

fn out(
    st: &mut PrState,
    n: &Nexus,
    action: PrOut,
    pr_type: u8,
    params: &[u8],
) -> Result<PrEffects, PrError> {
    st.out(
        n,
        cdb(action, 0, pr_type, params.len() as u32),
        params,
        &ports(),
    )
}

fn register(st: &mut PrState, n: &Nexus, key: u64) {
    out(
        st,
        n,
        PrOut::RegisterAndIgnoreExistingKey,
        0,
        &basic(0, key, 0),
    )
    .expect("register");
}

fn reserve(st: &mut PrState, n: &Nexus, key: u64, t: PrType) {
    out(st, n, PrOut::Reserve, t.code(), &basic(key, 0, 0)).expect("reserve");
}

const ALL_TYPES: [PrType; 6] = [
    PrType::WriteExclusive,
    PrType::ExclusiveAccess,
    PrType::WriteExclusiveRegistrantsOnly,
    PrType::ExclusiveAccessRegistrantsOnly,
    PrType::WriteExclusiveAllRegistrants,
    PrType::ExclusiveAccessAllRegistrants,
];

#[test]
fn register_reregister_unregister() {
    let mut st = PrState::default();
    out(&mut st, &a(), PrOut::Register, 0, &basic(0, 0x11, 0)).expect("register");
    assert_eq!(st.generation, 1);
    assert!(st.registered(&a()));
    assert!(!st.registered(&b()));
    // Registering again with a zero key is a conflict (libiscsi reregister test).
    assert_eq!(
        out(&mut st, &a(), PrOut::Register, 0, &basic(0, 0x12, 0)),
        Err(PrError::Conflict)
    );
    // Wrong key.
    assert_eq!(
        out(&mut st, &a(), PrOut::Register, 0, &basic(0x99, 0x12, 0)),
        Err(PrError::Conflict)
    );
    out(&mut st, &a(), PrOut::Register, 0, &basic(0x11, 0x12, 0)).expect("change key");
    assert_eq!(st.registrations[0].key, 0x12);
    out(&mut st, &a(), PrOut::Register, 0, &basic(0x12, 0, 0)).expect("unregister");
    assert!(st.registrations.is_empty());
    assert_eq!(st.generation, 3);
    // Unregistered with zero keys: nothing happens.
    out(&mut st, &a(), PrOut::Register, 0, &basic(0, 0, 0)).expect("no-op");
    assert_eq!(st.generation, 3);
    // Unregistered with a non-zero reservation key: conflict.
    assert_eq!(
        out(&mut st, &a(), PrOut::Register, 0, &basic(5, 6, 0)),
        Err(PrError::Conflict)
    );
}

#[test]
fn register_and_ignore_replaces_any_key() {
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    out(
        &mut st,
        &a(),
        PrOut::RegisterAndIgnoreExistingKey,
        0,
        &basic(77, 2, 0),
    )
    .expect("ok");
    assert_eq!(st.registrations.len(), 1);
    assert_eq!(st.registrations[0].key, 2);
    assert_eq!(st.generation, 2);
}

#[test]
fn read_keys_and_truncation_friendly_length() {
    let mut st = PrState::default();
    register(&mut st, &a(), 0xAAAA);
    register(&mut st, &b(), 0xBBBB);
    let d = st.read_keys();
    assert_eq!(&d[..4], &2u32.to_be_bytes());
    assert_eq!(&d[4..8], &16u32.to_be_bytes());
    assert_eq!(&d[8..16], &0xAAAAu64.to_be_bytes());
    assert_eq!(&d[16..24], &0xBBBBu64.to_be_bytes());
}

#[test]
fn reserve_every_type_and_read_it_back() {
    for t in ALL_TYPES {
        let mut st = PrState::default();
        register(&mut st, &a(), 0x1234);
        reserve(&mut st, &a(), 0x1234, t);
        let d = st.read_reservation();
        assert_eq!(&d[4..8], &16u32.to_be_bytes());
        let key = if t.all_registrants() { 0 } else { 0x1234u64 };
        assert_eq!(&d[8..16], &key.to_be_bytes(), "{t:?}");
        assert_eq!(d[21], t.code());
        // Reserving again with the same type is fine, another type conflicts.
        reserve(&mut st, &a(), 0x1234, t);
        let other = if t == PrType::WriteExclusive {
            PrType::ExclusiveAccess
        } else {
            PrType::WriteExclusive
        };
        assert_eq!(
            out(
                &mut st,
                &a(),
                PrOut::Reserve,
                other.code(),
                &basic(0x1234, 0, 0)
            ),
            Err(PrError::Conflict)
        );
        out(
            &mut st,
            &a(),
            PrOut::Release,
            t.code(),
            &basic(0x1234, 0, 0),
        )
        .expect("release");
        assert!(!st.reserved());
        assert_eq!(st.read_reservation(), vec![0, 0, 0, 1, 0, 0, 0, 0]);
    }
}

#[test]
fn reserve_needs_a_registration_with_the_right_key() {
    let mut st = PrState::default();
    assert_eq!(
        out(&mut st, &a(), PrOut::Reserve, 1, &basic(0, 0, 0)),
        Err(PrError::Conflict)
    );
    register(&mut st, &a(), 5);
    assert_eq!(
        out(&mut st, &a(), PrOut::Reserve, 1, &basic(6, 0, 0)),
        Err(PrError::Conflict)
    );
    register(&mut st, &b(), 6);
    reserve(&mut st, &a(), 5, PrType::WriteExclusive);
    assert_eq!(
        out(&mut st, &b(), PrOut::Reserve, 1, &basic(6, 0, 0)),
        Err(PrError::Conflict)
    );
}

#[test]
fn invalid_scope_and_type() {
    let mut st = PrState::default();
    register(&mut st, &a(), 5);
    for t in [0u8, 2, 4, 9, 15] {
        assert_eq!(
            out(&mut st, &a(), PrOut::Reserve, t, &basic(5, 0, 0)),
            Err(PrError::Check(Sense::invalid_field_in_cdb(2, Some(3))))
        );
    }
    let p = basic(5, 0, 0);
    assert_eq!(
        st.out(&a(), cdb(PrOut::Reserve, 1, 1, 24), &p, &ports()),
        Err(PrError::Check(Sense::invalid_field_in_cdb(2, Some(7))))
    );
}

#[test]
fn parameter_list_length_and_flag_checks() {
    let mut st = PrState::default();
    let p = basic(0, 5, 0);
    assert_eq!(
        st.out(&a(), cdb(PrOut::Register, 0, 0, 20), &p[..20], &ports()),
        Err(PrError::Check(Sense::parameter_list_length()))
    );
    assert_eq!(
        st.out(&a(), cdb(PrOut::Register, 0, 0, 24), &p[..20], &ports()),
        Err(PrError::Check(Sense::parameter_list_length()))
    );
    let mut long = p.clone();
    long.extend([0; 4]);
    assert_eq!(
        st.out(&a(), cdb(PrOut::Register, 0, 0, 28), &long, &ports()),
        Err(PrError::Check(Sense::parameter_list_length()))
    );
    assert_eq!(
        out(&mut st, &a(), PrOut::Register, 0, &basic(0, 5, 0x01)),
        Err(PrError::Check(Sense::invalid_field_in_param(20, Some(0))))
    );
    register(&mut st, &a(), 5);
    assert_eq!(
        out(&mut st, &a(), PrOut::Reserve, 1, &basic(5, 0, 0x08)),
        Err(PrError::Check(Sense::invalid_field_in_param(20, Some(3))))
    );
}

/// The SPC-4 access table for a second nexus, as libiscsi's PROUT access tests check it:
/// (type, registered can read, registered can write, unregistered can read, unregistered
/// can write).
#[test]
fn access_table() {
    let table = [
        (PrType::ExclusiveAccess, false, false, false, false),
        (PrType::WriteExclusive, true, false, true, false),
        (
            PrType::ExclusiveAccessRegistrantsOnly,
            true,
            true,
            false,
            false,
        ),
        (
            PrType::WriteExclusiveRegistrantsOnly,
            true,
            true,
            true,
            false,
        ),
        (
            PrType::ExclusiveAccessAllRegistrants,
            true,
            true,
            false,
            false,
        ),
        (
            PrType::WriteExclusiveAllRegistrants,
            true,
            true,
            true,
            false,
        ),
    ];
    for (t, reg_r, reg_w, unreg_r, unreg_w) in table {
        let mut st = PrState::default();
        register(&mut st, &a(), 1);
        register(&mut st, &b(), 2);
        reserve(&mut st, &a(), 1, t);
        for access in [Access::Read, Access::Write, Access::Any] {
            assert!(!st.conflicts(&a(), access), "holder {t:?} {access:?}");
        }
        assert_eq!(!st.conflicts(&b(), Access::Read), reg_r, "{t:?}");
        assert_eq!(!st.conflicts(&b(), Access::Write), reg_w, "{t:?}");
        assert!(!st.conflicts(&b(), Access::Any));
        out(&mut st, &b(), PrOut::Register, 0, &basic(2, 0, 0)).expect("unregister");
        assert_eq!(!st.conflicts(&b(), Access::Read), unreg_r, "{t:?}");
        assert_eq!(!st.conflicts(&b(), Access::Write), unreg_w, "{t:?}");
        assert!(!st.conflicts(&c(), Access::Any));
    }
}

#[test]
fn release_rules_and_unit_attentions() {
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    reserve(&mut st, &a(), 1, PrType::WriteExclusiveRegistrantsOnly);
    // Not the holder: no effect.
    out(&mut st, &b(), PrOut::Release, 5, &basic(2, 0, 0)).expect("no-op");
    assert!(st.reserved());
    // Wrong type.
    assert_eq!(
        out(&mut st, &a(), PrOut::Release, 1, &basic(1, 0, 0)),
        Err(PrError::Check(Sense::new(
            SenseKey::IllegalRequest,
            Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION
        )))
    );
    // Unregistered nexus: conflict.
    assert_eq!(
        out(&mut st, &c(), PrOut::Release, 5, &basic(0, 0, 0)),
        Err(PrError::Conflict)
    );
    let before = st.generation;
    let fx = out(&mut st, &a(), PrOut::Release, 5, &basic(1, 0, 0)).expect("release");
    assert_eq!(st.generation, before, "RELEASE does not bump PRGENERATION");
    assert_eq!(
        fx.ua,
        vec![UaFor {
            who: Identity::of(&b()),
            asc: Asc::RESERVATIONS_RELEASED
        }]
    );
    // No reservation: GOOD.
    out(&mut st, &a(), PrOut::Release, 5, &basic(1, 0, 0)).expect("nothing to release");
    // Write Exclusive release: no unit attention.
    reserve(&mut st, &a(), 1, PrType::WriteExclusive);
    let fx = out(&mut st, &a(), PrOut::Release, 1, &basic(1, 0, 0)).expect("release");
    assert!(fx.ua.is_empty());
}

#[test]
fn unregistering_the_holder_releases_unless_all_registrants() {
    // Registrants only: released, the others are told.
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    reserve(&mut st, &a(), 1, PrType::ExclusiveAccessRegistrantsOnly);
    let fx = out(&mut st, &a(), PrOut::Register, 0, &basic(1, 0, 0)).expect("unregister");
    assert!(!st.reserved());
    assert_eq!(fx.ua.len(), 1);
    assert_eq!(fx.ua[0].asc, Asc::RESERVATIONS_RELEASED);
    // Exclusive access: released silently.
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    reserve(&mut st, &a(), 1, PrType::ExclusiveAccess);
    let fx = out(&mut st, &a(), PrOut::Register, 0, &basic(1, 0, 0)).expect("unregister");
    assert!(!st.reserved());
    assert!(fx.ua.is_empty());
    // All registrants: stays while anyone is registered, and anyone may release it.
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    reserve(&mut st, &a(), 1, PrType::WriteExclusiveAllRegistrants);
    out(&mut st, &a(), PrOut::Register, 0, &basic(1, 0, 0)).expect("unregister");
    assert!(st.reserved());
    assert!(st.is_holder(&b()));
    out(&mut st, &b(), PrOut::Release, 7, &basic(2, 0, 0)).expect("release");
    assert!(!st.reserved());
    reserve(&mut st, &b(), 2, PrType::WriteExclusiveAllRegistrants);
    out(&mut st, &b(), PrOut::Register, 0, &basic(2, 0, 0)).expect("last one leaves");
    assert!(!st.reserved());
}

#[test]
fn clear_removes_everything_and_bumps_the_generation_once() {
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    reserve(&mut st, &a(), 1, PrType::ExclusiveAccess);
    let before = st.generation;
    assert_eq!(
        out(&mut st, &c(), PrOut::Clear, 0, &basic(0, 0, 0)),
        Err(PrError::Conflict)
    );
    let fx = out(&mut st, &a(), PrOut::Clear, 0, &basic(1, 0, 0)).expect("clear");
    assert_eq!(st.generation, before + 1);
    assert!(st.registrations.is_empty());
    assert!(!st.reserved());
    assert_eq!(
        fx.ua,
        vec![UaFor {
            who: Identity::of(&b()),
            asc: Asc::RESERVATIONS_PREEMPTED
        }]
    );
}

#[test]
fn preempt_a_registration_without_reservation() {
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    let before = st.generation;
    let fx = out(&mut st, &b(), PrOut::Preempt, 3, &basic(2, 1, 0)).expect("preempt");
    assert_eq!(st.generation, before + 1);
    assert_eq!(st.registrations.len(), 1);
    assert_eq!(st.registrations[0].key, 2);
    assert_eq!(
        fx.ua,
        vec![UaFor {
            who: Identity::of(&a()),
            asc: Asc::REGISTRATIONS_PREEMPTED
        }]
    );
    assert!(!st.reserved());
    // A key nobody has: conflict; a zero key without reservation: invalid.
    assert_eq!(
        out(&mut st, &b(), PrOut::Preempt, 3, &basic(2, 9, 0)),
        Err(PrError::Conflict)
    );
    assert_eq!(
        out(&mut st, &b(), PrOut::Preempt, 3, &basic(2, 0, 0)),
        Err(PrError::Check(Sense::invalid_field_in_param(8, None)))
    );
}

#[test]
fn preempt_the_reservation_holder() {
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    register(&mut st, &c(), 3);
    reserve(&mut st, &a(), 1, PrType::WriteExclusive);
    let fx = out(&mut st, &b(), PrOut::PreemptAndAbort, 3, &basic(2, 1, 0)).expect("preempt");
    assert!(st.is_holder(&b()));
    assert_eq!(
        st.reservation.as_ref().map(|r| r.pr_type),
        Some(PrType::ExclusiveAccess)
    );
    assert!(!st.registered(&a()));
    assert!(fx.ua.contains(&UaFor {
        who: Identity::of(&a()),
        asc: Asc::REGISTRATIONS_PREEMPTED
    }));
    assert!(fx.ua.contains(&UaFor {
        who: Identity::of(&c()),
        asc: Asc::RESERVATIONS_RELEASED
    }));
    assert_eq!(fx.abort, vec![Identity::of(&a())]);
}

#[test]
fn preempt_an_all_registrants_reservation_with_a_zero_key() {
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    register(&mut st, &c(), 3);
    reserve(&mut st, &a(), 1, PrType::ExclusiveAccessAllRegistrants);
    out(&mut st, &b(), PrOut::Preempt, 1, &basic(2, 0, 0)).expect("preempt");
    assert_eq!(st.registrations.len(), 1);
    assert!(st.is_holder(&b()));
    assert_eq!(
        st.reservation.as_ref().map(|r| r.pr_type),
        Some(PrType::WriteExclusive)
    );
    // With a non-zero key only the matching registrations go; the reservation stays.
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    register(&mut st, &b(), 2);
    register(&mut st, &c(), 3);
    reserve(&mut st, &a(), 1, PrType::ExclusiveAccessAllRegistrants);
    out(&mut st, &b(), PrOut::Preempt, 8, &basic(2, 3, 0)).expect("preempt");
    assert_eq!(st.registrations.len(), 2);
    assert!(st.is_holder(&a()) && st.is_holder(&b()));
}

fn transport_id(format: u8, text: &str) -> Vec<u8> {
    let mut v = Vec::new();
    encode_transport_id(
        &if format == 0 {
            InitiatorSpec::Name(text.into())
        } else {
            InitiatorSpec::Port(text.into())
        },
        &mut v,
    );
    v
}

#[test]
fn transport_ids_are_parsed_strictly() {
    let t = transport_id(1, "iqn.x,i,0x0123456789ab");
    assert_eq!(t[0], 0x45);
    assert_eq!(t.len() % 4, 0);
    assert_eq!(
        parse_transport_id(&t, 0),
        Ok((
            InitiatorSpec::Port("iqn.x,i,0x0123456789ab".into()),
            t.len()
        ))
    );
    let t = transport_id(0, "iqn.y");
    assert_eq!(t.len(), 24);
    assert_eq!(
        parse_transport_id(&t, 0),
        Ok((InitiatorSpec::Name("iqn.y".into()), 24))
    );
    let bad = |mut t: Vec<u8>, f: fn(&mut Vec<u8>)| {
        f(&mut t);
        parse_transport_id(&t, 24).expect_err("invalid")
    };
    let good = transport_id(0, "iqn.y");
    assert_eq!(
        bad(good.clone(), |t| t[0] = 0x04),
        Sense::invalid_field_in_param(24, Some(3))
    );
    assert_eq!(
        bad(good.clone(), |t| t[0] = 0x85),
        Sense::invalid_field_in_param(24, Some(7))
    );
    assert_eq!(
        bad(good.clone(), |t| t[0] |= 0x10),
        Sense::invalid_field_in_param(24, Some(5))
    );
    assert_eq!(
        bad(good.clone(), |t| t[3] = 18),
        Sense::invalid_field_in_param(26, None)
    );
    assert_eq!(
        bad(good.clone(), |t| t[3] = 16),
        Sense::invalid_field_in_param(26, None)
    );
    assert_eq!(
        bad(good.clone(), |t| t.truncate(10)),
        Sense::invalid_field_in_param(26, None)
    );
    assert_eq!(
        bad(good.clone(), |t| t[4..24].fill(b'a')),
        Sense::invalid_field_in_param(28, None)
    );
    assert_eq!(
        bad(good.clone(), |t| t[20] = b'z'),
        Sense::invalid_field_in_param(33, None)
    );
    assert_eq!(
        bad(good.clone(), |t| t[4] = 0),
        Sense::invalid_field_in_param(28, None)
    );
    assert!(parse_transport_id(&transport_id(1, "iqn.x,i,0x12"), 0).is_err());
    assert!(parse_transport_id(&transport_id(1, "iqn.x"), 0).is_err());
    assert!(parse_transport_id(&transport_id(0, "iqn.x,i,0x0123456789ab"), 0).is_err());
}

#[test]
fn spec_i_pt_registers_the_named_initiators() {
    let mut st = PrState::default();
    let mut p = basic(0, 0x77, 0x08);
    let t1 = transport_id(1, &b().initiator_port);
    let t2 = transport_id(0, "iqn.c");
    p.extend_from_slice(&((t1.len() + t2.len()) as u32).to_be_bytes());
    p.extend_from_slice(&t1);
    p.extend_from_slice(&t2);
    out(&mut st, &a(), PrOut::Register, 0, &p).expect("register");
    assert_eq!(st.registrations.len(), 3);
    assert!(st.registered(&a()) && st.registered(&b()) && st.registered(&c()));
    // Every ISID of iqn.c.
    assert!(st.registered(&nexus(9, "iqn.c", 0x42, 1)));
    // Not through another target port (no ALL_TG_PT).
    assert!(!st.registered(&nexus(9, "iqn.c", 0x42, 2)));
    assert_eq!(st.generation, 1);
    // Naming an already registered initiator fails and changes nothing.
    let mut st2 = st.clone();
    let mut p = basic(0, 0x78, 0x08);
    let t = transport_id(1, &b().initiator_port);
    p.extend_from_slice(&(t.len() as u32).to_be_bytes());
    p.extend_from_slice(&t);
    let d = nexus(10, "iqn.d", 1, 1);
    assert!(matches!(
        out(&mut st2, &d, PrOut::Register, 0, &p),
        Err(PrError::Check(_))
    ));
    assert_eq!(st2, st);
    // A wrong TransportID length.
    let mut p = basic(0, 0x78, 0x08);
    p.extend_from_slice(&100u32.to_be_bytes());
    p.extend_from_slice(&t);
    assert_eq!(
        out(&mut st2, &d, PrOut::Register, 0, &p),
        Err(PrError::Check(Sense::parameter_list_length()))
    );
}

#[test]
fn all_target_ports() {
    let mut st = PrState::default();
    out(&mut st, &a(), PrOut::Register, 0, &basic(0, 5, 0x04)).expect("register");
    let other_port = nexus(7, "iqn.a", 1, 2);
    assert!(st.registered(&other_port));
    let d = st.read_full_status();
    assert_eq!(d[8 + 12], 0x02, "ALL_TG_PT reported");
}

#[test]
fn read_full_status_layout() {
    let mut st = PrState::default();
    register(&mut st, &a(), 0xA);
    register(&mut st, &b(), 0xB);
    reserve(&mut st, &b(), 0xB, PrType::ExclusiveAccess);
    let d = st.read_full_status();
    let add = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) as usize;
    assert_eq!(add, d.len() - 8);
    let mut at = 8;
    let mut seen = Vec::new();
    while at < d.len() {
        let key = u64::from_be_bytes(d[at..at + 8].try_into().expect("8 bytes"));
        let holder = d[at + 12] & 0x01 != 0;
        let scope_type = d[at + 13];
        let rel = u16::from_be_bytes([d[at + 18], d[at + 19]]);
        let len = u32::from_be_bytes(d[at + 20..at + 24].try_into().expect("4 bytes")) as usize;
        let (spec, used) = parse_transport_id(&d[at + 24..at + 24 + len], 0).expect("valid");
        assert_eq!(used, len);
        seen.push((key, holder, scope_type, rel, spec));
        at += 24 + len;
    }
    assert_eq!(at, d.len());
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, 0xA);
    assert!(!seen[0].1);
    assert_eq!(
        seen[1],
        (0xB, true, 3, 1, InitiatorSpec::Port(b().initiator_port))
    );
}

fn move_params(key: u64, sa_key: u64, unreg: bool, rel: u16, tid: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[17] = if unreg { 0x02 } else { 0 };
    p[18..20].copy_from_slice(&rel.to_be_bytes());
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(tid);
    p
}

#[test]
fn register_and_move() {
    let mut st = PrState::default();
    register(&mut st, &a(), 1);
    let tid = transport_id(1, &b().initiator_port);
    // Not reserved: conflict.
    assert_eq!(
        out(
            &mut st,
            &a(),
            PrOut::RegisterAndMove,
            0,
            &move_params(1, 9, false, 1, &tid)
        ),
        Err(PrError::Conflict)
    );
    reserve(&mut st, &a(), 1, PrType::WriteExclusive);
    // Zero key, unknown port, moving to itself.
    assert_eq!(
        out(
            &mut st,
            &a(),
            PrOut::RegisterAndMove,
            0,
            &move_params(1, 0, false, 1, &tid)
        ),
        Err(PrError::Check(Sense::invalid_field_in_param(8, None)))
    );
    assert_eq!(
        out(
            &mut st,
            &a(),
            PrOut::RegisterAndMove,
            0,
            &move_params(1, 9, false, 3, &tid)
        ),
        Err(PrError::Check(Sense::invalid_field_in_param(18, None)))
    );
    let me = transport_id(1, &a().initiator_port);
    assert_eq!(
        out(
            &mut st,
            &a(),
            PrOut::RegisterAndMove,
            0,
            &move_params(1, 9, false, 1, &me)
        ),
        Err(PrError::Check(Sense::invalid_field_in_param(24, None)))
    );
    let before = st.generation;
    out(
        &mut st,
        &a(),
        PrOut::RegisterAndMove,
        0,
        &move_params(1, 9, true, 1, &tid),
    )
    .expect("move");
    assert!(st.is_holder(&b()));
    assert!(!st.registered(&a()));
    assert_eq!(st.generation, before + 1);
    assert_eq!(st.registrations[0].key, 9);
}

#[test]
fn spc2_exceptions() {
    let mut st = PrState::default();
    assert_eq!(st.spc2_exception(&a()), None);
    register(&mut st, &a(), 1);
    assert_eq!(st.spc2_exception(&b()), Some(false));
    reserve(&mut st, &a(), 1, PrType::WriteExclusiveRegistrantsOnly);
    assert_eq!(st.spc2_exception(&a()), Some(true));
    register(&mut st, &b(), 2);
    assert_eq!(st.spc2_exception(&b()), Some(true));
    assert_eq!(st.spc2_exception(&c()), Some(false));
}

#[test]
fn command_classes() {
    use crate::cdb::decode;
    let class = |c: &[u8]| access(&decode(c).expect("valid"));
    assert_eq!(class(&[0x12, 0, 0, 0, 36, 0]), Access::Any);
    assert_eq!(class(&[0x00, 0, 0, 0, 0, 0]), Access::Any);
    assert_eq!(class(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Access::Read);
    assert_eq!(class(&[0x1A, 0, 0x3F, 0, 0xFF, 0]), Access::Read);
    assert_eq!(class(&[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Access::Write);
    assert_eq!(class(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Access::Write);
    assert_eq!(class(&[0x1B, 0, 0, 0, 0x01, 0]), Access::Any);
    assert_eq!(class(&[0x1B, 0, 0, 0, 0x00, 0]), Access::Write);
    assert!(spc2_allows(
        &decode(&[0x12, 0, 0, 0, 36, 0]).expect("valid")
    ));
    assert!(!spc2_allows(
        &decode(&[0x1A, 0, 0x3F, 0, 0xFF, 0]).expect("valid")
    ));
}
