use super::*;
use proptest::prelude::*;

fn all_kinds() -> Vec<Bhs> {
    let lun = Lun::from_number(3);
    vec![
        Bhs::NopOut(NopOut {
            immediate: true,
            lun,
            itt: Itt(1),
            ttt: Ttt::RESERVED,
            cmd_sn: CmdSn(2),
            exp_stat_sn: StatSn(3),
        }),
        Bhs::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun,
            itt: Itt(0x1234_5678),
            edtl: 4096,
            cmd_sn: CmdSn(7),
            exp_stat_sn: StatSn(9),
            cdb: [0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
        }),
        Bhs::TmfRequest(TmfRequest {
            immediate: true,
            function: 1,
            lun,
            itt: Itt(5),
            ref_itt: Itt(4),
            cmd_sn: CmdSn(10),
            exp_stat_sn: StatSn(11),
            ref_cmd_sn: CmdSn(9),
            exp_data_sn: DataSn(0),
        }),
        Bhs::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_min: 0,
            isid: Isid([0x80, 1, 2, 3, 4, 5]),
            tsih: Tsih(0),
            itt: Itt(0),
            cid: Cid(1),
            cmd_sn: CmdSn(100),
            exp_stat_sn: StatSn(0),
        }),
        Bhs::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: Lun(0),
            itt: Itt(6),
            ttt: Ttt::RESERVED,
            cmd_sn: CmdSn(12),
            exp_stat_sn: StatSn(13),
        }),
        Bhs::DataOut(DataOut {
            final_: true,
            lun,
            itt: Itt(1),
            ttt: Ttt(77),
            exp_stat_sn: StatSn(4),
            data_sn: DataSn(2),
            buffer_offset: 8192,
        }),
        Bhs::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: 1,
            itt: Itt(8),
            cid: Cid(3),
            cmd_sn: CmdSn(20),
            exp_stat_sn: StatSn(21),
        }),
        Bhs::Snack(Snack {
            kind: 1,
            lun,
            itt: Itt(9),
            ttt: Ttt(10),
            exp_stat_sn: StatSn(11),
            beg_run: 12,
            run_length: 13,
        }),
        Bhs::NopIn(NopIn {
            lun,
            itt: Itt::RESERVED,
            ttt: Ttt(99),
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(2),
            max_cmd_sn: CmdSn(3),
        }),
        Bhs::ScsiResponse(ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: true,
            overflow: true,
            underflow: false,
            response: 0,
            status: 2,
            itt: Itt(1),
            snack_tag: 0,
            stat_sn: StatSn(5),
            exp_cmd_sn: CmdSn(6),
            max_cmd_sn: CmdSn(7),
            exp_data_sn: DataSn(3),
            bidi_residual: 4,
            residual: 512,
        }),
        Bhs::TmfResponse(TmfResponse {
            response: 1,
            itt: Itt(5),
            stat_sn: StatSn(6),
            exp_cmd_sn: CmdSn(7),
            max_cmd_sn: CmdSn(8),
        }),
        Bhs::LoginResponse(LoginResponse {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_active: 0,
            isid: Isid([0x80, 1, 2, 3, 4, 5]),
            tsih: Tsih(9),
            itt: Itt(0),
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(100),
            max_cmd_sn: CmdSn(227),
            status_class: 0,
            status_detail: 0,
        }),
        Bhs::TextResponse(TextResponse {
            final_: false,
            cont: true,
            lun: Lun(0),
            itt: Itt(6),
            ttt: Ttt(3),
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(2),
            max_cmd_sn: CmdSn(3),
        }),
        Bhs::DataIn(DataIn {
            final_: true,
            ack: false,
            overflow: false,
            underflow: true,
            status: Some(0),
            lun,
            itt: Itt(1),
            ttt: Ttt::RESERVED,
            stat_sn: StatSn(4),
            exp_cmd_sn: CmdSn(5),
            max_cmd_sn: CmdSn(6),
            data_sn: DataSn(1),
            buffer_offset: 512,
            residual: 100,
        }),
        Bhs::DataIn(DataIn {
            final_: false,
            ack: false,
            overflow: false,
            underflow: false,
            status: None,
            lun,
            itt: Itt(1),
            ttt: Ttt::RESERVED,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(5),
            max_cmd_sn: CmdSn(6),
            data_sn: DataSn(0),
            buffer_offset: 0,
            residual: 0,
        }),
        Bhs::LogoutResponse(LogoutResponse {
            response: 0,
            itt: Itt(8),
            stat_sn: StatSn(2),
            exp_cmd_sn: CmdSn(3),
            max_cmd_sn: CmdSn(4),
            time2wait: 2,
            time2retain: 20,
        }),
        Bhs::R2t(R2t {
            lun,
            itt: Itt(1),
            ttt: Ttt(42),
            stat_sn: StatSn(3),
            exp_cmd_sn: CmdSn(4),
            max_cmd_sn: CmdSn(5),
            r2t_sn: R2tSn(1),
            buffer_offset: 65536,
            desired_len: 262_144,
        }),
        Bhs::AsyncMessage(AsyncMessage {
            lun: Lun(0),
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(2),
            max_cmd_sn: CmdSn(3),
            event: 1,
            vcode: 0,
            param1: 0,
            param2: 0,
            param3: 10,
        }),
        Bhs::Reject(Reject {
            reason: 4,
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(2),
            max_cmd_sn: CmdSn(3),
            data_sn: DataSn(0),
        }),
    ]
}

