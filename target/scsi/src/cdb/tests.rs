use proptest::prelude::*;

use super::*;

fn ok(cdb: &[u8]) -> Cdb {
    match decode(cdb) {
        Ok(c) => c,
        Err(s) => panic!("{cdb:02x?} refused: {s:?}"),
    }
}

fn field(cdb: &[u8]) -> Sense {
    decode(cdb).expect_err("must be refused")
}

#[test]
fn read_and_write_of_every_size() {
    assert_eq!(
        ok(&[0x08, 0x1F, 0xFF, 0xFE, 0x00, 0]),
        Cdb::Read(Rw {
            lba: 0x1F_FFFE,
            blocks: 256,
            fua: false,
            len_field: 4
        })
    );
    assert_eq!(
        ok(&[0x0A, 0, 0, 9, 3, 0]),
        Cdb::Write(Rw {
            lba: 9,
            blocks: 3,
            fua: false,
            len_field: 4
        })
    );
    assert_eq!(
        ok(&[0x28, 0x08, 0, 0, 1, 0, 0x11, 0, 2, 0]),
        Cdb::Read(Rw {
            lba: 256,
            blocks: 2,
            fua: true,
            len_field: 7
        })
    );
    assert_eq!(
        ok(&[0x2A, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]),
        Cdb::Write(Rw {
            lba: 0xFFFF_FFFF,
            blocks: 0,
            fua: true,
            len_field: 7
        })
    );
    assert_eq!(
        ok(&[0xA8, 0, 0, 0, 0, 7, 0, 1, 0, 0, 0, 0]),
        Cdb::Read(Rw {
            lba: 7,
            blocks: 0x10000,
            fua: false,
            len_field: 6
        })
    );
    let mut c16 = [0u8; 16];
    c16[0] = 0x8A;
    c16[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
    c16[10..14].copy_from_slice(&5u32.to_be_bytes());
    assert_eq!(
        ok(&c16),
        Cdb::Write(Rw {
            lba: u64::MAX,
            blocks: 5,
            fua: false,
            len_field: 10
        })
    );
}

#[test]
fn protection_fields_and_reserved_bits_are_invalid_field_in_cdb() {
    for p in 1..8u8 {
        let s = field(&[0x28, p << 5, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(
            s,
            Sense::invalid_field_in_cdb(1, Some(12 - p.leading_zeros() as u8))
        );
    }
    // READ(6) byte 1 bits 7:5 are reserved.
    assert_eq!(
        field(&[0x08, 0x20, 0, 0, 1, 0]),
        Sense::invalid_field_in_cdb(1, Some(5))
    );
    // NACA in the control byte.
    assert_eq!(
        field(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x04]),
        Sense::invalid_field_in_cdb(9, Some(2))
    );
    // Vendor-specific control bits are ignored.
    assert!(decode(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0xC0]).is_ok());
    // WRITE SAME ANCHOR.
    assert_eq!(
        field(&[0x41, 0x10, 0, 0, 0, 0, 0, 0, 1, 0]),
        Sense::invalid_field_in_cdb(1, Some(4))
    );
    // UNMAP ANCHOR.
    assert_eq!(
        field(&[0x42, 0x01, 0, 0, 0, 0, 0, 0, 24, 0]),
        Sense::invalid_field_in_cdb(1, Some(0))
    );
}

#[test]
fn unknown_opcodes_and_service_actions() {
    assert_eq!(field(&[]), Sense::invalid_opcode());
    assert_eq!(field(&[0xFB, 0, 0, 0, 0, 0]), Sense::invalid_opcode());
    assert_eq!(field(&[0x04, 0, 0, 0, 0, 0]), Sense::invalid_opcode());
    // A service action of a known command: field pointer at byte 1 (libiscsi treats it as
    // "not implemented" for SERVICE ACTION IN / MAINTENANCE IN).
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x11;
    assert_eq!(field(&c), Sense::invalid_field_in_cdb(1, Some(4)));
    let c = [0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    assert_eq!(field(&c), Sense::invalid_field_in_cdb(1, Some(4)));
    for sa in 4..0x20u8 {
        let c = [0x5E, sa, 0, 0, 0, 0, 0, 0x40, 0, 0];
        assert_eq!(field(&c), Sense::invalid_field_in_cdb(1, Some(4)));
    }
    for sa in [0u8, 3, 4, 0x10, 0x1E] {
        let c = [0x48, sa, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            field(&c),
            Sense::invalid_field_in_cdb(1, Some(4)),
            "sanitize {sa}"
        );
    }
}

#[test]
fn short_cdbs_are_refused() {
    assert_eq!(
        field(&[0x28, 0, 0, 0]),
        Sense::invalid_field_in_cdb(4, None)
    );
    assert_eq!(field(&[0x88; 15]).asc, Asc::INVALID_FIELD_IN_CDB);
    // Padding beyond the CDB length is ignored (iSCSI carries 16 bytes).
    let mut c = [0xFFu8; 16];
    c[..6].copy_from_slice(&[0x00, 0, 0, 0, 0, 0]);
    assert_eq!(ok(&c), Cdb::TestUnitReady);
}

#[test]
fn inquiry_and_mode_commands() {
    assert_eq!(
        ok(&[0x12, 0x01, 0x83, 0x01, 0x00, 0]),
        Cdb::Inquiry {
            evpd: true,
            page: 0x83,
            alloc_len: 256
        }
    );
    assert_eq!(
        field(&[0x12, 0, 1, 1, 0, 0]),
        Sense::invalid_field_in_cdb(2, Some(7))
    );
    assert_eq!(
        field(&[0x12, 0x02, 0, 0, 36, 0]),
        Sense::invalid_field_in_cdb(1, Some(1))
    );
    assert_eq!(
        ok(&[0x1A, 0x08, 0x7F, 0xFF, 0xC0, 0]),
        Cdb::ModeSense {
            ten: false,
            dbd: true,
            llbaa: false,
            pc: 1,
            page: 0x3F,
            subpage: 0xFF,
            alloc_len: 0xC0
        }
    );
    assert_eq!(
        ok(&[0x5A, 0x10, 0x0A, 0, 0, 0, 0, 0x01, 0x00, 0]),
        Cdb::ModeSense {
            ten: true,
            dbd: false,
            llbaa: true,
            pc: 0,
            page: 0x0A,
            subpage: 0,
            alloc_len: 256
        }
    );
    assert_eq!(
        ok(&[0x15, 0x11, 0, 0, 24, 0]),
        Cdb::ModeSelect {
            ten: false,
            pf: true,
            sp: true,
            param_len: 24
        }
    );
}

#[test]
fn verify_bytchk_values() {
    let c = |b: u8| [0x2F, b << 1, 0, 0, 0, 1, 0, 0, 2, 0];
    assert!(matches!(ok(&c(0)), Cdb::Verify { bytchk: 0, .. }));
    assert!(matches!(ok(&c(1)), Cdb::Verify { bytchk: 1, .. }));
    assert_eq!(field(&c(2)), Sense::invalid_field_in_cdb(1, Some(2)));
    assert!(matches!(ok(&c(3)), Cdb::Verify { bytchk: 3, .. }));
    // WRITE AND VERIFY has a one-bit BYTCHK.
    assert_eq!(
        field(&[0x2E, 0x04, 0, 0, 0, 0, 0, 0, 1, 0]),
        Sense::invalid_field_in_cdb(1, Some(2))
    );
    assert!(matches!(
        ok(&[0x2E, 0x12, 0, 0, 0, 0, 0, 0, 1, 0]),
        Cdb::WriteAndVerify { bytchk: true, .. }
    ));
}

#[test]
fn service_action_commands() {
    let mut rc16 = [0u8; 16];
    rc16[0] = 0x9E;
    rc16[1] = 0x10;
    rc16[13] = 32;
    assert_eq!(ok(&rc16), Cdb::ReadCapacity16 { alloc_len: 32 });
    rc16[14] = 1; // PMI is obsolete here: refused
    assert_eq!(field(&rc16), Sense::invalid_field_in_cdb(14, Some(0)));
    let mut gls = [0u8; 16];
    gls[0] = 0x9E;
    gls[1] = 0x12;
    gls[9] = 5;
    gls[13] = 24;
    assert_eq!(
        ok(&gls),
        Cdb::GetLbaStatus {
            lba: 5,
            alloc_len: 24
        }
    );
    let rsoc = [0xA3, 0x0C, 0x82, 0x9E, 0x00, 0x10, 0, 0, 0x10, 0, 0, 0];
    assert_eq!(
        ok(&rsoc),
        Cdb::ReportSupportedOpcodes {
            rctd: true,
            options: 2,
            opcode: 0x9E,
            sa: 0x10,
            alloc_len: 4096
        }
    );
    let bad = [0xA3, 0x0C, 0x04, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
    assert_eq!(field(&bad), Sense::invalid_field_in_cdb(2, Some(2)));
    assert_eq!(
        ok(&[0x5F, 0x01, 0x03, 0, 0, 0, 0, 0, 24, 0]),
        Cdb::PersistentReserveOut {
            action: PrOut::Reserve,
            scope: 0,
            pr_type: 3,
            param_len: 24
        }
    );
    assert_eq!(
        ok(&[0x5E, 0x03, 0, 0, 0, 0, 0, 0x40, 0, 0]),
        Cdb::PersistentReserveIn {
            action: PrIn::ReadFullStatus,
            alloc_len: 0x4000
        }
    );
}

#[test]
fn sanitize_fields() {
    assert_eq!(
        ok(&[0x48, 0x81, 0, 0, 0, 0, 0, 0x02, 0x04, 0]),
        Cdb::Sanitize {
            immed: true,
            ause: false,
            action: SanitizeAction::Overwrite,
            param_len: 516
        }
    );
    for len in 0..5u8 {
        assert_eq!(
            field(&[0x48, 0x01, 0, 0, 0, 0, 0, 0, len, 0]),
            Sense::invalid_field_in_cdb(7, None)
        );
    }
    assert_eq!(
        field(&[0x48, 0x02, 0, 0, 0, 0, 0, 0, 8, 0]),
        Sense::invalid_field_in_cdb(7, None)
    );
    assert_eq!(
        field(&[0x48, 0x1F, 0, 0, 0, 0, 0, 0, 8, 0]),
        Sense::invalid_field_in_cdb(7, None)
    );
    assert_eq!(
        field(&[0x48, 0x42, 0, 0, 0, 0, 0, 0, 0, 0]),
        Sense::invalid_field_in_cdb(1, Some(6))
    );
    for byte in 2..7 {
        let mut c = [0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        c[byte] = byte as u8;
        assert_eq!(field(&c).asc, Asc::INVALID_FIELD_IN_CDB, "byte {byte}");
    }
}

#[test]
fn compare_and_write_and_write_same() {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[1] = 0x08;
    c[9] = 3;
    c[13] = 2;
    assert_eq!(
        ok(&c),
        Cdb::CompareAndWrite {
            lba: 3,
            blocks: 2,
            fua: true
        }
    );
    let mut ws = [0u8; 16];
    ws[0] = 0x93;
    ws[1] = 0x09;
    ws[13] = 8;
    assert_eq!(
        ok(&ws),
        Cdb::WriteSame {
            lba: 0,
            blocks: 8,
            unmap: true,
            ndob: true,
            sixteen: true
        }
    );
}

#[test]
fn reserve_release_refuse_third_party_and_extents() {
    assert_eq!(ok(&[0x16, 0, 0, 0, 0, 0]), Cdb::Reserve);
    assert_eq!(ok(&[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Cdb::Release);
    assert_eq!(
        field(&[0x16, 0x10, 0, 0, 0, 0]),
        Sense::invalid_field_in_cdb(1, Some(4))
    );
    assert_eq!(
        field(&[0x56, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
        Sense::invalid_field_in_cdb(1, Some(0))
    );
    assert_eq!(
        field(&[0x56, 0, 0, 0, 0, 0, 0, 0, 8, 0]),
        Sense::invalid_field_in_cdb(8, Some(3))
    );
}

#[test]
fn table_is_sorted_consistent_and_decodable() {
    for w in COMMANDS.windows(2) {
        assert!(
            (w[0].opcode, w[0].sa) < (w[1].opcode, w[1].sa),
            "{:02x} listed out of order",
            w[1].opcode
        );
    }
    for info in COMMANDS {
        assert_eq!(info.usage[0], info.opcode);
        assert!(matches!(info.cdb_len(), 6 | 10 | 12 | 16));
        assert_eq!(
            info.sa.is_some(),
            has_service_actions(info.opcode),
            "{:02x}",
            info.opcode
        );
        if let Some(sa) = info.sa {
            assert_eq!(u16::from(info.usage[1] & 0x1F), sa);
        }
    }
}

/// A minimal CDB that decodes for a table entry: opcode, service action, and the values some
/// commands need (a parameter length for SANITIZE OVERWRITE).
fn minimal(info: &OpInfo) -> Vec<u8> {
    let mut c = vec![0u8; info.cdb_len()];
    c[0] = info.opcode;
    if let Some(sa) = info.sa {
        c[1] = sa as u8;
    }
    if info.opcode == opcode::SANITIZE && info.sa == Some(service_action::SANITIZE_OVERWRITE) {
        c[8] = 8;
    }
    c
}

#[test]
fn every_bit_outside_the_usage_data_is_refused_at_that_bit() {
    for info in COMMANDS {
        let base = minimal(info);
        assert!(decode(&base).is_ok(), "{:02x?} minimal must decode", base);
        let last = base.len() - 1;
        for byte in 1..base.len() {
            for bit in 0..8u8 {
                let mask = 1u8 << bit;
                let mut allowed = info.usage[byte];
                if byte == 1 && info.sa.is_some() {
                    allowed |= 0x1F;
                }
                if byte == last {
                    allowed |= 0xC0;
                }
                if allowed & mask != 0 {
                    continue;
                }
                let mut c = base.clone();
                c[byte] |= mask;
                assert_eq!(
                    decode(&c),
                    Err(Sense::invalid_field_in_cdb(byte as u16, Some(bit))),
                    "{:02x?}",
                    c
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        match decode(&bytes) {
            Ok(_) => {}
            Err(s) => prop_assert!(is_decode_error(&s), "{s:?}"),
        }
    }

    #[test]
    fn decode_of_known_opcodes_is_total(
        i in 0..COMMANDS.len(),
        rest in proptest::collection::vec(any::<u8>(), 16),
    ) {
        let mut c = rest.clone();
        c[0] = COMMANDS[i].opcode;
        let _ = decode(&c);
    }
}
