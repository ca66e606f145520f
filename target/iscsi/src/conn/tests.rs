//! Full feature phase conversations with the test initiator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::testkit::*;
use super::*;
use crate::Access;
use crate::pdu::{DataSn, Isid, Tsih};
use crate::session::SessionTable;

fn logged_in(extra: &[(&str, &str)]) -> Initiator {
    let mut i = Initiator::new(default_config());
    i.login_normal(extra);
    i.drain_events();
    assert!(matches!(
        i.events.pop_front(),
        Some(Event::SessionStarted { .. })
    ));
    i
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|n| (n as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn scsi_response(rx: &Rx) -> pdu::ScsiResponse {
    match rx.bhs {
        Bhs::ScsiResponse(r) => r,
        ref other => panic!("expected a SCSI Response, got {other:?}"),
    }
}

fn r2t(rx: &Rx) -> pdu::R2t {
    match rx.bhs {
        Bhs::R2t(r) => r,
        ref other => panic!("expected an R2T, got {other:?}"),
    }
}

fn data_in(rx: &Rx) -> pdu::DataIn {
    match rx.bhs {
        Bhs::DataIn(r) => r,
        ref other => panic!("expected a Data-In, got {other:?}"),
    }
}

fn reject(rx: &Rx) -> pdu::Reject {
    match rx.bhs {
        Bhs::Reject(r) => r,
        ref other => panic!("expected a Reject, got {other:?}"),
    }
}

const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const WRITE10: [u8; 10] = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];

#[test]
fn read_is_split_into_data_in_pdus_with_status() {
    let mut i = logged_in(&[
        ("MaxRecvDataSegmentLength", "8192"),
        ("MaxBurstLength", "16384"),
    ]);
    let stat_sn = i.exp_stat_sn;
    let itt = i.scsi_cmd(&READ10, true, false, 20_000, true, &[]);
    let t = i.take_execute();
    assert_eq!(t.cdb[..10], READ10);
    assert_eq!(t.cdb.len(), 16);
    assert_eq!(
        (t.lun, t.expected_len, t.read, t.write),
        (0, 20_000, true, false)
    );
    assert_eq!(t.attr, TaskAttr::Simple);
    assert!(i.recv().is_empty(), "nothing before completion");
    let data = pattern(20_000, 3);
    i.conn.complete(
        t.id,
        0,
        &[],
        &[&data[..5000], &data[5000..5001], &data[5001..]],
        Residual::None,
    );
    let rx = i.recv();
    assert_eq!(rx.len(), 3);
    let mut got = Vec::new();
    let expect = [(8192, false, 0), (8192, true, 8192), (3616, true, 16384)];
    for (n, (rx, (len, f, off))) in rx.iter().zip(expect).enumerate() {
        let d = data_in(rx);
        assert_eq!(rx.data.len(), len);
        assert_eq!(d.final_, f, "F at each MaxBurstLength and at the end");
        assert_eq!(d.buffer_offset, off);
        assert_eq!(d.data_sn, DataSn(n as u32));
        assert_eq!(d.itt, itt);
        assert!(!d.ack);
        assert_eq!(d.ttt, Ttt::RESERVED);
        got.extend_from_slice(&rx.data);
    }
    assert_eq!(got, data);
    let last = data_in(&rx[2]);
    assert_eq!(last.status, Some(0));
    assert_eq!(last.stat_sn, stat_sn);
    assert!(!last.underflow && !last.overflow);
    assert_eq!(data_in(&rx[0]).status, None);
    // ExpCmdSN moved past the command; the window reopened after completion.
    assert_eq!(last.exp_cmd_sn, i.cmd_sn);
    assert_eq!(last.max_cmd_sn, i.cmd_sn.wrapping_add(127));
}

#[test]
fn read_with_underflow_and_check_condition() {
    let mut i = logged_in(&[]);
    i.scsi_cmd(&READ10, true, false, 4096, true, &[]);
    let t = i.take_execute();
    i.conn
        .complete(t.id, 0, &[], &[&[7u8; 512]], Residual::Underflow(3584));
    let rx = i.recv();
    assert_eq!(rx.len(), 1);
    let d = data_in(&rx[0]);
    assert_eq!((d.status, d.underflow, d.residual), (Some(0), true, 3584));
    assert!(d.final_);

    // CHECK CONDITION: sense goes in a SCSI Response, data (if any) in Data-In before it.
    let stat_sn = d.stat_sn.next();
    i.scsi_cmd(&READ10, true, false, 4096, true, &[]);
    let t = i.take_execute();
    let sense = [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    i.conn
        .complete(t.id, 2, &sense, &[&[1u8; 100]], Residual::Underflow(3996));
    let rx = i.recv();
    assert_eq!(rx.len(), 2);
    let d = data_in(&rx[0]);
    assert_eq!(d.status, None);
    assert!(d.final_);
    let r = scsi_response(&rx[1]);
    assert_eq!((r.response, r.status), (0, 2));
    assert!(r.underflow && !r.overflow);
    assert_eq!(r.residual, 3996);
    assert_eq!(r.exp_data_sn, DataSn(1));
    assert_eq!(r.stat_sn, stat_sn);
    let mut want = vec![0, 18];
    want.extend_from_slice(&sense);
    assert_eq!(rx[1].data, want);

    // Overflow, no data.
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    let t = i.take_execute();
    i.conn.complete(t.id, 0, &[], &[], Residual::Overflow(512));
    let r = scsi_response(&i.recv()[0]);
    assert!(r.overflow);
    assert_eq!(r.residual, 512);
    assert!(i.recv().is_empty());
}

#[test]
fn write_with_immediate_unsolicited_and_solicited_data() {
    let mut i = logged_in(&[
        ("FirstBurstLength", "8192"),
        ("MaxBurstLength", "16384"),
        ("MaxOutstandingR2T", "2"),
    ]);
    let data = pattern(50_001, 9);
    let itt = i.scsi_cmd(&WRITE10, false, true, 50_001, false, &data[..3000]);
    assert!(i.recv().is_empty(), "waits for unsolicited data");
    i.data_out(itt, Ttt::RESERVED, 0, 3000, true, &data[3000..8192]);
    let rx = i.recv();
    assert_eq!(rx.len(), 2, "MaxOutstandingR2T=2");
    let a = r2t(&rx[0]);
    let b = r2t(&rx[1]);
    assert_eq!(
        (a.r2t_sn, a.buffer_offset, a.desired_len),
        (R2tSn(0), 8192, 16384)
    );
    assert_eq!(
        (b.r2t_sn, b.buffer_offset, b.desired_len),
        (R2tSn(1), 24576, 16384)
    );
    assert_eq!(a.itt, itt);
    assert_ne!(a.ttt, b.ttt);
    assert_eq!(a.stat_sn, i.exp_stat_sn, "R2T does not advance StatSN");
    i.data_out(itt, a.ttt, 0, 8192, false, &data[8192..18192]);
    assert!(i.recv().is_empty());
    i.data_out(itt, a.ttt, 1, 18192, true, &data[18192..24576]);
    let rx = i.recv();
    assert_eq!(rx.len(), 1);
    let c = r2t(&rx[0]);
    assert_eq!(
        (c.r2t_sn, c.buffer_offset, c.desired_len),
        (R2tSn(2), 40960, 9041)
    );
    i.data_out(itt, b.ttt, 0, 24576, true, &data[24576..40960]);
    assert!(i.events.is_empty());
    i.data_out(itt, c.ttt, 0, 40960, true, &data[40960..]);
    let t = i.take_execute();
    assert_eq!(t.data_out, data);
    assert!(t.write && !t.read);
    assert_eq!(t.expected_len, 50_001);
    i.conn.complete(t.id, 0, &[], &[], Residual::None);
    let rx = i.recv();
    assert_eq!(rx.len(), 1);
    let r = scsi_response(&rx[0]);
    assert_eq!((r.status, r.itt), (0, itt));
    assert!(rx[0].data.is_empty());
}

#[test]
fn write_with_initial_r2t_yes_and_no_immediate_data() {
    let mut i = logged_in(&[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    // F=0 with InitialR2T=Yes is a protocol error.
    i.scsi_cmd(&WRITE10, false, true, 512, false, &[]);
    assert_eq!(reject(&i.recv()[0]).reason, 0x04);
    // Immediate data with ImmediateData=No too.
    i.scsi_cmd(&WRITE10, false, true, 512, true, &[1; 512]);
    assert_eq!(reject(&i.recv()[0]).reason, 0x04);
    let itt = i.scsi_cmd(&WRITE10, false, true, 1000, true, &[]);
    let rx = i.recv();
    let a = r2t(&rx[0]);
    assert_eq!((a.buffer_offset, a.desired_len), (0, 1000));
    i.data_out(itt, a.ttt, 0, 0, true, &[5; 1000]);
    assert_eq!(i.take_execute().data_out, vec![5; 1000]);
}

#[test]
fn data_sn_errors_reject_and_end_the_task() {
    // libiscsi iSCSIDataSnInvalid: unsolicited Data-Out PDUs with a wrong DataSN.
    let mut i = logged_in(&[("ImmediateData", "No"), ("MaxRecvDataSegmentLength", "512")]);
    for (first_sn, second_sn) in [(0, 0), (27, 1), (u32::MAX, 1), (1, 0)] {
        let itt = i.scsi_cmd(&WRITE10, false, true, 1024, false, &[]);
        i.data_out(itt, Ttt::RESERVED, first_sn, 0, false, &[0xa6; 512]);
        let rx = if first_sn == 0 {
            assert!(i.recv().is_empty());
            i.data_out(itt, Ttt::RESERVED, second_sn, 512, true, &[0xa6; 512]);
            i.recv()
        } else {
            let rx = i.recv();
            // The second PDU finds no task any more and is dropped silently.
            i.data_out(itt, Ttt::RESERVED, second_sn, 512, true, &[0xa6; 512]);
            assert!(i.recv().is_empty());
            rx
        };
        assert_eq!(rx.len(), 2, "{first_sn}: {rx:?}");
        let rej = reject(&rx[0]);
        assert_eq!(rej.reason, 0x04);
        assert_eq!(rx[0].data.len(), 48);
        assert_eq!(rx[0].data[0], 0x05, "the rejected Data-Out header");
        assert_eq!(&rx[0].data[16..20], &itt.0.to_be_bytes());
        let r = scsi_response(&rx[1]);
        assert_eq!((r.itt, r.status), (itt, 2));
        assert_eq!(&rx[1].data[2..], &fixed_sense(0x0b, 0x4b, 0x00));
        assert!(i.events.is_empty(), "never executed");
    }
    // The connection still works.
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    i.take_execute();
}

#[test]
fn solicited_data_errors() {
    let mut i = logged_in(&[("InitialR2T", "Yes")]);
    // Wrong offset.
    let itt = i.scsi_cmd(&WRITE10, false, true, 1024, true, &[]);
    let a = r2t(&i.recv()[0]);
    i.data_out(itt, a.ttt, 0, 512, true, &[0; 512]);
    let rx = i.recv();
    assert_eq!(reject(&rx[0]).reason, 4);
    assert_eq!(scsi_response(&rx[1]).status, 2);
    // F before the burst is complete.
    let itt = i.scsi_cmd(&WRITE10, false, true, 1024, true, &[]);
    let a = r2t(&i.recv()[0]);
    i.data_out(itt, a.ttt, 0, 0, true, &[0; 512]);
    assert_eq!(reject(&i.recv()[0]).reason, 4);
    // Overrun of the R2T.
    let itt = i.scsi_cmd(&WRITE10, false, true, 1024, true, &[]);
    let a = r2t(&i.recv()[0]);
    i.data_out(itt, a.ttt, 0, 0, true, &[0; 1536]);
    assert_eq!(reject(&i.recv()[0]).reason, 4);
    // A TTT that belongs to no R2T of this task.
    let itt = i.scsi_cmd(&WRITE10, false, true, 1024, true, &[]);
    i.recv();
    i.data_out(itt, Ttt(0x7777), 0, 0, true, &[0; 1024]);
    assert_eq!(reject(&i.recv()[0]).reason, 4);
    // Unsolicited data when InitialR2T=Yes.
    let itt = i.scsi_cmd(&WRITE10, false, true, 1024, true, &[]);
    i.recv();
    i.data_out(itt, Ttt::RESERVED, 0, 0, true, &[0; 1024]);
    assert_eq!(reject(&i.recv()[0]).reason, 4);
    // Data-Out for an unknown ITT: dropped silently.
    i.data_out(Itt(0x4242), Ttt::RESERVED, 0, 0, true, &[0; 16]);
    assert!(i.recv().is_empty());
    assert!(!i.conn.is_closed());
}

#[test]
fn command_checks() {
    let mut i = logged_in(&[]);
    // EDTL beyond max_command_bytes.
    let itt = i.scsi_cmd(&WRITE10, false, true, 9 * 1024 * 1024, true, &[]);
    let rx = i.recv();
    let r = scsi_response(&rx[0]);
    assert_eq!((r.itt, r.status), (itt, 2));
    assert_eq!(&rx[0].data[2..], &fixed_sense(0x05, 0x24, 0x00));
    // EDTL without R or W.
    i.scsi_cmd(&READ10, false, false, 512, true, &[]);
    assert_eq!(reject(&i.recv()[0]).reason, 9);
    // Data with a read.
    i.scsi_cmd(&READ10, true, false, 512, true, &[1, 2, 3, 4]);
    assert_eq!(reject(&i.recv()[0]).reason, 9);
    // More immediate data than EDTL.
    i.scsi_cmd(&WRITE10, false, true, 4, true, &[0; 8]);
    assert_eq!(reject(&i.recv()[0]).reason, 4);
    // Duplicate ITT of a running task.
    let itt = i.scsi_cmd(&READ10, true, false, 512, true, &[]);
    i.take_execute();
    i.itt = itt.0;
    i.scsi_cmd(&READ10, true, false, 512, true, &[]);
    let rx = i.recv();
    assert_eq!(reject(&rx[0]).reason, 7);
    assert_eq!(&rx[0].data[16..20], &itt.0.to_be_bytes());
    // Extended CDB in an AHS.
    let mut cdb = [0u8; 16];
    cdb[0] = 0x7f;
    let extra: Vec<u8> = (0..16).collect();
    let ahs = pdu::encode_extended_cdb_ahs(&extra);
    let sn = i.cmd_sn;
    i.cmd_sn = sn.next();
    let itt = i.next_itt();
    i.send(
        Bhs::ScsiCommand(pdu::ScsiCommand {
            immediate: false,
            final_: true,
            read: false,
            write: false,
            attr: 2,
            lun: Lun::from_number(1),
            itt,
            edtl: 0,
            cmd_sn: sn,
            exp_stat_sn: i.exp_stat_sn,
            cdb,
        }),
        &ahs,
        &[],
    );
    let t = i.take_execute();
    assert_eq!(t.cdb.len(), 32);
    assert_eq!(&t.cdb[16..], &extra[..]);
    assert_eq!((t.lun, t.attr), (1, TaskAttr::Ordered));
}

#[test]
fn cmd_sn_window_gaps_and_out_of_window_commands() {
    let mut i = logged_in(&[]);
    let exp = i.cmd_sn;
    // CmdSN too high (MaxCmdSN + 1) and too low (ExpCmdSN - 1): silently ignored.
    i.cmd_sn = exp.wrapping_add(128);
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    i.cmd_sn = exp.wrapping_sub(1);
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    assert!(i.recv().is_empty());
    assert!(i.events.is_empty());
    // A command ahead of ExpCmdSN waits for the gap to fill, then both run in order.
    i.cmd_sn = exp.wrapping_add(1);
    let second = i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    assert!(i.events.is_empty());
    assert!(
        i.conn
            .tick(i.now)
            .is_some_and(|t| t <= i.now + Duration::from_millis(10))
    );
    i.cmd_sn = exp;
    let first = i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    let t1 = i.take_execute();
    let t2 = i.take_execute();
    // The window: two outstanding commands.
    i.conn.complete(t1.id, 0, &[], &[], Residual::None);
    let r = scsi_response(&i.recv()[0]);
    assert_eq!(r.itt, first);
    assert_eq!(r.exp_cmd_sn, exp.wrapping_add(2));
    assert_eq!(
        r.max_cmd_sn,
        exp.wrapping_add(2 + 127 - 1),
        "one command still outstanding"
    );
    i.conn.complete(t2.id, 0, &[], &[], Residual::None);
    let r = scsi_response(&i.recv()[0]);
    assert_eq!(r.itt, second);
    assert_eq!(r.max_cmd_sn, exp.wrapping_add(2 + 127));
}

#[test]
fn window_closes_at_queue_depth() {
    let limits = Limits {
        queue_depth: 2,
        ..Limits::default()
    };
    let cfg = config(
        directory(vec![target(TARGET, Access::default())]),
        Arc::new(SessionTable::new()),
        limits,
    );
    let mut i = Initiator::new(cfg);
    i.login_normal(&[]);
    i.drain_events();
    i.events.clear();
    let exp = i.cmd_sn;
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    assert_eq!(i.events.len(), 2, "the third is outside the window");
    let t = i.take_execute();
    i.conn.complete(t.id, 0, &[], &[], Residual::None);
    let r = scsi_response(&i.recv()[0]);
    assert_eq!(
        (r.exp_cmd_sn, r.max_cmd_sn),
        (exp.wrapping_add(2), exp.wrapping_add(2))
    );
}

#[test]
fn immediate_commands_do_not_advance_exp_cmd_sn() {
    let mut i = logged_in(&[]);
    let exp = i.cmd_sn;
    let itt = i.next_itt();
    i.send(
        Bhs::ScsiCommand(pdu::ScsiCommand {
            immediate: true,
            final_: true,
            read: false,
            write: false,
            attr: 0,
            lun: Lun(0),
            itt,
            edtl: 0,
            cmd_sn: exp,
            exp_stat_sn: i.exp_stat_sn,
            cdb: [0; 16],
        }),
        &[],
        &[],
    );
    let t = i.take_execute();
    i.conn.complete(t.id, 0, &[], &[], Residual::None);
    let r = scsi_response(&i.recv()[0]);
    assert_eq!((r.exp_cmd_sn, r.max_cmd_sn), (exp, exp.wrapping_add(127)));
}

#[test]
fn nop_out_ping_is_echoed() {
    let mut i = logged_in(&[]);
    let itt = i.next_itt();
    let stat_sn = i.exp_stat_sn;
    i.send(
        Bhs::NopOut(pdu::NopOut {
            immediate: true,
            lun: Lun(0),
            itt,
            ttt: Ttt::RESERVED,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        &[],
        b"are you there?",
    );
    let rx = i.recv();
    let Bhs::NopIn(n) = rx[0].bhs else {
        panic!("NOP-In");
    };
    assert_eq!((n.itt, n.ttt, n.stat_sn), (itt, Ttt::RESERVED, stat_sn));
    assert_eq!(rx[0].data, b"are you there?");
    // ITT 0xffffffff, TTT 0xffffffff: no answer.
    i.send(
        Bhs::NopOut(pdu::NopOut {
            immediate: true,
            lun: Lun(0),
            itt: Itt::RESERVED,
            ttt: Ttt::RESERVED,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        &[],
        &[],
    );
    assert!(i.recv().is_empty());
}

#[test]
fn nop_in_keepalive_and_timeout() {
    let mut i = logged_in(&[]);
    let l = Limits::default();
    let t0 = i.now;
    assert_eq!(i.conn.tick(t0), Some(t0 + l.nop_interval));
    assert!(i.recv().is_empty());
    let t1 = t0 + l.nop_interval;
    assert_eq!(i.conn.tick(t1), Some(t1 + l.nop_timeout));
    let rx = i.recv();
    let Bhs::NopIn(ping) = rx[0].bhs else {
        panic!("NOP-In ping");
    };
    assert_eq!(ping.itt, Itt::RESERVED);
    assert!(!ping.ttt.is_reserved());
    assert_eq!(
        ping.stat_sn, i.exp_stat_sn,
        "a ping does not advance StatSN"
    );
    // Answered: no close.
    i.now = t1 + Duration::from_secs(1);
    i.send(
        Bhs::NopOut(pdu::NopOut {
            immediate: true,
            lun: ping.lun,
            itt: Itt::RESERVED,
            ttt: ping.ttt,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        &[],
        &[],
    );
    assert!(i.recv().is_empty());
    let t2 = t1 + Duration::from_secs(5);
    assert_eq!(i.conn.tick(t2), Some(i.now + l.nop_interval));
    assert!(i.recv().is_empty());
    assert!(!i.conn.is_closed());
    // Not answered: closed after nop_timeout.
    let t3 = i.now + l.nop_interval;
    i.conn.tick(t3);
    assert!(matches!(i.recv()[0].bhs, Bhs::NopIn(_)));
    assert!(!i.conn.is_closed());
    assert_eq!(i.conn.tick(t3 + l.nop_timeout), None);
    assert!(i.conn.is_closed());
    i.drain_events();
    assert!(matches!(
        i.events.pop_front(),
        Some(Event::SessionEnded { .. })
    ));
    assert!(matches!(i.events.pop_front(), Some(Event::Close)));
}

#[test]
fn nop_interval_zero_disables_pings() {
    let limits = Limits {
        nop_interval: Duration::ZERO,
        ..Limits::default()
    };
    let cfg = config(
        directory(vec![target(TARGET, Access::default())]),
        Arc::new(SessionTable::new()),
        limits,
    );
    let mut i = Initiator::new(cfg);
    i.login_normal(&[]);
    assert_eq!(i.conn.tick(i.now + Duration::from_secs(3600)), None);
    assert!(i.recv().is_empty());
}

fn tmf(i: &mut Initiator, function: u8, lun: u64, ref_itt: Itt, ref_cmd_sn: CmdSn) -> Itt {
    let itt = i.next_itt();
    i.send(
        Bhs::TmfRequest(pdu::TmfRequest {
            immediate: true,
            function,
            lun: Lun::from_number(lun),
            itt,
            ref_itt,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: DataSn(0),
        }),
        &[],
        &[],
    );
    itt
}

fn tmf_response(rx: &Rx) -> pdu::TmfResponse {
    match rx.bhs {
        Bhs::TmfResponse(r) => r,
        ref other => panic!("expected a TMF response, got {other:?}"),
    }
}

#[test]
fn abort_task_waits_for_the_driver_and_swallows_the_completion() {
    let mut i = logged_in(&[]);
    let sn = i.cmd_sn;
    let w = i.scsi_cmd(&WRITE10, false, true, 4096, true, &[0; 4096]);
    let t = i.take_execute();
    let titt = tmf(&mut i, 1, 0, w, sn);
    let Some(Event::TaskManagement { id, function, lun }) = i.events.pop_front() else {
        panic!("TaskManagement event");
    };
    assert_eq!((function, lun), (TmfFunction::AbortTask, 0));
    i.conn.tmf_complete(id, TmfResponse::Complete);
    assert!(
        i.recv().is_empty(),
        "the aborted task has not completed yet"
    );
    i.conn.complete(t.id, 0, &[], &[], Residual::None);
    let rx = i.recv();
    assert_eq!(rx.len(), 1, "no SCSI Response for the aborted task");
    let r = tmf_response(&rx[0]);
    assert_eq!((r.itt, r.response), (titt, 0));
    // The aborted command gave its window slot back.
    assert_eq!(r.max_cmd_sn, i.cmd_sn.wrapping_add(127));
}

#[test]
fn abort_task_of_answered_or_unknown_task() {
    let mut i = logged_in(&[]);
    let sn = i.cmd_sn;
    let w = i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    let t = i.take_execute();
    i.conn.complete(t.id, 0, &[], &[], Residual::None);
    i.recv();
    // Answered already: RefCmdSN below ExpCmdSN, outside the window.
    let titt = tmf(&mut i, 1, 0, w, sn);
    assert!(i.events.is_empty());
    let r = tmf_response(&i.recv()[0]);
    assert_eq!((r.itt, r.response), (titt, 1));
    // Never received but in the window (before the TMF's CmdSN): considered received.
    let cmd_sn = i.cmd_sn;
    i.cmd_sn = cmd_sn.wrapping_add(1);
    tmf(&mut i, 1, 0, Itt(0x9999), cmd_sn);
    let r = tmf_response(&i.recv()[0]);
    assert_eq!(r.response, 0);
    assert_eq!(r.exp_cmd_sn, cmd_sn.wrapping_add(1));
    // The late command with that CmdSN is now ignored.
    i.cmd_sn = cmd_sn;
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    assert!(i.events.is_empty());
    // A task still gathering data is dropped by the connection itself.
    i.cmd_sn = cmd_sn.wrapping_add(1);
    let w = i.scsi_cmd(&WRITE10, false, true, 1024, true, &[]);
    let a = r2t(&i.recv()[0]);
    tmf(&mut i, 1, 0, w, cmd_sn.wrapping_add(1));
    assert!(i.events.is_empty());
    assert_eq!(tmf_response(&i.recv()[0]).response, 0);
    i.data_out(w, a.ttt, 0, 0, true, &[0; 1024]);
    assert!(i.recv().is_empty() && i.events.is_empty());
}

#[test]
fn lun_reset_aborts_tasks_on_the_lun() {
    let mut i = logged_in(&[]);
    i.scsi_cmd(&READ10, true, false, 512, true, &[]);
    let t = i.take_execute();
    let titt = tmf(&mut i, 5, 0, Itt::RESERVED, CmdSn(0));
    let Some(Event::TaskManagement { id, function, .. }) = i.events.pop_front() else {
        panic!("event");
    };
    assert_eq!(function, TmfFunction::LogicalUnitReset);
    i.conn.complete(t.id, 0, &[], &[&[0; 512]], Residual::None);
    assert!(
        i.recv().is_empty(),
        "swallowed, and the driver has not answered"
    );
    i.conn.tmf_complete(id, TmfResponse::Complete);
    let r = tmf_response(&i.recv()[0]);
    assert_eq!((r.itt, r.response), (titt, 0));
    // Unknown LUN, unknown function, TASK REASSIGN.
    tmf(&mut i, 5, 9, Itt::RESERVED, CmdSn(0));
    assert_eq!(tmf_response(&i.recv()[0]).response, 2);
    tmf(&mut i, 0x33, 0, Itt::RESERVED, CmdSn(0));
    assert_eq!(tmf_response(&i.recv()[0]).response, 5);
    tmf(&mut i, 8, 0, Itt(1), CmdSn(0));
    assert_eq!(tmf_response(&i.recv()[0]).response, 4);
    assert!(i.events.is_empty());
}

#[test]
fn cold_reset_closes_after_the_response() {
    let mut i = logged_in(&[]);
    tmf(&mut i, 7, 0, Itt::RESERVED, CmdSn(0));
    let Some(Event::TaskManagement { id, function, .. }) = i.events.pop_front() else {
        panic!("event");
    };
    assert_eq!(function, TmfFunction::TargetColdReset);
    i.conn.tmf_complete(id, TmfResponse::Complete);
    assert_eq!(tmf_response(&i.recv()[0]).response, 0);
    assert!(i.conn.is_closed());
}

#[test]
fn abort_tasks_from_another_connection() {
    let mut i = logged_in(&[]);
    i.scsi_cmd(&READ10, true, false, 512, true, &[]);
    let t = i.take_execute();
    i.conn.abort_tasks(Some(3));
    i.conn.complete(t.id, 0, &[], &[&[0; 512]], Residual::None);
    assert_eq!(i.recv().len(), 1, "another LUN: not aborted");
    i.scsi_cmd(&READ10, true, false, 512, true, &[]);
    let t = i.take_execute();
    i.conn.abort_tasks(None);
    i.conn.complete(t.id, 0, &[], &[&[0; 512]], Residual::None);
    assert!(i.recv().is_empty());
}

#[test]
fn logout_closes_the_session() {
    let cfg = default_config();
    let mut i = Initiator::new(cfg.clone());
    i.login_normal(&[]);
    i.drain_events();
    i.events.clear();
    let session = Arc::clone(i.conn.session().expect("session"));
    let itt = i.next_itt();
    let stat_sn = i.exp_stat_sn;
    i.send(
        Bhs::LogoutRequest(pdu::LogoutRequest {
            immediate: true,
            reason: 0,
            itt,
            cid: Cid(0),
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        &[],
        &[],
    );
    let rx = i.recv();
    let Bhs::LogoutResponse(r) = rx[0].bhs else {
        panic!("logout response");
    };
    assert_eq!((r.itt, r.response, r.stat_sn), (itt, 0, stat_sn));
    assert_eq!((r.time2wait, r.time2retain), (0, 0));
    assert!(i.conn.is_closed());
    assert!(
        matches!(i.events.pop_front(), Some(Event::SessionEnded { session: s }) if Arc::ptr_eq(&s, &session))
    );
    assert!(matches!(i.events.pop_front(), Some(Event::Close)));
    assert!(cfg.sessions.is_empty());
    // Bytes after the close are swallowed.
    assert_eq!(i.send_raw(&[0u8; 100]), 100);
}

#[test]
fn logout_other_reasons() {
    let mut i = logged_in(&[]);
    for (reason, cid, want) in [(2, 0, 2), (1, 7, 1)] {
        let itt = i.next_itt();
        i.send(
            Bhs::LogoutRequest(pdu::LogoutRequest {
                immediate: true,
                reason,
                itt,
                cid: Cid(cid),
                cmd_sn: i.cmd_sn,
                exp_stat_sn: i.exp_stat_sn,
            }),
            &[],
            &[],
        );
        let Bhs::LogoutResponse(r) = i.recv()[0].bhs else {
            panic!("logout response");
        };
        assert_eq!(r.response, want);
        assert!(!i.conn.is_closed());
    }
    // Non-immediate logout for this connection: through the window.
    let sn = i.cmd_sn;
    i.cmd_sn = sn.next();
    i.send(
        Bhs::LogoutRequest(pdu::LogoutRequest {
            immediate: false,
            reason: 1,
            itt: Itt(77),
            cid: Cid(0),
            cmd_sn: sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        &[],
        &[],
    );
    let Bhs::LogoutResponse(r) = i.recv()[0].bhs else {
        panic!("logout response");
    };
    assert_eq!((r.response, r.exp_cmd_sn), (0, sn.next()));
    assert!(i.conn.is_closed());
}

#[test]
fn request_logout_sends_async_message_then_closes() {
    let mut i = logged_in(&[]);
    i.conn.request_logout(i.now);
    let rx = i.recv();
    let Bhs::AsyncMessage(a) = rx[0].bhs else {
        panic!("async message");
    };
    assert_eq!((a.event, a.param3), (1, 10));
    assert!(!i.conn.is_closed());
    i.conn.tick(i.now + LOGOUT_GRACE);
    assert!(i.conn.is_closed());
}

#[test]
fn malformed_pdus_are_rejected() {
    let mut i = logged_in(&[]);
    // SNACK at ERL 0.
    i.send(
        Bhs::Snack(pdu::Snack {
            kind: 0,
            lun: Lun(0),
            itt: Itt(1),
            ttt: Ttt::RESERVED,
            exp_stat_sn: i.exp_stat_sn,
            beg_run: 0,
            run_length: 0,
        }),
        &[],
        &[],
    );
    let rx = i.recv();
    assert_eq!(reject(&rx[0]).reason, 0x04);
    assert_eq!(rx[0].data[0], 0x10);
    // Unknown opcode.
    let mut raw = [0u8; 48];
    raw[0] = 0x1c;
    assert_eq!(i.send_raw(&raw), 48);
    let rx = i.recv();
    assert_eq!(reject(&rx[0]).reason, 0x05);
    assert_eq!(rx[0].data, raw);
    // Reserved task attribute.
    let mut raw = pdu::encode_bhs(
        &Bhs::ScsiCommand(pdu::ScsiCommand {
            immediate: true,
            final_: true,
            read: false,
            write: false,
            attr: 0,
            lun: Lun(0),
            itt: Itt(50),
            edtl: 0,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
            cdb: [0; 16],
        }),
        0,
        0,
    );
    raw[1] |= 7;
    i.send_raw(&raw);
    assert_eq!(reject(&i.recv()[0]).reason, 0x09);
    // A target opcode and a Login Request in full feature phase.
    let login = i.login_req(1, 3, true, false);
    i.send(Bhs::LoginRequest(login), &[], &[]);
    assert_eq!(reject(&i.recv()[0]).reason, 0x04);
    i.send(
        Bhs::R2t(pdu::R2t {
            lun: Lun(0),
            itt: Itt(1),
            ttt: Ttt(1),
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
            r2t_sn: R2tSn(0),
            buffer_offset: 0,
            desired_len: 0,
        }),
        &[],
        &[],
    );
    assert_eq!(reject(&i.recv()[0]).reason, 0x04);
    assert!(!i.conn.is_closed());
    // A data segment over our MaxRecvDataSegmentLength cannot be trusted: close.
    let mut raw = pdu::encode_bhs(
        &Bhs::NopOut(pdu::NopOut {
            immediate: true,
            lun: Lun(0),
            itt: Itt(3),
            ttt: Ttt::RESERVED,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        0,
        0,
    );
    raw[5] = 0xff;
    i.send_raw(&raw);
    assert!(i.conn.is_closed());
}

#[test]
fn partial_input_is_left_for_later() {
    let mut i = logged_in(&[]);
    let mut buf = Vec::new();
    for n in 0..3u32 {
        pdu::encode_pdu(
            &mut buf,
            &Bhs::NopOut(pdu::NopOut {
                immediate: true,
                lun: Lun(0),
                itt: Itt(100 + n),
                ttt: Ttt::RESERVED,
                cmd_sn: i.cmd_sn,
                exp_stat_sn: i.exp_stat_sn,
            }),
            &[],
            &[b"xyz"],
            Digests::default(),
        );
    }
    let one = buf.len() / 3;
    assert_eq!(i.conn.receive(&buf[..one + 10], i.now), one);
    assert_eq!(i.recv().len(), 1);
    assert_eq!(i.conn.receive(&buf[one..], i.now), 2 * one);
    assert_eq!(i.recv().len(), 2);
}

#[test]
fn digests_on_both_ways() {
    let mut i = logged_in(&[("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C")]);
    assert!(i.tx_digests.header && i.tx_digests.data);
    let itt = i.scsi_cmd(&WRITE10, false, true, 1024, true, &[3; 1024]);
    let t = i.take_execute();
    assert_eq!(t.data_out, vec![3; 1024]);
    i.conn.complete(t.id, 0, &[], &[], Residual::None);
    assert_eq!(scsi_response(&i.recv()[0]).itt, itt);
    i.scsi_cmd(&READ10, true, false, 600, true, &[]);
    let t = i.take_execute();
    i.conn.complete(t.id, 0, &[], &[&[9; 600]], Residual::None);
    let rx = i.recv();
    assert_eq!(rx[0].data, vec![9; 600]);

    // A data digest error: Reject (reason 2, with the header), then close.
    let w = i.scsi_cmd(&WRITE10, false, true, 2048, true, &[]);
    let a = r2t(&i.recv()[0]);
    let mut buf = Vec::new();
    let hdr = Bhs::DataOut(pdu::DataOut {
        final_: true,
        lun: Lun(0),
        itt: w,
        ttt: a.ttt,
        exp_stat_sn: i.exp_stat_sn,
        data_sn: DataSn(0),
        buffer_offset: 0,
    });
    pdu::encode_pdu(&mut buf, &hdr, &[], &[&[1; 2048]], i.tx_digests);
    buf[60] ^= 0xff;
    assert_eq!(i.send_raw(&buf), buf.len());
    let rx = i.recv();
    assert_eq!(reject(&rx[0]).reason, 0x02);
    assert_eq!(&rx[0].data[..], &buf[..48]);
    assert!(i.conn.is_closed());
}

#[test]
fn header_digest_error_closes() {
    let mut i = logged_in(&[("HeaderDigest", "CRC32C")]);
    let mut buf = Vec::new();
    pdu::encode_pdu(
        &mut buf,
        &Bhs::NopOut(pdu::NopOut {
            immediate: true,
            lun: Lun(0),
            itt: Itt(5),
            ttt: Ttt::RESERVED,
            cmd_sn: i.cmd_sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        &[],
        &[],
        i.tx_digests,
    );
    buf[20] ^= 1;
    i.send_raw(&buf);
    assert!(i.recv().is_empty());
    assert!(i.conn.is_closed());
}

fn text_req(i: &mut Initiator, ttt: Ttt, cont: bool, data: &[u8]) -> Vec<Rx> {
    let sn = i.cmd_sn;
    i.cmd_sn = sn.next();
    i.send(
        Bhs::TextRequest(pdu::TextRequest {
            immediate: false,
            final_: !cont,
            cont,
            lun: Lun(0),
            itt: Itt(0x7e57),
            ttt,
            cmd_sn: sn,
            exp_stat_sn: i.exp_stat_sn,
        }),
        &[],
        data,
    );
    i.recv()
}

fn text_rsp(rx: &Rx) -> pdu::TextResponse {
    match rx.bhs {
        Bhs::TextResponse(r) => r,
        ref other => panic!("expected a Text Response, got {other:?}"),
    }
}

fn discovery(dir: Arc<TestDir>, mrdsl: &str) -> Initiator {
    let mut i = Initiator::new(config(
        dir,
        Arc::new(SessionTable::new()),
        Limits::default(),
    ));
    let (r, _) = i.login_step(
        1,
        3,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("SessionType", "Discovery"),
            ("MaxRecvDataSegmentLength", mrdsl),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    i
}

#[test]
fn send_targets_filters_by_access() {
    let dir = directory(vec![
        target(TARGET, Access::default()),
        target(
            "iqn.2026-11.org.basalt:hidden",
            Access {
                initiators: Some(vec!["iqn.someone.else".into()]),
                ..Access::default()
            },
        ),
        target(
            "iqn.2026-11.org.basalt:mine",
            Access {
                initiators: Some(vec![INITIATOR.into()]),
                ..Access::default()
            },
        ),
    ]);
    let mut i = discovery(dir, "8192");
    let rx = text_req(&mut i, Ttt::RESERVED, false, &kv(&[("SendTargets", "All")]));
    assert_eq!(rx.len(), 1);
    let r = text_rsp(&rx[0]);
    assert!(r.final_ && !r.cont);
    assert_eq!(r.ttt, Ttt::RESERVED);
    assert_eq!(r.itt, Itt(0x7e57));
    let ans = answers(&rx[0].data);
    let want: Vec<(String, String)> = [
        ("TargetName", TARGET),
        ("TargetAddress", "127.0.0.1:3260,1"),
        ("TargetAddress", "[::1]:3260,1"),
        ("TargetName", "iqn.2026-11.org.basalt:mine"),
        ("TargetAddress", "127.0.0.1:3260,1"),
        ("TargetAddress", "[::1]:3260,1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(ans, want);
    // One named target; a hidden one is not revealed.
    let rx = text_req(
        &mut i,
        Ttt::RESERVED,
        false,
        &kv(&[
            ("SendTargets", "iqn.2026-11.org.basalt:hidden"),
            ("X-foo", "1"),
        ]),
    );
    assert_eq!(
        answers(&rx[0].data),
        vec![("X-foo".to_string(), "NotUnderstood".to_string())]
    );
    // SCSI commands in a discovery session are rejected.
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    assert_eq!(reject(&i.recv()[0]).reason, 0x05);
}

#[test]
fn long_send_targets_answer_continues_with_ttt() {
    let targets = (0..40)
        .map(|n| {
            target(
                &format!("iqn.2026-11.org.basalt:volume-{n:03}"),
                Access::default(),
            )
        })
        .collect();
    let mut i = discovery(directory(targets), "512");
    let mut rx = text_req(&mut i, Ttt::RESERVED, false, &kv(&[("SendTargets", "All")]));
    let mut all = Vec::new();
    let mut parts = 0;
    loop {
        assert_eq!(rx.len(), 1);
        let r = text_rsp(&rx[0]);
        assert!(rx[0].data.len() <= 512);
        all.extend_from_slice(&rx[0].data);
        parts += 1;
        if !r.cont {
            assert!(r.final_);
            assert_eq!(r.ttt, Ttt::RESERVED);
            break;
        }
        assert!(!r.final_);
        assert!(!r.ttt.is_reserved());
        rx = text_req(&mut i, r.ttt, false, &[]);
    }
    assert!(parts > 5);
    let ans = answers(&all);
    assert_eq!(ans.iter().filter(|(k, _)| k == "TargetName").count(), 40);
    assert_eq!(ans.iter().filter(|(k, _)| k == "TargetAddress").count(), 80);
}

#[test]
fn text_request_split_with_c_bit() {
    let mut i = discovery(directory(vec![target(TARGET, Access::default())]), "8192");
    let whole = kv(&[("SendTargets", "All")]);
    let rx = text_req(&mut i, Ttt::RESERVED, true, &whole[..5]);
    let r = text_rsp(&rx[0]);
    assert!(!r.final_ && !r.cont && rx[0].data.is_empty());
    assert!(!r.ttt.is_reserved());
    let rx = text_req(&mut i, r.ttt, false, &whole[5..]);
    let ans = answers(&rx[0].data);
    assert_eq!(get(&ans, "TargetName"), Some(TARGET));
    // A continuation with a TTT nobody gave out.
    let rx = text_req(&mut i, Ttt(0x1234_5678), false, &[]);
    assert_eq!(reject(&rx[0]).reason, 0x09);
}

#[test]
fn send_targets_in_a_normal_session() {
    let mut i = logged_in(&[]);
    let rx = text_req(&mut i, Ttt::RESERVED, false, &kv(&[("SendTargets", "")]));
    let ans = answers(&rx[0].data);
    assert_eq!(get(&ans, "TargetName"), Some(TARGET));
    let rx = text_req(
        &mut i,
        Ttt::RESERVED,
        false,
        &kv(&[("SendTargets", "All"), ("HeaderDigest", "None")]),
    );
    let ans = answers(&rx[0].data);
    assert_eq!(get(&ans, "TargetName"), Some(TARGET));
    assert_eq!(get(&ans, "HeaderDigest"), Some("Reject"));
}

#[test]
fn connection_lost_ends_the_session_once() {
    let cfg = default_config();
    let mut i = Initiator::new(cfg.clone());
    i.login_normal(&[]);
    i.drain_events();
    i.events.clear();
    i.scsi_cmd(&READ10, true, false, 512, true, &[]);
    let t = i.take_execute();
    i.conn.connection_lost(Instant::now());
    i.conn.connection_lost(Instant::now());
    i.drain_events();
    assert!(matches!(
        i.events.pop_front(),
        Some(Event::SessionEnded { .. })
    ));
    assert!(matches!(i.events.pop_front(), Some(Event::Close)));
    assert!(i.events.is_empty());
    // A late completion is ignored.
    i.conn.complete(t.id, 0, &[], &[&[0; 512]], Residual::None);
    assert!(!i.conn.has_output());
    assert!(cfg.sessions.is_empty());
}

#[test]
fn dropping_a_connection_leaves_its_session() {
    let cfg = default_config();
    let mut i = Initiator::new(cfg.clone());
    i.login_normal(&[]);
    assert_eq!(cfg.sessions.len(), 1);
    drop(i);
    assert!(cfg.sessions.is_empty());
}

#[test]
fn mcs_gap_filled_by_another_connection() {
    let cfg = default_config();
    let mut a = Initiator::new(cfg.clone());
    a.login_normal(&[("MaxConnections", "2")]);
    a.drain_events();
    a.events.clear();
    let session = Arc::clone(a.conn.session().expect("session"));
    let mut b = Initiator::new(cfg.clone());
    b.tsih = session.tsih();
    b.cid = Cid(1);
    b.isid = a.isid;
    b.login_normal(&[]);
    b.drain_events();
    b.events.clear();
    let exp = a.cmd_sn;
    // CmdSN exp+1 arrives on b, exp on a.
    b.cmd_sn = exp.wrapping_add(1);
    b.scsi_cmd(&READ10, true, false, 0, true, &[]);
    assert!(b.events.is_empty());
    a.cmd_sn = exp;
    a.scsi_cmd(&READ10, true, false, 0, true, &[]);
    a.take_execute();
    assert!(b.events.is_empty(), "b has not looked yet");
    b.conn.tick(b.now);
    b.drain_events();
    b.take_execute();
    assert_eq!(session.window().0, exp.wrapping_add(2));
}

#[test]
fn never_panics_on_garbage() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..400), |bytes| {
            // In login and in full feature phase.
            let mut i = Initiator::new(default_config());
            i.conn.receive(&bytes, i.now);
            let mut i = logged_in(&[]);
            i.conn.receive(&bytes, i.now);
            i.conn.tick(i.now + Duration::from_secs(100));
            Ok(())
        })
        .expect("no panic");
}

#[test]
fn isid_and_tsih_types() {
    assert_eq!(Tsih::default(), Tsih(0));
    assert_eq!(Isid::default().to_string(), "000000000000");
}

#[test]
fn held_write_gathers_its_data_before_it_runs() {
    let mut i = logged_in(&[]);
    let exp = i.cmd_sn;
    i.cmd_sn = exp.wrapping_add(1);
    let w = i.scsi_cmd(&WRITE10, false, true, 1024, false, &[1; 512]);
    i.data_out(w, Ttt::RESERVED, 0, 512, true, &[2; 512]);
    assert!(i.events.is_empty());
    assert!(i.recv().is_empty());
    i.cmd_sn = exp;
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    let first = i.take_execute();
    assert!(first.read, "CmdSN order");
    let second = i.take_execute();
    assert_eq!(second.data_out, [vec![1; 512], vec![2; 512]].concat());
    i.conn.complete(first.id, 0, &[], &[], Residual::None);
    i.conn.complete(second.id, 0, &[], &[], Residual::None);
    let rx = i.recv();
    assert_eq!(scsi_response(&rx[1]).max_cmd_sn, exp.wrapping_add(2 + 127));
}

#[test]
fn rejected_held_command_keeps_its_place_in_the_window() {
    let mut i = logged_in(&[]);
    let exp = i.cmd_sn;
    i.cmd_sn = exp.wrapping_add(1);
    i.scsi_cmd(&READ10, true, false, 512, true, &[1, 2, 3, 4]);
    assert_eq!(reject(&i.recv()[0]).reason, 9);
    i.cmd_sn = exp;
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    let t = i.take_execute();
    i.cmd_sn = exp.wrapping_add(2);
    i.scsi_cmd(&READ10, true, false, 0, true, &[]);
    i.take_execute();
    i.conn.complete(t.id, 0, &[], &[], Residual::None);
    let r = scsi_response(&i.recv()[0]);
    assert_eq!(r.exp_cmd_sn, exp.wrapping_add(3));
    assert_eq!(r.max_cmd_sn, exp.wrapping_add(3 + 127 - 1));
}

#[test]
fn thread_safety() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Connection>();
    send::<Event>();
    send_sync::<Session>();
    send_sync::<crate::session::SessionTable>();
}
