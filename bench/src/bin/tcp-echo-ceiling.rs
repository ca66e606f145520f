//! The loopback ceiling for NVMe/TCP: the round trips per second a minimal io_uring TCP
//! exchange of NVMe/TCP-sized messages reaches at a given depth, with no protocol work at all.
//!
//! A server on one reactor and a client on another (both Basalt engine reactors, so the same
//! ring and socket operations as the target and `basalt-bench`). The client keeps `--qd`
//! requests in flight over `--queues` connections; the server answers every whole request
//! with one reply. Sizes mirror a 4 KiB NVMe/TCP command with in-capsule writes:
//!
//! | `--rw` | request | reply |
//! | --- | --- | --- |
//! | `read` | 72 bytes (a command capsule) | `bs` + 24 (C2HData header) + 24 (response capsule) |
//! | `write` | 72 + `bs` bytes (a capsule with in-capsule data) | 24 (response capsule) |
//!
//! Each side batches: it sends whatever it has for all the messages it received in one go,
//! which is the best case for the kernel's TCP path. `bench/compare-nvmf.sh` divides
//! basalt-bench's null-device IOPS by this.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use basalt_bench::cpu::CpuTime;
use basalt_engine::{Engine, EngineConfig, ReactorConfig, TcpListener, TcpStream};
use clap::Parser;

/// Loopback ceiling for NVMe/TCP: round trips per second of NVMe/TCP-sized messages over an
/// io_uring TCP echo between two reactors, at a fixed depth.
///
/// Example: tcp-echo-ceiling --rw read --qd 32 --time 5 --json
#[derive(Debug, Parser)]
struct Args {
    /// `read` (72-byte requests, bs + 48-byte replies) or `write` (72 + bs bytes, 24-byte
    /// replies).
    #[arg(long, default_value = "read", value_parser = ["read", "write", "randread", "randwrite"])]
    rw: String,

    /// Requests in flight (all connections together).
    #[arg(long, default_value_t = 32)]
    qd: usize,

    /// Connections (the depth is split evenly).
    #[arg(long, default_value_t = 1)]
    queues: usize,

    /// Payload bytes per round trip.
    #[arg(long, default_value_t = 4096)]
    bs: usize,

    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    time: f64,

    /// CPU of the server reactor.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,

    /// CPU of the client reactor.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,

