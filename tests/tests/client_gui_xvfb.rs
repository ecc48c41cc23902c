//! The real desktop app under Xvfb against the real agent showing the
//! synthetic kiosk screen: open an invitation, the person at the device
//! accepts, request control with a real click on the toolbar, the person
//! accepts, switch to 1:1, click the kiosk's counter button in the window,
//! and check by screenshot that the window shows the device screen with the
//! counter changed. Screenshots stay in `artifacts/gui/`.
//!
//! Needs Xvfb, xdotool and ImageMagick (`import`), and Mesa's software GL:
//! `tests/gui/run.sh` installs them and runs this test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoulder_agent::backends::LocalEvent;
use shoulder_agent::control::Request;
use shoulder_proto::invite::Invitation;
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_cli::CliExpert;
use shoulder_testkit::picture::{frame_rgb, read_png_rgb};
use shoulder_testkit::relay::Relay;
use shoulder_testkit::synthetic::Synthetic;

/// The device screen: small enough to show 1:1 in the default window.
const DEV_W: u32 = 800;
const DEV_H: u32 = 480;
const PW: &str = "river-stone-7";

/// Kills a child process when dropped (test failures included).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = match std::env::var_os("SHOULDER_ARTIFACTS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts"),
    }
    .join("gui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed — run tests/gui/run.sh, which installs what this test needs"
    );
}

