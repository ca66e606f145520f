use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn specs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn req(size: u64) -> Request {
    Request {
        size_gb: size,
        ..Request::default()
    }
}

fn two_nodes(now: Instant) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.report(
        NodeReport::basalt("n1", "nova", vec![PoolReport::thin("pool", 100.0, 100.0)]),
        now,
    );
    s.report(
        NodeReport::basalt("n2", "nova", vec![PoolReport::thin("pool", 100.0, 100.0)]),
        now,
    );
    s
}

#[test]
fn volumes_spread_over_equal_nodes() {
    let now = Instant::now();
    let mut s = two_nodes(now);
    let mut hosts = Vec::new();
    for _ in 0..6 {
        hosts.push(s.schedule(&req(10), now).expect("placed").pool.host);
    }
    assert_eq!(hosts, ["n1", "n2", "n1", "n2", "n1", "n2"]);
    let views = s.pools(now);
    assert_eq!(views.len(), 2);
    for v in views {
        assert_eq!(v.pool.total_volumes, 3);
        assert_eq!(v.pool.provisioned_capacity_gb, 30.0);
        assert_eq!(v.pool.free_capacity_gb, Capacity::Gb(70.0));
        assert!(v.schedulable);
    }
}

#[test]
fn a_node_that_stops_reporting_gets_nothing() {
    let t0 = Instant::now();
    let mut s = two_nodes(t0);
    let later = t0 + Duration::from_secs(61);
    // Only n2 reports again.
    s.report(
        NodeReport::basalt("n2", "nova", vec![PoolReport::thin("pool", 100.0, 100.0)]),
        later,
    );
    assert!(!s.is_up("n1", later));
    assert!(s.is_up("n2", later));
    for _ in 0..4 {
        assert_eq!(s.schedule(&req(1), later).expect("placed").pool.host, "n2");
    }
    assert!(
        s.pools(later)
            .iter()
            .any(|v| v.id.host == "n1" && !v.schedulable)
    );
    // Both silent: nothing to schedule on, and the message says so.
    let much_later = later + Duration::from_secs(120);
    let e = s.schedule(&req(1), much_later).expect_err("nobody up");
    assert!(
        e.to_string().starts_with("No valid backend was found."),
        "{e}"
    );
}

#[test]
fn a_disabled_node_gets_nothing() {
    let now = Instant::now();
    let mut s = two_nodes(now);
    assert!(s.set_disabled("n1", true));
    assert!(!s.set_disabled("nope", true));
    // A new report keeps the node disabled.
    s.report(
        NodeReport::basalt("n1", "nova", vec![PoolReport::thin("pool", 500.0, 500.0)]),
        now,
    );
    for _ in 0..3 {
        assert_eq!(s.schedule(&req(1), now).expect("placed").pool.host, "n2");
    }
    s.set_disabled("n1", false);
    assert_eq!(s.schedule(&req(1), now).expect("placed").pool.host, "n1");
}

#[test]
fn thin_pools_over_subscribe_up_to_the_ratio() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut p = PoolReport::thin("pool", 100.0, 100.0);
    p.max_over_subscription_ratio = 2.0;
    p.provisioned_capacity_gb = 150.0;
    s.report(NodeReport::basalt("n1", "nova", vec![p]), now);
    // 150 + 50 = 200 = 100 x 2: fits exactly.
    assert!(s.weighed(&req(50), now).is_ok());
    let e = s.weighed(&req(51), now).expect_err("over the ratio");
    assert!(
        e.to_string()
            .contains("CapacityFilter refused n1@basalt#pool"),
        "{e}"
    );
}

#[test]
fn the_reserve_is_never_scheduled() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut p = PoolReport::thin("pool", 100.0, 100.0);
    p.thin_provisioning_support = false;
    p.reserved_percentage = 10.0;
    s.report(NodeReport::basalt("n1", "nova", vec![p]), now);
    assert!(s.weighed(&req(90), now).is_ok());
    assert!(s.weighed(&req(91), now).is_err());
    // A thin pool with a ratio below 1 is refused outright.
    let mut q = PoolReport::thin("pool", 100.0, 100.0);
    q.max_over_subscription_ratio = 0.5;
    s.report(NodeReport::basalt("n1", "nova", vec![q]), now);
    assert!(s.weighed(&req(1), now).is_err());
}

