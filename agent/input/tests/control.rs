//! `InputControl` driven by a real device session (the proto `Pair`
//! harness) the way the agent drives it: local input wins, the hotkeys
//! (read by the banner task's `HotkeyDetector`) stop control or end the
//! session, keys that act on the device itself stay away from it, device
//! faults end control, and nothing stays held on any of those paths.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoulder_input::codes::*;
use shoulder_input::control::{recording_factory, uinput_factory};
use shoulder_input::local::{LocalEventKind, PointerButton};
use shoulder_input::{
    HotkeyDetector, Hotkeys, InjectOutcome, Injected, InputControl, InputControlConfig, RecordLog,
    ScreenSize, VirtualDevice,
};
use shoulder_proto::msg::{ControlEndReason, Key};
use shoulder_proto::session::DeviceInput;
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use shoulder_proto::testing::{DeviceRecord, Pair};

const KEY_A: u16 = 30;
const KEY_S: u16 = 31;
const KEY_E: u16 = 18;

struct Rig {
    pair: Pair,
    control: InputControl,
    hotkeys: HotkeyDetector,
    logs: Arc<Mutex<Vec<RecordLog>>>,
    seen: usize,
    outcomes: Vec<InjectOutcome>,
}

impl Rig {
    fn new() -> Self {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let l = logs.clone();
        let control = InputControl::new(
            InputControlConfig::default(),
            ScreenSize::new(800, 600).unwrap(),
            recording_factory(move |log| l.lock().unwrap().push(log)),
        );
        Self::with(control, logs)
    }

    fn with(control: InputControl, logs: Arc<Mutex<Vec<RecordLog>>>) -> Self {
        let mut pair = Pair::new(Default::default());
        pair.establish_control();
        let mut rig = Self {
            pair,
            control,
            hotkeys: HotkeyDetector::new(Hotkeys::default()),
            logs,
            seen: 0,
            outcomes: Vec::new(),
        };
        rig.sync();
        rig
    }

    /// The agent's loop: device outputs to the control, its inputs back to
    /// the session, until both are quiet.
    fn sync(&mut self) {
        for _ in 0..100 {
            let new: Vec<DeviceRecord> = self.pair.device_log[self.seen..].to_vec();
            self.seen = self.pair.device_log.len();
            let now = self.pair.now;
            for r in new {
                match r {
                    DeviceRecord::EnableInjection => {
                        let token = self.pair.control.take().expect("token with the grant");
                        self.control.enable(token);
                    }
                    DeviceRecord::Inject { event, .. } => {
                        let o = self.control.inject(now, event);
                        self.outcomes.push(o);
                    }
                    DeviceRecord::ReleaseAll => self.control.release_all(),
                    DeviceRecord::DisableInjection => self.control.disable(),
                    _ => {}
                }
            }
            let mut moved = false;
            while let Some(i) = self.control.poll_session_input() {
                moved = true;
                self.pair.device_input(i);
            }
            if !moved && self.seen == self.pair.device_log.len() {
                return;
            }
        }
        panic!("agent loop did not settle");
    }

    fn expert_key(&mut self, code: u16, down: bool) {
        self.pair.expert_action(UserAction::Key(Key { code, down }));
        self.sync();
    }

    /// The person at the device uses a local device, as the agent's banner
    /// task passes it on: activity to the control, keys to the hotkeys.
    fn local(&mut self, kind: LocalEventKind) {
        let now = self.pair.now;
        if kind.is_activity() {
            self.control.local_activity(now);
        }
        if let LocalEventKind::Key { code, down } = kind
            && let Some(c) = self.hotkeys.key(code, down).and_then(|d| d.on(None))
        {
            self.pair.device_input(DeviceInput::Local(c));
        }
        self.sync();
    }

    fn local_chord(&mut self, keys: &[u16]) {
        for k in keys {
            self.local(LocalEventKind::Key {
                code: *k,
                down: true,
            });
        }
        for k in keys.iter().rev() {
            self.local(LocalEventKind::Key {
                code: *k,
                down: false,
            });
        }
    }

    fn advance(&mut self, ms: u64) {
        self.pair.advance(Duration::from_millis(ms));
        if let Some(t) = self.control.poll_timeout()
            && t <= self.pair.now
        {
            self.control.handle_timeout(self.pair.now);
        }
        self.sync();
    }

    fn log(&self) -> RecordLog {
        self.logs
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a sink was made")
    }

    fn expert_sees_local_user(&self) -> Option<bool> {
        match self.pair.expert.state() {
            ExpertState::Viewing {
                control: ControlState::Granted { local_user_active },
            } => Some(local_user_active),
            _ => None,
        }
    }

