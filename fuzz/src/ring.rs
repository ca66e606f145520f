//! Fuzz target for the control ⇄ datapath shared-memory rings (`basalt-ring`).
//!
//! [`ring_msg`]: byte 0 picks what the rest of the input is:
//!
//! - `0`: one message frame, through [`basalt_ring::decode`] (and the reject and field
//!   decoders when it decodes);
//! - `1`: a whole region image written by a hostile datapath, read by control's side: a
//!   region is created, control takes its ends of the rings, then the image overwrites the
//!   shared memory and control receives, sends and checks slot spans;
//! - `2`: a whole region image received by the datapath: it must pass [`Region::open`]'s
//!   validation, then the datapath receives, sends completions and events.
//!
//! Nothing may panic, and what is accepted must satisfy the documented bounds.

use std::os::unix::fs::FileExt;

use basalt_ring::msg::{FieldReader, KIND_REJECT, Reject};
use basalt_ring::{
    Epoch, Geometry, Mailbox, RecvError, Region, RingGeometry, Role, SlotId, SlotSpan, Slots,
    decode,
};

/// Geometry of the fuzzed regions: small, so an input covers all of the rings.
pub fn ring_geometry() -> Geometry {
    Geometry {
        commands: RingGeometry {
            frames: 4,
            frame_size: 64,
        },
        completions: RingGeometry {
            frames: 4,
            frame_size: 128,
        },
        events: RingGeometry {
            frames: 2,
            frame_size: 64,
        },
        slot_size: 4096,
        slot_count: 2,
    }
}

/// Epoch of the fuzzed regions.
pub const RING_EPOCH: Epoch = Epoch(3);

/// Writes `image` over the start of `region`'s memfd (as much as fits).
pub fn overwrite(region: &Region, image: &[u8]) {
    let fd = region.fd().try_clone_to_owned().expect("dup the memfd");
    let n = image.len().min(region.len());
    std::fs::File::from(fd)
        .write_all_at(&image[..n], 0)
        .expect("write into the memfd");
}

/// The bytes of `region` (its first `len` bytes).
pub fn image(region: &Region, len: usize) -> Vec<u8> {
    let fd = region.fd().try_clone_to_owned().expect("dup the memfd");
    let mut out = vec![0u8; len.min(region.len())];
    std::fs::File::from(fd)
        .read_exact_at(&mut out, 0)
        .expect("read the memfd");
    out
}

