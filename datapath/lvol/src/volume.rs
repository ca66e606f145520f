//! Volumes as bdevs: the I/O path of the volume store.
//!
//! # Fast path
//! A read or write that falls in one cluster is looked up in the volume's map under the
//! store's shared lock. A read whose subclusters all come from one place (the volume's own
//! cluster, its backing cluster, or nowhere: zeros), and a write whose subclusters the volume
//! owns exclusively and has written before, is rewritten to the base address and passed down
//! in the same slot, without a task, a copy or an allocation. A completion hook takes it off
//! the store's I/O epoch on the way up.
//!
//! # Slow path
//! Everything else runs in a task on the submitting core: reads that span clusters or mix
//! sources (through bounce buffers), first writes (allocation, subcluster fill), writes to
//! shared clusters (copy-on-write of the touched subclusters; see `docs/lvstore.md`), unmap,
//! write-zeroes and flush. A write that changes a map entry holds that cluster's lock, writes
//! every byte the new entry will point at, and only then changes the entry, so a map never
//! names data that is not there. The change becomes durable with the next commit.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use basalt_bdev::{
    Bdev, BdevError, BlockStatus, ChannelImpl, CompletionHook, Geometry, IoChannel, IoError,
    IoKind, IoSlot, IoVecs, Lba,
};
use basalt_engine::IoBuf;

use crate::format::{MapEntry, SUBCLUSTERS, VOLUME_READ_ONLY, VOLUME_THICK};
use crate::lvs::{BaseChannel, Shared, gather, scatter};
use crate::store::StoreError;
use crate::sync::EpochToken;

/// Zeros for filling buffers and zero writes.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A volume of a store, as a block device.
pub struct VolumeBdev {
    sh: Arc<Shared>,
    id: u64,
    name: String,
}

impl std::fmt::Debug for VolumeBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeBdev")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl VolumeBdev {
    pub(crate) fn new(sh: Arc<Shared>, id: u64, name: String) -> VolumeBdev {
        VolumeBdev { sh, id, name }
    }

    /// The volume's id in its store.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for VolumeBdev {
    fn drop(&mut self) {
        let mut st = self.sh.write();
        if let Some(n) = st.open.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                st.open.remove(&self.id);
            }
        }
    }
}

impl Bdev for VolumeBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        let size = self
            .sh
            .read()
            .store
            .volume(self.id)
            .map_or(0, |v| v.record.size_bytes);
        Geometry {
            block_size: self.sh.block_size,
            num_blocks: size / u64::from(self.sh.block_size),
            supports_unmap: true,
            supports_write_zeroes: true,
            volatile_cache: true,
        }
    }

    fn block_status(&self, lba: Lba, max_blocks: u64) -> Option<BlockStatus> {
        // Scans at most this many subclusters per call; a shorter run is still a true answer.
        const SCAN_LIMIT: u64 = 1 << 16;
        let bs = u64::from(self.sh.block_size);
        let st = self.sh.read();
        let size = st.store.volume(self.id).ok()?.record.size_bytes;
        let start = lba.0.checked_mul(bs)?;
        let end = start
            .saturating_add(max_blocks.saturating_mul(bs))
            .min(size);
        if start >= end {
            return None;
        }
        let mapped_at = |byte: u64| -> bool {
            let index = byte / self.sh.cluster_size;
            let sub = (byte % self.sh.cluster_size) / self.sh.sub_size;
            st.store
                .lookup(self.id, index)
                .map(|l| (l.entry.own_bits | l.entry.back_bits) & (1 << sub) != 0)
                .unwrap_or(false)
        };
        let mapped = mapped_at(start);
        let mut pos = (start / self.sh.sub_size + 1) * self.sh.sub_size;
        let mut scanned = 1;
        while pos < end && scanned < SCAN_LIMIT && mapped_at(pos) == mapped {
            pos += self.sh.sub_size;
            scanned += 1;
        }
        let stop = pos.min(end);
        Some(BlockStatus {
            mapped,
            blocks: (stop - start).div_ceil(bs).max(1),
        })
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let base = self
            .sh
            .base_channel()
            .map_err(|e| BdevError::Config(e.to_string()))?;
        // This channel's counters, kept (summed into the volume's statistics) after it closes.
        let stats = Arc::new(crate::lvs::ChannelIoStats::default());
        self.sh
            .io_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(self.id)
            .or_default()
            .push(stats.clone());
        Ok(Rc::new(VolumeChannel {
            ctx: Rc::new(Ctx {
                sh: self.sh.clone(),
                id: self.id,
                base,
                core: basalt_engine::current().index(),
                stats,
            }),
        }))
    }
}