    fn control_ended(&self) -> Option<ControlEndReason> {
        self.pair.expert_log.iter().find_map(|e| match e {
            shoulder_proto::session::ExpertEvent::ControlEnded(r) => Some(*r),
            _ => None,
        })
    }
}

#[test]
fn expert_keys_reach_the_devices() {
    let mut rig = Rig::new();
    assert!(rig.control.is_enabled());
    rig.expert_key(KEY_A, true);
    rig.expert_key(KEY_A, false);
    assert_eq!(
        rig.outcomes,
        vec![InjectOutcome::Sink(Injected::Forwarded); 2]
    );
    assert_eq!(
        rig.log().events(VirtualDevice::Keyboard),
        vec![
            shoulder_input::RawEvent::new(EV_KEY, KEY_A, 1),
            shoulder_input::RawEvent::SYN,
            shoulder_input::RawEvent::new(EV_KEY, KEY_A, 0),
            shoulder_input::RawEvent::SYN
        ]
    );
}

#[test]
fn local_input_wins_and_the_expert_is_told() {
    let mut rig = Rig::new();
    rig.expert_key(KEY_A, true);
    assert_eq!(rig.expert_sees_local_user(), Some(false));

    rig.local(LocalEventKind::Button {
        button: PointerButton::Left,
        down: true,
        x: 5,
        y: 5,
    });
    assert!(!rig.log().anything_down(), "the expert's A was released");
    assert_eq!(rig.expert_sees_local_user(), Some(true));

    rig.advance(300);
    rig.expert_key(KEY_E, true);
    assert_eq!(rig.outcomes.last(), Some(&InjectOutcome::HeldBack));
    assert!(!rig.log().anything_down());

    rig.advance(500);
    assert_eq!(rig.expert_sees_local_user(), Some(false));
    rig.expert_key(KEY_E, true);
    assert_eq!(
        rig.outcomes.last(),
        Some(&InjectOutcome::Sink(Injected::Forwarded))
    );
    assert_eq!(rig.control.stats().1, 1, "one event held back");
}

#[test]
fn the_stop_hotkey_ends_control_and_releases_everything() {
    let mut rig = Rig::new();
    rig.expert_key(KEY_A, true);
    rig.local_chord(&[KEY_LEFTCTRL, KEY_LEFTALT, KEY_LEFTSHIFT, KEY_S]);
    assert_eq!(rig.control_ended(), Some(ControlEndReason::Hotkey));
    assert!(!rig.control.is_enabled());
    assert!(!rig.log().anything_down());
    assert!(!rig.log().is_live(), "devices destroyed");
    assert!(!rig.pair.device.is_closed(), "viewing goes on");
    // Expert input after the stop goes nowhere.
    let before = rig.outcomes.len();
    rig.expert_key(KEY_E, true);
    assert!(
        rig.outcomes[before..]
            .iter()
            .all(|o| !matches!(o, InjectOutcome::Sink(Injected::Forwarded))),
        "{:?}",
        rig.outcomes
    );
    assert!(!rig.log().anything_down());
}

#[test]
fn the_end_hotkey_ends_the_session() {
    let mut rig = Rig::new();
    rig.expert_key(KEY_A, true);
    rig.local_chord(&[KEY_RIGHTCTRL, KEY_RIGHTALT, KEY_RIGHTSHIFT, KEY_E]);
    assert!(rig.pair.device.is_closed());
    assert!(!rig.control.is_enabled());
    assert!(!rig.log().anything_down());
    assert!(!rig.log().is_live());
}

#[test]
fn disconnect_and_shutdown_release_what_the_expert_holds() {
    let mut rig = Rig::new();
    rig.expert_key(KEY_A, true);
    rig.pair.expert_action(UserAction::Disconnect);
    rig.sync();
    assert!(!rig.log().anything_down());
    assert!(!rig.log().is_live());

    let mut rig = Rig::new();
    rig.expert_key(KEY_A, true);
    let log = rig.log();
    drop(rig); // agent shutdown drops its InputControl
    assert!(!log.anything_down());
    assert!(!log.is_live());
}

#[test]
fn failing_devices_end_control_with_a_device_fault() {
    // The devices cannot be made (no /dev/uinput here).
    let control = InputControl::new(
        InputControlConfig::default(),
        ScreenSize::new(800, 600).unwrap(),
        uinput_factory("/nonexistent/uinput"),
    );
    let rig = Rig::with(control, Arc::new(Mutex::new(Vec::new())));
    assert!(!rig.control.is_enabled());
    assert_eq!(rig.control_ended(), Some(ControlEndReason::DeviceFault));
    assert!(!rig.pair.device.is_closed(), "viewing goes on");
}

