//! The input sink with the recording backend: consent gate, held-state
//! release on every end path, clamping, dropping of invalid events, touch
//! modes, and the hold-back of expert input while the person at the device
//! is using it. The events checked are exactly those the uinput backend
//! writes to the kernel.

use std::time::{Duration, Instant};

use shoulder_input::codes::*;
use shoulder_input::{
    DropReason, Holdback, HoldbackOutput, InjectMode, Injected, InputError, InputSink, RawEvent,
    RecordLog, Recorded, RecordingSink, VirtualDevice,
};
use shoulder_proto::msg::{Buttons, Key, Pointer, Touch, TouchPhase};
use shoulder_proto::session::{InjectEvent, LocalDecision, UserAction};
use shoulder_proto::testing::{Pair, granted_control};

const KEY_A: u16 = 30;
const KEY_B: u16 = 48;
const SYN: RawEvent = RawEvent::SYN;

fn key(code: u16, down: bool) -> InjectEvent {
    InjectEvent::Key(Key { code, down })
}

fn pointer(x: u16, y: u16, buttons: u8) -> InjectEvent {
    InjectEvent::Pointer(Pointer {
        x,
        y,
        buttons: Buttons(buttons),
        wheel: 0,
        hwheel: 0,
    })
}

fn touch(slot: u8, phase: TouchPhase, x: u16, y: u16) -> InjectEvent {
    InjectEvent::Touch(Touch { slot, phase, x, y })
}

fn ev(kind: u16, code: u16, value: i32) -> RawEvent {
    RawEvent::new(kind, code, value)
}

fn sink(
    mode: InjectMode,
) -> (
    Pair,
    shoulder_proto::consent::ControlConsent,
    RecordingSink,
    RecordLog,
) {
    let (pair, token) = granted_control();
    let s = RecordingSink::recording(&token, mode, 800, 600).unwrap();
    let log = s.backend().log();
    (pair, token, s, log)
}

/// Presses a key, a button and (in touch mode) a finger.
fn hold_things(s: &mut RecordingSink, token: &shoulder_proto::consent::ControlConsent) {
    assert_eq!(
        s.inject(token, key(KEY_LEFTSHIFT, true)).unwrap(),
        Injected::Forwarded
    );
    assert_eq!(
        s.inject(token, key(KEY_A, true)).unwrap(),
        Injected::Forwarded
    );
    assert_eq!(
        s.inject(token, pointer(10, 20, Buttons::RIGHT)).unwrap(),
        Injected::Forwarded
    );
    if s.core().mode() == InjectMode::Touch {
        assert_eq!(
            s.inject(token, touch(3, TouchPhase::Down, 50, 60)).unwrap(),
            Injected::Forwarded
        );
    }
    assert!(s.is_holding());
}

#[test]
fn injection_with_a_live_consent_writes_events_ending_in_syn_report() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    s.inject(&token, key(KEY_A, true)).unwrap();
    s.inject(&token, key(KEY_A, false)).unwrap();
    s.inject(
        &token,
        InjectEvent::Pointer(Pointer {
            x: 100,
            y: 200,
            buttons: Buttons(Buttons::LEFT),
            wheel: -2,
            hwheel: 0,
        }),
    )
    .unwrap();
    assert_eq!(
        log.events(VirtualDevice::Keyboard),
        vec![ev(EV_KEY, KEY_A, 1), SYN, ev(EV_KEY, KEY_A, 0), SYN]
    );
    assert_eq!(
        log.events(VirtualDevice::Pointer),
        vec![
            ev(EV_ABS, ABS_X, 100),
            ev(EV_ABS, ABS_Y, 200),
            ev(EV_KEY, BTN_LEFT, 1),
            ev(EV_REL, REL_WHEEL, -2),
            SYN
        ]
    );
    for b in log.batches() {
        assert_eq!(
            b.events.last(),
            Some(&SYN),
            "every write ends with SYN_REPORT"
        );
        assert_eq!(b.events.iter().filter(|e| e.kind == EV_SYN).count(), 1);
    }
    assert_eq!(s.stats().injected, 3);
}