/// Everything a volume's I/O on one core needs.
pub(crate) struct Ctx {
    sh: Arc<Shared>,
    id: u64,
    base: Rc<BaseChannel>,
    core: usize,
    stats: Arc<crate::lvs::ChannelIoStats>,
}

impl CompletionHook for Ctx {
    fn completed(&self, slot: IoSlot, cookie: u64, result: Result<(), IoError>) {
        self.sh.epochs.leave(EpochToken::from_cookie(cookie));
        slot.complete(result);
    }
}

struct VolumeChannel {
    ctx: Rc<Ctx>,
}

/// Where a fast-path I/O goes.
enum Fast {
    /// To this byte address of the base.
    Base(u64),
    /// Nowhere: the range reads as zeros.
    Zeros,
    /// To the slow path.
    Slow,
}

fn to_io(e: StoreError) -> IoError {
    match e {
        StoreError::NoSpace => IoError::NoSpace,
        StoreError::ReadOnly(_) => IoError::ReadOnly,
        _ => IoError::Media {
            kind: IoKind::Write,
            errno: libc::EIO,
        },
    }
}

/// Subclusters `[first, last]` as bits.
fn bits(first: u64, last: u64) -> u64 {
    let n = last - first + 1;
    if n >= 64 {
        u64::MAX
    } else {
        ((1u64 << n) - 1) << first
    }
}

fn normalize(mut e: MapEntry) -> MapEntry {
    if e.own_bits == 0 {
        e.own = 0;
    }
    if e.back_bits == 0 {
        e.back = 0;
    }
    e
}

/// Bounce buffers for the slow path: from the pool when one is free at once, otherwise from
/// a small per-core reserve that only the slow path uses. Requests in flight can hold every
/// pool buffer while their slow paths wait for a bounce buffer; the reserve, whose holders
/// only wait for base I/O, guarantees those slow paths progress.
struct Reserve {
    free: RefCell<Vec<IoBuf>>,
    waiters: RefCell<VecDeque<Waker>>,
}

/// Reserve buffers per core (large class each).
const RESERVE_BUFS: usize = 4;

thread_local! {
    static RESERVE: Reserve = const {
        Reserve { free: RefCell::new(Vec::new()), waiters: RefCell::new(VecDeque::new()) }
    };
}

struct Bounce {
    buf: Option<IoBuf>,
    reserved: bool,
}

