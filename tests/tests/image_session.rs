//! Whole sessions against the real kernel: the agent in the QEMU image
//! captures the kiosk app (DRM master, page-flipping or single-buffered),
//! draws its banner into the scanout, takes taps and keys from the virtio
//! tablet and keyboard (driven through QMP as the person at the device), and
//! injects the expert's input through uinput. The expert is the client
//! library, in process.
//!
//! Needs the image with the agent (`image/build`); without it these tests
//! print why and pass, unless `SHOULDER_REQUIRE_IMAGE=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use shoulder::client::{self, ClientEvent, ConnectOptions, SharedView};
use shoulder::identity::{self, Identity};
use shoulder::target::Target;
use shoulder::trust::AcceptNew;
use shoulder_banner::{
    Layout, PixelFormat, PromptView, RegionKind, Renderer, ScreenSpec, StripMode, StripView, Style,
    View,
};
use shoulder_kiosk_ui::KioskUi;
use shoulder_proto::invite::{Invitation, TEXT_PREFIX};
use shoulder_proto::msg::{Buttons, ConsentKind, Key, Pointer, text};
use shoulder_proto::session::LocalDecision;
use shoulder_proto::session::expert::{ControlState, ExpertState, UserAction};
use shoulder_tests::qemu::{Image, Screen, Vm, VmConfig, image_or_skip};

/// Screen size the tests run the kiosk at.
const SCREEN: (u32, u32) = (1024, 768);
/// Longest wait for one step of a session (a consent round trip, a screen
/// update, an injected click showing up); generous because emulation on a
/// loaded machine is slow.
const STEP: Duration = Duration::from_secs(20);
/// The issue's bound for the expert's view to match the screen.
const SAME_PIXELS_WITHIN: Duration = Duration::from_secs(1);
/// Expert name on the certificate (shown in the prompt).
const EXPERT_NAME: &str = "Ann Expert";
/// evdev codes used below.
const KEY_A: u16 = 30;

// --- setup -------------------------------------------------------------------

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("shoulder-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plant CA and an expert identity issued by it.
struct Pki {
    dir: TempDir,
    expert: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new("pki");
        let ca = dir.0.join("ca");
        let expert = dir.0.join("expert");
        identity::init_ca(&ca, "Test plant CA").expect("init CA");
        identity::issue_expert(&ca, EXPERT_NAME, &expert, 30).expect("issue expert");
        Self { dir, expert }
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.0.join("ca/ca.crt")).expect("ca.crt")
    }
}

/// The agent config for the image: offers from the test CA, invitations,
/// control, capture of the DRM scanout.
fn agent_toml(extra: &str) -> String {
    format!(
        r#"enabled = true
allow_offers = true
allow_invitations = true
allow_control = true
device_name = "Test kiosk"
listen = ["0.0.0.0:7575"]
plant_ca = ["/etc/shoulder/plant-ca.crt"]
capture = "drm"
consent_timeout = "60s"
{extra}
"#
    )
}

/// Boots the image with the agent and the kiosk app (`kiosk_args` added).
fn boot(test: &str, pki: &Pki, kiosk_args: &str, agent_extra: &str) -> Option<(Image, Vm)> {
    let image = image_or_skip(test)?;
    if !image.has_agent() {
        if std::env::var("SHOULDER_REQUIRE_IMAGE").is_ok_and(|v| v == "1") {
            panic!("{test}: the image has no shoulder-agent (image/build left it out)");
        }
        eprintln!("skipping {test}: the image has no shoulder-agent");
        return None;
    }
    let config = VmConfig::default()
        .kiosk_args(&format!("--mode {}x{} {kiosk_args}", SCREEN.0, SCREEN.1))
        .file("/etc/shoulder/agent.toml", agent_toml(agent_extra), 0o644)
        .file("/etc/shoulder/plant-ca.crt", pki.ca_pem(), 0o644);
    let vm = Vm::boot(&image, config).expect("boot");
    assert!(
        vm.ready_line().contains("agent=yes"),
        "the agent did not start: {}\n{}",
        vm.ready_line(),
        vm.serial_log()
    );
    Some((image, vm))
}

// --- the expert, in process --------------------------------------------------