    /// Do not pin the reactors.
    #[arg(long)]
    no_pin: bool,

    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// NVMe/TCP command capsule: 8-byte PDU header and 64-byte SQE.
const CAPSULE_CMD: usize = 72;
/// NVMe/TCP response capsule: 8-byte header and 16-byte CQE.
const CAPSULE_RESP: usize = 24;
/// C2HData PDU header.
const C2H_HDR: usize = 24;

const RECV: usize = 256 * 1024;

async fn serve_conn(s: TcpStream, req: usize, resp: usize) {
    let mut inb: Vec<u8> = Vec::with_capacity(RECV);
    let mut out: Vec<u8> = Vec::with_capacity(RECV);
    loop {
        let (b, r) = s.recv_into_vec(inb, RECV).await;
        inb = b;
        match r {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let n = inb.len() / req;
        if n == 0 {
            continue;
        }
        inb.drain(..n * req);
        out.clear();
        out.resize(n * resp, 0);
        let (b, r) = s.send_all_vec(out, 0).await;
        out = b;
        if r.is_err() {
            break;
        }
    }
}

/// One client connection: keeps `depth` requests in flight until `deadline`, then drains.
/// Returns the round trips completed.
async fn client_conn(
    addr: SocketAddr,
    depth: usize,
    req: usize,
    resp: usize,
    start: Instant,
    deadline: Instant,
) -> std::io::Result<u64> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    basalt_engine::sleep_until(start).await;
    let mut out: Vec<u8> = vec![0; depth * req];
    let (b, r) = s.send_all_vec(out, 0).await;
    out = b;
    r?;
    let mut inb: Vec<u8> = Vec::with_capacity(RECV);
    let mut outstanding = depth;
    let mut done = 0u64;
    let mut stopping = false;
    while outstanding > 0 {
        let (b, r) = s.recv_into_vec(inb, RECV).await;
        inb = b;
        if r? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = inb.len() / resp;
        if n == 0 {
            continue;
        }
        inb.drain(..n * resp);
        done += n as u64;
        outstanding -= n;
        if !stopping && Instant::now() >= deadline {
            stopping = true;
        }
        if !stopping {
            out.clear();
            out.resize(n * req, 0);
            let (b, r) = s.send_all_vec(out, 0).await;
            out = b;
            r?;
            outstanding += n;
        }
    }
    let _ = s.shutdown();
    Ok(done)
}

fn main() {
    let a = Args::parse();
    let write = a.rw.ends_with("write");
    let (req, resp) = if write {
        (CAPSULE_CMD + a.bs, CAPSULE_RESP)
    } else {
        (CAPSULE_CMD, a.bs + C2H_HDR + CAPSULE_RESP)
    };
    if a.qd == 0 || a.queues == 0 || a.qd < a.queues {
        eprintln!("tcp-echo-ceiling: --qd must be at least --queues, and both at least 1");
        std::process::exit(2);
    }
    let cfg = EngineConfig {
        cpus: vec![a.server_cpu, a.client_cpu],
        pin: !a.no_pin,
        reactor: ReactorConfig::default(),
    };
    let engine = match Engine::start(&cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tcp-echo-ceiling: cannot start the engine: {e}");
            std::process::exit(1);
        }
    };
    let std_listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcp-echo-ceiling: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    let addr = std_listener
        .local_addr()
        .expect("a bound listener has an address");
    let queues = a.queues;
    engine
        .reactor(0)
        .send(move || {
            basalt_engine::spawn(async move {
                let l = TcpListener::from_std(std_listener);
                for _ in 0..queues {
                    match l.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            basalt_engine::spawn(serve_conn(s, req, resp));
                        }
                        Err(_) => break,
                    }
                }
            });
        })
        .expect("the server reactor runs");
    let start = Instant::now() + Duration::from_millis(200);
    let deadline = start + Duration::from_secs_f64(a.time.max(0.1));
    let (qd, per) = (a.qd, a.qd / a.queues);
    let rest = a.qd % a.queues;
    let client = engine
        .reactor(1)
        .spawn(move || async move {
            let mut tasks = Vec::new();
            for i in 0..queues {
                let depth = per + usize::from(i < rest);
                tasks.push(basalt_engine::spawn(client_conn(
                    addr, depth, req, resp, start, deadline,
                )));
            }
            let done = Rc::new(std::cell::Cell::new(0u64));
            let mut err = None;
            for t in tasks {
                match t.await {
                    Ok(Ok(n)) => done.set(done.get() + n),
                    Ok(Err(e)) => err = Some(e.to_string()),
                    Err(_) => err = Some("a client task was cancelled".into()),
                }
            }
            (done.get(), Instant::now(), err)
        })
        .expect("the client reactor runs");
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let cpu0 = CpuTime::process();
    let t0 = Instant::now();
    let (done, end, err) = client.wait().expect("the client finishes");
    let cpu = CpuTime::process().since(cpu0);
    engine.shutdown();
    if let Some(e) = err {
        eprintln!("tcp-echo-ceiling: {e}");
        std::process::exit(1);
    }
    let secs = (end - t0).as_secs_f64().max(1e-9);
    let iops = done as f64 / secs;
    let lat_us = qd as f64 / iops * 1e6;
    let cpu_us = if done == 0 {
        0.0
    } else {
        cpu.total().as_secs_f64() * 1e6 / done as f64
    };
    let rw = if write { "write" } else { "read" };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "rw": rw, "qd": qd, "queues": queues, "bs": a.bs,
                "request_bytes": req, "reply_bytes": resp,
                "round_trips": done, "elapsed_s": secs, "iops": iops,
                "mean_latency_us": lat_us, "cpu_us_per_io": cpu_us,
            })
        );
    } else {
        println!(
            "tcp echo ceiling {rw} qd {qd} queues {queues}: {iops:.0} round trips/s \
             ({req} B requests, {resp} B replies), mean latency {lat_us:.1} us, \
             {cpu_us:.2} us CPU per round trip (client + server)"
        );
    }
}