#[test]
fn nothing_is_injected_without_a_grant() {
    let mut control = InputControl::new(
        InputControlConfig::default(),
        ScreenSize::new(800, 600).unwrap(),
        recording_factory(|_| {}),
    );
    let now = std::time::Instant::now();
    assert_eq!(
        control.inject(
            now,
            shoulder_proto::session::InjectEvent::Key(Key {
                code: KEY_A,
                down: true
            })
        ),
        InjectOutcome::Disabled
    );
}

#[test]
fn keys_that_act_on_the_device_itself_stay_away_from_it() {
    let mut rig = Rig::new();
    // Ctrl+Alt+Del and the power key: blocked, control goes on.
    rig.expert_key(KEY_LEFTCTRL, true);
    rig.expert_key(KEY_LEFTALT, true);
    rig.expert_key(KEY_DELETE, true);
    rig.expert_key(KEY_DELETE, false);
    rig.expert_key(KEY_POWER, true);
    rig.expert_key(KEY_POWER, false);
    rig.expert_key(KEY_LEFTALT, false);
    rig.expert_key(KEY_LEFTCTRL, false);
    rig.expert_key(KEY_A, true);
    let down: Vec<u16> = rig.log().down_codes(VirtualDevice::Keyboard);
    assert_eq!(down, vec![KEY_A]);
    assert!(
        !rig.log()
            .events(VirtualDevice::Keyboard)
            .iter()
            .any(|e| e.code == KEY_DELETE || e.code == KEY_POWER),
        "a blocked key reached the keyboard"
    );
    assert!(
        rig.outcomes
            .iter()
            .filter(|o| matches!(o, InjectOutcome::Blocked(_)))
            .count()
            >= 3
    );
    assert_eq!(rig.control.blocked_keys(), 4);
    assert!(rig.control.is_enabled(), "control goes on");
}

#[test]
fn the_agent_can_move_these_across_tasks() {
    fn send<T: Send>() {}
    send::<InputControl>();
    send::<shoulder_input::local::LocalInput>();
    send::<shoulder_input::local::GrabGuard>();
    send::<shoulder_input::local::LocalInputHandle>();
    send::<shoulder_input::UinputSink>();
    send::<shoulder_input::RecordingSink>();
}

/// An `InputControl` with control granted, recording what reaches the sink.
fn granted(keys: shoulder_input::KeyPolicy) -> (InputControl, shoulder_input::CallLog, Pair) {
    let log = shoulder_input::CallLog::default();
    let mut control = InputControl::new(
        InputControlConfig {
            keys,
            ..InputControlConfig::default()
        },
        ScreenSize::new(100, 100).unwrap(),
        log.factory(),
    );
    let (pair, token) = shoulder_proto::testing::granted_control();
    control.enable(token);
    (control, log, pair)
}

fn key(code: u16, down: bool) -> shoulder_proto::session::InjectEvent {
    shoulder_proto::session::InjectEvent::Key(Key { code, down })
}

/// The sequence an expert would use to power off, reboot through SysRq
/// and switch to VT 1.
fn hostile(control: &mut InputControl) -> Vec<InjectOutcome> {
    let now = std::time::Instant::now();
    [
        key(KEY_POWER, true),
        key(KEY_POWER, false),
        key(KEY_LEFTALT, true),
        key(KEY_SYSRQ, true),
        key(48, true), // B: reboot, with SysRq down
        key(48, false),
        key(KEY_SYSRQ, false),
        key(KEY_LEFTCTRL, true),
        key(KEY_F1, true),
        key(KEY_F1, false),
        key(KEY_LEFTCTRL, false),
        key(KEY_LEFTALT, false),
        key(KEY_A, true),
        key(KEY_A, false),
    ]
    .into_iter()
    .map(|ev| control.inject(now, ev))
    .collect()
}

#[test]
fn power_sysrq_and_vt_keys_are_kept_from_the_device_by_default() {
    let (mut control, log, _pair) = granted(shoulder_input::KeyPolicy::default());
    let outcomes = hostile(&mut control);
    assert_eq!(
        log.injected(),
        vec![
            key(KEY_LEFTALT, true),
            key(48, true),
            key(48, false),
            key(KEY_LEFTCTRL, true),
            key(KEY_LEFTCTRL, false),
            key(KEY_LEFTALT, false),
            key(KEY_A, true),
            key(KEY_A, false),
        ]
    );
    assert_eq!(control.blocked_keys(), 6);
    // Not an error: control goes on.
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, InjectOutcome::Sink(_) | InjectOutcome::Blocked(_)))
    );
    assert!(control.is_enabled());
}

#[test]
fn allow_keys_lets_each_family_through() {
    use shoulder_input::KeyFamily;
    let all = shoulder_input::KeyPolicy::default()
        .allow(KeyFamily::Power)
        .allow(KeyFamily::Sysrq)
        .allow(KeyFamily::VtSwitch);
    let (mut control, log, _pair) = granted(all);
    hostile(&mut control);
    assert_eq!(log.injected().len(), 14);
    assert_eq!(control.blocked_keys(), 0);
}

