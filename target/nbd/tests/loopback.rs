//! The NBD driver on a real engine and a loopback socket, without the daemon: a client
//! written with the crate's own wire encoders negotiates, writes and reads a RAM device, and
//! loses its connection when the export is removed.
#![allow(clippy::tests_outside_test_module)] // an integration test file is its own test crate

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use basalt_engine::{Engine, EngineConfig};
use basalt_nbd::spec::{Cmd, Cookie, Info, InfoRequest, Opt, OptionHeader, RequestHeader};
use basalt_nbd::{ConnConfig, ExportConfig, NbdTarget};

fn read_n(s: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).expect("read");
    b
}

#[test]
fn a_client_negotiates_writes_reads_and_is_closed_when_the_export_goes() {
    let mut cfg = EngineConfig::with_cores(2);
    cfg.pin = false;
    cfg.reactor.buffers.small_count = 64;
    cfg.reactor.buffers.large_count = 8;
    let engine = Engine::start(&cfg).expect("engine");
    let target = NbdTarget::new(ConnConfig::default(), engine.reactors().to_vec());
    let bdev = basalt_bdev::modules::malloc::MallocBdev::new("m0", 512, 8192).expect("malloc");
    target
        .add_export(
            ExportConfig {
                name: "m0".into(),
                description: String::new(),
                read_only: false,
                thin: false,
            },
            Arc::new(bdev),
        )
        .expect("export");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    basalt_nbd::serve(target.clone(), listener).expect("serve");

    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let g = read_n(&mut s, 18);
    assert_eq!(&g[..8], b"NBDMAGIC");
    let mut b = 3u32.to_be_bytes().to_vec();
    let mut data = Vec::new();
    InfoRequest {
        name: "m0",
        requests: Default::default(),
    }
    .encode(&mut data);
    OptionHeader {
        option: Opt::GO,
        length: data.len() as u32,
    }
    .encode(&mut b);
    b.extend_from_slice(&data);
    s.write_all(&b).expect("GO");
    // INFO_EXPORT, INFO_BLOCK_SIZE, ACK.
    for want in [Some(Info::EXPORT), Some(Info::BLOCK_SIZE), None] {
        let h = read_n(&mut s, 20);
        let len = u32::from_be_bytes(h[16..20].try_into().expect("4")) as usize;
        let d = read_n(&mut s, len);
        match want {
            Some(i) => assert_eq!(u16::from_be_bytes([d[0], d[1]]), i.0),
            None => assert_eq!(u32::from_be_bytes(h[12..16].try_into().expect("4")), 1),
        }
    }
    // Attached before the ACK was sent.
    assert_eq!(target.export("m0").expect("there").connections(), 1);

    // A 1 MiB write (several chunks with this small pool) and a read of it back.
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut b = Vec::new();
    RequestHeader {
        flags: 0,
        cmd: Cmd::WRITE,
        cookie: Cookie(1),
        offset: 4096,
        length: payload.len() as u32,
    }
    .encode(&mut b);
    b.extend_from_slice(&payload);
    RequestHeader {
        flags: 0,
        cmd: Cmd::READ,
        cookie: Cookie(2),
        offset: 4096,
        length: payload.len() as u32,
    }
    .encode(&mut b);
    s.write_all(&b).expect("requests");
    let r = read_n(&mut s, 16);
    assert_eq!(
        &r[4..16],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        "write done"
    );
    let r = read_n(&mut s, 16);
    assert_eq!(
        &r[4..16],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        "read done"
    );
    assert!(read_n(&mut s, payload.len()) == payload, "same bytes back");
    assert_eq!(target.connection_count(), 1);

    // The export goes: the connection is closed and the device let go.
    let gone = target.remove_export("m0").expect("removed");
    assert!(gone.wait_closed(Duration::from_secs(5)), "device released");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while target.connection_count() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(target.connection_count(), 0);
    engine.shutdown();
}
