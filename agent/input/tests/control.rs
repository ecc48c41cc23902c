//! `InputControl` driven by a real device session (the proto `Pair`
//! harness) the way the agent drives it: local input wins, the hotkeys stop
//! control or end the session, device faults end control, and nothing stays
//! held on any of those paths.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoulder_input::codes::*;
use shoulder_input::control::{recording_factory, uinput_factory};
use shoulder_input::local::{LocalDeviceId, LocalEvent, LocalEventKind, PointerButton};
use shoulder_input::{
    InjectOutcome, Injected, InputControl, InputControlConfig, RecordLog, ScreenSize, VirtualDevice,
};
use shoulder_proto::msg::{ControlEndReason, Key};
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use shoulder_proto::testing::{DeviceRecord, Pair};

const KEY_A: u16 = 30;
const KEY_S: u16 = 31;
const KEY_E: u16 = 18;

struct Rig {
    pair: Pair,
    control: InputControl,
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

    fn local(&mut self, kind: LocalEventKind) {
        let now = self.pair.now;
        self.control.local_event(
            now,
            &LocalEvent {
                device: LocalDeviceId(0),
                kind,
            },
        );
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
    assert_eq!(
        control.hotkeys().stop_control.to_string(),
        "Ctrl+Alt+Shift+S"
    );
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