/// Starts Xvfb on a display it picks itself (`-displayfd`, so parallel
/// tests never race for a number); returns the process and `:N`.
fn start_xvfb() -> (Reaper, String) {
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reaper = Reaper(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let n: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Xvfb did not start (said {line:?})"));
    (reaper, format!(":{n}"))
}

/// What the app's trace lines said, by key ("view", "state", …).
#[derive(Default)]
struct Trace(Mutex<std::collections::HashMap<String, String>>);

impl Trace {
    fn get(&self, key: &str) -> Option<String> {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn rect(&self, key: &str) -> Option<(f32, f32, f32, f32)> {
        let v = self.get(key)?;
        let mut it = v.split_whitespace().map(|kv| {
            kv.split_once('=')
                .and_then(|(_, n)| n.parse::<f32>().ok())
                .unwrap_or(0.0)
        });
        Some((it.next()?, it.next()?, it.next()?, it.next()?))
    }

    async fn wait(&self, what: &str, mut ok: impl FnMut(&Self) -> bool) {
        let t0 = Instant::now();
        while !ok(self) {
            assert!(
                t0.elapsed() < WAIT,
                "timed out waiting for {what}; the app said: {:?}",
                self.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn xdotool(display: &str, args: &[&str]) {
    let o = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "xdotool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The app window's id.
fn window_of(display: &str) -> String {
    let o = Command::new("xdotool")
        .args(["search", "--sync", "--name", "^Shoulder$"])
        .env("DISPLAY", display)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .expect("the app window")
        .to_string()
}

/// Clicks at window pixel (x, y) of the app window.
fn click(display: &str, window: &str, x: f32, y: f32) {
    let (x, y) = (format!("{}", x.round()), format!("{}", y.round()));
    xdotool(display, &["mousemove", "--window", window, &x, &y]);
    std::thread::sleep(Duration::from_millis(150));
    xdotool(display, &["click", "1"]);
}

/// The whole X screen as RGB rows.
fn screenshot(display: &str, path: &Path) -> (u32, u32, Vec<u8>) {
    let o = Command::new("import")
        .args(["-window", "root", "-depth", "8"])
        .arg(format!("PNG24:{}", path.display()))
        .env("DISPLAY", display)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "import: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_png_rgb(path)
}

/// Mean absolute difference between the screenshot's region at (x, y) and
/// the device frame (XRGB8888), per channel.
fn region_diff(shot: &(u32, u32, Vec<u8>), x: u32, y: u32, frame: &[u8]) -> f64 {
    let (sw, sh, rgb) = shot;
    assert!(
        x + DEV_W <= *sw && y + DEV_H <= *sh,
        "view outside the screen"
    );
    let mut sum = 0u64;
    for row in 0..DEV_H {
        for col in 0..DEV_W {
            let s = (((y + row) * sw + x + col) * 3) as usize;
            let f = ((row * DEV_W + col) * 4) as usize;
            for (c, fc) in [(0, 2), (1, 1), (2, 0)] {
                sum += u64::from(rgb[s + c].abs_diff(frame[f + fc]));
            }
        }
    }
    sum as f64 / f64::from(DEV_W * DEV_H * 3)
}

/// Starts the app with `args` on `display`; returns it, its trace and its log.
fn launch(
    ex: &CliExpert,
    display: &str,
    args: &[&str],
) -> (Reaper, Arc<Trace>, Arc<Mutex<String>>) {
    let mut gui = ex.command(args);
    gui.env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("SHOULDER_TRACE_VIEW", "1")
        // Screenshots go to the Pictures folder, else the working directory:
        // keep both inside the test's scratch directory.
        .env("HOME", ex.dir.path())
        .env_remove("XDG_PICTURES_DIR")
        .current_dir(ex.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = gui.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let trace = Arc::new(Trace::default());
    let log = Arc::new(Mutex::new(String::new()));
    {
        let (trace, log) = (trace.clone(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.strip_prefix("shoulder-")
                    && let Some((k, v)) = rest.split_once(' ')
                {
                    trace.0.lock().unwrap().insert(k.to_string(), v.to_string());
                }
            }
        });
    }
    (Reaper(child), trace, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, xdotool and ImageMagick: run tests/gui/run.sh"]
async fn gui_shows_why_a_session_ended() {
    for tool in ["Xvfb", "xdotool", "import"] {
        need(tool);
    }
    let out = artifacts();
    let (_xvfb, display) = start_xvfb();
    let agent = Agent::pattern(None, |_| {}).await;
    let ex = CliExpert::new();
    let pw = ex.write("pw", PW);
    let bad = ex.write("bad", "guess");

    // Wrong password.
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("a.shoulder", &file);
    let (gui, trace, _) = launch(&ex, &display, &["open", &inv, "--password-file", &bad]);
    trace.wait("the end", |t| t.get("ended").is_some()).await;
    let s = trace.get("ended").unwrap();
    assert!(
        s.starts_with("Wrong password (") && s.ends_with(" left)."),
        "{s}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("ended-wrong-password.png"));
    drop(gui);

    // The person at the device declines.
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await.unwrap();
    let (gui, trace, _) = launch(&ex, &display, &["open", &inv, "--password-file", &pw]);
    tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .unwrap()
        .unwrap();
    ctl.request(&Request::Decline { prompt: None })
        .await
        .unwrap();
    trace.wait("the end", |t| t.get("ended").is_some()).await;
    assert_eq!(trace.get("ended").unwrap(), "The device declined.");
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("ended-declined.png"));
    drop(gui);

    // Without a password file the app asks for the password.
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("b.shoulder", &file);
    let (_gui, trace, _) = launch(&ex, &display, &["open", &inv]);
    trace
        .wait("the password field", |t| t.rect("field-password").is_some())
        .await;
    let window = window_of(&display);
    let (x, y, w, h) = trace.rect("field-password").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    xdotool(&display, &["windowfocus", "--sync", &window]);
    xdotool(&display, &["type", "--delay", "30", PW]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("start-invitation-password.png"));
    xdotool(&display, &["key", "Return"]);
    tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the typed password did not connect: {:?}",
                trace.get("ended")
            )
        })
        .unwrap();
    ctl.request(&Request::Accept { prompt: None })
        .await
        .unwrap();
    trace
        .wait("the live view", |t| {
            t.get("state").as_deref() == Some("viewing")
        })
        .await;
    agent.stop().await;
}

/// Waits for the next question on the device (asked by `what`) and
/// answers yes; the question.
async fn person_says_yes(
    ctl: &mut shoulder_agent::control::Client,
    what: &str,
) -> serde_json::Value {
    let ev = tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .unwrap_or_else(|_| panic!("{what} asked nothing"))
        .unwrap();
    ctl.request(&Request::Accept { prompt: None })
        .await
        .unwrap();
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, xdotool and ImageMagick: run tests/gui/run.sh"]
async fn gui_copies_a_file_from_the_device_and_sends_one_with_the_files_panel() {
    for tool in ["Xvfb", "xdotool", "import"] {
        need(tool);
    }
    let out = artifacts();
    let (_xvfb, display) = start_xvfb();
    let device = tempfile::tempdir().unwrap();
    let (logs, incoming) = (device.path().join("logs"), device.path().join("incoming"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&incoming).unwrap();
    let log: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(logs.join("kiosk.log"), &log).unwrap();
    std::fs::write(logs.join("boot.log"), b"booted\n").unwrap();
    let agent = Agent::pattern(None, |c| {
        c.files.readable = vec![logs.clone()];
        c.files.drop = incoming.clone();
        c.files.keep_free_mib = 0;
    })
    .await;
    let ex = CliExpert::new();
    let pw = ex.write("pw", PW);
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("a.shoulder", &file);
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await.unwrap();
    let (_gui, trace, _) = launch(&ex, &display, &["open", &inv, "--password-file", &pw]);
    person_says_yes(&mut ctl, "the view").await;
    trace
        .wait("the live view", |t| {
            t.get("state").as_deref() == Some("viewing")
        })
        .await;
    let window = window_of(&display);
    let at = |key: &str| {
        let (x, y, w, h) = trace.rect(key).unwrap_or_else(|| panic!("no {key}"));
        (x + w / 2.0, y + h / 2.0)
    };
    let (x, y) = at("button-files");
    click(&display, &window, x, y);
    trace
        .wait("the files panel", |t| t.rect("button-files-copy").is_some())
        .await;

    // Find the log by browsing the device's readable directories (not
    // asked: only taking a file is), and copy it into a folder of the
    // technician's.
    let (x, y) = at("button-files-browse");
    click(&display, &window, x, y);
    trace
        .wait("the readable directories", |t| {
            t.get("files-listing").as_deref() == Some("1")
        })
        .await;
    let (x, y) = at("entry-files-0");
    click(&display, &window, x, y);
    trace
        .wait("the logs directory's two files", |t| {
            t.get("files-listing").as_deref() == Some("2")
        })
        .await;
    screenshot(&display, &out.join("files-browsed.png"));
    // boot.log, kiosk.log: a click picks the second for Copy.
    let (x, y) = at("entry-files-1");
    click(&display, &window, x, y);
    let downloads = ex.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    xdotool(&display, &["windowfocus", "--sync", &window]);
    let (x, y) = at("field-files-save");
    click(&display, &window, x, y);
    tokio::time::sleep(Duration::from_millis(300)).await;
    xdotool(&display, &["key", "ctrl+a"]);
    xdotool(
        &display,
        &["type", "--delay", "10", &downloads.display().to_string()],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (x, y) = at("button-files-copy");
    click(&display, &window, x, y);
    let ev = person_says_yes(&mut ctl, "the Copy button").await;
    assert_eq!(ev["kind"], "file", "{ev}");
    assert_eq!(ev["file"]["name"], "kiosk.log", "{ev}");
    screenshot(&display, &out.join("files-asked.png"));
    trace
        .wait("the copy", |t| {
            t.get("files").is_some_and(|s| s.starts_with("Copied "))
        })
        .await;
    assert!(std::fs::read(downloads.join("kiosk.log")).unwrap() == log);
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("files-copied.png"));

    // Send a file of the technician's to the device.
    let local = ex.path("settings.json");
    std::fs::write(&local, b"{\"volume\": 3}\n").unwrap();
    let (x, y) = at("field-files-send");
    click(&display, &window, x, y);
    tokio::time::sleep(Duration::from_millis(300)).await;
    xdotool(
        &display,
        &["type", "--delay", "10", &local.display().to_string()],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (x, y) = at("button-files-send");
    click(&display, &window, x, y);
    let ev = person_says_yes(&mut ctl, "the Send button").await;
    assert_eq!(ev["file"]["to_device"], true, "{ev}");
    trace
        .wait("the sent file", |t| {
            t.get("files")
                .is_some_and(|s| s.starts_with("Sent settings.json"))
        })
        .await;
    assert_eq!(
        std::fs::read(incoming.join("settings.json")).unwrap(),
        b"{\"volume\": 3}\n"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("files-sent.png"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, xdotool and ImageMagick: run tests/gui/run.sh"]
async fn gui_controls_the_synthetic_kiosk_under_xvfb() {
    for tool in ["Xvfb", "xdotool", "import"] {
        need(tool);
    }
    let out = artifacts();
    let (_xvfb, display) = start_xvfb();

    let screen = Synthetic::new(DEV_W, DEV_H);
    let (backends, local) = screen.backends_with_local();
    // A hold-back window that outlasts the notice's screenshot.
    let agent = Agent::with_backends(None, backends, |c| {
        c.input.local_idle = Duration::from_secs(3)
    })
    .await;
    let ex = CliExpert::new();
    let (_, file) = agent.invite_file("30m", PW).await;
    // Through a relay that can cut the connection (reconnecting, below).
    let relay = Relay::start(agent.addr).unwrap();
    let mut invitation = Invitation::from_file(&file).unwrap();
    relay.redirect(&mut invitation);
    let inv = ex.write("kiosk.shoulder", &invitation.to_file());
    let pw = ex.write("pw", PW);
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await.unwrap();

    let (_gui, trace, log) = launch(&ex, &display, &["open", &inv, "--password-file", &pw]);

    // The person at the device accepts the view.
    let ev = tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .unwrap_or_else(|_| panic!("no view request; app log:\n{}", log.lock().unwrap()))
        .unwrap();
    assert_eq!(ev["kind"], "view", "{ev}");
    trace
        .wait("the waiting screen", |t| {
            t.get("state").as_deref() == Some("waiting-for-consent")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("0-waiting-for-consent.png"));
    ctl.request(&Request::Accept { prompt: None })
        .await
        .unwrap();
    trace
        .wait("the live view", |t| {
            t.get("state").as_deref() == Some("viewing") && t.rect("view").is_some()
        })
        .await;

    let window = {
        let o = Command::new("xdotool")
            .args(["search", "--sync", "--name", "^Shoulder$"])
            .env("DISPLAY", &display)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .expect("the app window")
            .to_string()
    };
    // Let the first frame reach the screen.
    tokio::time::sleep(Duration::from_millis(700)).await;
    screenshot(&display, &out.join("1-viewing-fit.png"));

    // Request control with the toolbar button; the person accepts.
    let (x, y, w, h) = trace.rect("button-request-control").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    let ev = tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .expect("the click did not request control")
        .unwrap();
    assert_eq!(ev["kind"], "control", "{ev}");
    trace
        .wait("waiting for control", |t| {
            t.get("state").as_deref() == Some("waiting-for-control")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("1b-waiting-for-control.png"));
    ctl.request(&Request::Accept { prompt: None })
        .await
        .unwrap();
    trace
        .wait("control", |t| {
            t.get("state").as_deref() == Some("controlling")
        })
        .await;

    // 1:1, so the screenshot can be compared pixel for pixel.
    let (x, y, w, h) = trace.rect("button-one-to-one").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    trace
        .wait("the 1:1 view", |t| {
            t.rect("view")
                .is_some_and(|(_, _, w, h)| w as u32 == DEV_W && h as u32 == DEV_H)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_frame = screen.frame();
    let (vx, vy, _, _) = trace.rect("view").unwrap();
    let before = screenshot(&display, &out.join("2-controlling-1to1.png"));
    let d = region_diff(&before, vx as u32, vy as u32, &before_frame);
    assert!(
        d < 1.0,
        "the window does not show the device screen (mean diff {d})"
    );
    assert_eq!(screen.controls.counter(), 0);

    // Click the kiosk's counter button in the window.
    let (cx, cy) = screen.controls.counter_button_centre();
    click(&display, &window, vx + f32::from(cx), vy + f32::from(cy));
    let t0 = Instant::now();
    while screen.controls.counter() == 0 {
        assert!(t0.elapsed() < WAIT, "the click never reached the device");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(screen.controls.counter(), 1);
    let after_frame = screen.frame();
    assert_ne!(
        after_frame, before_frame,
        "the counter changed the device screen"
    );

    // The window shows the changed screen.
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let shot = screenshot(&display, &out.join("3-counter-clicked.png"));
        let d_after = region_diff(&shot, vx as u32, vy as u32, &after_frame);
        let d_before = region_diff(&shot, vx as u32, vy as u32, &before_frame);
        if d_after < 1.0 && d_after < d_before {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "the window never showed the new counter (diff to new {d_after}, to old {d_before})"
        );
    }

    // Typing goes to the device by physical key: the kiosk's text field.
    // No window manager under Xvfb: give the window the keyboard focus.
    xdotool(&display, &["windowfocus", "--sync", &window]);
    xdotool(&display, &["type", "--delay", "60", "Hello 42!"]);
    let t0 = Instant::now();
    while screen.controls.text() != "Hello 42!" {
        assert!(
            t0.elapsed() < WAIT,
            "typed text did not arrive: {:?}",
            screen.controls.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The person at the device uses it: the app says expert input waits.
    local.send(LocalEvent::Activity).await.unwrap();
    trace
        .wait("the local-user notice", |t| {
            t.get("state").as_deref() == Some("local-user-active")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("3b-local-user-active.png"));
    // The person stops: after the hold-back window control is back.
    trace
        .wait("control again", |t| {
            t.get("state").as_deref() == Some("controlling")
        })
        .await;

    // The network drops for a moment: the window keeps the picture and
    // says it reconnects; then control is back without a prompt.
    relay.refuse(true);
    relay.cut();
    trace
        .wait("the reconnecting notice", |t| {
            t.get("state").as_deref() == Some("reconnecting")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    screenshot(&display, &out.join("3c-reconnecting.png"));
    relay.refuse(false);
    trace
        .wait("control after reconnecting", |t| {
            t.get("state").as_deref() == Some("controlling")
        })
        .await;

    // Refresh checks the view against the device: it matches, and the
    // window says so.
    let (x, y, w, h) = trace.rect("button-refresh").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    trace
        .wait("the view-checked notice", |t| {
            t.get("notice")
                .is_some_and(|n| n.starts_with("View checked"))
        })
        .await;

    // The Screenshot button saves exactly the device's screen as PNG.
    let (x, y, w, h) = trace.rect("button-screenshot").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    let expected = screen.frame();
    let t0 = Instant::now();
    let shot = loop {
        let found = std::fs::read_dir(ex.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shoulder-test-kiosk-") && n.ends_with(".png"))
            });
        if let Some(p) = found {
            break p;
        }
        assert!(t0.elapsed() < WAIT, "the Screenshot button saved nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (w, h, rgb) = read_png_rgb(&shot);
    assert_eq!((w, h), (DEV_W, DEV_H));
    assert!(
        rgb == frame_rgb(&expected),
        "the saved screenshot differs from the device screen"
    );
    std::fs::copy(&shot, out.join("screenshot-button.png")).unwrap();

    // A chat line from the device; the chat panel shows it.
    ctl.request(&Request::Chat {
        text: "Thanks, I see you typing.".into(),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (x, y, w, h) = trace.rect("button-chat").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    screenshot(&display, &out.join("4-typed-and-chat.png"));

    // The expert answers in the chat panel; the device gets the line.
    let (x, y, w, h) = trace.rect("field-chat").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    xdotool(&display, &["type", "--delay", "30", "On my way"]);
    xdotool(&display, &["key", "Return"]);
    let t0 = Instant::now();
    loop {
        let ev = tokio::time::timeout(WAIT, ctl.wait_event("chat"))
            .await
            .expect("the chat line never reached the device")
            .unwrap();
        if ev["from"] == "expert" {
            assert_eq!(ev["text"], "On my way", "{ev}");
            break;
        }
        assert!(t0.elapsed() < WAIT);
    }
    // Typing into the chat went to the chat, not to the device.
    assert_eq!(screen.controls.text(), "Hello 42!");
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("4b-chat-sent.png"));

    // "Type text…": what is written in the panel stays there until "Type
    // on the device", then the device types it with its keyboard layout.
    let (x, y, w, h) = trace.rect("button-type-text").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (x, y, w, h) = trace.rect("field-type-text").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    xdotool(
        &display,
        &["type", "--delay", "30", " & more, typed for you."],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(screen.controls.text(), "Hello 42!");
    let (x, y, w, h) = trace.rect("button-type").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    let t0 = Instant::now();
    while screen.controls.text() != "Hello 42! & more, typed for you." {
        assert!(
            t0.elapsed() < WAIT,
            "the panel's text was not typed: {:?}",
            screen.controls.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trace
        .wait("the typed notice", |t| {
            t.get("notice")
                .is_some_and(|n| n.starts_with("Typed 23 characters"))
        })
        .await;
    screenshot(&display, &out.join("4c-typed-text.png"));

    // Disconnect with the toolbar button: the device sees the session end.
    let (x, y, w, h) = trace.rect("button-disconnect").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    tokio::time::timeout(WAIT, ctl.wait_event("session-ended"))
        .await
        .expect("disconnect did not end the session")
        .unwrap();
    trace
        .wait("the ended screen", |t| {
            t.get("state").as_deref() == Some("ended")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&display, &out.join("5-ended.png"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, xdotool and ImageMagick: run tests/gui/run.sh"]
async fn gui_offer_asks_before_trusting_a_new_device() {
    for tool in ["Xvfb", "xdotool", "import"] {
        need(tool);
    }
    let out = artifacts();
    let (_xvfb, display) = start_xvfb();
    let ex = CliExpert::new();
    let ca = ex.path("plant");
    let id = ex.path("ann");
    for args in [
        vec!["pki", "init-ca", ca.to_str().unwrap()],
        vec![
            "pki",
            "issue-expert",
            "--ca",
            ca.to_str().unwrap(),
            "--name",
            "Ann Expert",
            "--out",
            id.to_str().unwrap(),
        ],
    ] {
        let o = ex.command(&args).output().unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    // Without the plant CA in the identity, the device is trusted on first
    // contact, after asking.
    std::fs::remove_file(id.join("ca.crt")).unwrap();
    let agent = Agent::pattern(Some(&ca.join("ca.crt")), |_| {}).await;
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await.unwrap();
    let device = agent.addr.to_string();
    let (_gui, trace, _) = launch(
        &ex,
        &display,
        &["offer", &device, "--identity", id.to_str().unwrap()],
    );
    trace
        .wait("the first-contact question", |t| {
            t.rect("button-trust-device").is_some()
        })
        .await;
    let asked = trace.get("ended").unwrap();
    assert_eq!(
        asked,
        "This device is not known yet — compare its fingerprint with the one shown on the device."
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    screenshot(&display, &out.join("offer-first-contact.png"));

    let window = {
        let o = Command::new("xdotool")
            .args(["search", "--sync", "--name", "^Shoulder$"])
            .env("DISPLAY", &display)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .expect("the app window")
            .to_string()
    };
    let (x, y, w, h) = trace.rect("button-trust-device").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    let ev = tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .expect("trusting the device did not connect")
        .unwrap();
    assert_eq!(ev["expert"], "Ann Expert", "{ev}");
    ctl.request(&Request::Accept { prompt: None })
        .await
        .unwrap();
    trace
        .wait("the live view", |t| {
            t.get("state").as_deref() == Some("viewing")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    screenshot(&display, &out.join("offer-viewing.png"));
    let known = std::fs::read_to_string(ex.path("config").join("known_devices")).unwrap();
    assert!(known.starts_with(&format!("{device} ")), "{known}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, xdotool and ImageMagick: run tests/gui/run.sh"]
async fn gui_offers_help_from_the_device_list_through_bridged_brokers() {
    use shoulder_testkit::mosquitto::{Mosquitto, shipped_acl};
    for tool in ["Xvfb", "xdotool", "import"] {
        need(tool);
    }
    let out = artifacts();
    let (_xvfb, display) = start_xvfb();
    let ex = CliExpert::new();
    let pki = shoulder_testkit::pki::Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    // The device on a site broker, bridged to the central one the expert
    // uses.
    let central_acl = format!(
        "{}\nuser bridge-site\ntopic readwrite shoulder/#\n",
        shipped_acl()
    );
    let central = Mosquitto::start(&pki, &central_acl);
    let site = Mosquitto::start_bridged(&pki, &shipped_acl(), &central);
    let screen = Synthetic::new(DEV_W, DEV_H);
    let ca_dir = pki.ca_dir();
    let ca_crt = ca_dir.join("ca.crt");
    let broker = shoulder_agent::config::BrokerConfig {
        address: site.address(),
        ca: vec![site.ca()],
        prefix: "shoulder".into(),
        site: "Hall 3".into(),
        keepalive: Duration::from_secs(30),
        help_expires: Duration::from_secs(3600),
    };
    let agent = Agent::with_backends_prepared(
        Some(&ca_crt),
        screen.backends(),
        |c| c.broker = Some(broker),
        move |state| {
            let csr = state.join("device.csr");
            shoulder_agent::identity::csr_for_existing(state, "kiosk-g", &csr).unwrap();
            let pem = std::fs::read_to_string(&csr).unwrap();
            let crt = shoulder::identity::sign_device(&ca_dir, &pem, 30).unwrap();
            std::fs::write(state.join("device.crt"), crt).unwrap();
        },
    )
    .await;
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await.unwrap();
    let id = pki.expert_dir().to_str().unwrap().to_string();
    let central_at = central.address();
    let ca = central.ca().to_str().unwrap().to_string();
    let broker_args = [
        "--broker",
        &central_at,
        "--broker-ca",
        &ca,
        "--identity",
        &id,
    ];
    // The person at the device asks for help (the kiosk app would).
    let r = ctl
        .request(&Request::Help {
            text: "printer jammed in tray 2".into(),
        })
        .await
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    // `shoulder devices` (CLI) lists it once its presence crossed the bridge.
    let t0 = Instant::now();
    loop {
        let mut args = vec!["devices", "--json", "--online"];
        args.extend(broker_args);
        let o = ex.run(&args).await;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if text.contains("\"device\":\"kiosk-g\"") {
            assert!(text.contains("\"site\":\"Hall 3\""), "{text}");
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "kiosk-g never listed: {text} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `shoulder help-requests` lists the request (it may trail the
    // presence record by a moment).
    let t0 = Instant::now();
    loop {
        let mut args = vec!["help-requests", "--json"];
        args.extend(broker_args);
        let o = ex.run(&args).await;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if text.contains("printer jammed in tray 2") {
            assert!(text.contains("\"device\":\"kiosk-g\""), "{text}");
            break;
        }
        if t0.elapsed() > WAIT {
            let mut args = vec!["devices", "--json"];
            args.extend(broker_args);
            let d = ex.run(&args).await;
            panic!(
                "the help request never listed: {text} {}\ndevices: {}\naudit: {:?}\nsite: {}\ncentral: {}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&d.stdout),
                agent.audit_records(),
                site.log(),
                central.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The app's device list, and an offer from it.
    let mut args = vec!["devices", "--window"];
    args.extend(broker_args);
    let (_gui, trace, _) = launch(&ex, &display, &args);
    trace
        .wait("the device list", |t| {
            t.get("directory").as_deref() == Some("kiosk-g")
                && t.rect("button-offer-first").is_some()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    screenshot(&display, &out.join("broker-device-list.png"));
    let window = window_of(&display);
    let (x, y, w, h) = trace.rect("button-offer-first").unwrap();
    click(&display, &window, x + w / 2.0, y + h / 2.0);
    let ev = tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .expect("the offer through the brokers never reached the device")
        .unwrap();
    assert_eq!(ev["expert"], "Ann Expert", "{ev}");
    ctl.request(&Request::Accept { prompt: None })
        .await
        .unwrap();
    trace
        .wait("the live view", |t| {
            t.get("state").as_deref() == Some("viewing")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    screenshot(&display, &out.join("broker-viewing.png"));
    agent.stop().await;
}

/// A screen chunk's payload: `msg` as a frame, without its header.
fn record_payload(msg: &shoulder_proto::Message) -> Vec<u8> {
    shoulder_proto::frame::encode(msg).unwrap()[shoulder_proto::frame::HEADER_LEN..].to_vec()
}

/// An update painting the whole `w`×`h` screen one colour (0x00RRGGBB).
fn solid_update(seq: u32, w: u16, h: u16, colour: u32) -> shoulder_proto::Message {
    use shoulder_proto::{Encoding, Message, Rect, UpdatePart};
    let mut rects = heapless::Vec::new();
    rects
        .push(Rect {
            x: 0,
            y: 0,
            w,
            h,
            encoding: Encoding::Solid(colour),
        })
        .unwrap();
    Message::Update(Box::new(UpdatePart {
        seq,
        generation: 1,
        last: true,
        rects,
    }))
}

/// The mean colour (R, G, B) of the middle of window rectangle `r` in a
/// screenshot (the window sits at the screen's top-left: no window manager).
fn mean_rgb(shot: &(u32, u32, Vec<u8>), r: (f32, f32, f32, f32)) -> (f64, f64, f64) {
    let (sw, sh, rgb) = shot;
    let (x, y, w, h) = r;
    let (x0, y0) = ((x + w * 0.2) as u32, (y + h * 0.2) as u32);
    let (x1, y1) = (
        ((x + w * 0.8) as u32).min(*sw),
        ((y + h * 0.8) as u32).min(*sh),
    );
    assert!(x1 > x0 && y1 > y0, "empty screen rectangle {r:?}");
    let mut sum = [0u64; 3];
    for row in y0..y1 {
        for col in x0..x1 {
            let s = ((row * sw + col) * 3) as usize;
            for (c, v) in sum.iter_mut().enumerate() {
                *v += u64::from(rgb[s + c]);
            }
        }
    }
    let n = f64::from((x1 - x0) * (y1 - y0));
    (sum[0] as f64 / n, sum[1] as f64 / n, sum[2] as f64 / n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, xdotool and ImageMagick: run tests/gui/run.sh"]
async fn gui_play_replays_a_record_with_its_timeline() {
    use shoulder_proto::record::{ChainWriter, ChunkKind};
    use shoulder_proto::{Message, ScreenInfo, WireFormat};
    for tool in ["Xvfb", "xdotool", "import"] {
        need(tool);
    }
    let out = artifacts();
    let (_xvfb, display) = start_xvfb();
    let ex = CliExpert::new();

    // A record: a red screen from the start, two events, a blue screen at
    // 5 s, the end at 6 s (the replay checks the chain, not the signature).
    let (w, h) = (320u16, 200u16);
    let mut chain = ChainWriter::new();
    let mut file = ChainWriter::magic().to_vec();
    let mut put = |kind, millis, payload: &[u8], file: &mut Vec<u8>| {
        chain.chunk(kind, millis, payload, file).unwrap();
    };
    put(
        ChunkKind::Start,
        0,
        br#"{"device":"kiosk","expert":"Ann","mode":"screen"}"#,
        &mut file,
    );
    let info = Message::ScreenInfo(ScreenInfo {
        width: w,
        height: h,
        format: WireFormat::Xrgb8888,
        generation: 1,
    });
    put(ChunkKind::Screen, 0, &record_payload(&info), &mut file);
    let red = record_payload(&solid_update(1, w, h, 0x00ff_0000));
    put(ChunkKind::Screen, 0, &red, &mut file);
    let event = br#"{"event":"consent-answered","kind":"view","granted":true}"#;
    put(ChunkKind::Event, 2000, event, &mut file);
    put(ChunkKind::Event, 3000, event, &mut file);
    let blue = record_payload(&solid_update(2, w, h, 0x0000_00ff));
    put(ChunkKind::Screen, 5000, &blue, &mut file);
    chain.end(6000, 0x0403, &[7; 64], &mut file);
    let record = ex.path("session.shrec");
    std::fs::write(&record, &file).unwrap();

    let (_gui, trace, log) = launch(&ex, &display, &["play", record.to_str().unwrap()]);
    let t0 = Instant::now();
    while trace.rect("replay-screen").is_none() || trace.rect("button-next-event").is_none() {
        assert!(
            t0.elapsed() < WAIT,
            "the replay window never showed the screen; it said:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Start, two events, end.
    assert_eq!(trace.get("replay-events").as_deref(), Some("4"));
    assert_eq!(trace.get("replay-chain").as_deref(), Some("intact"));
    assert_eq!(trace.get("replay-time").as_deref(), Some("0"));
    let window = {
        let o = Command::new("xdotool")
            .args(["search", "--sync", "--name", "replay of session"])
            .env("DISPLAY", &display)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .expect("the replay window")
            .to_string()
    };
    let is_red = |(r, g, b): (f64, f64, f64)| r > 200.0 && g < 50.0 && b < 50.0;
    let is_blue = |(r, g, b): (f64, f64, f64)| r < 50.0 && g < 50.0 && b > 200.0;
    // The window shows colour `ok` in the screen rectangle (it may take a
    // few frames to get there).
    let shows = |name: &'static str, ok: &dyn Fn((f64, f64, f64)) -> bool| {
        let t0 = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let r = trace.rect("replay-screen").expect("the screen rectangle");
            let shot = screenshot(&display, &out.join(format!("play-{name}.png")));
            let c = mean_rgb(&shot, r);
            if ok(c) {
                break;
            }
            assert!(
                t0.elapsed() < WAIT,
                "{name}: the screen shows {c:?} at {:?} ms",
                trace.get("replay-time")
            );
        }
    };
    let press = |key: &str| {
        let (x, y, w, h) = trace.rect(key).unwrap_or_else(|| panic!("no {key}"));
        click(&display, &window, x + w / 2.0, y + h / 2.0);
    };
    let time_is = |ms: &'static str| {
        let trace = trace.clone();
        async move {
            trace
                .wait(&format!("the replay at {ms} ms"), |t| {
                    t.get("replay-time").as_deref() == Some(ms)
                })
                .await
        }
    };
    shows("0-start-red", &is_red);

    // "event ▶": the first event, still red.
    press("button-next-event");
    time_is("2000").await;
    shows("1-first-event-red", &is_red);

    // Play runs to the end and stops there: blue.
    press("button-play");
    trace
        .wait("playing", |t| {
            t.get("replay-state").as_deref() == Some("playing")
        })
        .await;
    time_is("6000").await;
    trace
        .wait("the stop at the end", |t| {
            t.get("replay-state").as_deref() == Some("paused")
        })
        .await;
    shows("2-played-to-the-end-blue", &is_blue);

    // "◀ event" from the end: back before the blue screen (seeking back).
    press("button-previous-event");
    time_is("3000").await;
    shows("3-back-to-an-event-red", &is_red);

    // A click at the slider's right end: the end again.
    let (x, y, w, h) = trace.rect("replay-slider").unwrap();
    click(&display, &window, x + w - 2.0, y + h / 2.0);
    time_is("6000").await;
    shows("4-slider-end-blue", &is_blue);
}
