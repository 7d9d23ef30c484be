use super::*;
use core::time::Duration;
use lb_core::{Endpoint, HealthStatus, Outcome};
use std::string::ToString;

const SEC: Duration = Duration::from_secs(1);

fn set(n: u16) -> EndpointSet {
    EndpointSet::new(
        (0..n).map(|p| Endpoint::new(core::net::SocketAddr::from(([10, 0, 0, 1], 1000 + p)))),
        Timestamp::ZERO,
    )
}

fn report(outcome: Outcome, at: Timestamp) -> Report {
    Report { outcome, latency: Duration::from_millis(1), at }
}

fn hit(d: &OutlierDetector, index: usize, outcome: Outcome, times: u32, at: Timestamp) {
    for _ in 0..times {
        d.record(index, &report(outcome, at));
    }
}

#[test]
fn five_consecutive_5xx_eject_and_a_success_breaks_the_run() {
    let s = set(10);
    let d = OutlierDetector::new(OutlierConfig::default(), s.clone());
    hit(&d, 3, Outcome::Http5xx(500), 4, Timestamp::ZERO);
    hit(&d, 3, Outcome::Success, 1, Timestamp::ZERO);
    hit(&d, 3, Outcome::Http5xx(500), 4, Timestamp::ZERO);
    assert!(!d.is_ejected(3));
    assert!(d.record(3, &report(Outcome::Timeout, Timestamp::ZERO)), "timeouts count as 5xx when not split");
    assert_eq!(s.get(3).unwrap().state().status(), HealthStatus::Ejected);
    assert_eq!(d.ejected_count(), 1);
    assert!(!d.record(3, &report(Outcome::Http5xx(500), Timestamp::ZERO)), "already out");
}

#[test]
fn an_ejection_at_the_end_of_time_still_counts() {
    // The clock saturates there; the ejection's start must not read as "not ejected".
    let s = set(10);
    let d = OutlierDetector::new(OutlierConfig::default(), s.clone());
    let end = Timestamp::from_nanos(u64::MAX);
    hit(&d, 3, Outcome::Http5xx(500), 5, end);
    assert!(d.is_ejected(3));
    assert!(!d.record(3, &report(Outcome::Http5xx(500), end)), "already out");
    assert_eq!(d.ejected_count(), 1);
}

#[test]
fn a_returned_host_needs_a_whole_new_run_to_be_ejected_again() {
    let s = set(10);
    let d = OutlierDetector::new(OutlierConfig::default(), s.clone());
    d.tick(Timestamp::ZERO);
    hit(&d, 3, Outcome::Http5xx(500), 5, Timestamp::ZERO);
    assert!(d.is_ejected(3));
    assert_eq!(d.tick(Timestamp::ZERO + 30 * SEC).returned, 1);
    hit(&d, 3, Outcome::Http5xx(500), 4, Timestamp::ZERO + 31 * SEC);
    assert!(!d.is_ejected(3), "the run that ejected it does not count again");
    hit(&d, 3, Outcome::Http5xx(500), 1, Timestamp::ZERO + 31 * SEC);
    assert!(d.is_ejected(3));
}

#[test]
fn ejection_time_grows_with_repeats_is_capped_and_decays() {
    let config = OutlierConfig { max_ejection_time: 70 * SEC, ..OutlierConfig::consecutive_failures(1) };
    assert_eq!(config.ejection_time(1), 30 * SEC);
    assert_eq!(config.ejection_time(2), 60 * SEC);
    assert_eq!(config.ejection_time(3), 70 * SEC, "capped");
    let s = set(1);
    let d = OutlierDetector::new(config, s.clone());
    assert_eq!(d.config().max_ejection_time, 70 * SEC, "the detector keeps its config");
    let mut now = Timestamp::ZERO;
    d.tick(now);
    for expected in [30, 60, 70] {
        hit(&d, 0, Outcome::Reset, 1, now);
        assert!(d.is_ejected(0));
        d.tick(now + (expected - 1) * SEC);
        assert!(d.is_ejected(0), "still out just before {expected} s");
        now = now + expected * SEC;
        assert_eq!(d.tick(now).returned, 1);
        assert!(s.get(0).unwrap().state().is_eligible());
    }
    assert_eq!(d.ejection_multiplier(0), 3);
    for _ in 0..2 {
        now = now + 10 * SEC;
        assert!(d.tick(now).interval_ran);
    }
    assert_eq!(d.ejection_multiplier(0), 1, "each healthy interval gives one back (gRFC A50)");
}