fn check_frame(bytes: &[u8]) {
    match decode(bytes) {
        Ok(f) => {
            assert_eq!(f.payload.len() + basalt_ring::msg::HEADER_LEN, bytes.len());
            let mut again = f.header.encode(f.payload.len() as u32).to_vec();
            again.extend_from_slice(f.payload);
            assert_eq!(again, bytes, "decode accepted a non-canonical frame");
            if f.header.kind == KIND_REJECT {
                let _ = Reject::decode(f.payload);
            }
            // Walk the payload as length-prefixed fields until it stops.
            let mut r = FieldReader::new(f.payload);
            for _ in 0..16 {
                if r.bytes().is_err() {
                    break;
                }
            }
            let _ = r.finish();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Receives until empty (or a bound), checking what comes.
fn drain(m: &mut Mailbox) {
    let epoch = m.epoch().0;
    for _ in 0..16 {
        match m.try_recv() {
            Ok(None) => break,
            Ok(Some(got)) => {
                assert_eq!(got.frame.header.epoch, epoch, "accepted another epoch");
                check_frame_parts(got.frame.payload.len());
            }
            Err(RecvError::Ring(e)) => {
                assert!(!e.to_string().is_empty());
                break;
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

fn check_frame_parts(payload_len: usize) {
    assert!(
        payload_len <= 128,
        "payload of {payload_len} bytes from a 128-byte frame"
    );
}

/// Slot spans read from the image: checked, and read when in range.
fn spans(slots: &Slots, bytes: &[u8]) {
    let mut r = FieldReader::new(bytes);
    for _ in 0..4 {
        let Ok(span) = SlotSpan::decode(&mut r) else {
            return;
        };
        match slots.check(span) {
            Ok(_) => {
                let mut buf = vec![0u8; span.len as usize];
                slots.read(span, &mut buf).expect("checked span reads");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(
        slots
            .check(SlotSpan::new(SlotId(slots.count()), 0))
            .is_err()
    );
}

/// `ring_msg`: see the module docs.
pub fn ring_msg(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check_frame(rest),
        1 => {
            let region = Region::create(&ring_geometry(), RING_EPOCH).expect("create");
            let mut control = Mailbox::new(region.clone(), Role::Control).expect("fresh ring");
            overwrite(&region, rest);
            drain(&mut control);
            for id in 0..6 {
                let _ = control.send(1, id, b"command");
            }
            let _ = control.has_inbound();
            drain(&mut control);
            spans(&Slots::new(&region), rest);
        }
        _ => {
            let region = Region::create(&ring_geometry(), RING_EPOCH).expect("create");
            overwrite(&region, rest);
            let fd = region.fd().try_clone_to_owned().expect("dup");
            let Ok(theirs) = Region::open(fd) else {
                return;
            };
            let g = *theirs.geometry();
            assert!(theirs.len() as u64 <= basalt_ring::region::MAX_REGION_LEN);
            assert_eq!(
                theirs.len(),
                region.len(),
                "a geometry that does not fit the file"
            );
            let Ok(mut datapath) = Mailbox::new(theirs.clone(), Role::Datapath) else {
                return;
            };
            drain(&mut datapath);
            for id in 0..4 {
                let _ = datapath.send(1, id, b"done");
                let _ = datapath.send_event(2, b"event");
            }
            drain(&mut datapath);
            assert_eq!(g.slot_count, Slots::new(&theirs).count());
            spans(&Slots::new(&theirs), rest);
        }
    }
}

/// The seeds of `ring_msg`: `(file name, bytes)`.
pub fn ring_msg_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use basalt_ring::msg::{FLAG_ERROR, FieldWriter, Header, RejectCode};
    let frame = |h: Header, payload: &[u8]| {
        let mut v = vec![0u8];
        v.extend_from_slice(&h.encode(payload.len() as u32));
        v.extend_from_slice(payload);
        v
    };
    let mut seeds = Vec::new();
    let h = Header {
        kind: 1,
        flags: 0,
        request_id: 42,
        epoch: 3,
    };
    seeds.push(("frame-command.bin", frame(h, b"create volume-1")));
    let reject = Reject {
        code: RejectCode::StaleEpoch,
        detail: 2,
    };
    let hr = Header {
        kind: KIND_REJECT,
        flags: FLAG_ERROR,
        ..h
    };
    seeds.push(("frame-reject.bin", frame(hr, &reject.encode())));
    let mut fields = Vec::new();
    FieldWriter::new(&mut fields)
        .str("volume-1")
        .u64(1 << 30)
        .bytes(b"\x01\x02");
    SlotSpan {
        slot: SlotId(1),
        offset: 512,
        len: 1024,
    }
    .encode(&mut FieldWriter::new(&mut fields));
    seeds.push(("frame-fields.bin", frame(h, &fields)));

    // Region images with traffic in every ring: both sides' mailboxes on one region.
    let g = ring_geometry();
    let region = Region::create(&g, RING_EPOCH).expect("create");
    let mut control = Mailbox::new(region.clone(), Role::Control).expect("fresh");
    let mut datapath = Mailbox::new(region.clone(), Role::Datapath).expect("fresh");
    for id in 1..=3 {
        control.send(1, id, b"cmd").expect("room");
        datapath.send(1, id, &fields).expect("room");
    }
    datapath.send_event(7, b"ev").expect("room");
    let control_part = 4096;
    let img = image(&region, control_part);
    let with = |mode: u8, img: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(img);
        v
    };
    seeds.push(("image-control-reads.bin", with(1, &img)));
    seeds.push(("image-datapath-reads.bin", with(2, &img)));
    // A hostile tail in the completions ring (offset of its tail line: see the layout).
    let mut bad = img.clone();
    let tail_at = 256 + 128 + 4 * 64 + 64;
    bad[tail_at..tail_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    seeds.push(("image-hostile-tail.bin", with(1, &bad)));
    // The header's slot count doubled: the datapath must refuse the region.
    let mut bad = img;
    bad[52..56].copy_from_slice(&4u32.to_le_bytes());
    seeds.push(("image-bad-geometry.bin", with(2, &bad)));
    seeds
}
