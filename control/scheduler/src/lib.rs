//! Cinder's filter scheduler, over the pools Basalt's datapath nodes report.
//!
//! The control plane keeps one [`Scheduler`]. Each node's volume manager feeds it a
//! [`NodeReport`] every stats interval ([`Scheduler::report`]); a node that has not reported
//! within `service_down_time` (Cinder: 60 s) is down and gets nothing. Placing a volume runs
//! Cinder's pipeline ([`Scheduler::schedule`]):
//!
//! 1. **candidates**: every pool of every node that is up and not disabled; restricted to one
//!    pool when the request names a `resource_backend` (a clone or a volume from a snapshot
//!    must live in its source's volume store);
//! 2. **filters** ([`filters`]): attempted pools (retries), availability zone, capacity (thin
//!    over-subscription and reserved percentage), capabilities against the volume type's
//!    extra specs (Cinder's operators, [`specs`]);
//! 3. **weighers** ([`weighers`]): normalised, multiplied, summed; capacity (spread) by
//!    default;
//! 4. **pick** the highest weight (ties go to the first pool in address order);
//! 5. **consume**: the chosen pool's cached free space shrinks by the volume's size, and its
//!    provisioned and allocated space and volume count grow, so a burst of creates does not
//!    all land on the pool that looked emptiest, until the next report replaces the figures.
//!
//! A failed creation is re-driven by the volume manager with the failed pool added to
//! [`Request::attempted`], up to `max_attempts` (Cinder: 3) in all.
//!
//! The scheduler owns no clock: callers pass `now`, which keeps it deterministic under test.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod filters;
pub mod pool;
pub mod specs;
pub mod weighers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use filters::{DEFAULT_FILTERS, Filter};
pub use pool::{Capacity, NodeReport, PoolId, PoolIdError, PoolReport};
pub use weighers::Weigher;

/// How the scheduler is set up.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The filters, in order.
    pub filters: Vec<Filter>,
    /// The weighers with their multipliers.
    pub weighers: Vec<(Weigher, f64)>,
    /// A node that has not reported for this long is down (Cinder's `service_down_time`).
    pub service_down_time: Duration,
    /// Attempts per request, the first included (Cinder's `scheduler_max_attempts`).
    pub max_attempts: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            filters: DEFAULT_FILTERS.to_vec(),
            weighers: vec![(Weigher::Capacity, Weigher::Capacity.default_multiplier())],
            service_down_time: Duration::from_secs(60),
            max_attempts: 3,
        }
    }
}

/// What is to be placed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Size in GiB (for an extend: the growth, new size minus old).
    pub size_gb: u64,
    /// The availability zone asked for, if any.
    pub availability_zone: Option<String>,
    /// The volume type's extra specs.
    pub extra_specs: BTreeMap<String, String>,
    /// Pools already tried for this request (retries).
    pub attempted: Vec<PoolId>,
    /// The only pool allowed (the source's, for clones and volumes from snapshots).
    pub resource_backend: Option<PoolId>,
}

/// Where a volume goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The pool.
    pub pool: PoolId,
    /// Its weight (for logs).
    pub weight: f64,
    /// The availability zone of its node.
    pub availability_zone: String,
}

/// Why nothing could be placed.
#[derive(Debug, Clone, PartialEq, displaydoc::Display, thiserror::Error)]
pub enum ScheduleError {
    /// No valid backend was found. {0}
    NoValidBackend(String),
    /// Exceeded the maximum number of scheduling attempts ({attempts}) for this request
    TooManyAttempts {
        /// Attempts made.
        attempts: usize,
    },
}

/// One pool as the filters and weighers see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its address.
    pub id: &'a PoolId,
    /// Its figures (with what was consumed since the last report).
    pub pool: &'a PoolReport,
    /// Its node's report (backend-level capabilities).
    pub node: &'a NodeReport,
    /// Its node's availability zone.
    pub availability_zone: &'a str,
}