#[test]
fn at_most_max_percent_are_ejected_but_always_one() {
    let s = set(5);
    let d = OutlierDetector::new(OutlierConfig::consecutive_failures(1), s.clone());
    for i in 0..5 {
        hit(&d, i, Outcome::ConnectError, 1, Timestamp::ZERO);
    }
    assert_eq!(d.ejected_count(), 1, "10 % of 5 rounds down to 0, yet one may go");
    let s = set(25);
    let d = OutlierDetector::new(OutlierConfig::consecutive_failures(1), s.clone());
    for i in 0..25 {
        hit(&d, i, Outcome::ConnectError, 1, Timestamp::ZERO);
    }
    assert_eq!(d.ejected_count(), 3, "ejecting while under 10 % of 25");
    assert_eq!(s.iter().filter(|m| !m.state().is_eligible()).count(), 3);
}

#[test]
fn gateway_and_split_local_origin_detectors() {
    let config = OutlierConfig {
        consecutive_5xx: None,
        consecutive_gateway_failure: Some(3),
        split_local_origin: true,
        consecutive_local_origin_failure: Some(2),
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    };
    let d = OutlierDetector::new(config, set(3));
    hit(&d, 0, Outcome::Http5xx(502), 2, Timestamp::ZERO);
    hit(&d, 0, Outcome::Http5xx(500), 1, Timestamp::ZERO);
    hit(&d, 0, Outcome::Http5xx(504), 2, Timestamp::ZERO);
    assert!(!d.is_ejected(0), "a 500 ended the gateway run");
    hit(&d, 0, Outcome::Http5xx(503), 1, Timestamp::ZERO);
    assert!(d.is_ejected(0));
    hit(&d, 1, Outcome::ConnectError, 1, Timestamp::ZERO);
    hit(&d, 1, Outcome::Http5xx(502), 1, Timestamp::ZERO);
    hit(&d, 1, Outcome::Timeout, 1, Timestamp::ZERO);
    assert!(!d.is_ejected(1), "an answer ended the local-origin run");
    hit(&d, 1, Outcome::Timeout, 1, Timestamp::ZERO);
    assert!(d.is_ejected(1));
    hit(&d, 2, Outcome::ConnectError, 1, Timestamp::ZERO);
    hit(&d, 2, Outcome::LocallyRejected, 10, Timestamp::ZERO);
    assert!(!d.is_ejected(2), "our own rejections blame nobody");
}

#[test]
fn success_rate_ejects_the_host_far_below_its_peers() {
    let s = set(6);
    let d = OutlierDetector::new(
        OutlierConfig { max_ejection_percent: 50, ..OutlierConfig::default() },
        s.clone(),
    );
    assert!(!d.tick(Timestamp::ZERO).interval_ran, "the first tick starts the clock");
    for i in 0..6 {
        let failures = if i == 4 { 40 } else { i as u32 };
        // Interleave so no consecutive-5xx streak forms.
        for n in 0..100 {
            let outcome =
                if n % 2 == 0 && n / 2 < failures { Outcome::Http5xx(500) } else { Outcome::Success };
            d.record(i, &report(outcome, Timestamp::ZERO));
        }
    }
    assert_eq!(
        d.tick(Timestamp::ZERO + 5 * SEC),
        TickSummary { interval_ran: false, ejected: 0, returned: 0 }
    );
    let summary = d.tick(Timestamp::ZERO + 10 * SEC);
    assert_eq!(summary, TickSummary { interval_ran: true, ejected: 1, returned: 0 });
    assert!(d.is_ejected(4));
    // Too few hosts with volume: nothing happens.
    hit(&d, 0, Outcome::Success, 100, Timestamp::ZERO);
    hit(&d, 1, Outcome::Http5xx(500), 1, Timestamp::ZERO);
    assert_eq!(d.on_interval(Timestamp::ZERO + 11 * SEC), 0);
}