#[test]
fn injection_is_refused_after_control_is_stopped() {
    let (mut pair, token, mut s, log) = sink(InjectMode::Pointer);
    s.inject(&token, key(KEY_A, true)).unwrap();
    pair.local(LocalDecision::StopControl);
    assert!(!token.is_live());
    // The agent releases on ReleaseAll (which comes before the revoke)...
    s.release_all().unwrap();
    let before = log.entries().len();
    // ...and a kept token no longer works.
    assert!(matches!(
        s.inject(&token, key(KEY_B, true)),
        Err(InputError::ControlWithdrawn)
    ));
    assert!(matches!(
        s.inject(&token, pointer(1, 1, Buttons::LEFT)),
        Err(InputError::ControlWithdrawn)
    ));
    assert_eq!(log.entries().len(), before, "nothing reached the devices");
    assert_eq!(s.stats().refused, 2);
    assert!(!log.anything_down());
}

#[test]
fn injection_is_refused_after_the_session_ends_by_hotkey_or_disconnect() {
    for end in [
        |p: &mut Pair| p.local(LocalDecision::StopControlHotkey),
        |p: &mut Pair| p.local(LocalDecision::End),
        |p: &mut Pair| p.expert_action(UserAction::ReleaseControl),
        |p: &mut Pair| p.expert_action(UserAction::Disconnect),
        |p: &mut Pair| p.device_input(shoulder_proto::session::DeviceInput::Shutdown),
    ] {
        let (mut pair, token, mut s, _log) = sink(InjectMode::Pointer);
        end(&mut pair);
        assert!(matches!(
            s.inject(&token, key(KEY_A, true)),
            Err(InputError::ControlWithdrawn)
        ));
    }
}

#[test]
fn a_withdrawn_consent_cannot_create_devices() {
    let (mut pair, token) = granted_control();
    pair.local(LocalDecision::StopControl);
    assert!(matches!(
        RecordingSink::recording(&token, InjectMode::Pointer, 800, 600),
        Err(InputError::ControlWithdrawn)
    ));
}

#[test]
fn a_token_of_another_grant_is_refused() {
    let (mut pair, old) = granted_control();
    let mut s = RecordingSink::recording(&old, InjectMode::Pointer, 800, 600).unwrap();
    pair.local(LocalDecision::StopControl);
    pair.expert_action(UserAction::RequestControl);
    pair.local(LocalDecision::Accept);
    let new = pair.control.take().expect("control granted again");
    assert!(new.is_live());
    assert_ne!(new.epoch(), old.epoch());
    assert!(matches!(
        s.inject(&new, key(KEY_A, true)),
        Err(InputError::WrongGrant { .. })
    ));
}

#[test]
fn release_all_releases_keys_buttons_and_touches() {
    for mode in [InjectMode::Pointer, InjectMode::Touch] {
        let (_pair, token, mut s, log) = sink(mode);
        hold_things(&mut s, &token);
        assert!(log.anything_down());
        s.release_all().unwrap();
        assert!(!log.anything_down(), "{mode:?}: {:?}", log.entries());
        assert!(!s.is_holding());
        assert!(log.is_live(), "release keeps the devices");
        // Releasing again writes nothing.
        let n = log.entries().len();
        s.release_all().unwrap();
        assert_eq!(log.entries().len(), n);
        // And keys can be pressed again afterwards.
        assert_eq!(
            s.inject(&token, key(KEY_A, true)).unwrap(),
            Injected::Forwarded
        );
    }
}

#[test]
fn close_releases_then_destroys_and_refuses_more() {
    let (_pair, token, mut s, log) = sink(InjectMode::Touch);
    hold_things(&mut s, &token);
    s.close().unwrap();
    assert!(!log.anything_down());
    let entries = log.entries();
    assert_eq!(entries.last(), Some(&Recorded::Destroyed));
    assert!(
        matches!(entries[entries.len() - 2], Recorded::Batch(_)),
        "releases come before the destroy"
    );
    assert!(matches!(
        s.inject(&token, key(KEY_A, true)),
        Err(InputError::Closed)
    ));
    s.close().unwrap();
    assert_eq!(
        log.entries().len(),
        entries.len(),
        "closing twice does nothing"
    );
}

