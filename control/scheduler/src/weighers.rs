//! The weighers: each gives every pool that passed the filters a raw value; the values are
//! normalised to [0, 1] across the candidates, multiplied by the weigher's multiplier and
//! summed; the highest sum wins (`cinder/scheduler/weights/`, `OrderedHostWeightHandler`).

use crate::filters::{capacity_factors, thin_for};
use crate::{Candidate, Request};

/// A weigher of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weigher {
    /// `CapacityWeigher`: the virtual free capacity. With a positive multiplier (Cinder's
    /// default 1.0) volumes spread onto the most free space; negative stacks them.
    Capacity,
    /// `AllocatedCapacityWeigher`: allocated GiB (default multiplier −1.0: fewest wins).
    AllocatedCapacity,
    /// `VolumeNumberWeigher`: number of volumes (default multiplier −1.0).
    VolumeNumber,
}

impl Weigher {
    /// The multiplier Cinder uses by default.
    pub fn default_multiplier(self) -> f64 {
        match self {
            Weigher::Capacity => 1.0,
            Weigher::AllocatedCapacity | Weigher::VolumeNumber => -1.0,
        }
    }

    fn raw(self, c: &Candidate<'_>, req: &Request, multiplier: f64) -> f64 {
        match self {
            Weigher::Capacity => match capacity_factors(c, thin_for(c, req)) {
                Some(f) => f.virtual_free,
                // Infinite or unknown capacity gets the lowest weight, so that drivers are
                // not rewarded for not reporting.
                None if multiplier > 0.0 => -1.0,
                None => f64::INFINITY,
            },
            Weigher::AllocatedCapacity => c.pool.allocated_capacity_gb,
            #[allow(clippy::cast_precision_loss)] // volume counts are far below 2^53
            Weigher::VolumeNumber => c.pool.total_volumes as f64,
        }
    }
}

/// Normalises `values` to [0, 1]: all zeros when they are all equal. An infinite value (only
/// the capacity weigher makes them) is replaced by the largest finite one plus a tenth of the
/// range, as Cinder does.
pub fn normalize(values: &mut [f64]) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (min, max) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if values.iter().any(|v| v.is_infinite()) {
        if !min.is_finite() {
            // Every value infinite: no preference.
            values.iter_mut().for_each(|v| *v = 0.0);
            return;
        }
        let top = max + (max - min) * 0.1;
        values
            .iter_mut()
            .filter(|v| v.is_infinite())
            .for_each(|v| *v = top);
        return normalize(values);
    }
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
        values.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    values
        .iter_mut()
        .for_each(|v| *v = (*v - min) / (max - min));
}

/// The summed weight of each candidate, in the candidates' order.
pub fn weigh(weighers: &[(Weigher, f64)], candidates: &[Candidate<'_>], req: &Request) -> Vec<f64> {
    let mut total = vec![0.0; candidates.len()];
    for &(w, multiplier) in weighers {
        let mut raw: Vec<f64> = candidates
            .iter()
            .map(|c| w.raw(c, req, multiplier))
            .collect();
        normalize(&mut raw);
        for (t, r) in total.iter_mut().zip(raw) {
            *t += multiplier * r;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_maps_onto_zero_one() {
        let mut v = [10.0, 20.0, 15.0];
        normalize(&mut v);
        assert_eq!(v, [0.0, 1.0, 0.5]);
        let mut same = [3.0, 3.0];
        normalize(&mut same);
        assert_eq!(same, [0.0, 0.0]);
        let mut inf = [0.0, 10.0, f64::INFINITY];
        normalize(&mut inf);
        assert_eq!(inf[2], 1.0);
        assert!(inf[1] < 1.0 && inf[1] > 0.9);
        let mut all_inf = [f64::INFINITY, f64::INFINITY];
        normalize(&mut all_inf);
        assert_eq!(all_inf, [0.0, 0.0]);
        let mut empty: [f64; 0] = [];
        normalize(&mut empty);
    }
}
