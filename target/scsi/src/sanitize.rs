//! SANITIZE (SBC-3 §5.30): OVERWRITE, BLOCK ERASE, EXIT FAILURE MODE.
//!
//! A sanitize runs in its own task on the reactor of the channel that received it, so it goes
//! on when the command is aborted or the I_T nexus goes away, as SBC-3 requires. While it runs,
//! every command but INQUIRY, REPORT LUNS and REQUEST SENSE gets NOT READY / SANITIZE IN
//! PROGRESS (REQUEST SENSE reports the progress). If it fails, the logical unit enters
//! sanitize failure mode: medium access commands get MEDIUM ERROR / SANITIZE COMMAND FAILED
//! until a sanitize succeeds or, if the failed one had AUSE set, EXIT FAILURE MODE.
//!
//! CRYPTOGRAPHIC ERASE is not offered (service action 03h is INVALID FIELD IN CDB). BLOCK ERASE
//! is offered only on thin logical units whose bdev reports block status, so GET LBA STATUS
//! shows every block deallocated afterwards.

use std::sync::atomic::Ordering;
use std::time::Duration;

use basalt_bdev::{IoKind, Lba};

use crate::Command;
use crate::cdb::SanitizeAction;
use crate::exec::{LuChannel, io_sense, param_bytes};
use crate::limits;
use crate::reply::{Reply, Xfer};
use crate::sense::{Asc, Sense, SenseKey};

enum Job {
    Overwrite {
        pattern: Vec<u8>,
        passes: u8,
        invert: bool,
    },
    BlockErase,
}

fn parse_overwrite(p: &[u8], param_len: u32, block_size: u64) -> Result<Job, Sense> {
    if u64::from(param_len) > block_size + 4 {
        return Err(Sense::invalid_field_in_cdb(7, None));
    }
    if (p.len() as u64) < u64::from(param_len) {
        return Err(Sense::parameter_list_length());
    }
    if p[0] & 0x60 != 0 {
        return Err(Sense::invalid_field_in_param(0, Some(6)));
    }
    let passes = p[0] & 0x1F;
    if passes == 0 {
        return Err(Sense::invalid_field_in_param(0, Some(4)));
    }
    if p[1] != 0 {
        return Err(Sense::invalid_field_in_param(1, None));
    }
    let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if len == 0 || len as u64 > block_size || len + 4 != p.len() {
        return Err(Sense::invalid_field_in_param(2, None));
    }
    Ok(Job::Overwrite {
        pattern: p[4..].to_vec(),
        passes,
        invert: p[0] & 0x80 != 0,
    })
}

/// Clears the running state when the job ends, however it ends.
struct Running<'a> {
    ch: &'a LuChannel,
    ause: bool,
    ok: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let lu = &self.ch.0.lu;
        let mut st = lu.lock();
        st.sanitize.running = false;
        st.sanitize.failed = (!self.ok).then_some(self.ause);
        lu.update_flags(&st);
    }
}

async fn run(ch: LuChannel, job: Job, ause: bool) -> bool {
    let mut running = Running {
        ch: &ch,
        ause,
        ok: false,
    };
    let c = &*ch.0;
    let bs = c.block_size();
    let cap = c.num_blocks();
    let per = (u64::from(limits::CHUNK_BYTES) / bs).max(1);
    let progress = |done: u64, total: u64| {
        let p = (u128::from(done) * 65536 / u128::from(total.max(1))).min(65535);
        c.lu.sanitize_progress.store(p as u16, Ordering::Relaxed);
    };
    let result: Result<(), Sense> = async {
        match job {
            Job::Overwrite {
                pattern,
                passes,
                invert,
            } => {
                let total = cap * u64::from(passes);
                let started = std::time::Instant::now();
                let mut written = 0u64;
                for pass in 0..passes {
                    let flip = invert && pass % 2 == 1;
                    let block: Vec<u8> = pattern
                        .iter()
                        .cycle()
                        .take(bs as usize)
                        .map(|&b| if flip { !b } else { b })
                        .collect();
                    let n = per.min(cap);
                    let mut chunk = Vec::with_capacity((n * bs) as usize);
                    for _ in 0..n {
                        chunk.extend_from_slice(&block);
                    }
                    let mut done = 0;
                    while done < cap {
                        let k = per.min(cap - done);
                        c.write_data(done, &chunk[..(k * bs) as usize], false)
                            .await?;
                        done += k;
                        written += k * bs;
                        progress(u64::from(pass) * cap + done, total);
                        let rate = c.lu.sanitize_bandwidth.load(Ordering::Relaxed);
                        if rate > 0 {
                            let due = Duration::from_secs_f64(written as f64 / rate as f64);
                            basalt_engine::sleep_until(started + due).await;
                        }
                    }
                }
                let fut = c.io.borrow().flush();
                let (_, res) = fut.await;
                res.map_err(|e| io_sense(&e, IoKind::Flush, 0))
            }
            Job::BlockErase => {
                let step = u64::from(limits::MAX_UNMAP_BLOCKS);
                let mut done = 0;
                while done < cap {
                    let k = step.min(cap - done);
                    let (_, res) = c.guarded(done, k, |io| io.unmap(Lba(done), k)).await;
                    res.map_err(|e| io_sense(&e, IoKind::Unmap, done))?;
                    done += k;
                    progress(done, cap);
                }
                Ok(())
            }
        }
    }
    .await;
    if let Err(s) = &result {
        tracing::error!(
            ?s,
            "SANITIZE failed; the logical unit is in sanitize failure mode"
        );
    }
    running.ok = result.is_ok();
    running.ok
}