#[test]
fn thick_types_need_real_free_space() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut p = PoolReport::thin("pool", 100.0, 20.0);
    p.provisioned_capacity_gb = 500.0;
    p.max_over_subscription_ratio = 20.0;
    s.report(NodeReport::basalt("n1", "nova", vec![p.clone()]), now);
    let mut r = req(30);
    assert!(s.weighed(&r, now).is_ok(), "thin: 2000 - 500 virtual free");
    r.extra_specs = specs(&[("provisioning:type", "thick")]);
    assert!(s.weighed(&r, now).is_err(), "thick: only 20 free");
    r.size_gb = 20;
    p.provisioned_capacity_gb = 0.0;
    s.report(NodeReport::basalt("n1", "nova", vec![p.clone()]), now);
    assert!(s.weighed(&r, now).is_ok());
    // A pool without thick support cannot hold a thick volume.
    p.thick_provisioning_support = false;
    s.report(NodeReport::basalt("n1", "nova", vec![p]), now);
    assert!(s.weighed(&r, now).is_err());
}

#[test]
fn infinite_and_unknown_capacity_pass_but_weigh_least() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut inf = PoolReport::thin("inf", 1.0, 1.0);
    inf.total_capacity_gb = Capacity::Infinite;
    inf.free_capacity_gb = Capacity::Infinite;
    let mut unk = PoolReport::thin("unk", 1.0, 1.0);
    unk.free_capacity_gb = Capacity::Unknown;
    s.report(
        NodeReport::basalt(
            "n1",
            "nova",
            vec![inf, unk, PoolReport::thin("real", 10.0, 10.0)],
        ),
        now,
    );
    let w = s.weighed(&req(5), now).expect("all pass");
    assert_eq!(w.len(), 3);
    assert_eq!(w[0].pool.pool, "real");
    // Too big for the real pool: the others still take it.
    let w = s.weighed(&req(5000), now).expect("infinite passes");
    assert_eq!(w.len(), 2);
}

#[test]
fn capabilities_follow_cinder_scoping_and_operators() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut fast = PoolReport::thin("fast", 100.0, 100.0);
    fast.extra.insert("media".into(), serde_json::json!("nvme"));
    fast.extra
        .insert("qos".into(), serde_json::json!({"max_iops": 100_000}));
    let slow = PoolReport::thin("slow", 1000.0, 1000.0);
    let mut node = NodeReport::basalt("n1", "nova", vec![fast, slow]);
    node.capabilities
        .insert("compression".into(), serde_json::json!(false));
    s.report(node, now);

    let place = |s: &Scheduler, pairs: &[(&str, &str)]| -> Result<Vec<String>, ScheduleError> {
        let mut r = req(1);
        r.extra_specs = specs(pairs);
        Ok(s.weighed(&r, now)?
            .into_iter()
            .map(|p| p.pool.pool)
            .collect())
    };
    assert_eq!(
        place(&s, &[("volume_backend_name", "basalt")])
            .expect("ok")
            .len(),
        2
    );
    assert!(place(&s, &[("volume_backend_name", "lvmdriver-1")]).is_err());
    assert_eq!(place(&s, &[("media", "nvme")]).expect("ok"), ["fast"]);
    assert_eq!(
        place(&s, &[("capabilities:media", "s== nvme")]).expect("ok"),
        ["fast"]
    );
    assert_eq!(
        place(&s, &[("capabilities:qos:max_iops", ">= 50000")]).expect("ok"),
        ["fast"]
    );
    assert_eq!(
        place(
            &s,
            &[("capabilities:thin_provisioning_support", "<is> True")]
        )
        .expect("ok")
        .len(),
        2
    );
    assert_eq!(
        place(&s, &[("multiattach", "<is> True")])
            .expect("ok")
            .len(),
        2
    );
    assert_eq!(
        place(&s, &[("compression", "<is> False")])
            .expect("ok")
            .len(),
        2
    );
    assert_eq!(
        place(&s, &[("storage_protocol", "<in> iSCSI")])
            .expect("ok")
            .len(),
        2
    );
    // A node serving iSCSI and NVMe-oF matches either, in any of Cinder's spellings.
    for want in [
        "iSCSI",
        "iscsi",
        "NVMe-oF",
        "nvmeof",
        "capabilities:storage_protocol",
    ] {
        let (key, value) = if want.starts_with("capabilities:") {
            (want, "iSCSI")
        } else {
            ("storage_protocol", want)
        };
        assert_eq!(place(&s, &[(key, value)]).expect("ok").len(), 2, "{want}");
    }
    assert!(place(&s, &[("storage_protocol", "FC")]).is_err());
    // Keys in other scopes are not capabilities.
    assert_eq!(
        place(
            &s,
            &[
                ("vendor:feature", "x"),
                ("RESKEY:foo", "y"),
                ("qos:read_iops", "1")
            ]
        )
        .expect("ok")
        .len(),
        2
    );
    // An unscoped key the pool does not have refuses it.
    let e = place(&s, &[("replication_enabled", "<is> True")]).expect_err("nobody has it");
    assert!(e.to_string().contains("CapabilitiesFilter"), "{e}");
}