#[test]
fn every_opcode_round_trips() {
    for bhs in all_kinds() {
        let raw = encode_bhs(&bhs, 0, 0);
        assert_eq!(raw[0] & 0x3f, bhs.opcode() as u8);
        assert_eq!(decode_bhs(&raw), Ok(bhs), "{bhs:?}");
    }
}

#[test]
fn scsi_command_layout_matches_rfc() {
    // RFC 7143 §11.3: byte 0 I|opcode, byte 1 F R W ATTR, 4 TotalAHSLength, 5..8 DSL,
    // 8..16 LUN, 16 ITT, 20 EDTL, 24 CmdSN, 28 ExpStatSN, 32..48 CDB.
    let mut want = [0u8; 48];
    want[0] = 0x41;
    want[1] = 0x80 | 0x20 | 0x02;
    want[4] = 1;
    want[5..8].copy_from_slice(&[0x00, 0x02, 0x00]);
    want[8..16].copy_from_slice(&[0x41, 0x05, 0, 0, 0, 0, 0, 0]);
    want[16..20].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    want[20..24].copy_from_slice(&[0, 0, 0x10, 0]);
    want[24..28].copy_from_slice(&[0, 0, 0, 7]);
    want[28..32].copy_from_slice(&[0, 0, 0, 9]);
    want[32] = 0x2a;
    let bhs = Bhs::ScsiCommand(ScsiCommand {
        immediate: true,
        final_: true,
        read: false,
        write: true,
        attr: 2,
        lun: Lun::from_number(0x105),
        itt: Itt(0xdead_beef),
        edtl: 4096,
        cmd_sn: CmdSn(7),
        exp_stat_sn: StatSn(9),
        cdb: {
            let mut c = [0u8; 16];
            c[0] = 0x2a;
            c
        },
    });
    assert_eq!(encode_bhs(&bhs, 1, 512), want);
    assert_eq!(decode_bhs(&want), Ok(bhs));
    assert_eq!(bhs_ahs_len(&want), 4);
    assert_eq!(bhs_data_len(&want), 512);
}