#[test]
fn failure_percentage_ejects_hosts_over_the_threshold() {
    let config = OutlierConfig {
        success_rate: None,
        consecutive_5xx: None,
        failure_percentage: Some(FailurePercentage { minimum_hosts: 2, ..FailurePercentage::default() }),
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    };
    let d = OutlierDetector::new(config, set(3));
    hit(&d, 0, Outcome::Http5xx(503), 43, Timestamp::ZERO);
    hit(&d, 0, Outcome::Success, 7, Timestamp::ZERO);
    hit(&d, 1, Outcome::Http5xx(503), 42, Timestamp::ZERO);
    hit(&d, 1, Outcome::Success, 8, Timestamp::ZERO);
    hit(&d, 2, Outcome::Http5xx(503), 49, Timestamp::ZERO);
    assert_eq!(d.on_interval(Timestamp::ZERO), 1, "host 2 lacks volume; 86 % ejects, 84 % does not");
    assert!(d.is_ejected(0) && !d.is_ejected(1) && !d.is_ejected(2));
}

#[test]
fn a_new_set_carries_counters_and_ejections_by_id() {
    let s = set(3);
    let d = OutlierDetector::new(OutlierConfig::consecutive_failures(2), s.clone());
    hit(&d, 0, Outcome::Reset, 2, Timestamp::ZERO);
    hit(&d, 2, Outcome::Reset, 1, Timestamp::ZERO);
    let id_two = s.get(2).unwrap().endpoint().id().clone();
    let extra = Endpoint::new(core::net::SocketAddr::from(([10, 0, 0, 0], 1)));
    let next_set = s.replaced(s.iter().skip(1).map(|m| m.endpoint().clone()).chain([extra]), Timestamp::ZERO);
    let next = d.with_set(next_set.clone());
    assert_eq!(next.ejected_count(), 0, "the ejected endpoint left the set");
    assert_eq!(next_set.get(0).unwrap().endpoint().id().to_string(), "10.0.0.0:1");
    assert!(next.record_id(&id_two, &report(Outcome::Reset, Timestamp::ZERO)), "its streak carried over");
    assert!(next.is_ejected(next_set.index_of(&id_two).unwrap()));
    assert!(!next.record(99, &report(Outcome::Reset, Timestamp::ZERO)), "unknown indices are ignored");
}

#[test]
fn racing_threads_never_eject_past_the_limit() {
    let s = set(20);
    let d = OutlierDetector::new(OutlierConfig::consecutive_failures(1), s.clone());
    std::thread::scope(|scope| {
        for thread in 0..4usize {
            let d = &d;
            scope.spawn(move || {
                for round in 0..500usize {
                    d.record((round * 7 + thread) % 20, &report(Outcome::ConnectError, Timestamp::ZERO));
                }
            });
        }
    });
    let out = s.iter().filter(|m| !m.state().is_eligible()).count();
    assert_eq!((out, d.ejected_count()), (2, 2), "10 % of 20");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ejections_never_exceed_max_percent_except_the_one(
            hosts in 1u16..40,
            percent in 0u32..60,
            events in proptest::collection::vec((0usize..40, 0u8..4, 0u64..20), 1..400),
        ) {
            let s = set(hosts);
            let config = OutlierConfig {
                max_ejection_percent: percent,
                failure_percentage: Some(FailurePercentage { minimum_hosts: 1, request_volume: 1, threshold: 50 }),
                ..OutlierConfig::consecutive_failures(2)
            };
            let d = OutlierDetector::new(config, s.clone());
            let bound = (percent as usize * hosts as usize).div_ceil(100).max(1);
            let mut now = Timestamp::ZERO;
            for (index, kind, step) in events {
                now = now + Duration::from_secs(step);
                let outcome = [Outcome::Success, Outcome::Http5xx(502), Outcome::ConnectError, Outcome::Timeout][kind as usize];
                d.record(index % hosts as usize, &report(outcome, now));
                if step > 15 {
                    d.tick(now);
                }
                let out = s.iter().filter(|m| m.state().status() == HealthStatus::Ejected).count();
                prop_assert!(out <= bound, "{out} ejected of {hosts} at {percent} %");
                prop_assert_eq!(out, d.ejected_count());
            }
        }
    }
}