impl Bounce {
    async fn get(len: usize) -> Result<Bounce, IoError> {
        let pool = basalt_engine::current().pool().clone();
        // Top the reserve up whenever the pool has room.
        RESERVE.with(|r| {
            let mut free = r.free.borrow_mut();
            while free.len() < RESERVE_BUFS {
                match pool.try_alloc(pool.max_size()) {
                    Ok(Some(b)) => free.push(b),
                    _ => break,
                }
            }
        });
        if let Ok(Some(b)) = pool.try_alloc(len) {
            return Ok(Bounce {
                buf: Some(b),
                reserved: false,
            });
        }
        if len > pool.max_size() {
            return Err(IoError::Aborted);
        }
        let mut b = std::future::poll_fn(|cx| {
            RESERVE.with(|r| match r.free.borrow_mut().pop() {
                Some(b) => Poll::Ready(b),
                None => {
                    r.waiters.borrow_mut().push_back(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        b.set_len(len);
        Ok(Bounce {
            buf: Some(b),
            reserved: true,
        })
    }

    fn take(&mut self) -> IoBuf {
        self.buf.take().expect("bounce buffer present")
    }

    fn put(&mut self, b: IoBuf) {
        self.buf = Some(b);
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        if let (true, Some(b)) = (self.reserved, self.buf.take()) {
            let waiter = RESERVE.with(|r| {
                r.free.borrow_mut().push(b);
                r.waiters.borrow_mut().pop_front()
            });
            if let Some(w) = waiter {
                w.wake();
            }
        }
    }
}

/// Takes the request's buffers that cover exactly `[off, off + len)` of it, if buffer
/// boundaries fall there: the slow path then does its I/O on them directly. Returns where
/// they go back ([`put_bufs`]).
fn take_bufs(slot: &IoSlot, off: u64, len: u64) -> Option<(usize, IoVecs)> {
    slot.with(|r| {
        let (mut pos, mut first, mut last) = (0u64, None, None);
        for (i, b) in r.bufs.iter().enumerate() {
            if pos == off {
                first = Some(i);
            }
            pos += b.len() as u64;
            if pos == off + len {
                last = Some(i);
                break;
            }
        }
        match (first, last) {
            (Some(f), Some(l)) if f <= l => Some((f, r.bufs.drain(f..=l).collect())),
            _ => None,
        }
    })
}

fn put_bufs(slot: &IoSlot, at: usize, bufs: IoVecs) {
    slot.with(|r| {
        for (k, b) in bufs.into_iter().enumerate() {
            r.bufs.insert(at + k, b);
        }
    });
}

impl ChannelImpl for VolumeChannel {
    fn submit(&self, slot: IoSlot) {
        let ctx = &self.ctx;
        let (kind, lba, blocks, fua) = slot.with(|r| (r.kind, r.lba.0, r.blocks, r.fua));
        ctx.stats.count(kind, blocks * u64::from(ctx.sh.block_size));
        if matches!(kind, IoKind::Read | IoKind::Write) {
            let bs = u64::from(ctx.sh.block_size);
            let token = ctx.sh.epochs.enter(ctx.core);
            match ctx.classify(kind, lba * bs, blocks * bs, fua) {
                Ok(Fast::Base(addr)) => {
                    let base_bs = u64::from(ctx.base.io.geometry().block_size);
                    slot.with(|r| {
                        r.lba = Lba(addr / base_bs);
                        r.blocks = r.blocks * bs / base_bs;
                    });
                    slot.push_hook(ctx.clone(), token.cookie());
                    ctx.base.inner.submit(slot);
                    return;
                }
                Ok(Fast::Zeros) => {
                    ctx.sh.epochs.leave(token);
                    slot.with(|r| {
                        for b in r.bufs.iter_mut() {
                            b.fill(0);
                        }
                    });
                    slot.complete(Ok(()));
                    return;
                }
                Ok(Fast::Slow) => ctx.sh.epochs.leave(token),
                Err(e) => {
                    ctx.sh.epochs.leave(token);
                    slot.complete(Err(e));
                    return;
                }
            }
        }
        ctx.sh
            .counters
            .slow_ios
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ctx = ctx.clone();
        basalt_engine::spawn(async move {
            let r = ctx.slow(&slot).await;
            slot.complete(r);
        });
    }
}

impl Ctx {
    fn classify(&self, kind: IoKind, off: u64, len: u64, fua: bool) -> Result<Fast, IoError> {
        let (cs, ss) = (self.sh.cluster_size, self.sh.sub_size);
        let ci = off / cs;
        if (off + len - 1) / cs != ci {
            return Ok(Fast::Slow);
        }
        let within = off % cs;
        let mask = bits(within / ss, (within + len - 1) / ss);
        let st = self.sh.read();
        if kind == IoKind::Write {
            let v = st.store.volume(self.id).map_err(to_io)?;
            if v.record.flags & VOLUME_READ_ONLY != 0 {
                return Err(IoError::ReadOnly);
            }
            if st.frozen.contains(&self.id) || st.failed.is_some() {
                return Ok(Fast::Slow);
            }
            // A FUA write is durable when it completes only if the map that names its cluster
            // is durable too: in place, that holds when every change so far is committed.
            if fua && !self.sh.settled(&st) {
                return Ok(Fast::Slow);
            }
        }
        let lk = st.store.lookup(self.id, ci).map_err(to_io)?;
        let e = lk.entry;
        Ok(match kind {
            IoKind::Read if e.own_bits & mask == mask => Fast::Base(e.own * cs + within),
            IoKind::Read if e.back_bits & mask == mask => Fast::Base(e.back * cs + within),
            IoKind::Read if (e.own_bits | e.back_bits) & mask == 0 => Fast::Zeros,
            // Not while a slow-path write holds the cluster: it may be copying this cluster's
            // subclusters elsewhere (it decided before the cluster became exclusive), and a
            // write landing here meanwhile would be lost.
            IoKind::Write
                if lk.own_exclusive
                    && e.own_bits & mask == mask
                    && !self.sh.clusters.is_held((self.id, ci)) =>
            {
                Fast::Base(e.own * cs + within)
            }
            _ => Fast::Slow,
        })
    }

    async fn slow(&self, slot: &IoSlot) -> Result<(), IoError> {
        let (kind, lba, blocks, fua) = slot.with(|r| (r.kind, r.lba.0, r.blocks, r.fua));
        let bs = u64::from(self.sh.block_size);
        let (off, len) = (lba * bs, blocks * bs);
        match kind {
            IoKind::Flush => self.sh.commit().await.map_err(to_io),
            IoKind::Read => {
                let t = self.sh.epochs.enter(self.core);
                let r = self.read_range(slot, off, len).await;
                self.sh.epochs.leave(t);
                r
            }
            IoKind::Write | IoKind::Unmap | IoKind::WriteZeroes => {
                let changed = loop {
                    self.sh
                        .unfrozen
                        .wait(|| !self.sh.read().frozen.contains(&self.id))
                        .await;
                    let t = self.sh.epochs.enter(self.core);
                    let admitted = {
                        let st = self.sh.read();
                        let flags = st.store.volume(self.id).map_err(to_io)?.record.flags;
                        if st.failed.is_some() {
                            Err(IoError::Media {
                                kind,
                                errno: libc::EIO,
                            })
                        } else if flags & VOLUME_READ_ONLY != 0 {
                            Err(IoError::ReadOnly)
                        } else {
                            Ok(!st.frozen.contains(&self.id))
                        }
                    };
                    match admitted {
                        Ok(true) => {}
                        Ok(false) => {
                            self.sh.epochs.leave(t);
                            continue;
                        }
                        Err(e) => {
                            self.sh.epochs.leave(t);
                            return Err(e);
                        }
                    }
                    let r = if kind == IoKind::Write {
                        self.write_range(Some(slot), off, len, fua).await
                    } else {
                        self.unmap_range(off, len).await
                    };
                    self.sh.epochs.leave(t);
                    break r?;
                };
                if fua && (changed || !self.sh.settled(&self.sh.read())) {
                    // The entries pointing at the data must be durable too.
                    self.sh.commit().await.map_err(to_io)?;
                }
                Ok(())
            }
        }
    }

    /// Splits `[off, off + len)` of the volume at cluster boundaries: (cluster, offset in
    /// the cluster, length, offset in the request).
    fn segments(&self, off: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> + use<> {
        let cs = self.sh.cluster_size;
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= len {
                return None;
            }
            let o = off + pos;
            let (ci, within) = (o / cs, o % cs);
            let n = (len - pos).min(cs - within);
            let seg = (ci, within, n, pos);
            pos += n;
            Some(seg)
        })
    }

    async fn read_range(&self, slot: &IoSlot, off: u64, len: u64) -> Result<(), IoError> {
        let (cs, ss) = (self.sh.cluster_size, self.sh.sub_size);
        for (ci, within, n, req_off) in self.segments(off, len) {
            let e = self
                .sh
                .read()
                .store
                .lookup(self.id, ci)
                .map_err(to_io)?
                .entry;
            let source = |s: u64| {
                if e.own_bits >> s & 1 == 1 {
                    Some(e.own)
                } else if e.back_bits >> s & 1 == 1 {
                    Some(e.back)
                } else {
                    None
                }
            };
            let mut p = 0;
            while p < n {
                let src = source((within + p) / ss);
                let mut end = (((within + p) / ss + 1) * ss - within).min(n);
                while end < n && source((within + end) / ss) == src {
                    end = (end + ss).min(n);
                }
                let at = (req_off + p) as usize;
                match src {
                    None => {
                        let mut done = 0;
                        while done < end - p {
                            let k = ((end - p - done) as usize).min(ZEROS.len());
                            slot.with(|r| scatter(&mut r.bufs, at + done as usize, &ZEROS[..k]));
                            done += k as u64;
                        }
                    }
                    Some(c) => {
                        self.read_base_into(slot, c * cs + within + p, at, end - p)
                            .await?;
                    }
                }
                p = end;
            }
        }
        Ok(())
    }

    fn chunk(&self) -> u64 {
        basalt_engine::current().pool().max_size() as u64
    }

    fn base_lba(&self, addr: u64) -> Lba {
        Lba(addr / u64::from(self.base.io.geometry().block_size))
    }

    async fn read_base_into(
        &self,
        slot: &IoSlot,
        addr: u64,
        req_off: usize,
        len: u64,
    ) -> Result<(), IoError> {
        if let Some((at, bufs)) = take_bufs(slot, req_off as u64, len) {
            let (bufs, r) = self.base.io.read(self.base_lba(addr), bufs).await;
            put_bufs(slot, at, bufs);
            return r;
        }
        let mut done = 0;
        while done < len {
            let k = (len - done).min(self.chunk());
            let mut bounce = Bounce::get(k as usize).await?;
            let (mut bufs, r) = self
                .base
                .io
                .read(
                    self.base_lba(addr + done),
                    [bounce.take()].into_iter().collect(),
                )
                .await;
            let b = bufs.pop().expect("one buffer back");
            r?;
            slot.with(|req| scatter(&mut req.bufs, req_off + done as usize, &b));
            bounce.put(b);
            done += k;
        }
        Ok(())
    }

    /// Writes `len` bytes at `addr` of the base from the request (at `req_off`) or zeros.
    async fn write_base_from(
        &self,
        slot: Option<&IoSlot>,
        addr: u64,
        req_off: usize,
        len: u64,
        fua: bool,
    ) -> Result<(), IoError> {
        if let Some(s) = slot
            && let Some((at, bufs)) = take_bufs(s, req_off as u64, len)
        {
            let (bufs, r) = self.base.io.write(self.base_lba(addr), bufs, fua).await;
            put_bufs(s, at, bufs);
            return r;
        }
        let mut done = 0;
        while done < len {
            let k = (len - done).min(self.chunk());
            let mut bounce = Bounce::get(k as usize).await?;
            let mut buf = bounce.take();
            match slot {
                Some(s) => s.with(|req| gather(&req.bufs, req_off + done as usize, &mut buf)),
                None => buf.fill(0),
            }
            let (mut bufs, r) = self
                .base
                .io
                .write(self.base_lba(addr + done), [buf].into_iter().collect(), fua)
                .await;
            bounce.put(bufs.pop().expect("one buffer back"));
            r?;
            done += k;
        }
        Ok(())
    }

    /// Copies `[start, start + len)` of cluster `src` (zeros for `None`) to the same place in
    /// cluster `dst`.
    async fn copy_range(
        &self,
        src: Option<u64>,
        dst: u64,
        start: u64,
        len: u64,
    ) -> Result<(), IoError> {
        let cs = self.sh.cluster_size;
        let Some(src) = src else {
            return self
                .write_base_from(None, dst * cs + start, 0, len, false)
                .await;
        };
        let mut done = 0;
        while done < len {
            let k = (len - done).min(self.chunk());
            let mut bounce = Bounce::get(k as usize).await?;
            let (bufs, r) = self
                .base
                .io
                .read(
                    self.base_lba(src * cs + start + done),
                    [bounce.take()].into_iter().collect(),
                )
                .await;
            if let Err(e) = r {
                bounce.put(bufs.into_iter().next().expect("one buffer back"));
                return Err(e);
            }
            let (mut bufs, r) = self
                .base
                .io
                .write(self.base_lba(dst * cs + start + done), bufs, false)
                .await;
            bounce.put(bufs.pop().expect("one buffer back"));
            r?;
            done += k;
        }
        Ok(())
    }

    /// Writes subcluster `[s0, s0 + sub_size)` of cluster `target`: the old bytes (from
    /// cluster `old`, or zeros) with the request's bytes for `[a, b)` laid over them.
    #[allow(clippy::too_many_arguments)]
    async fn merge_subcluster(
        &self,
        slot: Option<&IoSlot>,
        old: Option<u64>,
        target: u64,
        s0: u64,
        a: u64,
        b: u64,
        req_off: usize,
        fua: bool,
    ) -> Result<(), IoError> {
        let (cs, ss) = (self.sh.cluster_size, self.sh.sub_size);
        let mut bounce = Bounce::get(ss as usize).await?;
        let mut buf = bounce.take();
        if let Some(c) = old {
            let (mut bufs, r) = self
                .base
                .io
                .read(self.base_lba(c * cs + s0), [buf].into_iter().collect())
                .await;
            buf = bufs.pop().expect("one buffer back");
            if let Err(e) = r {
                bounce.put(buf);
                return Err(e);
            }
        } else {
            buf.fill(0);
        }
        let (x, y) = (a.max(s0), b.min(s0 + ss));
        let dst = &mut buf[(x - s0) as usize..(y - s0) as usize];
        match slot {
            Some(sl) => sl.with(|req| gather(&req.bufs, req_off + (x - a) as usize, dst)),
            None => dst.fill(0),
        }
        let (mut bufs, r) = self
            .base
            .io
            .write(
                self.base_lba(target * cs + s0),
                [buf].into_iter().collect(),
                fua,
            )
            .await;
        bounce.put(bufs.pop().expect("one buffer back"));
        r
    }

    /// Writes the request's bytes (or zeros, without a request) to the volume range. Returns
    /// whether a map entry changed.
    async fn write_range(
        &self,
        slot: Option<&IoSlot>,
        off: u64,
        len: u64,
        fua: bool,
    ) -> Result<bool, IoError> {
        let mut changed = false;
        for (ci, within, n, req_off) in self.segments(off, len) {
            let _g = self.sh.clusters.lock((self.id, ci)).await;
            changed |= self
                .write_cluster(slot, ci, within, n, req_off as usize, fua)
                .await?;
        }
        Ok(changed)
    }

    /// Writes `[a, a + n)` of cluster `ci` (its lock held). See the module documentation.
    async fn write_cluster(
        &self,
        slot: Option<&IoSlot>,
        ci: u64,
        a: u64,
        n: u64,
        req_off: usize,
        fua: bool,
    ) -> Result<bool, IoError> {
        let (cs, ss) = (self.sh.cluster_size, self.sh.sub_size);
        let b = a + n;
        let (first, last) = (a / ss, (b - 1) / ss);
        let w = bits(first, last);
        let counters = &self.sh.counters;
        loop {
            let lk = self.sh.read().store.lookup(self.id, ci).map_err(to_io)?;
            let e = lk.entry;
            let has = |bits: u64, s: u64| bits >> s & 1 == 1;
            // The cluster written, the entry after the write, and subclusters to copy up.
            let (target, fresh, new, copy_src, copy_bits) = if lk.own_exclusive {
                let new = MapEntry {
                    own: e.own,
                    own_bits: e.own_bits | w,
                    back: e.back,
                    back_bits: e.back_bits & !w,
                };
                (e.own, false, normalize(new), None, 0)
            } else {
                let c = self.sh.write().store.alloc_cluster().map_err(to_io)?;
                counters
                    .clusters_allocated
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let own_rem = e.own_bits & !w;
                let back_rem = e.back_bits & !w;
                // Keep the old cluster with more live subclusters as the backing one and
                // copy the other's up: a backing chain never forms.
                let (keep, keep_bits, copy_src, copy_bits) = match (e.own, e.back) {
                    (0, 0) => (0, 0, None, 0),
                    (0, b) => (b, back_rem, None, 0),
                    (o, 0) => (o, own_rem, None, 0),
                    (o, b) if own_rem.count_ones() >= back_rem.count_ones() => {
                        (o, own_rem, Some(b), back_rem)
                    }
                    (o, b) => (b, back_rem, Some(o), own_rem),
                };
                let new = MapEntry {
                    own: c,
                    own_bits: w | copy_bits,
                    back: keep,
                    back_bits: keep_bits,
                };
                (c, true, normalize(new), copy_src, copy_bits)
            };
            let result = async {
                // Partially written subclusters not already in the target get their other
                // bytes from where the volume read them (or zeros).
                let mut fills: Vec<(u64, Option<u64>)> = Vec::new();
                for s in if first == last {
                    vec![first]
                } else {
                    vec![first, last]
                } {
                    let (s0, s1) = (s * ss, (s + 1) * ss);
                    if (a <= s0 && s1 <= b) || (!fresh && has(e.own_bits, s)) {
                        continue;
                    }
                    let old = if has(e.own_bits, s) {
                        Some(e.own)
                    } else if has(e.back_bits, s) {
                        Some(e.back)
                    } else {
                        None
                    };
                    fills.push((s, old));
                }
                // With a subcluster that fits a buffer, a fill is one read of the old
                // subcluster, the new bytes laid over it, and one write.
                let merge = ss <= self.chunk();
                let (mut m0, mut m1) = (a, b);
                if merge {
                    for &(s, _) in &fills {
                        if s == first {
                            m0 = ((s + 1) * ss).min(b);
                        }
                        if s == last {
                            m1 = (s * ss).max(m0);
                        }
                    }
                }
                if m1 > m0 {
                    self.write_base_from(
                        slot,
                        target * cs + m0,
                        req_off + (m0 - a) as usize,
                        m1 - m0,
                        fua,
                    )
                    .await?;
                }
                for (s, old) in fills {
                    counters
                        .fills
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (s0, s1) = (s * ss, (s + 1) * ss);
                    if merge {
                        self.merge_subcluster(slot, old, target, s0, a, b, req_off, fua)
                            .await?;
                        continue;
                    }
                    if s0 < a {
                        self.copy_range(old, target, s0, a - s0).await?;
                    }
                    if b < s1 {
                        self.copy_range(old, target, b, s1 - b).await?;
                    }
                }
                // Subclusters copied up from the cluster not kept as backing.
                let mut s = 0;
                while s < u64::from(SUBCLUSTERS) {
                    if !has(copy_bits, s) {
                        s += 1;
                        continue;
                    }
                    let mut end = s + 1;
                    while end < u64::from(SUBCLUSTERS) && has(copy_bits, end) {
                        end += 1;
                    }
                    self.copy_range(copy_src, target, s * ss, (end - s) * ss)
                        .await?;
                    counters
                        .cow_subclusters
                        .fetch_add(end - s, std::sync::atomic::Ordering::Relaxed);
                    s = end;
                }
                Ok::<(), IoError>(())
            }
            .await;
            let mut st = self.sh.write();
            if let Err(err) = result {
                if fresh {
                    st.store.abandon_cluster(target);
                }
                return Err(err);
            }
            let now = st.store.lookup(self.id, ci).map_err(to_io)?;
            if now.entry != e {
                // Changed under us (cannot happen while the cluster lock is held, but a
                // retry is always safe).
                if fresh {
                    st.store.abandon_cluster(target);
                }
                continue;
            }
            if new == e {
                return Ok(false);
            }
            if let Err(err) = st.store.set_entry(self.id, ci, new) {
                if fresh {
                    st.store.abandon_cluster(target);
                }
                return Err(to_io(err));
            }
            return Ok(true);
        }
    }

    /// Unmap and write-zeroes: whole subclusters are dropped from the map (a cluster nothing
    /// names any more is freed); the partial edges are written with zeros. A thick volume's
    /// own clusters are zeroed in place instead, so it stays fully allocated.
    async fn unmap_range(&self, off: u64, len: u64) -> Result<bool, IoError> {
        let ss = self.sh.sub_size;
        let mut changed = false;
        for (ci, a, n, _) in self.segments(off, len) {
            let _g = self.sh.clusters.lock((self.id, ci)).await;
            let (lk, thick) = {
                let st = self.sh.read();
                let thick = st.store.volume(self.id).map_err(to_io)?.record.flags & VOLUME_THICK;
                (st.store.lookup(self.id, ci).map_err(to_io)?, thick != 0)
            };
            if thick && lk.own_exclusive {
                changed |= self.write_cluster(None, ci, a, n, 0, false).await?;
                continue;
            }
            let b = a + n;
            let (first, last) = (a / ss, (b - 1) / ss);
            let full_first = a.div_ceil(ss);
            let full_end = b / ss; // exclusive
            let full = if full_end > full_first {
                bits(full_first, full_end - 1)
            } else {
                0
            };
            let e = lk.entry;
            let new = normalize(MapEntry {
                own: e.own,
                own_bits: e.own_bits & !full,
                back: e.back,
                back_bits: e.back_bits & !full,
            });
            if new != e {
                self.sh
                    .write()
                    .store
                    .set_entry(self.id, ci, new)
                    .map_err(to_io)?;
                changed = true;
            }
            for s in if first == last {
                vec![first]
            } else {
                vec![first, last]
            } {
                let (s0, s1) = (s * ss, (s + 1) * ss);
                if full >> s & 1 == 1 || (new.own_bits | new.back_bits) >> s & 1 == 0 {
                    continue;
                }
                let (x, y) = (a.max(s0), b.min(s1));
                changed |= self.write_cluster(None, ci, x, y - x, 0, false).await?;
            }
        }
        Ok(changed)
    }
}

/// Makes cluster `ci` of volume `id` independent: every subcluster it reads from elsewhere is
/// copied into a cluster it owns alone.
pub(crate) async fn inflate_cluster(sh: &Arc<Shared>, id: u64, ci: u64) -> Result<(), StoreError> {
    let ctx = Ctx {
        sh: sh.clone(),
        id,
        base: sh.base_channel()?,
        core: basalt_engine::current().index(),
        // The store's own copying is not the volume's I/O: counted nowhere.
        stats: Arc::default(),
    };
    let _g = sh.clusters.lock((id, ci)).await;
    let t = sh.epochs.enter(ctx.core);
    let r = async {
        let lk = sh.read().store.lookup(id, ci)?;
        let e = lk.entry;
        if e.own_bits | e.back_bits == 0 || (lk.own_exclusive && e.back == 0) {
            return Ok(());
        }
        let io = |e: IoError| StoreError::Io(e.to_string());
        let ss = sh.sub_size;
        let (target, fresh) = if lk.own_exclusive {
            (e.own, false)
        } else {
            (sh.write().store.alloc_cluster()?, true)
        };
        let copy = async {
            for (src, bits) in [(e.own, e.own_bits), (e.back, e.back_bits)] {
                if src == target || bits == 0 {
                    continue;
                }
                let mut s = 0;
                while s < 64 {
                    if bits >> s & 1 == 0 {
                        s += 1;
                        continue;
                    }
                    let mut end = s + 1;
                    while end < 64 && bits >> end & 1 == 1 {
                        end += 1;
                    }
                    ctx.copy_range(Some(src), target, s * ss, (end - s) * ss)
                        .await?;
                    s = end;
                }
            }
            Ok::<(), IoError>(())
        }
        .await;
        let mut st = sh.write();
        if let Err(err) = copy {
            if fresh {
                st.store.abandon_cluster(target);
            }
            return Err(io(err));
        }
        let new = MapEntry {
            own: target,
            own_bits: e.own_bits | e.back_bits,
            back: 0,
            back_bits: 0,
        };
        if let Err(err) = st.store.set_entry(id, ci, new) {
            if fresh {
                st.store.abandon_cluster(target);
            }
            return Err(err);
        }
        Ok(())
    }
    .await;
    sh.epochs.leave(t);
    r
}

/// Writes zeros over `[addr, addr + len)` of a device, in pool-sized chunks.
pub(crate) async fn write_zero_range(
    io: &IoChannel,
    addr: u64,
    len: u64,
    fua: bool,
) -> Result<(), IoError> {
    let pool = basalt_engine::current().pool().clone();
    let bs = u64::from(io.geometry().block_size);
    let mut done = 0;
    while done < len {
        let k = (len - done).min(pool.max_size() as u64);
        let mut buf = pool.alloc(k as usize).map_err(|_| IoError::Aborted)?.await;
        buf.fill(0);
        let (_, r) = io
            .write(Lba((addr + done) / bs), [buf].into_iter().collect(), fua)
            .await;
        r?;
        done += k;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