#[test]
fn dropping_the_sink_releases_and_destroys() {
    // Disconnect and shutdown: the agent drops its sink.
    let (_pair, token, mut s, log) = sink(InjectMode::Touch);
    hold_things(&mut s, &token);
    drop(s);
    assert!(!log.anything_down());
    assert!(!log.is_live());
}

#[test]
fn a_panic_while_keys_are_held_releases_them() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    hold_things(&mut s, &token);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _owned = s;
        panic!("agent bug while the expert holds Shift+A");
    }));
    assert!(r.is_err());
    assert!(!log.anything_down());
    assert!(!log.is_live());
    // The panic-hook function is safe to call any time (no uinput devices here).
    shoulder_input::emergency_release();
}

#[test]
fn a_failing_device_reports_an_error_for_the_injection_fault_path() {
    let (_pair, token, mut s, _log) = sink(InjectMode::Pointer);
    s.backend_mut().fail_writes(true);
    let e = s.inject(&token, key(KEY_A, true)).unwrap_err();
    assert!(e.to_string().contains("Shoulder remote keyboard"), "{e}");
}

#[test]
fn pointer_coordinates_are_clamped_to_the_screen() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    s.inject(&token, pointer(5000, 600, 0)).unwrap();
    s.inject(&token, pointer(799, 599, 0)).unwrap();
    assert_eq!(
        log.events(VirtualDevice::Pointer),
        vec![
            ev(EV_ABS, ABS_X, 799),
            ev(EV_ABS, ABS_Y, 599),
            SYN,
            ev(EV_ABS, ABS_X, 799),
            ev(EV_ABS, ABS_Y, 599),
            SYN
        ]
    );
    assert_eq!(s.stats().clamped, 1);
}

/// The kernel drops an absolute value equal to the last one; a compositor
/// that opened the device after the expert's move would place a click there
/// at its own pointer. A press where the pointer already is comes after a
/// frame one unit aside, so the press frame carries the position again.
#[test]
fn a_press_where_the_pointer_already_is_moves_it_aside_first() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    s.inject(&token, pointer(300, 200, 0)).unwrap();
    s.inject(&token, pointer(300, 200, Buttons::LEFT)).unwrap();
    s.inject(&token, pointer(300, 200, 0)).unwrap();
    // At the right edge, aside is to the left; a press that moves needs
    // nothing; nor does a touch-emulated press that moves.
    s.inject(&token, pointer(799, 10, 0)).unwrap();
    s.inject(&token, pointer(799, 10, Buttons::RIGHT)).unwrap();
    s.inject(&token, pointer(500, 10, Buttons::RIGHT | Buttons::LEFT))
        .unwrap();
    assert_eq!(
        log.events(VirtualDevice::Pointer),
        vec![
            ev(EV_ABS, ABS_X, 300),
            ev(EV_ABS, ABS_Y, 200),
            SYN,
            ev(EV_ABS, ABS_X, 301),
            SYN,
            ev(EV_ABS, ABS_X, 300),
            ev(EV_ABS, ABS_Y, 200),
            ev(EV_KEY, BTN_LEFT, 1),
            SYN,
            ev(EV_ABS, ABS_X, 300),
            ev(EV_ABS, ABS_Y, 200),
            ev(EV_KEY, BTN_LEFT, 0),
            SYN,
            ev(EV_ABS, ABS_X, 799),
            ev(EV_ABS, ABS_Y, 10),
            SYN,
            ev(EV_ABS, ABS_X, 798),
            SYN,
            ev(EV_ABS, ABS_X, 799),
            ev(EV_ABS, ABS_Y, 10),
            ev(EV_KEY, BTN_RIGHT, 1),
            SYN,
            ev(EV_ABS, ABS_X, 500),
            ev(EV_ABS, ABS_Y, 10),
            ev(EV_KEY, BTN_LEFT, 1),
            SYN,
        ]
    );
    // A touch turned into a left click, where the pointer is.
    s.inject(&token, pointer(500, 10, 0)).unwrap();
    let before = log.events(VirtualDevice::Pointer).len();
    s.inject(&token, touch(0, TouchPhase::Down, 500, 10))
        .unwrap();
    assert_eq!(
        log.events(VirtualDevice::Pointer)[before..],
        [
            ev(EV_ABS, ABS_X, 501),
            SYN,
            ev(EV_ABS, ABS_X, 500),
            ev(EV_ABS, ABS_Y, 10),
            ev(EV_KEY, BTN_LEFT, 1),
            SYN,
        ]
    );
}