impl Candidate<'_> {
    /// The capability at `path` (`["thin_provisioning_support"]`, or nested keys of a custom
    /// capability), as the string the extra-spec operators compare. Pool values win over the
    /// node's.
    pub fn capability(&self, path: &[&str]) -> Option<String> {
        let (first, rest) = path.split_first()?;
        let pool = serde_json::to_value(self.pool).ok()?;
        let node_named = match *first {
            "volume_backend_name" => Some(self.node.volume_backend_name.clone()),
            "storage_protocol" => Some(self.node.storage_protocol.clone()),
            "vendor_name" => Some(self.node.vendor_name.clone()),
            "driver_version" => Some(self.node.driver_version.clone()),
            _ => None,
        };
        let mut v = match pool.get(*first) {
            Some(v) => v.clone(),
            None => match node_named {
                Some(s) => serde_json::Value::String(s),
                None => self.node.capabilities.get(*first)?.clone(),
            },
        };
        for key in rest {
            v = v.get(*key)?.clone();
        }
        specs::cap_string(&v)
    }
}

#[derive(Debug, Clone)]
struct NodeState {
    report: NodeReport,
    reported_at: Instant,
    disabled: bool,
}

/// The scheduler: the latest report of every node, and the pipeline.
#[derive(Debug, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
    nodes: BTreeMap<String, NodeState>,
}

/// A pool as the scheduler knows it, for the API's `scheduler-stats/get_pools`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    /// Its address.
    pub id: PoolId,
    /// Its node's availability zone.
    pub availability_zone: String,
    /// The node's backend-level report, without its pools.
    pub backend: NodeReport,
    /// The figures, with what was consumed since the last report.
    pub pool: PoolReport,
    /// Whether its node is up and enabled (it can be scheduled on).
    pub schedulable: bool,
}