#[test]
fn login_response_layout_matches_rfc() {
    // RFC 7143 §11.13: byte 1 T C CSG NSG, 2 Version-max, 3 Version-active, 8..14 ISID,
    // 14 TSIH, 16 ITT, 24 StatSN, 28 ExpCmdSN, 32 MaxCmdSN, 36 Status-Class, 37 Status-Detail.
    let bhs = Bhs::LoginResponse(LoginResponse {
        transit: false,
        cont: true,
        csg: 0,
        nsg: 1,
        version_max: 0,
        version_active: 0,
        isid: Isid([0x80, 0xaa, 0xbb, 0xcc, 0, 1]),
        tsih: Tsih(0x0102),
        itt: Itt(0x0a0b_0c0d),
        stat_sn: StatSn(0x11),
        exp_cmd_sn: CmdSn(0x22),
        max_cmd_sn: CmdSn(0x33),
        status_class: 2,
        status_detail: 3,
    });
    let b = encode_bhs(&bhs, 0, 17);
    assert_eq!(b[0], 0x23);
    assert_eq!(b[1], 0x41);
    assert_eq!(&b[5..8], &[0, 0, 17]);
    assert_eq!(&b[8..16], &[0x80, 0xaa, 0xbb, 0xcc, 0, 1, 0x01, 0x02]);
    assert_eq!(&b[16..20], &[0x0a, 0x0b, 0x0c, 0x0d]);
    assert_eq!(&b[24..28], &[0, 0, 0, 0x11]);
    assert_eq!(&b[28..32], &[0, 0, 0, 0x22]);
    assert_eq!(&b[32..36], &[0, 0, 0, 0x33]);
    assert_eq!(&b[36..38], &[2, 3]);
}

#[test]
fn data_in_and_r2t_layout() {
    let b = encode_bhs(&all_kinds()[13], 0, 512);
    // Data-In with status: F, U, S bits; status in byte 3; DataSN 36, offset 40, residual 44.
    assert_eq!(b[0], 0x25);
    assert_eq!(b[1], 0x80 | 0x02 | 0x01);
    assert_eq!(b[3], 0);
    assert_eq!(&b[20..24], &[0xff; 4]);
    assert_eq!(&b[36..40], &[0, 0, 0, 1]);
    assert_eq!(&b[40..44], &[0, 0, 2, 0]);
    assert_eq!(&b[44..48], &[0, 0, 0, 100]);
    let r = encode_bhs(&all_kinds()[16], 0, 0);
    assert_eq!(r[0], 0x31);
    assert_eq!(r[1], 0x80);
    assert_eq!(&r[36..40], &[0, 0, 0, 1]);
    assert_eq!(&r[40..44], &[0, 1, 0, 0]);
    assert_eq!(&r[44..48], &[0, 4, 0, 0]);
    // Reject and Async Message carry ITT 0xffffffff.
    for i in [17, 18] {
        let x = encode_bhs(&all_kinds()[i], 0, 0);
        assert_eq!(&x[16..20], &[0xff; 4]);
    }
}

#[test]
fn reserved_values_are_errors() {
    let mut b = encode_bhs(&all_kinds()[1], 0, 0);
    b[1] = (b[1] & !0x07) | 5;
    assert_eq!(
        decode_bhs(&b),
        Err(PduError::ReservedValue {
            field: "ATTR",
            value: 5
        })
    );
    let mut b = [0u8; 48];
    b[0] = 0x1c;
    assert_eq!(decode_bhs(&b), Err(PduError::UnknownOpcode(0x1c)));
}

#[test]
fn serial_number_arithmetic() {
    assert!(CmdSn(1).lt(CmdSn(2)));
    assert!(!CmdSn(2).lt(CmdSn(1)));
    assert!(CmdSn(u32::MAX).lt(CmdSn(0)), "wraps");
    assert!(CmdSn(0).gt(CmdSn(u32::MAX)));
    assert!(CmdSn(5).le(CmdSn(5)) && CmdSn(5).ge(CmdSn(5)));
    assert!(!CmdSn(5).lt(CmdSn(5)));
    // 2^31 apart: incomparable.
    assert!(!CmdSn(0).lt(CmdSn(0x8000_0000)) && !CmdSn(0x8000_0000).lt(CmdSn(0)));
    assert!(CmdSn(0).lt(CmdSn(0x7fff_ffff)));
    assert_eq!(CmdSn(u32::MAX).next(), CmdSn(0));
    assert_eq!(CmdSn(1).wrapping_sub(2), CmdSn(u32::MAX));
}