#[test]
fn a_smaller_screen_clamps_and_remakes_the_devices() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    hold_things(&mut s, &token);
    s.set_screen(640, 480).unwrap();
    assert!(!log.anything_down(), "held input is released before");
    let entries = log.take();
    let n = entries.len();
    assert_eq!(entries[n - 2], Recorded::Destroyed);
    assert!(matches!(
        entries[n - 1],
        Recorded::Created { screen, .. } if screen.width == 640 && screen.height == 480
    ));
    s.inject(&token, pointer(700, 500, 0)).unwrap();
    assert_eq!(
        log.events(VirtualDevice::Pointer),
        vec![ev(EV_ABS, ABS_X, 639), ev(EV_ABS, ABS_Y, 479), SYN]
    );
    // Same size: nothing happens; zero: a readable error.
    s.set_screen(640, 480).unwrap();
    assert_eq!(log.entries().len(), 1);
    let e = s.set_screen(0, 480).unwrap_err();
    assert!(e.to_string().contains("0x480"), "{e}");
}

#[test]
fn invalid_events_are_dropped_counted_and_never_forwarded() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    let cases = [
        (key(0x54, true), DropReason::UnknownKey(0x54)),
        (key(BTN_LEFT, true), DropReason::UnknownKey(BTN_LEFT)),
        (key(0, true), DropReason::UnknownKey(0)),
        (key(u16::MAX, true), DropReason::UnknownKey(u16::MAX)),
        (key(KEY_A, false), DropReason::KeyNotDown(KEY_A)),
        (pointer(1, 1, 0x08), DropReason::UnknownButtons(0x08)),
        (
            touch(10, TouchPhase::Down, 1, 1),
            DropReason::SlotOutOfRange(10),
        ),
        (
            touch(255, TouchPhase::Down, 1, 1),
            DropReason::SlotOutOfRange(255),
        ),
        (
            touch(0, TouchPhase::Move, 1, 1),
            DropReason::TouchNotDown(0),
        ),
        (touch(0, TouchPhase::Up, 1, 1), DropReason::TouchNotDown(0)),
        (
            touch(1, TouchPhase::Down, 1, 1),
            DropReason::SlotUnsupported(1),
        ),
    ];
    for (event, reason) in cases {
        assert_eq!(
            s.inject(&token, event).unwrap(),
            Injected::Dropped(reason),
            "{event:?}"
        );
    }
    assert!(log.batches().is_empty(), "{:?}", log.batches());
    let st = s.stats();
    assert_eq!(st.dropped_unknown, 5);
    assert_eq!(st.dropped_impossible, 6);
    assert_eq!(st.injected, 0);

    s.inject(&token, key(KEY_A, true)).unwrap();
    assert_eq!(
        s.inject(&token, key(KEY_A, true)).unwrap(),
        Injected::Dropped(DropReason::KeyAlreadyDown(KEY_A))
    );
    assert_eq!(log.batches().len(), 1);
    assert!(DropReason::SlotOutOfRange(10).to_string().contains("0–9"));
}

