//! Random scripts against both session machines: local decisions, expert
//! actions, raw bytes, time. Consent invariants must hold throughout.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shoulder_proto::session::*;
use shoulder_proto::testing::{DeviceRecord as R, Pair};
use shoulder_proto::{Buttons, Key, Pointer};

#[derive(Debug, Arbitrary)]
enum Op {
    Accept,
    Decline,
    StopControl,
    Hotkey,
    End,
    RequestControl,
    ReleaseControl,
    Key(u16, bool),
    Pointer(u16, u16, u8),
    Chat,
    Advance(u8),
    LinkDown,
    LinkUp,
    LocalActive(bool),
    Fault,
    Raw(Vec<u8>),
    ScreenChange,
    Disconnect,
    /// An answer naming any prompt id, open or not (a stale tap, a
    /// confused control-socket client).
    Answer(u8, bool),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut p = Pair::new(DeviceConfig::default());
    p.drive();
    for op in ops.into_iter().take(200) {
        match op {
            Op::Accept => p.local(LocalDecision::Accept),
            Op::Decline => p.local(LocalDecision::Decline),
            Op::StopControl => p.local(LocalDecision::StopControl),
            Op::Hotkey => p.local(LocalDecision::StopControlHotkey),
            Op::End => p.local(LocalDecision::End),
            Op::RequestControl => p.expert_action(UserAction::RequestControl),
            Op::ReleaseControl => p.expert_action(UserAction::ReleaseControl),
            Op::Key(code, down) => p.expert_action(UserAction::Key(Key { code, down })),
            Op::Pointer(x, y, b) => p.expert_action(UserAction::Pointer(Pointer {
                x,
                y,
                buttons: Buttons(b),
                wheel: 0,
                hwheel: 0,
            })),
            Op::Chat => p.expert_action(UserAction::Chat("x".into())),
            Op::Advance(s) => p.advance(Duration::from_secs(u64::from(s))),
            Op::LinkDown => p.link_up = false,
            Op::LinkUp => p.link_up = true,
            Op::LocalActive(a) => p.device_input(DeviceInput::LocalUserActive(a)),
            Op::Fault => p.device_input(DeviceInput::InjectionFault("fault".into())),
            Op::Raw(b) => p.inject_to_device(b),
            Op::ScreenChange => p.change_screen(),
            Op::Disconnect => p.expert_action(UserAction::Disconnect),
            Op::Answer(id, accept) => {
                let open = p.device.open_prompt();
                let out = p.answer(PromptId(u64::from(id)), accept);
                // Only the open prompt's own id is ever applied.
                assert_eq!(out == Outcome::Applied, open == Some(PromptId(u64::from(id))));
            }
        }
        let mut enabled = false;
        let mut released = false;
        for r in &p.device_log {
            match r {
                R::Inject { live, .. } => assert!(*live && enabled),
                R::EnableInjection => {
                    enabled = true;
                    released = false;
                }
                R::ReleaseAll => released = true,
                R::DisableInjection => {
                    assert!(released);
                    enabled = false;
                }
                R::Close(_) => assert!(!enabled),
                _ => {}
            }
        }
    }
});
