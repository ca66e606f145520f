//! Engine tests on real reactors: timers, cross-core messages, buffer-pool exhaustion,
//! shutdown with I/O in flight, idle sleep.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use crate::op::Op;
use crate::*;

fn engine(n: usize) -> Engine {
    let mut cfg = EngineConfig::with_cores(n);
    cfg.pin = false;
    cfg.reactor.buffers = BufPoolConfig {
        small_size: 4096,
        small_count: 4,
        large_size: 65536,
        large_count: 2,
    };
    Engine::start(&cfg).expect("engine starts")
}

fn pipe() -> (File, File) {
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    (File::from(r), File::from(w))
}

#[test]
fn timers_fire_in_deadline_order_and_not_early() {
    let e = engine(1);
    let order = e
        .reactor(0)
        .block_on(|| async {
            let order = Rc::new(std::cell::RefCell::new(Vec::new()));
            let start = Instant::now();
            let mut joins = Vec::new();
            for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
                let order = order.clone();
                joins.push(spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    assert!(
                        start.elapsed() >= Duration::from_millis(ms),
                        "timer fired early"
                    );
                    order.borrow_mut().push(i);
                }));
            }
            for j in joins {
                j.await.expect("task finished");
            }
            order.borrow().clone()
        })
        .expect("reactor alive");
    assert_eq!(order, vec![1, 2, 0]);
}

#[test]
fn timeout_gives_up_and_dropped_sleep_never_fires() {
    let e = engine(1);
    e.reactor(0)
        .block_on(|| async {
            let r = timeout(Duration::from_millis(10), sleep(Duration::from_secs(10))).await;
            assert_eq!(r, Err(Elapsed));
            let ok = timeout(Duration::from_secs(5), async { 7 }).await;
            assert_eq!(ok, Ok(7));
            let dropped = sleep(Duration::from_millis(5));
            drop(dropped);
            sleep(Duration::from_millis(20)).await;
        })
        .expect("reactor alive");
}

#[test]
fn cross_core_ping_pong() {
    let e = engine(2);
    let r1 = e.reactor(1).clone();
    let rounds = 2000;
    let done = e
        .reactor(0)
        .block_on(move || async move {
            let mut count = 0usize;
            for i in 0..rounds {
                let rx = r1
                    .spawn(move || async move { (current().index(), i * 2) })
                    .expect("r1 alive");
                let (idx, v) = rx.await.expect("reply");
                assert_eq!(idx, 1);
                assert_eq!(v, i * 2);
                count += 1;
            }
            count
        })
        .expect("reactor alive");
    assert_eq!(done, rounds);
    // Reactor 1 slept between messages, so reactor 0 must have rung its doorbell.
    assert!(e.reactor(1).stats().wakeups.load(Ordering::Relaxed) > 0);
}

#[test]
fn messages_from_plain_threads_wake_a_sleeping_reactor() {
    let e = engine(1);
    let hits = Arc::new(AtomicUsize::new(0));
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..100 {
        let h = hits.clone();
        e.reactor(0)
            .send(move || {
                h.fetch_add(1, Ordering::SeqCst);
            })
            .expect("alive");
        std::thread::sleep(Duration::from_micros(200));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(Ordering::SeqCst) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 100);
}

#[test]
fn buffer_pool_exhaustion_waits_instead_of_allocating() {
    let e = engine(1);
    e.reactor(0)
        .block_on(|| async {
            let pool = current().pool().clone();
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(pool.alloc(4096).expect("fits").await);
            }
            assert_eq!(pool.stats()[0].in_use, 4);
            let got = Rc::new(Cell::new(false));
            let g = got.clone();
            let p2 = pool.clone();
            let waiter = spawn(async move {
                let b = p2.alloc(100).expect("fits").await;
                g.set(true);
                b.len()
            });
            for _ in 0..10 {
                yield_now().await;
            }
            assert!(!got.get(), "allocation must wait while the pool is empty");
            assert_eq!(pool.stats()[0].waits, 1);
            assert_eq!(pool.stats()[0].in_use, 4, "no buffer may be conjured");
            held.pop();
            let len = waiter.await.expect("waiter finished");
            assert_eq!(len, 100);
            assert!(got.get());
            drop(held);
            assert_eq!(pool.stats()[0].in_use, 0);
        })
        .expect("reactor alive");
}

