//! Property tests: random scripts of everything both sides and the network
//! can do, checked against the consent invariants.

use std::time::Duration;

use proptest::prelude::*;

use crate::msg::*;
use crate::session::*;
use crate::testing::{DeviceRecord as R, Pair};

#[derive(Debug, Clone)]
enum Op {
    Local(LocalDecision),
    Expert(UserAction),
    Advance(u64),
    LinkDown,
    LinkUp,
    LocalActive(bool),
    Fault,
    Garbage(Vec<u8>),
    RawToDevice(Box<Message>),
    ScreenChange,
    DeviceChat,
    Reconnect,
}

fn local() -> impl Strategy<Value = LocalDecision> {
    prop_oneof![
        4 => Just(LocalDecision::Accept),
        1 => Just(LocalDecision::Decline),
        1 => Just(LocalDecision::StopControl),
        1 => Just(LocalDecision::StopControlHotkey),
        1 => Just(LocalDecision::End),
    ]
}

fn user() -> impl Strategy<Value = UserAction> {
    prop_oneof![
        3 => Just(UserAction::RequestControl),
        1 => Just(UserAction::ReleaseControl),
        3 => (0u16..300, any::<bool>()).prop_map(|(code, down)| UserAction::Key(Key { code, down })),
        2 => (any::<u16>(), any::<u16>(), 0u8..8).prop_map(|(x, y, b)| UserAction::Pointer(Pointer {
            x, y, buttons: Buttons(b), wheel: 0, hwheel: 0
        })),
        1 => Just(UserAction::Chat("hello".into())),
        1 => Just(UserAction::RefreshScreen),
        1 => Just(UserAction::CheckView),
        1 => (any::<u32>(), 0usize..3).prop_map(|(seq, n)| UserAction::ReportView(Box::new(
            ViewReport { generation: 1, seq, hashes: (0..n as u64).collect() }
        ))),
        1 => Just(UserAction::Disconnect),
    ]
}

fn raw() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::RequestControl),
        Just(Message::ReleaseControl),
        Just(Message::UpdateRequest { incremental: true }),
        (0u16..300).prop_map(|code| Message::Key(Key { code, down: true })),
        Just(Message::Auth(Auth::Offer)),
        Just(Message::ConsentGranted {
            kind: ConsentKind::Control
        }),
        Just(Message::Ping { nonce: 1 }),
        Just(Message::ViewReport(Box::new(ViewReport {
            generation: 0,
            seq: u32::MAX,
            hashes: heapless::Vec::new(),
        }))),
        Just(Message::ViewChecked {
            seq: 1,
            compared: 9,
            differing: 9,
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => local().prop_map(Op::Local),
        8 => user().prop_map(Op::Expert),
        3 => (0u64..70).prop_map(Op::Advance),
        1 => Just(Op::LinkDown),
        1 => Just(Op::LinkUp),
        1 => any::<bool>().prop_map(Op::LocalActive),
        1 => Just(Op::Fault),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Op::Garbage),
        2 => raw().prop_map(|m| Op::RawToDevice(Box::new(m))),
        2 => Just(Op::ScreenChange),
        1 => Just(Op::DeviceChat),
        1 => Just(Op::Reconnect),
    ]
}

fn run(p: &mut Pair, op: Op) {
    match op {
        Op::Local(d) => p.local(d),
        Op::Expert(a) => p.expert_action(a),
        Op::Advance(s) => p.advance(Duration::from_secs(s)),
        Op::LinkDown => p.link_up = false,
        Op::LinkUp => p.link_up = true,
        Op::LocalActive(a) => p.device_input(DeviceInput::LocalUserActive(a)),
        Op::Fault => p.device_input(DeviceInput::InjectionFault("write failed".into())),
        Op::Garbage(b) => p.inject_to_device(b),
        Op::RawToDevice(m) => p.inject_to_device(crate::frame::encode(&m).unwrap()),
        Op::ScreenChange => p.change_screen(),
        Op::DeviceChat => p.device_input(DeviceInput::SendChat("hi".into())),
        Op::Reconnect => {
            if let Some(token) = p.offered_token() {
                p.reconnect(token, &crate::testing::offer_identity("Ann Expert"));
            }
        }
    }
}

