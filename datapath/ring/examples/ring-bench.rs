//! Ring benchmark: control and datapath as two threads of one process, paired through a real
//! region, eventfds and a bootstrap socket.
//!
//! ```text
//! cargo run --release -p basalt-ring --example ring-bench [-- --quick]
//! ```
//!
//! Prints round-trip latency (p50/p99/max, one request at a time, the datapath asleep in
//! `wait` between requests so every round trip includes two eventfd wake-ups), pipelined
//! messages per second, and data-slot streaming throughput (the datapath fills 1 MiB slots,
//! control copies them out, the way a backup read flows). Numbers only: nothing is asserted.

use std::time::{Duration, Instant};

use basalt_ring::msg::{FieldReader, FieldWriter};
use basalt_ring::{Endpoint, Epoch, Geometry, RingGeometry, SlotId, SlotSpan, bootstrap};

type Error = Box<dyn std::error::Error + Send + Sync>;

const KIND_PING: u16 = 1;
const KIND_FILL: u16 = 2;
const KIND_STOP: u16 = 3;
const T: Duration = Duration::from_secs(10);

fn geometry() -> Geometry {
    Geometry {
        commands: RingGeometry {
            frames: 256,
            frame_size: 256,
        },
        completions: RingGeometry {
            frames: 256,
            frame_size: 256,
        },
        events: RingGeometry {
            frames: 16,
            frame_size: 256,
        },
        slot_size: 1 << 20,
        slot_count: 16,
    }
}

/// The datapath: answers pings, fills slots, until told to stop.
fn datapath(sock: std::os::fd::OwnedFd) -> Result<Endpoint, Error> {
    let mut dp = Endpoint::attach(sock, T)?;
    let chunk = vec![0xa5u8; geometry().slot_size as usize];
    loop {
        dp.wait(None)?;
        while let Some(m) = dp.try_recv()? {
            let (kind, id) = (m.frame.header.kind, m.frame.header.request_id);
            match kind {
                KIND_PING => dp.send(kind, id, &[0; 16])?,
                KIND_FILL => {
                    let span = SlotSpan::decode(&mut FieldReader::new(m.frame.payload))?;
                    dp.slots().write(span, &chunk[..span.len as usize])?;
                    dp.send(kind, id, b"")?;
                }
                _ => return Ok(dp),
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() -> Result<(), Error> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (a, b) = bootstrap::socketpair()?;
    let dp = std::thread::spawn(move || datapath(b));
    let mut c = Endpoint::create(a, &geometry(), Epoch::FIRST, T)?;
    let mut id = 0u64;

    // 1. Round trips, one at a time.
    let rounds = if quick { 2_000 } else { 20_000 };
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        id += 1;
        let start = Instant::now();
        c.send(KIND_PING, id, &[0; 16])?;
        loop {
            c.wait(Some(T))?;
            if let Some(m) = c.try_recv()? {
                assert_eq!(m.frame.header.request_id, id);
                break;
            }
        }
        lat.push(start.elapsed());
    }
    lat.sort();
    println!(
        "round trip (eventfd wake-ups, {rounds} requests): p50 {:.1?}  p99 {:.1?}  max {:.1?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    let wake_before = c.stats().wakeups_sent;

    // 2. Pipelined messages: keep up to 128 requests in flight.
    let total = if quick { 100_000u64 } else { 1_000_000 };
    let (mut sent, mut done) = (0u64, 0u64);
    let start = Instant::now();
    while done < total {
        while sent < total && sent - done < 128 {
            id += 1;
            c.send(KIND_PING, id, &[0; 16])?;
            sent += 1;
        }
        while let Some(_m) = c.try_recv()? {
            done += 1;
        }
        if done < sent && !c.wait(Some(T))? {
            return Err("no completions".into());
        }
    }
    let el = start.elapsed();
    println!(
        "pipelined (128 in flight, 48-byte messages): {:.2} M round trips/s, {:.2} M messages/s \
         both ways; control sent {} wake-ups for {total} commands",
        total as f64 / el.as_secs_f64() / 1e6,
        2.0 * total as f64 / el.as_secs_f64() / 1e6,
        c.stats().wakeups_sent - wake_before,
    );

    // 3. Streaming through data slots: the datapath fills, control copies out.
    let g = geometry();
    let bytes_total: u64 = if quick { 1 << 30 } else { 8 << 30 };
    let slots = u64::from(g.slot_count);
    let size = g.slot_size;
    let n = bytes_total / u64::from(size);
    let mut out = vec![0u8; size as usize];
    let (mut sent, mut done) = (0u64, 0u64);
    let start = Instant::now();
    let mut payload = Vec::new();
    while done < n {
        while sent < n && sent - done < slots {
            id += 1;
            payload.clear();
            SlotSpan::new(SlotId((sent % slots) as u32), size)
                .encode(&mut FieldWriter::new(&mut payload));
            c.send(KIND_FILL, id, &payload)?;
            sent += 1;
        }
        c.wait(Some(T))?;
        while let Some(m) = c.try_recv()? {
            let _ = m.frame.header.request_id;
            let span = SlotSpan::new(SlotId((done % slots) as u32), size);
            c.slots().read(span, &mut out)?;
            done += 1;
        }
    }
    let el = start.elapsed();
    println!(
        "slot streaming ({} x {} KiB slots, fill + copy out): {:.2} GB/s ({} MiB in {:.2?})",
        slots,
        size >> 10,
        (n * u64::from(size)) as f64 / el.as_secs_f64() / 1e9,
        (n * u64::from(size)) >> 20,
        el
    );

    c.send(KIND_STOP, 0, b"")?;
    let dp = dp.join().map_err(|_| "datapath thread panicked")??;
    println!("control: {:?}\ndatapath: {:?}", c.stats(), dp.stats());
    Ok(())
}