#[test]
fn dropped_read_keeps_its_buffer_until_the_kernel_returns_it() {
    let e = engine(1);
    let (r, mut w) = pipe();
    let r = Rc::new(r);
    // The read end moves to the reactor; the write end stays here.
    let rfd = r.as_raw_fd();
    std::mem::forget(r);
    e.reactor(0)
        .block_on(move || async move {
            // SAFETY: the fd was leaked above for this reactor's sole use.
            let file = Rc::new(unsafe { File::from_raw_fd(rfd) });
            let pool = current().pool().clone();
            let mut buf = pool.alloc(4096).expect("fits").await;
            let sqe = opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), 16).build();
            // SAFETY: the buffer and file are owned by the op.
            let op = unsafe { Op::submit(sqe, (buf, file.clone())) };
            let mut op = std::pin::pin!(op);
            let r = timeout(Duration::from_millis(20), op.as_mut()).await;
            assert!(r.is_err(), "pipe read cannot finish: nobody wrote");
            assert_eq!(pool.stats()[0].in_use, 1);
        })
        .expect("reactor alive");
    // The op was dropped: cancelled by the engine, its buffer parked until the CQE.
    w.write_all(b"x").ok();
    let in_use = e
        .reactor(0)
        .block_on(|| async {
            sleep(Duration::from_millis(20)).await;
            current().pool().stats()[0].in_use
        })
        .expect("reactor alive");
    assert_eq!(in_use, 0);
    assert_eq!(
        e.reactor(0)
            .block_on(|| async { current().inflight() })
            .expect("alive"),
        0
    );
}

#[test]
fn shutdown_with_io_in_flight_cancels_tasks_and_drains() {
    let e = engine(2);
    let (r, _w) = pipe();
    let rfd = r.as_raw_fd();
    std::mem::forget(r);
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    e.reactor(1)
        .send(move || {
            // SAFETY: the fd was leaked above for this reactor's sole use.
            let file = Rc::new(unsafe { File::from_raw_fd(rfd) });
            for _ in 0..4 {
                let file = file.clone();
                let s = s.clone();
                spawn(async move {
                    let mut buf = current().pool().alloc(4096).expect("fits").await;
                    let sqe = opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), 16)
                        .build();
                    s.fetch_add(1, Ordering::SeqCst);
                    // SAFETY: buffer and file are owned by the op.
                    let _ = unsafe { Op::submit(sqe, (buf, file)) }.await;
                    unreachable!("nothing is ever written to the pipe");
                });
            }
            // A task that never does I/O, only sleeps.
            spawn(async {
                sleep(Duration::from_secs(3600)).await;
            });
        })
        .expect("alive");
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(started.load(Ordering::SeqCst), 4);
    let t = Instant::now();
    e.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown hung: {:?}",
        t.elapsed()
    );
}

#[test]
fn spawn_on_a_stopped_reactor_fails_cleanly() {
    let e = engine(1);
    let h = e.reactor(0).clone();
    e.shutdown();
    assert!(matches!(h.send(|| {}), Err(EngineError::Stopped(0))));
}

#[test]
fn an_idle_reactor_sleeps() {
    let e = engine(2);
    std::thread::sleep(Duration::from_millis(50));
    let before: Vec<u64> = e
        .reactors()
        .iter()
        .map(|r| r.stats().iterations.load(Ordering::Relaxed))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for (r, b) in e.reactors().iter().zip(before) {
        let spins = r.stats().iterations.load(Ordering::Relaxed) - b;
        assert!(
            spins < 10,
            "idle reactor {} looped {spins} times in 300 ms",
            r.index()
        );
    }
}

#[test]
fn fixed_buffer_file_io_round_trips() {
    let e = engine(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, vec![0u8; 65536]).expect("write");
    let p = path.clone();
    e.reactor(0)
        .block_on(move || async move {
            let file = Rc::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .expect("open"),
            );
            let pool = current().pool().clone();
            let mut w = pool.alloc(4096).expect("fits").await;
            w.fill(0x5a);
            let (_, res) = op::write_fixed(&file, w, 8192).await;
            assert_eq!(res.expect("write"), 4096);
            op::fsync(&file, true).await.expect("fsync");
            let r = pool.alloc(4096).expect("fits").await;
            let (r, res) = op::read_fixed(&file, r, 8192).await;
            assert_eq!(res.expect("read"), 4096);
            assert!(r.iter().all(|&b| b == 0x5a));
            op::nop().await.expect("nop");
        })
        .expect("reactor alive");
    let data = std::fs::read(&path).expect("read back");
    assert!(data[8192..12288].iter().all(|&b| b == 0x5a));
    assert!(data[..8192].iter().all(|&b| b == 0));
}

#[test]
fn a_panicking_task_is_dropped_and_the_reactor_goes_on() {
    let e = engine(1);
    let r = e.reactor(0);
    let lost = r.block_on(|| async {
        let h = crate::spawn(async {
            crate::yield_now().await;
            panic!("deliberate test panic");
        });
        h.await
    });
    assert_eq!(
        lost.expect("the awaiting task survives"),
        Err(crate::Cancelled)
    );
    assert!(matches!(
        r.block_on(|| async { panic!("deliberate test panic") }),
        Err(EngineError::TaskLost(0))
    ));
    assert_eq!(r.block_on(|| async { 7 }).expect("still serving"), 7);
    // Read after a later round trip: the reply to a panicking block_on can arrive (its sender
    // drops while unwinding) before the reactor has counted the panic.
    assert_eq!(r.stats().task_panics.load(Ordering::Relaxed), 2);
}