/// A session run by the client library on its own runtime.
struct Expert {
    _rt: tokio::runtime::Runtime,
    actions: tokio::sync::mpsc::Sender<UserAction>,
    view: SharedView,
    events: Arc<Mutex<Vec<ClientEvent>>>,
    state: Arc<Mutex<ExpertState>>,
    _known: TempDir,
}

impl Expert {
    fn start(target: Target, identity: Option<&Path>, password: Option<&str>) -> Self {
        let known = TempDir::new("known");
        // The device makes its own key at first start, not signed by the
        // plant CA: trust it on first use (as `--accept-new` does).
        let identity = identity.map(|d| {
            let mut id = Identity::load(d).expect("expert identity");
            id.plant_ca = None;
            Arc::new(id)
        });
        let opts = ConnectOptions {
            target,
            password: password.map(str::to_string),
            identity,
            accept_new: AcceptNew::Any,
            known_hosts: Some(known.0.join("known_devices")),
            name: EXPERT_NAME.into(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, rx) = tokio::sync::mpsc::channel(client::ACTION_QUEUE);
        let view = SharedView::default();
        let events = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(ExpertState::Connecting));
        let (ev, st) = (events.clone(), state.clone());
        let emit = Box::new(move |e: ClientEvent| {
            if let ClientEvent::State(s) = &e {
                *st.lock().unwrap() = *s;
            }
            ev.lock().unwrap().push(e);
        });
        let view2 = view.clone();
        rt.spawn(async move {
            client::run(opts, view2, rx, emit).await;
        });
        Self {
            _rt: rt,
            actions: tx,
            view,
            events,
            state,
            _known: known,
        }
    }

    fn offer(addr: SocketAddr, pki: &Pki) -> Self {
        let target = Target::Offer {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        Self::start(target, Some(&pki.expert), None)
    }

    fn state(&self) -> ExpertState {
        *self.state.lock().unwrap()
    }

    /// Waits until the state satisfies `pred`; panics with the events seen.
    fn wait_state(&self, what: &str, pred: impl Fn(ExpertState) -> bool) {
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if pred(self.state()) {
                return;
            }
            if self.ended().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "expert: waiting for {what}, state {:?}, events {:?}",
            self.state(),
            self.event_summary()
        );
    }

    fn ended(&self) -> Option<String> {
        self.events.lock().unwrap().iter().find_map(|e| match e {
            ClientEvent::Ended(reason) => Some(format!("{reason:?}")),
            _ => None,
        })
    }

    fn event_summary(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| !matches!(e, ClientEvent::UpdateApplied { .. }))
            .map(|e| format!("{e:?}"))
            .collect()
    }

    /// The expert's framebuffer as a screen (RGB).
    fn screen(&self) -> Option<Screen> {
        let view = self.view.lock();
        let fb = view.fb.as_ref()?;
        let rgb = fb
            .pixels()
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        Some(Screen {
            width: u32::from(fb.width()),
            height: u32::from(fb.height()),
            rgb,
        })
    }

    fn send(&self, action: UserAction) {
        // The test thread is outside the runtime: a blocking send is fine.
        let _ = self.actions.blocking_send(action);
    }

    fn click(&self, x: u32, y: u32) {
        let at = |buttons| {
            UserAction::Pointer(Pointer {
                x: x as u16,
                y: y as u16,
                buttons: Buttons(buttons),
                wheel: 0,
                hwheel: 0,
            })
        };
        self.send(at(0));
        self.send(at(Buttons::LEFT));
        self.send(at(0));
    }

    fn key(&self, code: u16, down: bool) {
        self.send(UserAction::Key(Key { code, down }));
    }
}