#[test]
fn touch_mode_injects_multitouch_type_b() {
    let (_pair, token, mut s, log) = sink(InjectMode::Touch);
    s.inject(&token, touch(2, TouchPhase::Down, 100, 900))
        .unwrap();
    s.inject(&token, touch(2, TouchPhase::Move, 110, 120))
        .unwrap();
    s.inject(&token, touch(2, TouchPhase::Up, 0, 0)).unwrap();
    assert_eq!(
        log.events(VirtualDevice::Touch),
        vec![
            ev(EV_ABS, ABS_MT_SLOT, 2),
            ev(EV_ABS, ABS_MT_TRACKING_ID, 0),
            ev(EV_ABS, ABS_MT_POSITION_X, 100),
            ev(EV_ABS, ABS_MT_POSITION_Y, 599),
            ev(EV_ABS, ABS_X, 100),
            ev(EV_ABS, ABS_Y, 599),
            ev(EV_KEY, BTN_TOUCH, 1),
            SYN,
            ev(EV_ABS, ABS_MT_SLOT, 2),
            ev(EV_ABS, ABS_MT_POSITION_X, 110),
            ev(EV_ABS, ABS_MT_POSITION_Y, 120),
            ev(EV_ABS, ABS_X, 110),
            ev(EV_ABS, ABS_Y, 120),
            SYN,
            ev(EV_ABS, ABS_MT_SLOT, 2),
            ev(EV_ABS, ABS_MT_TRACKING_ID, -1),
            ev(EV_KEY, BTN_TOUCH, 0),
            SYN,
        ]
    );
    // A second contact gets a new tracking id.
    s.inject(&token, touch(0, TouchPhase::Down, 5, 5)).unwrap();
    assert!(
        log.events(VirtualDevice::Touch)
            .contains(&ev(EV_ABS, ABS_MT_TRACKING_ID, 1))
    );
}

#[test]
fn touch_mode_turns_the_left_button_into_a_touch() {
    let (_pair, token, mut s, log) = sink(InjectMode::Touch);
    s.inject(&token, pointer(300, 200, Buttons::LEFT)).unwrap();
    assert_eq!(log.touching_slots(), vec![0]);
    assert!(
        log.down_codes(VirtualDevice::Pointer).is_empty(),
        "no left button on the pointer in touch mode"
    );
    // The expert's own slot-0 touch cannot start while the button holds it.
    assert_eq!(
        s.inject(&token, touch(0, TouchPhase::Down, 1, 1)).unwrap(),
        Injected::Dropped(DropReason::TouchAlreadyDown(0))
    );
    s.inject(&token, pointer(310, 210, Buttons::LEFT)).unwrap();
    s.inject(&token, pointer(310, 210, 0)).unwrap();
    assert!(log.touching_slots().is_empty());
    let touch_ev = log.events(VirtualDevice::Touch);
    assert!(touch_ev.contains(&ev(EV_ABS, ABS_MT_POSITION_X, 310)));
    assert_eq!(touch_ev.last(), Some(&SYN));
}

#[test]
fn pointer_mode_turns_a_slot_zero_touch_into_a_left_click() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    s.inject(&token, touch(0, TouchPhase::Down, 30, 40))
        .unwrap();
    assert_eq!(log.down_codes(VirtualDevice::Pointer), vec![BTN_LEFT]);
    s.inject(&token, touch(0, TouchPhase::Up, 30, 40)).unwrap();
    assert!(log.down_codes(VirtualDevice::Pointer).is_empty());
    assert!(log.events(VirtualDevice::Touch).is_empty());
}

#[test]
fn local_activity_holds_back_expert_input_and_releases_what_it_holds() {
    let (_pair, token, mut s, log) = sink(InjectMode::Pointer);
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut hb = Holdback::default();
    let mut told = Vec::new();
    let mut step = |hb: &mut Holdback, s: &mut RecordingSink| {
        while let Some(o) = hb.poll_output() {
            match o {
                HoldbackOutput::ReleaseExpertInput => s.release_all().unwrap(),
                HoldbackOutput::LocalUserActive(a) => told.push(a),
            }
        }
    };
    // The expert holds A when the person at the device touches the screen.
    assert!(hb.admit(ms(0)));
    s.inject(&token, key(KEY_A, true)).unwrap();
    hb.local_activity(ms(100));
    step(&mut hb, &mut s);
    assert!(!log.anything_down(), "local input wins: A released");
    // Expert input during the window is dropped before it reaches the sink.
    assert!(!hb.admit(ms(500)));
    hb.local_activity(ms(600));
    assert!(!hb.admit(ms(1349)));
    hb.handle_timeout(ms(1350));
    step(&mut hb, &mut s);
    assert!(hb.admit(ms(1351)));
    s.inject(&token, key(KEY_B, true)).unwrap();
    assert_eq!(log.down_codes(VirtualDevice::Keyboard), vec![KEY_B]);
    assert_eq!(told, vec![true, false]);
    assert_eq!(hb.held_back(), 2);
}