impl Scheduler {
    /// A scheduler with no nodes yet.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            nodes: BTreeMap::new(),
        }
    }

    /// Takes a node's report, replacing its previous one (and what was consumed since).
    pub fn report(&mut self, report: NodeReport, now: Instant) {
        let disabled = self.nodes.get(&report.host).is_some_and(|n| n.disabled);
        tracing::debug!(host = %report.host, pools = report.pools.len(), "pool report");
        self.nodes.insert(
            report.host.clone(),
            NodeState {
                report,
                reported_at: now,
                disabled,
            },
        );
    }

    /// Stops (or resumes) placing volumes on `host`; `false` when the host is unknown.
    pub fn set_disabled(&mut self, host: &str, disabled: bool) -> bool {
        match self.nodes.get_mut(host) {
            Some(n) => {
                n.disabled = disabled;
                true
            }
            None => false,
        }
    }

    /// Forgets a node.
    pub fn remove_node(&mut self, host: &str) {
        self.nodes.remove(host);
    }

    /// Whether `host` has reported within `service_down_time` of `now`.
    pub fn is_up(&self, host: &str, now: Instant) -> bool {
        self.nodes.get(host).is_some_and(|n| self.fresh(n, now))
    }

    fn fresh(&self, n: &NodeState, now: Instant) -> bool {
        now.saturating_duration_since(n.reported_at) <= self.config.service_down_time
    }

    /// Every pool known, up or not.
    pub fn pools(&self, now: Instant) -> Vec<PoolView> {
        let mut out = Vec::new();
        for n in self.nodes.values() {
            let mut backend = n.report.clone();
            backend.pools.clear();
            for p in &n.report.pools {
                out.push(PoolView {
                    id: PoolId::new(&n.report.host, &n.report.volume_backend_name, &p.pool_name),
                    availability_zone: n.report.availability_zone.clone(),
                    backend: backend.clone(),
                    pool: p.clone(),
                    schedulable: !n.disabled && self.fresh(n, now),
                });
            }
        }
        out
    }

    fn candidates(&self, now: Instant) -> Vec<(PoolId, &NodeState, &PoolReport)> {
        let mut out = Vec::new();
        for n in self.nodes.values() {
            if n.disabled || !self.fresh(n, now) {
                continue;
            }
            for p in &n.report.pools {
                let id = PoolId::new(&n.report.host, &n.report.volume_backend_name, &p.pool_name);
                out.push((id, n, p));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The pools that pass every filter for `req`, with their weights, best first.
    ///
    /// # Errors
    /// None passes ([`ScheduleError::NoValidBackend`], naming the filter that refused each
    /// pool), or the request has been tried `max_attempts` times.
    pub fn weighed(&self, req: &Request, now: Instant) -> Result<Vec<Placement>, ScheduleError> {
        if req.attempted.len() >= self.config.max_attempts {
            return Err(ScheduleError::TooManyAttempts {
                attempts: req.attempted.len(),
            });
        }
        let all = self.candidates(now);
        if all.is_empty() {
            return Err(ScheduleError::NoValidBackend(
                "No datapath node is up and enabled.".to_owned(),
            ));
        }
        let mut passed: Vec<Candidate<'_>> = Vec::new();
        let mut refused: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for (id, n, p) in &all {
            if let Some(only) = &req.resource_backend
                && only != id
            {
                continue;
            }
            let c = Candidate {
                id,
                pool: p,
                node: &n.report,
                availability_zone: &n.report.availability_zone,
            };
            match self.config.filters.iter().find(|f| !f.passes(&c, req)) {
                Some(f) => refused
                    .entry(f.name())
                    .or_default()
                    .push(filters::describe(id)),
                None => passed.push(c),
            }
        }
        if passed.is_empty() {
            let why = if refused.is_empty() {
                match &req.resource_backend {
                    Some(p) => format!("The pool {p} is not available."),
                    None => "No pool is available.".to_owned(),
                }
            } else {
                refused
                    .iter()
                    .map(|(f, pools)| format!("{f} refused {}.", pools.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            return Err(ScheduleError::NoValidBackend(why));
        }
        let weights = weighers::weigh(&self.config.weighers, &passed, req);
        let mut out: Vec<Placement> = passed
            .iter()
            .zip(weights)
            .map(|(c, w)| Placement {
                pool: c.id.clone(),
                weight: w,
                availability_zone: c.availability_zone.to_owned(),
            })
            .collect();
        // Stable: equal weights keep address order.
        out.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        Ok(out)
    }

    /// Picks a pool for `req` and consumes its size there.
    ///
    /// # Errors
    /// As [`Scheduler::weighed`].
    pub fn schedule(&mut self, req: &Request, now: Instant) -> Result<Placement, ScheduleError> {
        let best = self
            .weighed(req, now)?
            .into_iter()
            .next()
            .ok_or_else(|| ScheduleError::NoValidBackend("No weighed pool.".to_owned()))?;
        self.consume(&best.pool, req.size_gb);
        tracing::info!(pool = %best.pool, size_gb = req.size_gb, weight = best.weight, "scheduled");
        Ok(best)
    }

    /// Whether `pool` passes the filters for `req` (an extend in place: `req.size_gb` is the
    /// growth). Consumes the growth when it does.
    ///
    /// # Errors
    /// The pool is unknown, down, or refused by a filter.
    pub fn backend_passes_filters(
        &mut self,
        pool: &PoolId,
        req: &Request,
        now: Instant,
    ) -> Result<(), ScheduleError> {
        let mut only = req.clone();
        only.resource_backend = Some(pool.clone());
        only.attempted.clear();
        self.weighed(&only, now)?;
        self.consume(pool, req.size_gb);
        Ok(())
    }

    /// Charges `size_gb` to `pool`'s cached figures (Cinder's `consume_from_volume`). Unknown
    /// pools are ignored.
    pub fn consume(&mut self, pool: &PoolId, size_gb: u64) {
        let Some(n) = self.nodes.get_mut(&pool.host) else {
            return;
        };
        if n.report.volume_backend_name != pool.backend {
            return;
        }
        let Some(p) = n.report.pools.iter_mut().find(|p| p.pool_name == pool.pool) else {
            return;
        };
        #[allow(clippy::cast_precision_loss)] // sizes in GiB are far below 2^53
        let gb = size_gb as f64;
        p.allocated_capacity_gb += gb;
        p.provisioned_capacity_gb += gb;
        if let Capacity::Gb(free) = &mut p.free_capacity_gb {
            *free -= gb;
        }
        p.total_volumes += 1;
    }

    /// Gives back what [`Scheduler::consume`] charged, when a placed creation is abandoned
    /// before the next report.
    pub fn release(&mut self, pool: &PoolId, size_gb: u64) {
        let Some(n) = self.nodes.get_mut(&pool.host) else {
            return;
        };
        let Some(p) = n.report.pools.iter_mut().find(|p| p.pool_name == pool.pool) else {
            return;
        };
        #[allow(clippy::cast_precision_loss)] // sizes in GiB are far below 2^53
        let gb = size_gb as f64;
        p.allocated_capacity_gb = (p.allocated_capacity_gb - gb).max(0.0);
        p.provisioned_capacity_gb = (p.provisioned_capacity_gb - gb).max(0.0);
        if let Capacity::Gb(free) = &mut p.free_capacity_gb {
            *free += gb;
        }
        p.total_volumes = p.total_volumes.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests;