#[test]
fn availability_zones() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.report(
        NodeReport::basalt("a1", "az-a", vec![PoolReport::thin("p", 10.0, 10.0)]),
        now,
    );
    s.report(
        NodeReport::basalt("b1", "az-b", vec![PoolReport::thin("p", 10.0, 10.0)]),
        now,
    );
    let mut r = req(1);
    r.availability_zone = Some("az-b".into());
    let p = s.schedule(&r, now).expect("placed");
    assert_eq!(
        (p.pool.host.as_str(), p.availability_zone.as_str()),
        ("b1", "az-b")
    );
    r.availability_zone = Some("az-c".into());
    let e = s.weighed(&r, now).expect_err("no such zone");
    assert!(e.to_string().contains("AvailabilityZoneFilter"), "{e}");
    // The type's zone list wins over the request's zone.
    r.extra_specs = specs(&[("RESKEY:availability_zones", "az-c, az-a")]);
    assert_eq!(s.schedule(&r, now).expect("placed").pool.host, "a1");
}

#[test]
fn retries_skip_attempted_pools_and_stop_at_the_limit() {
    let now = Instant::now();
    let mut s = two_nodes(now);
    let mut r = req(1);
    let first = s.schedule(&r, now).expect("placed").pool;
    r.attempted.push(first.clone());
    let second = s.schedule(&r, now).expect("placed").pool;
    assert_ne!(first, second);
    r.attempted.push(second);
    let e = s.schedule(&r, now).expect_err("both tried");
    assert!(e.to_string().contains("IgnoreAttemptedHostsFilter"), "{e}");
    r.attempted.push(first);
    assert_eq!(
        s.schedule(&r, now),
        Err(ScheduleError::TooManyAttempts { attempts: 3 })
    );
}

#[test]
fn clones_stay_in_their_source_pool() {
    let now = Instant::now();
    let mut s = two_nodes(now);
    let src: PoolId = "n2@basalt#pool".parse().expect("id");
    let mut r = req(1);
    r.resource_backend = Some(src.clone());
    for _ in 0..3 {
        assert_eq!(s.schedule(&r, now).expect("placed").pool, src);
    }
    r.resource_backend = Some("n3@basalt#pool".parse().expect("id"));
    let e = s.schedule(&r, now).expect_err("unknown pool");
    assert!(e.to_string().contains("n3@basalt#pool"), "{e}");
}

#[test]
fn extend_in_place_checks_and_consumes_the_growth() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut p = PoolReport::thin("pool", 100.0, 100.0);
    p.thin_provisioning_support = false;
    s.report(NodeReport::basalt("n1", "nova", vec![p]), now);
    let id: PoolId = "n1@basalt#pool".parse().expect("id");
    s.backend_passes_filters(&id, &req(60), now).expect("fits");
    assert!(s.backend_passes_filters(&id, &req(60), now).is_err());
    s.release(&id, 60);
    s.backend_passes_filters(&id, &req(60), now)
        .expect("fits again");
}

#[test]
fn capacity_weigher_can_stack_instead_of_spread() {
    let now = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig {
        weighers: vec![(Weigher::Capacity, -1.0)],
        ..SchedulerConfig::default()
    });
    s.report(
        NodeReport::basalt("n1", "nova", vec![PoolReport::thin("pool", 100.0, 100.0)]),
        now,
    );
    s.report(
        NodeReport::basalt("n2", "nova", vec![PoolReport::thin("pool", 200.0, 200.0)]),
        now,
    );
    for _ in 0..3 {
        assert_eq!(s.schedule(&req(10), now).expect("placed").pool.host, "n1");
    }
}

proptest! {
    /// Thick placements never overfill a pool, and every volume that fits somewhere is placed.
    #[test]
    fn thick_placements_never_overfill(
        frees in proptest::collection::vec(0u32..200, 1..5),
        sizes in proptest::collection::vec(1u64..80, 1..40),
    ) {
        let now = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        for (i, f) in frees.iter().enumerate() {
            let mut p = PoolReport::thin("pool", 200.0, f64::from(*f));
            p.thin_provisioning_support = false;
            s.report(NodeReport::basalt(&format!("n{i}"), "nova", vec![p]), now);
        }
        let mut left: Vec<f64> = frees.iter().map(|f| f64::from(*f)).collect();
        for size in sizes {
            #[allow(clippy::cast_precision_loss)]
            let gb = size as f64;
            let fits_somewhere = left.iter().any(|l| *l >= gb);
            match s.schedule(&req(size), now) {
                Ok(p) => {
                    let i: usize = p.pool.host[1..].parse().expect("index");
                    prop_assert!(left[i] >= gb, "placed {size} on {i} with {} left", left[i]);
                    left[i] -= gb;
                    // Spread: nobody else had more room.
                    prop_assert!(left.iter().enumerate().all(|(j, l)| j == i || *l <= left[i] + gb));
                }
                Err(e) => prop_assert!(!fits_somewhere, "refused {size}: {e}"),
            }
        }
    }
}