impl Drop for Expert {
    fn drop(&mut self) {
        self.send(UserAction::Disconnect);
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- screens -----------------------------------------------------------------

/// Where the banner's button for `decision` is while a prompt of `kind` is
/// open, as the agent lays it out (same renderer, default style).
fn prompt_button(kind: ConsentKind, decision: LocalDecision) -> Rectangle {
    let renderer = Renderer::new(
        ScreenSpec {
            width: SCREEN.0,
            height: SCREEN.1,
            format: PixelFormat::Xrgb8888,
        },
        Style::default(),
    )
    .expect("renderer");
    let view = View {
        prompt: Some(PromptView {
            kind,
            expert: EXPERT_NAME.into(),
            how: "plant certificate".into(),
            seconds_left: 60,
        }),
        ..View::default()
    };
    let layout: Layout = renderer.layout(&view);
    layout.button(decision).expect("the prompt has this button")
}

fn center(r: Rectangle) -> (u32, u32) {
    let c = r.center();
    (c.x as u32, c.y as u32)
}

/// Takes screendumps until the expert's framebuffer equals one of them
/// (both sampled right after each other); returns how long that took.
fn wait_same_pixels(vm: &mut Vm, expert: &Expert, within: Duration) -> Duration {
    let start = Instant::now();
    let last;
    loop {
        let dump = vm.screendump().expect("screendump");
        if let Some(mine) = expert.screen()
            && mine == dump
        {
            return start.elapsed();
        }
        if start.elapsed() > within {
            let mine = expert.screen();
            let differing = mine
                .as_ref()
                .filter(|m| m.size() == dump.size())
                .map(|m| m.diff_in(&dump, 0, 0, dump.width, dump.height));
            let dir = std::env::temp_dir();
            let _ = dump.write_ppm(&dir.join("shoulder-session-device.ppm"));
            if let Some(m) = &mine {
                let _ = m.write_ppm(&dir.join("shoulder-session-expert.ppm"));
            }
            last = Some((mine.map(|m| m.size()), dump.size(), differing));
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!(
        "the expert's view did not equal the screen within {within:?}: \
         (expert size, screen size, differing pixels) = {last:?}; pictures in {}",
        std::env::temp_dir().display()
    );
}

/// Taps (QMP tablet click) the centre of `area`.
fn tap(vm: &mut Vm, area: Rectangle) {
    let (x, y) = center(area);
    vm.click(x, y, SCREEN).expect("tap");
}

fn granted(s: ExpertState) -> bool {
    matches!(
        s,
        ExpertState::Viewing {
            control: ControlState::Granted { .. }
        }
    )
}

// --- tests -------------------------------------------------------------------

/// Offer → tap Accept → the expert sees exactly the screen (banner included)
/// → control requested, accepted by key → the expert clicks the counter →
/// the stop hotkey takes control back → the expert's input no longer
/// arrives → disconnect → the banner is gone.
#[test]
fn image_offer_session_view_control_stop_disconnect() {
    let test = "image_offer_session_view_control_stop_disconnect";
    let pki = Pki::new();
    let Some((_image, mut vm)) = boot(test, &pki, "--paused", "") else {
        return;
    };
    let expert = Expert::offer(vm.agent_addr(), &pki);
    expert.wait_state("the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });

    // The person taps Accept on the banner.
    let accept = prompt_button(ConsentKind::View, LocalDecision::Accept);
    // Wait until the prompt is on screen: the kiosk's own pixels at the
    // Accept button are covered.
    let kiosk = expected_kiosk(&KioskUi::new(SCREEN.0, SCREEN.1));
    let (ax, ay) = center(accept);
    let deadline = Instant::now() + STEP;
    while vm.screendump().expect("screendump").pixel(ax, ay) == kiosk.pixel(ax, ay) {
        assert!(
            Instant::now() < deadline,
            "no prompt on screen:\n{}",
            vm.serial_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    tap(&mut vm, accept);
    expert.wait_state("viewing", |s| matches!(s, ExpertState::Viewing { .. }));

    // The expert sees what the person sees, pixel for pixel, banner strip
    // included (the kiosk animation is paused).
    let took = wait_same_pixels(&mut vm, &expert, STEP);
    eprintln!("{test}: expert view equal to the screen {took:?} after accepting");
    // And again after a change on the device: within a second.
    let counter = KioskUi::new(SCREEN.0, SCREEN.1).layout().counter_button;
    let mark = vm.serial_mark();
    tap(&mut vm, counter);
    vm.wait_serial(mark, "kiosk: counter=1", STEP)
        .expect("local tap counted");
    let took = wait_same_pixels(&mut vm, &expert, STEP);
    assert!(
        took <= SAME_PIXELS_WITHIN,
        "the expert saw the change after {took:?}"
    );

    // Control: requested by the expert, accepted by Enter at the device.
    expert.send(UserAction::RequestControl);
    std::thread::sleep(Duration::from_millis(500));
    let mark = vm.serial_mark();
    vm.tap_key("ret").expect("Enter");
    expert.wait_state("control granted", granted);
    // Enter answered the prompt and did not reach the app.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !vm.serial_log()[mark..].contains("kiosk: key 28"),
        "Enter leaked to the app"
    );

    // The expert clicks the counter button: the app counts it.
    let mark = vm.serial_mark();
    let (x, y) = center(counter);
    let deadline = Instant::now() + STEP;
    loop {
        expert.click(x, y);
        if vm
            .wait_serial(mark, "kiosk: counter=2", Duration::from_secs(2))
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expert's click never arrived:\n{}",
            vm.serial_log()
        );
    }
    wait_same_pixels(&mut vm, &expert, STEP);

    // Local input wins: the person moves the pointer, the expert is told
    // the local user is active, then it passes once the person is idle.
    vm.pointer_move(10, 10, SCREEN).expect("local pointer move");
    expert.wait_state("local user active", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::Granted {
                    local_user_active: true
                }
            }
        )
    });
    expert.wait_state("local user idle again", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::Granted {
                    local_user_active: false
                }
            }
        )
    });

    // The stop hotkey (Ctrl+Alt+Shift+S) takes control back at once.
    for k in ["ctrl", "alt", "shift", "s"] {
        vm.key(k, true).expect("hotkey down");
    }
    for k in ["s", "shift", "alt", "ctrl"] {
        vm.key(k, false).expect("hotkey up");
    }
    expert.wait_state("control ended", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::None
            }
        )
    });
    let mark = vm.serial_mark();
    expert.click(x, y);
    expert.key(KEY_A, true);
    expert.key(KEY_A, false);
    std::thread::sleep(Duration::from_secs(2));
    let after = &vm.serial_log()[mark..];
    assert!(
        !after.contains("kiosk: counter=3"),
        "a click arrived after stop: {after}"
    );
    assert!(
        !after.contains("kiosk: key 30"),
        "a key arrived after stop: {after}"
    );

    // Disconnect: the banner goes away (the screen is the kiosk's again).
    drop(expert);
    let mut ui = KioskUi::new(SCREEN.0, SCREEN.1);
    ui.tap(center(counter).0 as i32, center(counter).1 as i32);
    ui.tap(center(counter).0 as i32, center(counter).1 as i32);
    let deadline = Instant::now() + STEP;
    loop {
        let dump = vm.screendump().expect("screendump");
        let strip_gone = banner_free(&dump, &ui);
        if strip_gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the banner stayed after disconnect"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    vm.shutdown();
}