/// Ends a run one of the ways a session can end.
fn terminate(p: &mut Pair, how: u8) {
    match how % 5 {
        0 => p.local(LocalDecision::End),
        1 => p.device_input(DeviceInput::Shutdown),
        2 => p.device_input(DeviceInput::PeerClosed { error: None }),
        3 => {
            p.link_up = false;
            p.advance(DEFAULT_PEER_TIMEOUT + DEFAULT_CONSENT_TIMEOUT + Duration::from_secs(1));
        }
        _ => {
            p.expert_action(UserAction::Disconnect);
            // Before viewing, disconnecting is closing the socket.
            p.expert
                .handle(p.now, ExpertInput::PeerClosed { error: None });
            p.device_input(DeviceInput::PeerClosed { error: None });
        }
    }
    p.drive();
    // A suspended session ends when nobody resumes it.
    if p.device.is_suspended() {
        p.advance(DEFAULT_RESUME_GRACE + Duration::from_secs(1));
    }
    // The expert's transport sees the device's close.
    if !p.expert.is_closed() {
        p.expert
            .handle(p.now, ExpertInput::PeerClosed { error: None });
        p.drive();
    }
}

fn check_invariants(p: &Pair) -> Result<(), TestCaseError> {
    let mut enabled = false;
    let mut released_since_enable = false;
    for (i, r) in p.device_log.iter().enumerate() {
        match r {
            R::Inject { live, .. } => {
                prop_assert!(*live, "injection without live control consent at {i}");
                prop_assert!(enabled, "injection while disabled at {i}");
            }
            R::EnableInjection => {
                prop_assert!(!enabled, "enabled twice at {i}");
                enabled = true;
                released_since_enable = false;
            }
            R::ReleaseAll => released_since_enable = true,
            R::DisableInjection => {
                prop_assert!(enabled, "disable without enable at {i}");
                prop_assert!(
                    released_since_enable,
                    "disable not preceded by release-all at {i}"
                );
                enabled = false;
            }
            R::Close(_) => {
                prop_assert!(!enabled, "closed with injection on at {i}");
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn no_injection_without_current_consent(ops in proptest::collection::vec(op(), 0..40)) {
        let mut p = Pair::resumable();
        p.drive();
        for o in ops {
            run(&mut p, o);
            check_invariants(&p)?;
            // A live token exists exactly while the device machine is controlling.
            let controlling = p.device.state_name() == "controlling";
            prop_assert_eq!(p.control.as_ref().is_some_and(|c| c.is_live()), controlling);
        }
    }

    #[test]
    fn every_run_ends_closed_with_a_reason(ops in proptest::collection::vec(op(), 0..40), how in any::<u8>(), resumable in any::<bool>()) {
        let mut p = if resumable { Pair::resumable() } else { Pair::new(DeviceConfig::default()) };
        p.drive();
        for o in ops {
            run(&mut p, o);
        }
        terminate(&mut p, how);
        prop_assert!(p.device.is_closed());
        prop_assert!(p.expert.is_closed());
        prop_assert!(p.device_close().is_some(), "device closed without a reason");
        let (_, sentence) = p.expert_close().expect("expert closed without a reason");
        prop_assert!(!sentence.is_empty());
        prop_assert!(p.control.is_none() && p.view.is_none() && p.prompt.is_none());
        check_invariants(&p)?;
    }

    #[test]
    fn every_revoke_and_close_is_preceded_by_release_all(ops in proptest::collection::vec(op(), 0..60), how in any::<u8>()) {
        let mut p = Pair::resumable();
        p.establish_control();
        for o in ops {
            run(&mut p, o);
        }
        terminate(&mut p, how);
        check_invariants(&p)?;
        // Every ControlEnded sent and every Close after control is preceded
        // by a ReleaseAll since the last EnableInjection.
        let mut since_enable: Option<bool> = None;
        for r in &p.device_log {
            match r {
                R::EnableInjection => since_enable = Some(false),
                R::ReleaseAll => if let Some(s) = since_enable.as_mut() { *s = true },
                R::Send("ControlEnded") | R::Close(_) => {
                    if let Some(released) = since_enable {
                        prop_assert!(released, "revoke/close without release-all");
                    }
                    since_enable = None;
                }
                _ => {}
            }
        }
    }
}

/// Steps of the decision-race property: everything [`op`] does, plus
/// answers that are given at one moment and reach the session later.
#[derive(Debug, Clone)]
enum RaceOp {
    Any(Op),
    /// The person answers what is on screen now (or, with no prompt up, a
    /// made-up id as a confused control-socket client would; the agent's
    /// hub refuses ids of prompts not shown yet, so a guess is at most the
    /// newest id shown).
    Decide {
        accept: bool,
        guess: u64,
    },
    /// The oldest answer still on its way reaches the session.
    Deliver,
}

fn race_op() -> impl Strategy<Value = RaceOp> {
    prop_oneof![
        6 => op().prop_map(RaceOp::Any),
        3 => (any::<bool>(), 0u64..6).prop_map(|(accept, guess)| RaceOp::Decide { accept, guess }),
        3 => Just(RaceOp::Deliver),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// No sequence of inputs makes an answer apply to a prompt created
    /// after the answer was given, and once the person took control back
    /// (stop, hotkey, end, also while reconnecting), injection comes back
    /// only through a new control prompt.
    #[test]
    fn answers_never_reach_a_later_prompt(ops in proptest::collection::vec(race_op(), 0..60)) {
        let mut p = Pair::resumable();
        p.drive();
        // Prompt ids in the order they appeared, with the step they appeared at.
        let mut shown: Vec<(PromptId, usize)> = Vec::new();
        let mut in_flight: std::collections::VecDeque<(PromptId, bool, usize)> = Default::default();
        let mut taken_back = false;
        let mut log_seen = 0;
        for (step, o) in ops.into_iter().enumerate() {
            match o {
                RaceOp::Any(Op::Local(d)) if d != LocalDecision::Accept && d != LocalDecision::Decline => {
                    let c = d.on(None).expect("take-backs need no prompt");
                    let out = p.device.decide(p.now, c);
                    p.drive();
                    if out == Outcome::Applied {
                        taken_back = true;
                    }
                }
                RaceOp::Any(o) => run(&mut p, o),
                RaceOp::Decide { accept, guess } => {
                    let newest = shown.last().map_or(0, |(id, _)| id.0);
                    let id = p.prompt.as_ref().map_or(PromptId(guess.min(newest)), |pr| pr.id);
                    in_flight.push_back((id, accept, step));
                }
                RaceOp::Deliver => {
                    if let Some((id, accept, made)) = in_flight.pop_front() {
                        let open = p.device.open_prompt();
                        let out = p.answer(id, accept);
                        if out == Outcome::Applied {
                            prop_assert_eq!(open, Some(id), "applied to a prompt that was not open");
                            let created = shown.iter().find(|(s, _)| *s == id).map(|(_, at)| *at);
                            prop_assert!(
                                created.is_some_and(|at| at <= made),
                                "an answer given at step {} applied to prompt {} shown at {:?}",
                                made, id, created
                            );
                        } else {
                            prop_assert_ne!(open, Some(id), "an answer for the open prompt was dropped");
                        }
                    }
                }
            }
            if let Some(pr) = &p.prompt
                && !shown.iter().any(|(s, _)| *s == pr.id)
            {
                prop_assert!(shown.iter().all(|(s, _)| s.0 < pr.id.0), "prompt ids are reused or go back");
                shown.push((pr.id, step));
            }
            for r in &p.device_log[log_seen..] {
                match r {
                    R::ShowPrompt(ConsentKind::Control) => taken_back = false,
                    R::EnableInjection => prop_assert!(
                        !taken_back,
                        "control came back without a new prompt after the person took it back"
                    ),
                    _ => {}
                }
            }
            log_seen = p.device_log.len();
            check_invariants(&p)?;
        }
    }
}
