//! Whole sessions over a faulty simulated network (see `shoulder_tests::netsim`).
//! Each scenario asserts its outcome and prints its numbers.

use std::time::Duration;

use shoulder_capture::scenarios::Scenario as Screen;
use shoulder_tests::netsim::{LinkConfig, Report, Scenario, run};

fn scenario(name: &'static str, link: LinkConfig) -> Scenario {
    Scenario {
        name,
        link,
        outage: None,
        duration: Duration::from_secs(30),
        screen_period: Duration::from_millis(500),
        screen: Screen::Clock,
        resume: true,
        seed: 0x5110_u64,
    }
}

fn show(r: &Report) {
    eprintln!("{r:?}");
}

fn assert_healthy(r: &Report, max_first_sync: Duration) {
    show(r);
    assert!(r.survived, "{}: session ended: {:?}", r.name, r.ended);
    assert_eq!(r.corrupt_views, 0, "{}", r.name);
    assert_eq!(r.apply_errors, 0, "{}", r.name);
    let first = r
        .first_sync
        .unwrap_or_else(|| panic!("{}: never in sync", r.name));
    assert!(
        first <= max_first_sync,
        "{}: first sync after {first:?}",
        r.name
    );
    assert!(
        r.updates_applied >= 20,
        "{}: only {} updates",
        r.name,
        r.updates_applied
    );
}

#[test]
fn clean_link_baseline() {
    let r = run(&scenario("clean", LinkConfig::default()));
    assert_healthy(&r, Duration::from_secs(1));
    assert!(r.longest_lag < Duration::from_millis(200), "{r:?}");
}

#[test]
fn five_percent_loss() {
    let r = run(&scenario(
        "5% loss",
        LinkConfig {
            loss_pct: 5,
            delay: Duration::from_millis(5),
            ..LinkConfig::default()
        },
    ));
    assert_healthy(&r, Duration::from_secs(5));
}

#[test]
fn long_rtt_300ms() {
    let r = run(&scenario(
        "300 ms RTT",
        LinkConfig {
            delay: Duration::from_millis(150),
            ..LinkConfig::default()
        },
    ));
    assert_healthy(&r, Duration::from_secs(3));
}

#[test]
fn slow_link_256kbit() {
    let r = run(&scenario(
        "256 kbit/s",
        LinkConfig {
            bandwidth_bps: Some(256_000),
            delay: Duration::from_millis(10),
            ..LinkConfig::default()
        },
    ));
    assert_healthy(&r, Duration::from_secs(10));
    // Client pacing: no backlog, so the view lags by at most a few updates.
    assert!(r.longest_lag < Duration::from_secs(5), "{r:?}");
}

#[test]
fn reordering_and_duplication() {
    let r = run(&scenario(
        "reorder+dup",
        LinkConfig {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            duplicate_pct: 2,
            ..LinkConfig::default()
        },
    ));
    assert_healthy(&r, Duration::from_secs(3));
}

#[test]
fn link_down_for_ten_seconds_then_back() {
    let mut s = scenario("link down 10 s", LinkConfig::default());
    s.outage = Some((Duration::from_secs(5), Duration::from_secs(10)));
    s.duration = Duration::from_secs(40);
    let r = run(&s);
    // TCP backs off past the keepalive timeout: the connection is declared
    // dead, and the expert resumes the session on a new one, no new prompt.
    assert_healthy(&r, Duration::from_secs(1));
    assert_eq!(r.prompts, 1, "a resume must not prompt again: {r:?}");
    let back = r
        .resync_after_outage
        .expect("view catches up after the outage");
    assert!(back < Duration::from_secs(15), "{r:?}");
}

#[test]
fn one_percent_corruption_is_caught_by_tls() {
    // Checksums off: corrupted bytes reach TLS, which must refuse them. A
    // changing photo-like screen makes enough traffic for corruption to hit.
    let mut s = scenario(
        "1% corruption",
        LinkConfig {
            corrupt_pct: 1,
            verify_checksums: false,
            ..LinkConfig::default()
        },
    );
    s.screen = Screen::Noise;
    s.resume = false;
    let r = run(&s);
    show(&r);
    assert_eq!(r.corrupt_views, 0, "a corrupt frame reached the view");
    assert_eq!(r.apply_errors, 0);
    assert!(!r.survived, "corruption went unnoticed: {r:?}");
    assert!(r.ended.is_some());
    // With resumption the expert comes back after a detected corruption.
    s.resume = true;
    let r = run(&s);
    show(&r);
    assert_eq!(r.corrupt_views, 0);
    assert!(r.resumes >= 1, "{r:?}");
}

#[test]
fn runs_are_deterministic_for_a_seed() {
    let s = scenario(
        "determinism",
        LinkConfig {
            loss_pct: 5,
            jitter: Duration::from_millis(10),
            ..LinkConfig::default()
        },
    );
    let mut short = s.clone();
    short.duration = Duration::from_secs(12);
    let first = run(&short);
    assert!(first.updates_applied > 0, "{first:?}");
    assert_eq!(first, run(&short));
}