/// Whether the screen shows only the kiosk (no banner pixels), outside the
/// kiosk's animated areas.
fn banner_free(screen: &Screen, ui: &KioskUi) -> bool {
    let l = ui.layout();
    let animated = [l.clock, l.progress, l.text_field];
    let want = expected_kiosk(ui);
    Rectangle::new(Point::zero(), l.size)
        .points()
        .filter(|p| !animated.iter().any(|a| a.contains(*p)))
        .all(|p| screen.pixel(p.x as u32, p.y as u32) == want.pixel(p.x as u32, p.y as u32))
}

fn expected_kiosk(ui: &KioskUi) -> Screen {
    let size = ui.layout().size;
    let pitch = size.width as usize * 4;
    let mut buf = vec![0u8; pitch * size.height as usize];
    let mut canvas =
        shoulder_kiosk_ui::Xrgb8888Canvas::new(&mut buf, size.width, size.height, pitch).unwrap();
    ui.draw(&mut canvas, Duration::ZERO).unwrap();
    Screen {
        width: size.width,
        height: size.height,
        rgb: buf
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect(),
    }
}

/// Where the session strip is while `expert` views the screen.
fn strip_region() -> Rectangle {
    let renderer = Renderer::new(
        ScreenSpec {
            width: SCREEN.0,
            height: SCREEN.1,
            format: PixelFormat::Xrgb8888,
        },
        Style::default(),
    )
    .expect("renderer");
    let view = View {
        strip: Some(StripView {
            mode: StripMode::Viewing,
            expert: EXPERT_NAME.into(),
            elapsed: Duration::from_secs(1),
            stop_hotkey: "Ctrl+Alt+Shift+S".into(),
        }),
        ..View::default()
    };
    renderer
        .layout(&view)
        .region(RegionKind::Strip)
        .expect("a strip while viewing")
}

