//! "Exact now" (issue #18): on a slow link photographs come first as lossy
//! pictures; the technician can ask for exact pictures only mid-session.
//! End to end: the real agent (in process, capturing a raw file) and the
//! real client library over TLS on loopback, through a proxy that carries
//! the device's bytes at 4 Mbit/s (a plant Wi-Fi link), so the agent keeps
//! choosing lossy pictures for new photographs. The photographs are
//! ImageMagick's built-in `rose:` photo, stretched and rolled: a real
//! photograph, not one of our drawings.
//!
//! The test first shows that a new photograph does come lossy on this link
//! (so the last part could fail), then asks for exact pictures: the view
//! turns exact (every pixel as the device's), and the next photograph
//! comes without a single lossy rectangle and is never approximate.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use shoulder_proto::session::{ExpertState, UserAction};
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_session::Session;
use shoulder_testkit::relay::Relay;
use shoulder_testkit::synthetic::{capture_backends, raw_screen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const W: u32 = 640;
const H: u32 = 480;
/// The device → expert direction of the proxy.
const LINK_BPS: f64 = 4_000_000.0;
/// Generous: a loaded 2-core machine, debug builds, a 4 Mbit/s link.
const WITHIN: Duration = Duration::from_secs(60);

/// `rose:` stretched to the screen and rolled by `roll` pixels, as
/// XRGB8888 rows (B, G, R, X).
fn photo(roll: u32) -> Vec<u8> {
    let out = Command::new("convert")
        .args([
            "rose:",
            "-resize",
            &format!("{W}x{H}!"),
            "-roll",
            &format!("+{roll}+{}", roll / 2),
            "-depth",
            "8",
            "bgra:-",
        ])
        .output()
        .expect("ImageMagick's convert (scripts/setup installs imagemagick)");
    assert!(
        out.status.success(),
        "convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), (W * H * 4) as usize);
    out.stdout
}

/// A TCP proxy to `to` whose device → expert direction carries `LINK_BPS`.
async fn slow_link(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(device) = TcpStream::connect(to).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut dr, mut dw) = device.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut dw).await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let started = Instant::now();
                let mut sent = 0usize;
                loop {
                    let n = match dr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    sent += n;
                    let due = started + Duration::from_secs_f64(sent as f64 * 8.0 / LINK_BPS);
                    tokio::time::sleep_until(due.into()).await;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

struct View<'a> {
    s: &'a Session,
}

impl View<'_> {
    fn lossy_rects(&self) -> u64 {
        self.s.view.lock().stats.lossy_rects
    }

    fn approximate(&self) -> u64 {
        self.s
            .view
            .lock()
            .fb
            .as_ref()
            .map_or(0, |f| f.approximate_pixels())
    }

    /// The view's pixels equal `want` (the X byte ignored).
    fn shows(&self, want: &[u8]) -> bool {
        let v = self.s.view.lock();
        let Some(fb) = v.fb.as_ref() else {
            return false;
        };
        fb.pixels().len() == want.len()
            && fb
                .pixels()
                .chunks_exact(4)
                .zip(want.chunks_exact(4))
                .all(|(a, b)| a[..3] == b[..3])
    }

    /// Waits until the view shows `want`; how often it was approximate on
    /// the way (polls that saw approximate pixels).
    async fn until_shows(&self, want: &[u8], what: &str) -> u32 {
        let t0 = Instant::now();
        let mut approximate_seen = 0;
        loop {
            if self.approximate() > 0 {
                approximate_seen += 1;
            }
            if self.shows(want) && self.approximate() == 0 {
                return approximate_seen;
            }
            assert!(
                t0.elapsed() < WITHIN,
                "the view did not show {what} exactly within {WITHIN:?} ({} pixels approximate, {} lossy rectangles so far)",
                self.approximate(),
                self.lossy_rects()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_now_makes_the_view_exact_and_no_lossy_picture_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (mut screen, spec) = raw_screen(&dir.path().join("screen.raw"), W, H);
    let photos: Vec<Vec<u8>> = [0, 97, 211].into_iter().map(photo).collect();
    screen.pixels_mut().copy_from_slice(&photos[0]);

    let agent = Agent::with_backends(None, capture_backends(&spec), |_| {}).await;
    let link = slow_link(agent.addr).await;
    let relay = Relay::start(link).unwrap();
    let answers = agent.answer_prompts(1, true).await;
    let mut s = Session::start(&agent, &relay).await;
    s.wait("viewing", WAIT, |e| {
        matches!(
            e,
            shoulder::client::ClientEvent::State(ExpertState::Viewing { .. })
        )
    })
    .await;
    answers.await.unwrap();
    let v = View { s: &s };

    // On this link a new photograph comes lossy first (so what follows
    // could fail), and is made exact once it stays.
    v.until_shows(&photos[0], "the first photograph").await;
    let before = v.lossy_rects();
    screen.pixels_mut().copy_from_slice(&photos[1]);
    v.until_shows(&photos[1], "the second photograph").await;
    assert!(
        v.lossy_rects() > before,
        "a new photograph on a 4 Mbit/s link should come lossy first (lossy rectangles: {before} before, {} after)",
        v.lossy_rects()
    );

    // "Exact now", while a new photograph is under way: what is approximate
    // turns exact, and nothing lossy comes after.
    screen.pixels_mut().copy_from_slice(&photos[0]);
    s.actions.send(UserAction::ExactOnly).await.unwrap();
    v.until_shows(&photos[0], "the photograph after \"exact now\"")
        .await;
    let asked = v.lossy_rects();
    screen.pixels_mut().copy_from_slice(&photos[2]);
    let approximate_seen = v.until_shows(&photos[2], "a new photograph").await;
    assert_eq!(
        v.lossy_rects(),
        asked,
        "no lossy rectangle after \"exact now\""
    );
    assert_eq!(
        approximate_seen, 0,
        "the view was approximate after \"exact now\""
    );
}
