//! Reads a whole volume of a running datapath through the control rings' data slots and
//! reports the throughput: what a backup's read side gets from the rings.
//!
//! ```sh
//! cargo run --release -p basalt-manager --example ring-read -- RING_SOCKET LVS VOLUME [CHUNK]
//! ```
//!
//! `CHUNK` is bytes per request (default and largest: the slot size, 1 MiB). Prints one line:
//! bytes, seconds, GB/s, requests, and the request latency p50/p99 in microseconds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use basalt_manager::{Datapath, RingDatapath};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: ring-read RING_SOCKET LVS VOLUME [CHUNK]");
        std::process::exit(64);
    }
    let ring = RingDatapath::new(&PathBuf::from(&args[0]), Duration::from_secs(30));
    let (lvs, name) = (&args[1], &args[2]);
    let chunk: u32 = args
        .get(3)
        .map(|c| c.parse().expect("CHUNK is a number of bytes"))
        .unwrap_or_else(|| ring.slot_size());
    let info = ring
        .call(&serde_json::json!({"op": "volume_get", "lvs": lvs, "name": name}))
        .unwrap_or_else(|e| {
            eprintln!("ring-read: {e}");
            std::process::exit(1);
        });
    let size = info["volume"]["size"].as_u64().expect("a size");
    let mut buf = Vec::with_capacity(chunk as usize);
    let mut lat = Vec::new();
    let mut checksum = 0u64;
    let t0 = Instant::now();
    let mut at = 0u64;
    while at < size {
        let n = u32::try_from((size - at).min(u64::from(chunk))).expect("chunk fits u32");
        let t = Instant::now();
        ring.read_volume(lvs, name, at, n, &mut buf)
            .unwrap_or_else(|e| {
                eprintln!("ring-read: at {at}: {e}");
                std::process::exit(1);
            });
        lat.push(t.elapsed());
        // Touch what came back, as a consumer would.
        checksum =
            checksum.wrapping_add(buf.iter().step_by(4096).map(|b| u64::from(*b)).sum::<u64>());
        at += u64::from(n);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
    println!(
        "bytes={size} secs={secs:.3} gb_per_s={:.3} requests={} p50_us={:.0} p99_us={:.0} checksum={checksum}",
        size as f64 / secs / 1e9,
        lat.len(),
        pct(0.5),
        pct(0.99)
    );
}
