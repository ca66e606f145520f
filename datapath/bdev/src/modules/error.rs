//! `error`: stacks on another bdev and fails chosen I/Os, for testing every error path above.
//!
//! Rules select I/Os by operation, by block range (any overlap) and by probability, optionally
//! for a limited number of hits, and say which error to return. Rules can be replaced while I/O
//! runs: each core's channel notices a new rule-set version with one atomic load per I/O and
//! takes no lock otherwise. I/Os that no rule selects pass through untouched.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::io::{ChannelImpl, IoKind, IoSlot};
use crate::{Bdev, BdevError, Geometry, IoError};

/// The error an injection produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectedError {
    /// A device error (EIO): medium error on the wire.
    #[default]
    Media,
    /// The backing store ran out of space.
    NoSpace,
    /// An explicitly injected failure.
    Injected,
}

/// Which I/Os fail, and how.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// Operations this rule applies to; empty means all.
    #[serde(default)]
    pub ops: Vec<IoKind>,
    /// First block of the range (inclusive); default 0.
    #[serde(default)]
    pub lba_start: u64,
    /// End of the range (exclusive); default the end of the device.
    #[serde(default)]
    pub lba_end: Option<u64>,
    /// Chance that a selected I/O fails, 0.0 to 1.0; default 1.0.
    #[serde(default = "one")]
    pub probability: f64,
    /// Fail at most this many I/Os; default unlimited.
    #[serde(default)]
    pub count: Option<u64>,
    /// The error to return.
    #[serde(default)]
    pub error: InjectedError,
}

fn one() -> f64 {
    1.0
}

impl ErrorRule {
    /// Fails every I/O of the given kinds (all kinds if empty).
    pub fn always(ops: &[IoKind]) -> ErrorRule {
        ErrorRule {
            ops: ops.to_vec(),
            lba_start: 0,
            lba_end: None,
            probability: 1.0,
            count: None,
            error: InjectedError::Media,
        }
    }

    fn validate(&self) -> Result<(), BdevError> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(BdevError::Config(format!(
                "probability {} is not within 0..=1",
                self.probability
            )));
        }
        if let Some(end) = self.lba_end
            && end <= self.lba_start
        {
            return Err(BdevError::Config(format!(
                "empty range {}..{end}",
                self.lba_start
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct LiveRule {
    rule: ErrorRule,
    remaining: AtomicU64,
}

#[derive(Debug, Default)]
struct RuleSet {
    version: AtomicU64,
    rules: Mutex<Arc<Vec<LiveRule>>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ErrorBdev {
    name: String,
    base: Arc<dyn Bdev>,
    rules: Arc<RuleSet>,
    injected: Arc<AtomicU64>,
    seed: u64,
}

impl ErrorBdev {
    /// Stacks an error injector named `name` on `base`.
    ///
    /// # Errors
    /// An invalid rule.
    pub fn new(
        name: &str,
        base: Arc<dyn Bdev>,
        rules: Vec<ErrorRule>,
        seed: u64,
    ) -> Result<ErrorBdev, BdevError> {
        let bdev = ErrorBdev {
            name: name.to_owned(),
            base,
            rules: Arc::default(),
            injected: Arc::default(),
            seed,
        };
        bdev.set_rules(rules)?;
        Ok(bdev)
    }

    /// Replaces the rules; every core picks them up at its next I/O.
    ///
    /// # Errors
    /// An invalid rule (the old rules stay).
    pub fn set_rules(&self, rules: Vec<ErrorRule>) -> Result<(), BdevError> {
        for r in &rules {
            r.validate()?;
        }
        let live = rules
            .into_iter()
            .map(|rule| LiveRule {
                remaining: AtomicU64::new(rule.count.unwrap_or(u64::MAX)),
                rule,
            })
            .collect();
        *self
            .rules
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(live);
        self.rules.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// I/Os failed so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

struct ErrorChannel {
    inner: Rc<dyn ChannelImpl>,
    set: Arc<RuleSet>,
    cached: RefCell<(u64, Arc<Vec<LiveRule>>)>,
    injected: Arc<AtomicU64>,
    rng: Cell<u64>,
}

impl ErrorChannel {
    fn next_random(&self) -> f64 {
        // xorshift64*: cheap, per core, good enough to pick I/Os.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn verdict(&self, kind: IoKind, lba: u64, blocks: u64) -> Option<IoError> {
        let version = self.set.version.load(Ordering::Acquire);
        if self.cached.borrow().0 != version {
            let rules = self
                .set
                .rules
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            *self.cached.borrow_mut() = (version, rules);
        }
        let cached = self.cached.borrow();
        for live in cached.1.iter() {
            let r = &live.rule;
            if !r.ops.is_empty() && !r.ops.contains(&kind) {
                continue;
            }
            let end = lba + blocks.max(1);
            if end <= r.lba_start || r.lba_end.is_some_and(|e| lba >= e) {
                continue;
            }
            if r.probability < 1.0 && self.next_random() >= r.probability {
                continue;
            }
            let took = live
                .remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if took.is_err() {
                continue;
            }
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Some(match r.error {
                InjectedError::Media => IoError::Media {
                    kind,
                    errno: libc::EIO,
                },
                InjectedError::NoSpace => IoError::NoSpace,
                InjectedError::Injected => IoError::Injected(kind),
            });
        }
        None
    }
}

impl ChannelImpl for ErrorChannel {
    fn submit(&self, slot: IoSlot) {
        let (kind, lba, blocks) = slot.with(|r| (r.kind, r.lba.0, r.blocks));
        match self.verdict(kind, lba, blocks) {
            Some(err) => slot.complete(Err(err)),
            None => self.inner.submit(slot),
        }
    }

    fn close(&self) {
        self.inner.close();
    }
}

impl Bdev for ErrorBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.base.geometry()
    }

    fn open_channel(&self) -> Result<Rc<dyn ChannelImpl>, BdevError> {
        let core = basalt_engine::try_current().map_or(0, |r| r.index() as u64);
        let rules = self
            .rules
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Ok(Rc::new(ErrorChannel {
            inner: self.base.open_channel()?,
            set: self.rules.clone(),
            cached: RefCell::new((self.rules.version.load(Ordering::Acquire), rules)),
            injected: self.injected.clone(),
            rng: Cell::new((self.seed ^ (core + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1),
        }))
    }
}
