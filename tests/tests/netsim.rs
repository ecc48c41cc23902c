//! Whole sessions over a faulty simulated network (see `shoulder_testkit::netsim`).
//! Each scenario asserts its outcome and prints its numbers.

use std::time::Duration;

use shoulder_capture::scenarios::Scenario as Screen;
use shoulder_testkit::netsim::{LinkConfig, Report, Scenario, run};

fn scenario(name: &'static str, link: LinkConfig) -> Scenario {
    Scenario {
        name,
        link,
        outage: None,
        duration: Duration::from_secs(30),
        screen_period: Duration::from_millis(500),
        screen: Screen::Clock,
        frames: None,
        lossy: false,
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

/// A kiosk screen of `w`×`h` with a photograph (smooth colours with grain)
/// over most of it; `seed` picks the picture.
fn photo_screen(w: usize, h: usize, seed: usize) -> Vec<u8> {
    let mut px = vec![0xf0u8; w * h * 4];
    for y in 16..h - 16 {
        for x in 16..w - 16 {
            let grain = ((x * 7919) ^ (y * 104_729) ^ seed).wrapping_mul(2_654_435_761) >> 29 & 7;
            let i = (y * w + x) * 4;
            px[i] = (40 + x / 3 + y / 4 + grain + seed % 40) as u8;
            px[i + 1] = (60 + y / 2 + seed % 50 + grain) as u8;
            px[i + 2] = (100 + (x + y) / 8 + grain) as u8;
        }
    }
    px
}

/// On a slow link a new photograph is usable long before its exact pixels
/// could arrive, and is exact in the end; with lossy off nothing is ever
/// approximate. Both views are checked at every update: the lossy one must
/// be usable or exact before the exact-only one is exact.
#[test]
fn slow_link_photographs_are_usable_early_and_exact_later() {
    use shoulder_testkit::netsim::Frames;
    use std::sync::Arc;
    let (w, h) = (320usize, 240usize);
    let frames = Arc::new(Frames {
        width: w as u32,
        height: h as u32,
        frames: vec![photo_screen(w, h, 1), photo_screen(w, h, 77)],
    });
    let at = |lossy: bool| {
        let mut s = scenario(
            if lossy {
                "slow link, lossy"
            } else {
                "slow link, exact only"
            },
            LinkConfig {
                delay: Duration::from_millis(25),
                bandwidth_bps: Some(256_000),
                ..LinkConfig::default()
            },
        );
        s.frames = Some(frames.clone());
        s.lossy = lossy;
        s.screen_period = Duration::from_secs(20);
        s.duration = Duration::from_secs(45);
        s.resume = false;
        let r = run(&s);
        show(&r);
        assert!(r.survived, "{}: {:?}", r.name, r.ended);
        assert_eq!(r.apply_errors, 0);
        r
    };
    let exact = at(false);
    assert_eq!(exact.jpeg_rects, 0);
    assert_eq!(exact.corrupt_views, 0);
    let exact_after = exact
        .exact_after_last_change
        .expect("exact only: the photograph arrives");
    let lossy = at(true);
    assert!(lossy.jpeg_rects > 0, "{lossy:?}");
    let usable = lossy.usable_after_last_change.expect("a usable picture");
    assert!(
        usable * 2 < exact_after,
        "lossy usable after {usable:?}, exact only exact after {exact_after:?}"
    );
    assert!(
        lossy.exact_after_last_change.is_some(),
        "the lossy picture is refined to exact: {lossy:?}"
    );
    let bps = lossy.estimated_bps.expect("the link was measured");
    assert!(
        (100_000..=400_000).contains(&bps),
        "a 256 kbit/s link estimated at {bps} bit/s"
    );
}

// --- the real agent and client over the simulated network (real time) -------

mod live {
    use std::time::Duration;

    use shoulder_testkit::netsim::LinkConfig;
    use shoulder_testkit::netsim_live::{LiveReport, LiveScenario, run_live};

    fn scenario(name: &'static str, link: LinkConfig) -> LiveScenario {
        LiveScenario {
            name,
            link,
            outage: None,
            duration: Duration::from_secs(4),
            peer_timeout: Duration::from_secs(15),
            seed: 0x11fe,
        }
    }

    /// `min_updates`: complete pictures the expert must have seen (the
    /// pattern changes 10 times a second; loss slows TCP down a lot).
    fn assert_survived(r: &LiveReport, min_updates: u64) {
        eprintln!("{r:?}");
        assert!(r.survived, "{}: {:?}", r.name, r.ended);
        assert_eq!(r.ended, None, "{}", r.name);
        assert_eq!(r.invalid_views, 0, "{}", r.name);
        assert!(
            r.updates >= min_updates,
            "{}: only {} updates",
            r.name,
            r.updates
        );
        assert_eq!(r.prompts, 2, "{}: view and control, nothing more", r.name);
        // Only what the expert sent reaches the device's input sink.
        assert_eq!(r.foreign_input, 0, "{}", r.name);
        assert_eq!(r.refused_input, 0, "{}", r.name);
        assert!(
            r.pointer_injected > 0,
            "{}: no pointer move arrived",
            r.name
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_agent_and_client_over_a_clean_link() {
        let r = run_live(&scenario("live: clean link", LinkConfig::default())).await;
        assert_survived(&r, 10);
        assert_eq!(r.reconnects, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_agent_and_client_over_loss_and_a_long_rtt() {
        let r = run_live(&scenario(
            "live: 5 % loss, 300 ms RTT",
            LinkConfig {
                loss_pct: 5,
                delay: Duration::from_millis(150),
                ..LinkConfig::default()
            },
        ))
        .await;
        assert_survived(&r, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_client_resumes_by_itself_after_the_link_was_down() {
        // The agent gives up on the silent expert after 3 s and keeps the
        // session; the link comes back after 6 s and the client, told by
        // the agent's close, reconnects and resumes without a prompt.
        let mut s = scenario(
            "live: link down 6 s",
            LinkConfig {
                delay: Duration::from_millis(5),
                ..LinkConfig::default()
            },
        );
        s.outage = Some((Duration::from_secs(1), Duration::from_secs(6)));
        s.duration = Duration::from_secs(12);
        s.peer_timeout = Duration::from_secs(3);
        let r = run_live(&s).await;
        assert_survived(&r, 10);
        assert!(r.resumes >= 1, "{r:?}");
        let back = r
            .picture_back_after_outage
            .expect("a picture after the outage");
        assert!(back < Duration::from_secs(10), "{back:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_corruption_is_caught_by_tls_and_the_client_resumes() {
        // Checksums off: corrupted packets reach TCP and TLS. TLS refuses
        // them and the connection ends; the client resumes each time and no
        // corrupt picture is ever shown.
        let mut s = scenario(
            "live: 1 % corruption, checksums off",
            LinkConfig {
                corrupt_pct: 1,
                verify_checksums: false,
                ..LinkConfig::default()
            },
        );
        s.duration = Duration::from_secs(6);
        let r = run_live(&s).await;
        eprintln!("{r:?}");
        assert_eq!(r.invalid_views, 0);
        assert_eq!(r.prompts, 2, "resumes need no prompt: {r:?}");
        assert!(r.survived, "{r:?}");
        assert_eq!(r.foreign_input, 0, "a corrupt input event was injected");
        assert_eq!(r.refused_input, 0);
        assert!(r.pointer_injected > 0, "{r:?}");
    }
}