#[test]
fn messages_racing_shutdown_are_run_or_refused_never_stranded() {
    for _ in 0..20 {
        let e = engine(1);
        let h = e.reactor(0).clone();
        let racer = std::thread::spawn(move || {
            let mut outcomes = (0, 0);
            for _ in 0..200 {
                match h.block_on(|| async { 1 }) {
                    Ok(_) => outcomes.0 += 1,
                    Err(EngineError::Stopped(0)) => outcomes.1 += 1,
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            outcomes
        });
        std::thread::sleep(Duration::from_micros(200));
        e.shutdown();
        let (ran, refused) = racer.join().expect("no block_on hangs or panics");
        assert_eq!(ran + refused, 200);
    }
}

/// Sockets and block I/O share the ring: an echo server on one reactor, a client on another,
/// a megabyte each way, then the peer vanishes.
#[test]
fn tcp_echo_across_reactors_and_a_vanishing_peer() {
    use crate::net::{TcpListener, TcpStream};
    let e = engine(2);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = e
        .reactor(0)
        .spawn(move || async move {
            let l = TcpListener::from_std(listener);
            let (s, peer) = l.accept().await.expect("accept");
            assert!(peer.ip().is_loopback());
            let mut echoed = 0usize;
            loop {
                let buf = current().pool().alloc(8192).expect("fits").await;
                let (buf, res) = s.recv(buf).await;
                let n = res.expect("recv");
                if n == 0 {
                    break;
                }
                let (_, res) = s.send_all(buf, n).await;
                res.expect("echo");
                echoed += n;
            }
            // The client is gone: sending now fails cleanly, without SIGPIPE.
            let mut failed = false;
            for _ in 0..100 {
                let buf = current().pool().alloc(8192).expect("fits").await;
                let (_, res) = s.send(buf, 8192).await;
                if res.is_err() {
                    failed = true;
                    break;
                }
                crate::sleep(Duration::from_millis(5)).await;
            }
            (echoed, failed)
        })
        .expect("spawned");
    let sent = e
        .reactor(1)
        .block_on(move || async move {
            let c = TcpStream::connect(addr).await.expect("connect");
            c.set_nodelay(true).expect("nodelay");
            let total = 1 << 20;
            let mut got = Vec::with_capacity(total);
            let mut sent = 0usize;
            let mut i = 0u8;
            while sent < total {
                let mut buf = current().pool().alloc(4096).expect("fits").await;
                buf.fill(i);
                i = i.wrapping_add(1);
                let (_, res) = c.send_all(buf, 4096).await;
                res.expect("send");
                sent += 4096;
                while got.len() < sent {
                    let buf = current().pool().alloc(8192).expect("fits").await;
                    let (buf, res) = c.recv(buf).await;
                    let n = res.expect("recv");
                    assert!(n > 0, "server closed early");
                    got.extend_from_slice(&buf[..n]);
                }
            }
            for (k, chunk) in got.chunks(4096).enumerate() {
                assert!(chunk.iter().all(|&b| b == k as u8), "chunk {k} corrupted");
            }
            drop(c);
            sent
        })
        .expect("client ran");
    let (echoed, failed) = server.wait().expect("server finished");
    assert_eq!(echoed, sent);
    assert!(failed, "sending to a closed peer reports an error");
    // Connecting to a closed port is refused, not hung.
    let refused = e
        .reactor(1)
        .block_on(move || async move { TcpStream::connect(addr).await.map(|_| ()) })
        .expect("ran");
    assert!(refused.is_err());
}

/// The growable-buffer socket calls: a receive appends to what the buffer holds, a send of a
/// large Vec goes out whole, and the bytes arrive in order.
#[test]
fn tcp_vec_send_and_appending_receive() {
    use crate::net::{TcpListener, TcpStream};
    let e = engine(2);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let total = 3 << 20;
    let server = e
        .reactor(0)
        .spawn(move || async move {
            let l = TcpListener::from_std(listener);
            let (s, _) = l.accept().await.expect("accept");
            let mut buf = b"prefix".to_vec();
            loop {
                let (b, res) = s.recv_into_vec(buf, 64 * 1024).await;
                buf = b;
                if res.expect("recv") == 0 {
                    break;
                }
            }
            buf
        })
        .expect("spawned");
    e.reactor(1)
        .block_on(move || async move {
            let c = TcpStream::connect(addr).await.expect("connect");
            let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            let (_, res) = c.send_all_vec(data, 0).await;
            res.expect("send");
        })
        .expect("client ran");
    let got = server.wait().expect("server finished");
    assert_eq!(&got[..6], b"prefix");
    assert_eq!(got.len(), 6 + total);
    assert!(
        got[6..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8)
    );
}