#[test]
fn release_all_resets_the_chord() {
    let (mut control, log, _pair) = granted(shoulder_input::KeyPolicy::default());
    let now = std::time::Instant::now();
    control.inject(now, key(KEY_LEFTALT, true));
    control.release_all();
    // Alt is up on the device now: F1 alone is an ordinary key.
    control.inject(now, key(KEY_F1, true));
    assert_eq!(
        log.calls(),
        vec![
            shoulder_input::Call::Injected(key(KEY_LEFTALT, true)),
            shoulder_input::Call::ReleaseAll,
            shoulder_input::Call::Injected(key(KEY_F1, true)),
        ]
    );
}

/// Control over a 100×60 screen, recording what is injected and the size
/// of each set of devices made.
/// The sizes the devices were made with, one per grant.
type Made = Arc<Mutex<Vec<(u16, u16)>>>;

fn recording_100x60() -> (InputControl, shoulder_input::CallLog, Made) {
    let log = shoulder_input::CallLog::default();
    let made = Arc::new(Mutex::new(Vec::new()));
    let m = made.clone();
    let mut factory = log.factory();
    let control = InputControl::new(
        InputControlConfig::default(),
        ScreenSize::new(100, 60).unwrap(),
        Box::new(move |consent, mode, screen| {
            m.lock().unwrap().push((screen.width, screen.height));
            factory(consent, mode, screen)
        }),
    );
    (control, log, made)
}

fn pointer(x: u16, y: u16) -> shoulder_proto::session::InjectEvent {
    use shoulder_proto::msg::{Buttons, Pointer};
    shoulder_proto::session::InjectEvent::Pointer(Pointer {
        x,
        y,
        buttons: Buttons(0),
        wheel: 0,
        hwheel: 0,
    })
}

#[test]
fn on_a_sideways_panel_the_expert_points_where_the_person_sees() {
    use shoulder_input::Call;
    use shoulder_proto::msg::{Touch, TouchPhase};
    use shoulder_proto::rotation::Rotation;
    use shoulder_proto::session::InjectEvent;
    // A 100×60 framebuffer on a panel turned so the person sees it 60×100:
    // turning keeps the framebuffer's size and turns the expert's screen.
    let (mut control, log, made) = recording_100x60();
    control.set_rotation(Rotation::Deg90);
    let (_pair, token) = shoulder_proto::testing::granted_control();
    control.enable(token);
    // The devices span the framebuffer.
    assert_eq!(*made.lock().unwrap(), vec![(100, 60)]);
    let now = std::time::Instant::now();
    // The person's top-left and bottom-right corners, and a point off the
    // screen (clamped to its edge).
    control.inject(now, pointer(0, 0));
    control.inject(now, pointer(59, 99));
    control.inject(now, pointer(500, 0));
    control.inject(
        now,
        InjectEvent::Touch(Touch {
            slot: 0,
            phase: TouchPhase::Down,
            x: 10,
            y: 20,
        }),
    );
    let expect_touch = InjectEvent::Touch(Touch {
        slot: 0,
        phase: TouchPhase::Down,
        x: 20,
        y: 59 - 10,
    });
    assert_eq!(
        log.calls(),
        vec![
            Call::Injected(pointer(0, 59)),
            Call::Injected(pointer(99, 0)),
            Call::Injected(pointer(0, 0)),
            Call::Injected(expect_touch),
        ]
    );
}

#[test]
fn on_the_second_of_two_screens_the_expert_points_at_that_screen() {
    use shoulder_input::{Call, Placement};
    // Two 100×60 screens side by side: the expert looks at the right one.
    let (mut control, log, made) = recording_100x60();
    let desktop = ScreenSize::new(200, 60).unwrap();
    control.set_placement(Some(Placement {
        x: 100,
        y: 0,
        desktop,
    }));
    let (_pair, token) = shoulder_proto::testing::granted_control();
    control.enable(token);
    // The devices span both screens, as the compositor maps them.
    assert_eq!(*made.lock().unwrap(), vec![(200, 60)]);
    let now = std::time::Instant::now();
    control.inject(now, pointer(10, 20));
    control.inject(now, pointer(500, 500));
    // Back to the left screen: off its edge stays on it, not on the right one.
    control.set_placement(Some(Placement {
        x: 0,
        y: 0,
        desktop,
    }));
    control.inject(now, pointer(10, 20));
    control.inject(now, pointer(500, 500));
    assert_eq!(
        log.calls(),
        vec![
            Call::Injected(pointer(110, 20)),
            Call::Injected(pointer(199, 59)),
            Call::Injected(pointer(10, 20)),
            Call::Injected(pointer(99, 59)),
        ]
    );
}