#[test]
fn success_rate_uses_the_spread_of_the_peers() {
    // Success rates 100 x4, 85, 50: mean 89.2, stdev 18.4, so the threshold at
    // 1.9 stdev is 54.3: only the host at 50 is an outlier, not the one at 85.
    let volumes = [(100, 0), (100, 0), (100, 0), (100, 0), (85, 15), (50, 50)];
    let cfg = SuccessRate { minimum_hosts: 5, request_volume: 100, stdev_factor: 1900 };
    assert_eq!(success_rate_outliers(&volumes, cfg), [5]);
    // Rates 100 x4, 80, 40: mean 86.7, variance 488.9 (the mean of the
    // squared deviations), stdev 22.1, threshold 44.7: the host at 80 stays.
    let volumes = [(100, 0), (100, 0), (100, 0), (100, 0), (80, 20), (40, 60)];
    assert_eq!(success_rate_outliers(&volumes, cfg), [5]);
}

#[test]
fn success_rate_needs_its_minimum_of_judged_hosts() {
    // Rates 100 x3 and 10: an outlier among four, but five hosts are needed;
    // and no host judged at all is no outlier even with a minimum of 0.
    let volumes = [(100, 0), (100, 0), (100, 0), (10, 90)];
    let cfg = SuccessRate { minimum_hosts: 5, request_volume: 100, stdev_factor: 1000 };
    assert!(success_rate_outliers(&volumes, cfg).is_empty());
    assert_eq!(success_rate_outliers(&volumes, SuccessRate { minimum_hosts: 4, ..cfg }), [3]);
    let too_few_requests = [(10, 0), (1, 9)];
    assert!(success_rate_outliers(&too_few_requests, SuccessRate { minimum_hosts: 0, ..cfg }).is_empty());
}

#[test]
fn success_rates_are_ratios_whatever_the_volume() {
    // Every host succeeds 90 % of the time; one saw a tenth of the others'
    // traffic. Equal rates, so no outlier, however the volumes differ.
    let volumes = [(900, 100), (900, 100), (900, 100), (900, 100), (90, 10)];
    let cfg = SuccessRate { minimum_hosts: 5, request_volume: 100, stdev_factor: 1900 };
    assert!(success_rate_outliers(&volumes, cfg).is_empty());
    // Rates 100 x4 and 50 (mean 90, stdev 20, threshold 52): the host at 50
    // is out, though its peers saw ten times its traffic.
    let volumes = [(1000, 0), (1000, 0), (1000, 0), (1000, 0), (50, 50)];
    assert_eq!(success_rate_outliers(&volumes, cfg), [4]);
}

#[test]
fn a_host_that_only_failed_is_judged_by_failure_percentage() {
    let volumes = [(0, 10), (10, 0), (9, 1)];
    let cfg = FailurePercentage { threshold: 85, minimum_hosts: 3, request_volume: 10 };
    assert_eq!(failure_percentage_outliers(&volumes, cfg), [0]);
}

#[test]
fn the_detector_watches_the_set_it_was_given() {
    let detector = OutlierDetector::new(OutlierConfig::default(), set(3));
    assert_eq!(detector.set().len(), 3);
    assert!(detector.set().same_snapshot(&detector.set().clone()));
}

#[test]
fn failure_percentage_needs_enough_judged_hosts() {
    let cfg = FailurePercentage { threshold: 50, minimum_hosts: 3, request_volume: 10 };
    // Two hosts with enough requests, one without: fewer than three judged.
    assert!(failure_percentage_outliers(&[(0, 10), (10, 0), (1, 1)], cfg).is_empty());
    assert!(failure_percentage_outliers(&[], cfg).is_empty());
    assert_eq!(failure_percentage_outliers(&[(10, 0), (0, 10), (10, 0)], cfg), [1]);
}

#[test]
fn consecutive_failures_alone_turns_every_other_detector_off() {
    let cfg = OutlierConfig::consecutive_failures(6);
    assert_eq!(cfg.consecutive_5xx, Some(6));
    assert!(cfg.success_rate.is_none() && cfg.failure_percentage.is_none());
    assert!(cfg.consecutive_gateway_failure.is_none() && cfg.consecutive_local_origin_failure.is_none());
}

#[test]
fn the_guide_s_rule_is_six_failures_in_a_row_of_any_kind() {
    let rule = OutlierConfig::more_than_five_failures();
    assert_eq!(rule, OutlierConfig::consecutive_failures(6));
    assert_eq!(rule.consecutive_5xx, Some(6));
    assert_ne!(rule, OutlierConfig::default());
}