/// Runs SANITIZE.
pub(crate) async fn sanitize(
    ch: &LuChannel,
    cmd: &Command<'_>,
    immed: bool,
    ause: bool,
    action: SanitizeAction,
    param_len: u32,
) -> Reply {
    let c = &*ch.0;
    let lu = &c.lu;
    let x = Xfer::Out(u64::from(param_len));
    let bad_sa = Sense::invalid_field_in_cdb(1, Some(4));
    let job = match action {
        SanitizeAction::ExitFailureMode => {
            let mut st = lu.lock();
            if st.sanitize.failed == Some(false) {
                return Reply::check(bad_sa, x);
            }
            st.sanitize.failed = None;
            lu.update_flags(&st);
            return Reply::good(x);
        }
        SanitizeAction::BlockErase if !lu.block_erase => return Reply::check(bad_sa, x),
        SanitizeAction::BlockErase => Ok(Job::BlockErase),
        SanitizeAction::Overwrite => {
            parse_overwrite(param_bytes(cmd, param_len), param_len, c.block_size())
        }
    };
    let job = match c.check_writable().and(job) {
        Ok(job) => job,
        Err(s) => return Reply::check(s, x),
    };
    {
        let mut st = lu.lock();
        if st.sanitize.running {
            return Reply::check(lu.sanitize_sense(), x);
        }
        st.sanitize.running = true;
        st.sanitize.failed = None;
        lu.sanitize_progress.store(0, Ordering::Relaxed);
        lu.update_flags(&st);
    }
    let handle = basalt_engine::spawn(run(ch.clone(), job, ause));
    if immed {
        drop(handle);
        return Reply::good(x);
    }
    match handle.await {
        Ok(true) => Reply::good(x),
        Ok(false) | Err(_) => Reply::check(
            Sense::new(SenseKey::MediumError, Asc::SANITIZE_COMMAND_FAILED),
            x,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_parameter_checks() {
        let bs = 512;
        let mut p = vec![0x01, 0, 0x02, 0x00];
        p.extend(vec![0xAA; 512]);
        assert!(matches!(
            parse_overwrite(&p, 516, bs),
            Ok(Job::Overwrite {
                passes: 1,
                invert: false,
                ..
            })
        ));
        assert_eq!(
            parse_overwrite(&p, 517, bs).err(),
            Some(Sense::invalid_field_in_cdb(7, None))
        );
        let mut q = p.clone();
        q[0] = 0;
        assert_eq!(
            parse_overwrite(&q, 516, bs).err(),
            Some(Sense::invalid_field_in_param(0, Some(4)))
        );
        let mut q = p.clone();
        q[0] = 0x21;
        assert_eq!(
            parse_overwrite(&q, 516, bs).err(),
            Some(Sense::invalid_field_in_param(0, Some(6)))
        );
        let mut q = p.clone();
        q[2] = 0;
        q[3] = 0;
        assert_eq!(
            parse_overwrite(&q, 516, bs).err(),
            Some(Sense::invalid_field_in_param(2, None))
        );
        let mut q = p.clone();
        q[2] = 0x02;
        q[3] = 0x04;
        assert_eq!(
            parse_overwrite(&q, 516, bs).err(),
            Some(Sense::invalid_field_in_param(2, None))
        );
        let short = [0x01, 0, 0, 4, 1, 2, 3, 4];
        assert!(parse_overwrite(&short, 8, bs).is_ok());
        assert_eq!(
            parse_overwrite(&short[..6], 8, bs).err(),
            Some(Sense::parameter_list_length())
        );
    }
}