/// Accepts the open prompt from the device's keyboard (Enter), once it is
/// on screen.
fn accept_by_key(vm: &mut Vm, expert: &Expert) {
    expert.wait_state("the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });
    let kiosk = expected_kiosk(&KioskUi::new(SCREEN.0, SCREEN.1));
    let (ax, ay) = center(prompt_button(ConsentKind::View, LocalDecision::Accept));
    let deadline = Instant::now() + STEP;
    while vm.screendump().expect("screendump").pixel(ax, ay) == kiosk.pixel(ax, ay) {
        assert!(
            Instant::now() < deadline,
            "no prompt on screen:\n{}",
            vm.serial_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.tap_key("ret").expect("Enter");
    expert.wait_state("viewing", |s| matches!(s, ExpertState::Viewing { .. }));
}

/// An invitation made on the device (`shoulder-agent ctl invite`) with a
/// password: a wrong password gets nowhere, the right one reaches the
/// person, who accepts; the expert then sees the screen.
#[test]
fn image_invitation_session_with_password() {
    let test = "image_invitation_session_with_password";
    let pki = Pki::new();
    let Some((_image, mut vm)) = boot(test, &pki, "--paused", "") else {
        return;
    };
    let made = vm
        .exec(
            // The agent opens its control socket just after it listens.
            "for i in $(seq 100); do [ -S /run/shoulder/control.sock ] && break; usleep 100000; done; \
             printf 'correct horse battery\\n' >/tmp/pw && \
             shoulder-agent ctl invite --expires 30m --password-file /tmp/pw",
            STEP,
        )
        .expect("ctl invite");
    assert_eq!(made.status, 0, "ctl invite failed: {}", made.output);
    let line = made
        .output
        .lines()
        .find(|l| l.trim_start().starts_with(TEXT_PREFIX))
        .unwrap_or_else(|| panic!("no invitation text in: {}", made.output));
    let mut invitation = Invitation::from_text(line.trim()).expect("invitation parses");
    // The invitation names the guest's address and port; from the host the
    // agent is behind QEMU's port forward.
    invitation.addresses.clear();
    let _ = invitation.addresses.push(text("127.0.0.1"));
    invitation.port = vm.agent_addr().port();

    let wrong = Expert::start(
        Target::Invitation(Box::new(invitation.clone())),
        None,
        Some("wrong password"),
    );
    let deadline = Instant::now() + STEP;
    while wrong.ended().is_none() {
        assert!(
            Instant::now() < deadline,
            "a wrong password was not refused"
        );
        assert!(
            !matches!(
                wrong.state(),
                ExpertState::WaitingForConsent { .. } | ExpertState::Viewing { .. }
            ),
            "a wrong password reached the person at the device"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reason = wrong.ended().unwrap_or_default();
    assert!(
        reason.contains("WrongPassword"),
        "refused, but not for the password: {reason}"
    );
    drop(wrong);

    let expert = Expert::start(
        Target::Invitation(Box::new(invitation)),
        None,
        Some("correct horse battery"),
    );
    accept_by_key(&mut vm, &expert);
    wait_same_pixels(&mut vm, &expert, STEP);
    vm.shutdown();
}

/// A kiosk app that draws into one buffer and never flips is captured
/// (a local change shows within a second), a resolution change mid-session
/// reaches the expert, and a key the expert holds when disconnecting is
/// released in the app.
#[test]
fn image_single_buffer_app_mode_change_and_key_release() {
    let test = "image_single_buffer_app_mode_change_and_key_release";
    let pki = Pki::new();
    let kiosk_args = "--single-buffer --paused --modes 1024x768,800x600";
    let Some((_image, mut vm)) = boot(test, &pki, kiosk_args, "") else {
        return;
    };
    assert!(
        vm.serial_log().contains("single-buffer"),
        "{}",
        vm.serial_log()
    );
    let expert = Expert::offer(vm.agent_addr(), &pki);
    accept_by_key(&mut vm, &expert);
    wait_same_pixels(&mut vm, &expert, STEP);

    let counter = KioskUi::new(SCREEN.0, SCREEN.1).layout().counter_button;
    let mark = vm.serial_mark();
    tap(&mut vm, counter);
    vm.wait_serial(mark, "kiosk: counter=1", STEP)
        .expect("local tap counted");
    let took = wait_same_pixels(&mut vm, &expert, STEP);
    assert!(
        took <= SAME_PIXELS_WITHIN,
        "single-buffer change seen after {took:?}"
    );

    // F2: the app switches to 800x600; the expert gets the new screen.
    let mark = vm.serial_mark();
    vm.tap_key("f2").expect("F2");
    vm.wait_serial(mark, "kiosk: mode 800x600", STEP)
        .expect("mode switch");
    let deadline = Instant::now() + STEP;
    while expert.screen().map(|s| s.size()) != Some((800, 600)) {
        assert!(
            Instant::now() < deadline,
            "the expert never got the 800x600 screen: {:?}",
            expert.event_summary()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_same_pixels(&mut vm, &expert, STEP);

    // Control, a key held by the expert, then the expert disconnects: the
    // app sees the release.
    expert.send(UserAction::RequestControl);
    let deadline = Instant::now() + STEP;
    while !granted(expert.state()) {
        vm.tap_key("ret").expect("Enter");
        assert!(
            Instant::now() < deadline,
            "control not granted: {:?}",
            expert.event_summary()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mark = vm.serial_mark();
    let deadline = Instant::now() + STEP;
    loop {
        expert.key(KEY_A, true);
        if vm
            .wait_serial(mark, "kiosk: key 30 down", Duration::from_secs(2))
            .is_ok()
        {
            break;
        }
        expert.key(KEY_A, false);
        assert!(
            Instant::now() < deadline,
            "the expert's key never arrived:\n{}",
            vm.serial_log()
        );
    }
    let mark = vm.serial_mark();
    drop(expert);
    vm.wait_serial(mark, "kiosk: key 30 up", STEP)
        .expect("the held key was released when the expert left");
    vm.shutdown();
}

/// While the app page-flips at 30 Hz, the banner strip is on screen in at
/// least 95 % of 100 screendumps.
#[test]
fn image_banner_stays_visible_over_an_animating_app() {
    let test = "image_banner_stays_visible_over_an_animating_app";
    let pki = Pki::new();
    let Some((_image, mut vm)) = boot(test, &pki, "--fps 30", "") else {
        return;
    };
    let expert = Expert::offer(vm.agent_addr(), &pki);
    accept_by_key(&mut vm, &expert);
    let strip = strip_region();
    let kiosk = expected_kiosk(&KioskUi::new(SCREEN.0, SCREEN.1));
    let l = *KioskUi::new(SCREEN.0, SCREEN.1).layout();
    let animated = [l.clock, l.progress, l.text_field];
    // A dump shows the banner when most of the strip's static pixels are not
    // the app's.
    let shows_banner = |dump: &Screen| {
        let points: Vec<Point> = strip
            .points()
            .step_by(7)
            .filter(|p| !animated.iter().any(|a| a.contains(*p)))
            .collect();
        let app = points
            .iter()
            .filter(|p| dump.pixel(p.x as u32, p.y as u32) == kiosk.pixel(p.x as u32, p.y as u32))
            .count();
        app * 2 < points.len()
    };
    // Let the strip appear first.
    let deadline = Instant::now() + STEP;
    while !shows_banner(&vm.screendump().expect("screendump")) {
        assert!(Instant::now() < deadline, "no banner strip on screen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut visible = 0;
    for _ in 0..100 {
        if shows_banner(&vm.screendump().expect("screendump")) {
            visible += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{test}: banner visible in {visible} of 100 screendumps");
    assert!(
        visible >= 95,
        "banner visible in only {visible} of 100 screendumps"
    );
    assert!(vm.serial_log().contains("flipping"));
    drop(expert);
    vm.shutdown();
}