#[test]
fn lun_addressing() {
    assert_eq!(Lun::from_number(0), Lun(0));
    assert_eq!(
        Lun::from_number(5).0.to_be_bytes(),
        [0, 5, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        Lun::from_number(300).0.to_be_bytes(),
        [0x41, 0x2c, 0, 0, 0, 0, 0, 0]
    );
    for n in [0, 1, 255, 256, 300, 16383] {
        assert_eq!(Lun::from_number(n).number(), n);
    }
    // Multi-level or other address methods do not decode to a small number.
    let odd = Lun(u64::from_be_bytes([0, 1, 0, 2, 0, 0, 0, 0]));
    assert_eq!(odd.number(), odd.0);
    let extended = Lun(u64::from_be_bytes([0xc0, 1, 0, 0, 0, 0, 0, 0]));
    assert_eq!(extended.number(), extended.0);
    assert_eq!(
        Isid([0x80, 0, 0x12, 0, 0, 0xff]).to_string(),
        "800012 0000ff".replace(' ', "")
    );
}

#[test]
fn crc32c_digest_matches_rfc_example() {
    // RFC 7143 Appendix B.4: 32 bytes of zeros have CRC32C aa 36 91 8a on the wire.
    let mut out = Vec::new();
    let d = Digests {
        header: false,
        data: true,
    };
    encode_pdu(&mut out, &all_kinds()[5], &[], &[&[0u8; 32]], d);
    assert_eq!(out.len(), 48 + 32 + 4);
    assert_eq!(&out[80..84], &[0xaa, 0x36, 0x91, 0x8a]);
    // 32 bytes of 0xff: 43 ab a8 62.
    let mut out = Vec::new();
    encode_pdu(&mut out, &all_kinds()[5], &[], &[&[0xffu8; 32]], d);
    assert_eq!(&out[80..84], &[0x43, 0xab, 0xa8, 0x62]);
    // Ascending 0..32, split over two slices: 4e 79 dd 46.
    let asc: Vec<u8> = (0..32).collect();
    let mut out = Vec::new();
    encode_pdu(&mut out, &all_kinds()[5], &[], &[&asc[..5], &asc[5..]], d);
    assert_eq!(&out[80..84], &[0x4e, 0x79, 0xdd, 0x46]);
}

#[test]
fn framing_with_padding_and_digests() {
    for (header, data) in [(false, false), (true, false), (false, true), (true, true)] {
        let d = Digests { header, data };
        let payload = b"hello";
        let mut buf = Vec::new();
        encode_pdu(&mut buf, &all_kinds()[5], &[], &[payload], d);
        let want = 48 + usize::from(header) * 4 + 8 + usize::from(data) * 4;
        assert_eq!(buf.len(), want, "{d:?}");
        assert_eq!(
            &buf[buf.len() - 3 - usize::from(data) * 4..][..3],
            &[0, 0, 0]
        );
        // Fed byte by byte, the frame says how much is missing, then delimits it.
        for cut in 0..want {
            match frame(&buf[..cut], d, 8192) {
                Frame::Need(n) => assert!(n > 0 && cut + n <= want, "{cut} {n}"),
                other => panic!("{cut}: {other:?}"),
            }
        }
        let mut two = buf.clone();
        two.extend_from_slice(&buf);
        assert_eq!(frame(&two, d, 8192), Frame::Complete(want));
        let p = parse_pdu(&buf, d, 8192).expect("valid");
        assert_eq!(p.data, payload);
        assert_eq!(p.bhs, all_kinds()[5]);
        assert!(p.ahs.is_empty());
        assert_eq!(
            parse_pdu(&two, d, 8192),
            Err(PduError::LengthMismatch {
                expected: want,
                actual: 2 * want
            })
        );
    }
}

#[test]
fn header_digest_checked_before_length_is_trusted() {
    let d = Digests {
        header: true,
        data: false,
    };
    let mut buf = Vec::new();
    encode_pdu(&mut buf, &all_kinds()[0], &[], &[b"ping"], d);
    buf[50] ^= 1;
    assert!(matches!(
        frame(&buf[..52], d, 8192),
        Frame::Malformed(PduError::HeaderDigest { .. })
    ));
}

#[test]
fn data_digest_errors_are_reported() {
    let d = Digests {
        header: false,
        data: true,
    };
    let mut buf = Vec::new();
    encode_pdu(&mut buf, &all_kinds()[5], &[], &[b"abcd"], d);
    assert!(parse_pdu(&buf, d, 8192).is_ok());
    buf[49] ^= 0x10;
    assert!(matches!(
        frame(&buf, d, 8192),
        Frame::Complete(n) if n == buf.len()
    ));
    assert!(matches!(
        parse_pdu(&buf, d, 8192),
        Err(PduError::DataDigest { .. })
    ));
    // No data, no data digest.
    let mut empty = Vec::new();
    encode_pdu(&mut empty, &all_kinds()[0], &[], &[], d);
    assert_eq!(empty.len(), 48);
}

#[test]
fn oversized_data_segment_is_malformed() {
    let mut buf = Vec::new();
    encode_pdu(
        &mut buf,
        &all_kinds()[5],
        &[],
        &[&[0u8; 600]],
        Digests::default(),
    );
    assert_eq!(
        frame(&buf[..48], Digests::default(), 512),
        Frame::Malformed(PduError::DataSegmentTooLong { len: 600, max: 512 })
    );
}

#[test]
fn ahs_extended_cdb_and_bidi() {
    let extra: Vec<u8> = (16..32).collect();
    let ahs = encode_extended_cdb_ahs(&extra);
    // AHSLength = CDB length - 15 = 17, type 1, reserved, 16 bytes, padded to 20 + 4.
    assert_eq!(&ahs[..4], &[0, 17, 1, 0]);
    assert_eq!(ahs.len(), 20);
    let mut area = ahs.clone();
    area.extend_from_slice(&[0, 5, 2, 0, 0, 0, 0x10, 0]);
    assert_eq!(
        parse_ahs(&area),
        Ok(vec![Ahs::ExtendedCdb(&extra), Ahs::BidiReadLength(4096)])
    );
    assert_eq!(parse_ahs(&[0, 9, 1, 0]), Err(PduError::BadAhs));
    assert_eq!(parse_ahs(&[0, 4, 2, 0, 0, 0, 0, 0]), Err(PduError::BadAhs));
    assert_eq!(parse_ahs(&[0]), Err(PduError::BadAhs));
    assert_eq!(
        parse_ahs(&[0, 1, 0x40, 7]),
        Ok(vec![Ahs::Other {
            kind: 0x40,
            data: &[7]
        }])
    );
    // Whole PDU with an AHS.
    let mut buf = Vec::new();
    encode_pdu(&mut buf, &all_kinds()[1], &ahs, &[], Digests::default());
    let p = parse_pdu(&buf, Digests::default(), 8192).expect("valid");
    assert_eq!(p.ahs, &ahs[..]);
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), hd: bool, dd: bool) {
        let d = Digests { header: hd, data: dd };
        let _ = frame(&bytes, d, 256);
        let _ = parse_pdu(&bytes, d, 256);
        if let Some(b) = bytes.first_chunk::<48>() {
            let _ = decode_bhs(b);
        }
        let _ = parse_ahs(&bytes);
    }

    #[test]
    fn decode_encode_is_stable(bytes in proptest::collection::vec(any::<u8>(), 48)) {
        let b: [u8; 48] = bytes.try_into().expect("48 bytes");
        if let Ok(bhs) = decode_bhs(&b) {
            let again = encode_bhs(&bhs, b[4], bhs_data_len(&b));
            prop_assert_eq!(decode_bhs(&again), Ok(bhs));
        }
    }

    #[test]
    fn encode_parse_round_trip(which in 0usize..19, data in proptest::collection::vec(any::<u8>(), 0..100), hd: bool, dd: bool) {
        let d = Digests { header: hd, data: dd };
        let bhs = all_kinds()[which];
        let mut buf = Vec::new();
        encode_pdu(&mut buf, &bhs, &[], &[&data], d);
        prop_assert_eq!(buf.len() % 4, 0);
        let p = parse_pdu(&buf, d, 8192).expect("valid");
        prop_assert_eq!(p.bhs, bhs);
        prop_assert_eq!(p.data, &data[..]);
    }
}
