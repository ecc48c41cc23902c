//! Whole sessions, both machines, virtual time.

use std::time::Duration;

use crate::frame::{HEADER_LEN, encode};
use crate::msg::*;
use crate::session::*;
use crate::testing::{DeviceRecord as R, Pair, offer_identity};

fn pair() -> Pair {
    Pair::new(DeviceConfig::default())
}

fn viewing(p: &Pair) -> bool {
    matches!(p.expert.state(), ExpertState::Viewing { .. })
}

fn control(p: &Pair) -> Option<ControlState> {
    match p.expert.state() {
        ExpertState::Viewing { control } => Some(control),
        _ => None,
    }
}

/// Index of the first record matching `f` at or after `from`.
fn find(log: &[R], from: usize, f: impl Fn(&R) -> bool) -> Option<usize> {
    log.iter().skip(from).position(f).map(|i| i + from)
}

fn key(code: u16, down: bool) -> UserAction {
    UserAction::Key(Key { code, down })
}

#[test]
fn offer_view_control_stop_end() {
    let mut p = pair();
    p.drive();
    // Authenticated, prompt on the device, expert waiting.
    assert!(p.device_did(&R::ShowPrompt(ConsentKind::View)));
    assert!(matches!(
        p.expert.state(),
        ExpertState::WaitingForConsent { .. }
    ));
    assert!(p.view.is_none(), "nothing is captured before consent");

    p.local(LocalDecision::Accept);
    assert!(viewing(&p));
    assert!(p.view.as_ref().unwrap().is_live());
    // The expert asked for the screen and got it.
    let fb = p.framebuffer.as_ref().expect("screen info arrived");
    assert_eq!(fb.width(), 4);
    assert!(p.device_did(&R::UpdateRequested));

    p.expert_action(UserAction::RequestControl);
    assert!(p.device_did(&R::ShowPrompt(ConsentKind::Control)));
    assert_eq!(
        control(&p),
        Some(ControlState::Requested {
            deadline: Some(p.prompt.as_ref().unwrap().deadline)
        })
    );
    p.local(LocalDecision::Accept);
    assert_eq!(
        control(&p),
        Some(ControlState::Granted {
            local_user_active: false
        })
    );
    let token_live = p.control.as_ref().unwrap().is_live();
    assert!(token_live);

    p.expert_action(key(30, true));
    assert!(p.device_log.iter().any(|r| matches!(
        r,
        R::Inject {
            event: InjectEvent::Key(Key {
                code: 30,
                down: true
            }),
            live: true
        }
    )));

    // The person at the device stops control: release, disable, tell.
    let before = p.device_log.len();
    p.local(LocalDecision::StopControl);
    let rel = find(&p.device_log, before, |r| *r == R::ReleaseAll).unwrap();
    let dis = find(&p.device_log, before, |r| *r == R::DisableInjection).unwrap();
    assert!(rel < dis);
    assert_eq!(control(&p), Some(ControlState::None));
    assert!(
        p.expert_log
            .contains(&ExpertEvent::ControlEnded(ControlEndReason::StoppedByUser))
    );
    // View goes on.
    assert!(p.view.as_ref().unwrap().is_live());
    // Input after the revoke is never injected.
    p.expert.handle(
        p.now,
        ExpertInput::Received(vec![]), // nothing
    );
    let n = p.device_log.len();
    p.inject_to_device(
        encode(&Message::Key(Key {
            code: 30,
            down: true,
        }))
        .unwrap(),
    );
    assert!(
        !p.device_log[n..]
            .iter()
            .any(|r| matches!(r, R::Inject { .. }))
    );

    p.local(LocalDecision::End);
    assert_eq!(p.device_close(), Some(ByeReason::EndedByUser));
    let (reason, sentence) = p.expert_close().unwrap();
    assert_eq!(reason, ByeReason::EndedByUser);
    assert!(sentence.contains("ended the session"));
    assert!(p.device.is_closed() && p.expert.is_closed());
    assert!(p.view.is_none());
}

#[test]
fn declined_view_ends_with_declined() {
    let mut p = pair();
    p.drive();
    p.local(LocalDecision::Decline);
    assert_eq!(p.device_close(), Some(ByeReason::Declined));
    assert_eq!(
        p.expert_close().unwrap().1,
        "The device declined.".to_string()
    );
    assert!(!p.device_did(&R::StartCapture));
    assert!(p.device_did(&R::HidePrompt));
}

#[test]
fn unanswered_view_prompt_times_out_after_60s() {
    let mut p = pair();
    p.drive();
    p.advance(Duration::from_secs(59));
    assert!(!p.device.is_closed(), "keepalives keep it open");
    p.advance(Duration::from_secs(2));
    assert_eq!(p.device_close(), Some(ByeReason::ConsentTimeout));
    assert_eq!(p.expert_close().unwrap().0, ByeReason::ConsentTimeout);
    assert!(p.prompt.is_none());
}

#[test]
fn control_prompt_times_out_and_view_goes_on() {
    let mut p = pair();
    p.establish_view();
    p.expert_action(UserAction::RequestControl);
    p.advance(Duration::from_secs(61));
    assert!(
        p.expert_log
            .contains(&ExpertEvent::ControlDeclined(DeclineReason::TimedOut))
    );
    assert_eq!(control(&p), Some(ControlState::None));
    assert!(viewing(&p));
    assert!(!p.device_did(&R::EnableInjection));
}

#[test]
fn declined_control_keeps_viewing() {
    let mut p = pair();
    p.establish_view();
    p.expert_action(UserAction::RequestControl);
    p.local(LocalDecision::Decline);
    assert!(
        p.expert_log
            .contains(&ExpertEvent::ControlDeclined(DeclineReason::Declined))
    );
    assert!(viewing(&p));
    assert!(p.control.is_none());
}

#[test]
fn asking_for_control_twice_prompts_once() {
    let mut p = pair();
    p.establish_view();
    p.expert_action(UserAction::RequestControl);
    // A second request straight on the wire (the expert machine would not
    // send it).
    p.inject_to_device(encode(&Message::RequestControl).unwrap());
    let prompts = p
        .device_log
        .iter()
        .filter(|r| **r == R::ShowPrompt(ConsentKind::Control))
        .count();
    assert_eq!(prompts, 1);
    assert!(!p.device.is_closed());
    p.local(LocalDecision::Accept);
    p.inject_to_device(encode(&Message::RequestControl).unwrap());
    assert_eq!(
        p.device_log
            .iter()
            .filter(|r| **r == R::EnableInjection)
            .count(),
        1
    );
}

#[test]
fn a_recording_device_says_so_in_its_hello_and_others_do_not() {
    let mut p = Pair::new(DeviceConfig {
        recorded: true,
        ..DeviceConfig::default()
    });
    p.establish_view();
    assert!(p.expert.device_records());
    let mut p = pair();
    p.establish_view();
    assert!(!p.expert.device_records());
}

#[test]
fn view_only_device_declines_control() {
    let mut p = Pair::new(DeviceConfig {
        allow_control: false,
        ..DeviceConfig::default()
    });
    p.establish_view();
    p.expert_action(UserAction::RequestControl);
    assert!(
        p.expert_log
            .contains(&ExpertEvent::ControlDeclined(DeclineReason::ViewOnly))
    );
    assert!(!p.device_did(&R::ShowPrompt(ConsentKind::Control)));
}

#[test]
fn revoke_while_keys_held_releases_before_disabling() {
    let mut p = pair();
    p.establish_control();
    p.expert_action(key(42, true));
    p.expert_action(key(30, true));
    let before = p.device_log.len();
    p.local(LocalDecision::StopControlHotkey);
    let tail = &p.device_log[before..];
    let rel = tail.iter().position(|r| *r == R::ReleaseAll).unwrap();
    let dis = tail.iter().position(|r| *r == R::DisableInjection).unwrap();
    assert!(rel < dis, "{tail:?}");
    assert!(
        p.expert_log
            .contains(&ExpertEvent::ControlEnded(ControlEndReason::Hotkey))
    );
}

#[test]
fn expert_release_and_rerequest() {
    let mut p = pair();
    p.establish_control();
    p.expert_action(UserAction::ReleaseControl);
    assert!(
        p.expert_log
            .contains(&ExpertEvent::ControlEnded(ControlEndReason::Released))
    );
    assert!(p.device_did(&R::ReleaseAll));
    p.expert_action(UserAction::RequestControl);
    p.local(LocalDecision::Accept);
    assert!(matches!(control(&p), Some(ControlState::Granted { .. })));
}

#[test]
fn injection_fault_revokes_control() {
    let mut p = pair();
    p.establish_control();
    p.device_input(DeviceInput::InjectionFault("uinput write failed".into()));
    assert!(
        p.expert_log
            .contains(&ExpertEvent::ControlEnded(ControlEndReason::DeviceFault))
    );
    assert!(p.control.is_none());
}

#[test]
fn local_user_active_is_reported_while_controlling() {
    let mut p = pair();
    p.establish_view();
    p.device_input(DeviceInput::LocalUserActive(true));
    assert!(!p.device_did(&R::Send("LocalUserActive")));
    p.expert_action(UserAction::RequestControl);
    p.local(LocalDecision::Accept);
    p.device_input(DeviceInput::LocalUserActive(true));
    assert_eq!(
        control(&p),
        Some(ControlState::Granted {
            local_user_active: true
        })
    );
    p.device_input(DeviceInput::LocalUserActive(false));
    assert_eq!(
        control(&p),
        Some(ControlState::Granted {
            local_user_active: false
        })
    );
}

#[test]
fn chat_both_ways() {
    let mut p = pair();
    p.establish_view();
    p.expert_action(UserAction::Chat("hello there".into()));
    assert!(p.device_did(&R::ShowChat("hello there".into())));
    p.device_input(DeviceInput::SendChat("hi".into()));
    assert!(p.expert_log.contains(&ExpertEvent::Chat("hi".into())));
}

#[test]
fn auth_failure_closes_with_its_reason() {
    let mut p = Pair::with_auth(
        DeviceConfig::default(),
        Auth::Invitation {
            id: InvitationId([1; 8]),
            password: text("nope"),
        },
        Box::new(|_| {
            Err((
                ByeReason::WrongPassword { tries_left: 2 },
                "wrong password".into(),
            ))
        }),
    );
    p.drive();
    assert_eq!(
        p.expert_close().unwrap().1,
        "Wrong password (2 tries left)."
    );
    assert!(!p.device_did(&R::ShowPrompt(ConsentKind::View)));
    assert!(p.device_log.iter().any(|r| matches!(
        r,
        R::Audit(AuditEvent::AuthFailed {
            reason: ByeReason::WrongPassword { .. },
            ..
        })
    )));
}

#[test]
fn silent_peer_before_hello_is_cut_off() {
    let now = std::time::Instant::now();
    let mut d = DeviceSession::new(now, DeviceConfig::default(), 0);
    while d.poll_output().is_some() {}
    let t = d.poll_timeout().unwrap();
    assert_eq!(t, now + DEFAULT_PRE_AUTH_TIMEOUT);
    d.handle_timeout(t);
    assert!(d.is_closed());
    let mut closed = None;
    while let Some(o) = d.poll_output() {
        if let DeviceOutput::Close { reason, .. } = o {
            closed = Some(reason);
        }
    }
    assert_eq!(closed, Some(ByeReason::AuthTimeout));
}

#[test]
fn dead_peer_is_detected_by_keepalive() {
    let mut p = pair();
    p.establish_control();
    p.expert_action(key(30, true));
    p.link_up = false;
    p.advance(DEFAULT_PEER_TIMEOUT + Duration::from_secs(1));
    assert_eq!(p.device_close(), Some(ByeReason::PeerTimeout));
    assert!(p.device_did(&R::ReleaseAll));
    assert_eq!(p.expert_close().unwrap().0, ByeReason::PeerTimeout);
}

#[test]
fn keepalives_keep_an_idle_session_open() {
    let mut p = pair();
    p.establish_view();
    p.advance(Duration::from_secs(600));
    assert!(viewing(&p));
    assert!(
        p.expert_log
            .iter()
            .any(|e| matches!(e, ExpertEvent::Rtt(_)))
    );
}

#[test]
fn disconnect_in_every_state_closes_both_and_releases() {
    type Setup = fn(&mut Pair);
    let setups: [(&str, Setup); 5] = [
        ("connecting", |_p| {}),
        ("awaiting view", |p| p.drive()),
        ("viewing", |p| p.establish_view()),
        ("awaiting control", |p| {
            p.establish_view();
            p.expert_action(UserAction::RequestControl);
        }),
        ("controlling", |p| {
            p.establish_control();
            p.expert_action(key(29, true));
        }),
    ];
    for (name, setup) in setups {
        for how in 0..4 {
            let mut p = pair();
            setup(&mut p);
            match how {
                0 => p.expert_action(UserAction::Disconnect),
                1 => p.device_input(DeviceInput::PeerClosed {
                    error: Some("reset".into()),
                }),
                2 => p.device_input(DeviceInput::Shutdown),
                _ => p.local(LocalDecision::End),
            }
            p.drive();
            // The expert machine can only Disconnect once viewing; before
            // that the user closes the transport.
            if how == 0 && !p.expert.is_closed() {
                p.expert
                    .handle(p.now, ExpertInput::PeerClosed { error: None });
                p.device_input(DeviceInput::PeerClosed { error: None });
            }
            assert!(p.device.is_closed(), "{name}/{how}: device open");
            assert!(p.expert.is_closed(), "{name}/{how}: expert open");
            assert!(p.device_close().is_some() || how == 0 || how == 1);
            assert!(p.control.is_none(), "{name}/{how}: injection left on");
            assert!(p.view.is_none(), "{name}/{how}: capture left on");
            assert!(p.prompt.is_none(), "{name}/{how}: prompt left open");
            if name == "controlling" {
                assert!(p.device_did(&R::ReleaseAll), "{name}/{how}");
            }
        }
    }
}

#[test]
fn input_before_consent_is_ignored_never_injected() {
    let mut p = pair();
    p.drive();
    for m in [
        Message::Key(Key {
            code: 30,
            down: true,
        }),
        Message::Pointer(Pointer {
            x: 1,
            y: 1,
            buttons: Buttons(1),
            wheel: 0,
            hwheel: 0,
        }),
        Message::UpdateRequest { incremental: false },
        Message::RequestControl,
    ] {
        p.inject_to_device(encode(&m).unwrap());
    }
    assert!(!p.device.is_closed());
    assert!(
        !p.device_log
            .iter()
            .any(|r| matches!(r, R::Inject { .. } | R::ShowPrompt(ConsentKind::Control)))
    );
    assert_eq!(p.device.ignored_count(), 4);
    // Viewing, not controlling: input is still not injected.
    p.local(LocalDecision::Accept);
    p.inject_to_device(
        encode(&Message::Key(Key {
            code: 30,
            down: true,
        }))
        .unwrap(),
    );
    assert!(!p.device_log.iter().any(|r| matches!(r, R::Inject { .. })));
}

#[test]
fn device_bound_messages_from_the_expert_close_with_protocol_error() {
    let mut p = pair();
    p.establish_view();
    p.inject_to_device(
        encode(&Message::ConsentGranted {
            kind: ConsentKind::Control,
        })
        .unwrap(),
    );
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));
    assert!(p.expert_close().unwrap().1.contains("protocol"));
}

#[test]
fn auth_before_hello_and_hello_twice_are_protocol_errors() {
    for first in [
        Message::Auth(Auth::Offer),
        Message::Chat { text: text("hi") },
    ] {
        let now = std::time::Instant::now();
        let mut d = DeviceSession::new(now, DeviceConfig::default(), 0);
        d.handle(now, DeviceInput::Received(encode(&first).unwrap()));
        assert!(d.is_closed(), "{first:?}");
    }
    let mut p = pair();
    p.drive();
    p.inject_to_device(encode(&Message::Hello(Hello::new(Role::Expert, "x", "1", "y"))).unwrap());
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));
}

#[test]
fn garbage_oversize_and_truncated_input_close_cleanly() {
    // Garbage.
    let mut p = pair();
    p.drive();
    p.inject_to_device(vec![3, 0, 0, 0, 0xff, 0xff, 0xff]);
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));
    // Oversize before auth: a frame that would be fine later.
    let now = std::time::Instant::now();
    let mut d = DeviceSession::new(now, DeviceConfig::default(), 0);
    d.handle(now, DeviceInput::Received(5000u32.to_le_bytes().to_vec()));
    assert!(d.is_closed());
    let mut detail = String::new();
    while let Some(o) = d.poll_output() {
        if let DeviceOutput::Close { detail: d, .. } = o {
            detail = d;
        }
    }
    assert!(detail.contains("over the limit"), "{detail}");
    // Truncated: half a frame then the peer goes away.
    let mut p = pair();
    p.establish_view();
    let frame = encode(&Message::Chat {
        text: text("hello"),
    })
    .unwrap();
    p.inject_to_device(frame[..HEADER_LEN + 2].to_vec());
    assert!(!p.device.is_closed());
    p.device_input(DeviceInput::PeerClosed {
        error: Some("closed mid-frame".into()),
    });
    assert!(p.device.is_closed());
}

#[test]
fn incompatible_versions_get_a_readable_answer() {
    // A future expert whose Hello layout we cannot decode.
    let now = std::time::Instant::now();
    let mut d = DeviceSession::new(now, DeviceConfig::default(), 0);
    let payload = [0u8, 9, 8, 0xff, 0xff, 0xff];
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&payload);
    d.handle(now, DeviceInput::Received(frame));
    let mut reason = None;
    while let Some(o) = d.poll_output() {
        if let DeviceOutput::Close { reason: r, .. } = o {
            reason = Some(r);
        }
    }
    assert_eq!(
        reason,
        Some(ByeReason::IncompatibleVersion {
            min: MIN_PROTOCOL_VERSION,
            max: PROTOCOL_VERSION
        })
    );
    assert!(
        ByeReason::IncompatibleVersion { min: 9, max: 9 }
            .sentence()
            .starts_with("Incompatible version")
    );
}

#[test]
fn expert_refuses_updates_before_viewing() {
    let mut p = pair();
    p.drive();
    let mut rects = heapless::Vec::new();
    rects
        .push(Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 1,
            encoding: Encoding::Solid(0),
        })
        .unwrap();
    let bytes = encode(&Message::Update(Box::new(UpdatePart {
        seq: 1,
        generation: 1,
        last: true,
        rects,
    })))
    .unwrap();
    p.expert.handle(p.now, ExpertInput::Received(bytes));
    p.drive();
    assert_eq!(p.expert_close().unwrap().0, ByeReason::ProtocolError);
    // The device hears why in the expert's Bye.
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));
    assert!(p.device.is_closed());
}

#[test]
fn updates_are_client_paced() {
    let mut p = pair();
    p.establish_view();
    // One request after consent, one after each applied update; the fake
    // capture answers each with one update.
    let requests = p
        .device_log
        .iter()
        .filter(|r| **r == R::UpdateRequested)
        .count();
    assert!(requests >= 2);
    let fb = p.framebuffer.as_ref().unwrap();
    assert_ne!(fb.pixels()[0], 0, "updates were applied");
}

#[test]
fn audit_records_every_step() {
    let mut p = pair();
    p.establish_control();
    p.expert_action(UserAction::Chat("hi".into()));
    p.local(LocalDecision::StopControl);
    p.local(LocalDecision::End);
    let audits: Vec<&AuditEvent> = p
        .device_log
        .iter()
        .filter_map(|r| match r {
            R::Audit(a) => Some(a),
            _ => None,
        })
        .collect();
    let has = |f: &dyn Fn(&AuditEvent) -> bool| audits.iter().any(|a| f(a));
    assert!(has(&|a| matches!(a, AuditEvent::Hello { .. })));
    assert!(has(
        &|a| matches!(a, AuditEvent::AuthOk { expert } if *expert == offer_identity("Ann Expert"))
    ));
    assert!(has(&|a| matches!(
        a,
        AuditEvent::ConsentAsked {
            kind: ConsentKind::View
        }
    )));
    assert!(has(&|a| matches!(
        a,
        AuditEvent::ConsentAnswered {
            kind: ConsentKind::Control,
            granted: true,
            ..
        }
    )));
    assert!(has(&|a| matches!(
        a,
        AuditEvent::Chat {
            from_expert: true,
            ..
        }
    )));
    assert!(has(&|a| matches!(
        a,
        AuditEvent::ControlEnded {
            reason: ControlEndReason::StoppedByUser
        }
    )));
    assert!(has(&|a| matches!(
        a,
        AuditEvent::Closed {
            reason: ByeReason::EndedByUser,
            ..
        }
    )));
}

#[test]
fn dropped_connection_resumes_in_the_same_state_without_a_prompt() {
    let mut p = Pair::resumable();
    p.establish_control();
    p.expert_action(key(30, true));
    let token = p
        .offered_token()
        .expect("a resume token is offered once viewing");
    let prompts_before = p
        .device_log
        .iter()
        .filter(|r| matches!(r, R::ShowPrompt(_)))
        .count();
    // The cable is pulled: the device notices by keepalive.
    p.link_up = false;
    let before = p.device_log.len();
    p.advance(DEFAULT_PEER_TIMEOUT + Duration::from_secs(1));
    assert!(p.device.is_suspended());
    let tail = &p.device_log[before..];
    let rel = tail.iter().position(|r| *r == R::ReleaseAll).unwrap();
    let dis = tail.iter().position(|r| *r == R::DisableInjection).unwrap();
    assert!(rel < dis);
    assert!(
        tail.iter()
            .any(|r| matches!(r, R::Phase(Phase::Reconnecting { .. })))
    );
    assert!(p.control.is_none() && p.view.is_none());

    p.advance(Duration::from_secs(3));
    assert!(p.reconnect(token.clone(), &offer_identity("Ann Expert")));
    assert!(matches!(control(&p), Some(ControlState::Granted { .. })));
    assert!(p.control.as_ref().unwrap().is_live());
    assert!(p.view.as_ref().unwrap().is_live());
    let prompts_after = p
        .device_log
        .iter()
        .filter(|r| matches!(r, R::ShowPrompt(_)))
        .count();
    assert_eq!(prompts_before, prompts_after, "no new prompt on resume");
    // The token was single-use: a new one is offered.
    let next = p.offered_token().unwrap();
    assert_ne!(next, token);
    assert_eq!(p.device.resume_token(), Some(&next));
}

#[test]
fn resume_token_is_single_use_and_bound_to_the_expert() {
    let mut p = Pair::resumable();
    p.establish_view();
    let token = p.offered_token().unwrap();
    p.device_input(DeviceInput::PeerClosed { error: None });
    assert!(p.device.is_suspended());
    // Someone else with the token is refused.
    assert!(!p.reconnect(token.clone(), &offer_identity("Mallory")));
    assert_eq!(p.expert_close().unwrap().0, ByeReason::ResumeRejected);
    assert!(
        p.device.is_suspended(),
        "the real expert can still come back"
    );
    assert!(p.reconnect(token.clone(), &offer_identity("Ann Expert")));
    assert!(viewing(&p));
    // The old token no longer works.
    p.device_input(DeviceInput::PeerClosed { error: None });
    assert!(!p.reconnect(token, &offer_identity("Ann Expert")));
}

#[test]
fn the_expert_tells_a_dead_connection_from_a_goodbye() {
    // Pulled cable with a resume offered: lost, no Bye sent (it would end
    // the device's session).
    let mut p = Pair::resumable();
    p.establish_view();
    p.link_up = false;
    p.advance(DEFAULT_PEER_TIMEOUT + Duration::from_secs(1));
    assert!(p.expert.is_closed() && p.expert.connection_lost());
    // Connection closed under the expert: lost.
    let mut p = Pair::resumable();
    p.establish_view();
    p.expert
        .handle(p.now, ExpertInput::PeerClosed { error: None });
    assert!(p.expert.connection_lost());
    // The person at the device ended it: a Bye, not a loss.
    let mut p = Pair::resumable();
    p.establish_view();
    p.local(LocalDecision::End);
    assert!(p.expert.is_closed() && !p.expert.connection_lost());
    // The expert disconnected: not a loss either.
    let mut p = Pair::resumable();
    p.establish_view();
    p.expert_action(UserAction::Disconnect);
    assert!(p.expert.is_closed() && !p.expert.connection_lost());
}

#[test]
fn a_resume_cut_short_can_be_retried_with_the_same_token() {
    let mut p = Pair::resumable();
    p.establish_control();
    let first = p.offered_token().unwrap();
    p.device_input(DeviceInput::PeerClosed { error: None });
    // The agent takes `first` on a new connection, which dies before the
    // expert hears anything (so it never learns the next token).
    p.device_input(DeviceInput::Reattach {
        new_token: Some(ResumeToken([9; 32])),
    });
    p.device_input(DeviceInput::PeerClosed { error: None });
    assert!(p.device.is_suspended());
    assert!(p.reconnect(first.clone(), &offer_identity("Ann Expert")));
    assert!(matches!(control(&p), Some(ControlState::Granted { .. })));
    // The expert answered with the next token in hand: the older ones are
    // spent, the newest still works.
    let next = p.offered_token().unwrap();
    assert_ne!(next, first);
    p.device_input(DeviceInput::PeerClosed { error: None });
    assert!(!p.reconnect(first, &offer_identity("Ann Expert")));
    assert!(!p.reconnect(ResumeToken([9; 32]), &offer_identity("Ann Expert")));
    assert!(p.reconnect(next, &offer_identity("Ann Expert")));
}

#[test]
fn after_the_grace_period_the_session_is_over() {
    let mut p = Pair::resumable();
    p.establish_view();
    let token = p.offered_token().unwrap();
    p.device_input(DeviceInput::PeerClosed { error: None });
    p.advance(DEFAULT_RESUME_GRACE + Duration::from_secs(1));
    assert!(p.device.is_closed());
    assert_eq!(p.device_close(), Some(ByeReason::PeerTimeout));
    assert!(!p.reconnect(token, &offer_identity("Ann Expert")));
}

#[test]
fn a_sustained_flood_is_audited_once_and_button_releases_pass() {
    let mut p = pair();
    p.establish_control();
    let ptr = |x: u16, b: u8| {
        UserAction::Pointer(Pointer {
            x,
            y: 0,
            buttons: Buttons(b),
            wheel: 0,
            hwheel: 0,
        })
    };
    // The left button goes down, then 5 s of drags at 2,000 events/s.
    p.expert_action(ptr(1, 1));
    for i in 0..10_000u32 {
        p.expert_action(ptr((i % 100) as u16, 1));
        if i % 20 == 19 {
            p.advance(Duration::from_millis(10));
        }
    }
    // The budget is spent...
    for i in 0..50 {
        p.expert_action(ptr(i, 1));
    }
    let audits = p
        .device_log
        .iter()
        .filter(|r| matches!(r, R::Audit(AuditEvent::InputRateLimited)))
        .count();
    assert_eq!(audits, 1, "one sustained flood, one audit record");
    // ...and the button release still reaches the device.
    let n = p.device_log.len();
    p.expert_action(ptr(7, 0));
    assert!(
        p.device_log[n..].iter().any(|r| matches!(
            r,
            R::Inject {
                event: InjectEvent::Pointer(Pointer {
                    buttons: Buttons(0),
                    ..
                }),
                ..
            }
        )),
        "the release was dropped: {:?}",
        &p.device_log[n..]
    );
    // A pointer move without a release is still limited.
    let n = p.device_log.len();
    p.expert_action(ptr(8, 0));
    assert!(
        !p.device_log[n..]
            .iter()
            .any(|r| matches!(r, R::Inject { .. }))
    );
}

#[test]
fn input_floods_are_rate_limited_but_releases_pass() {
    let mut p = pair();
    p.establish_control();
    for i in 0..2000u32 {
        p.expert_action(UserAction::Pointer(Pointer {
            x: (i % 100) as u16,
            y: 0,
            buttons: Buttons(0),
            wheel: 0,
            hwheel: 0,
        }));
    }
    p.expert_action(key(30, true));
    p.expert_action(key(30, false));
    let injected: Vec<&InjectEvent> = p
        .device_log
        .iter()
        .filter_map(|r| match r {
            R::Inject { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert!(
        injected.len() <= DEFAULT_MAX_INPUT_RATE as usize + 1,
        "{}",
        injected.len()
    );
    assert!(injected.contains(&&InjectEvent::Key(Key {
        code: 30,
        down: false
    })));
    assert!(p.device.rate_limited_count() >= 1600);
    let audits = p
        .device_log
        .iter()
        .filter(|r| matches!(r, R::Audit(AuditEvent::InputRateLimited)))
        .count();
    assert!(audits < 10, "rate-limit audits are not per event: {audits}");
    // A second later the budget is back.
    p.advance(Duration::from_secs(1));
    let n = p.device_log.len();
    p.expert_action(key(31, true));
    assert!(
        p.device_log[n..]
            .iter()
            .any(|r| matches!(r, R::Inject { .. }))
    );
}

/// The prompt open on the device now.
fn open_prompt(p: &Pair) -> PromptId {
    p.device.open_prompt().expect("a prompt is open")
}

#[test]
fn a_second_accept_for_the_view_prompt_cannot_grant_control() {
    let mut p = pair();
    p.drive();
    let view_prompt = open_prompt(&p);
    // The person taps Accept; seeing no reaction they tap again. Both taps
    // name the view prompt they saw.
    assert_eq!(p.answer(view_prompt, true), Outcome::Applied);
    assert!(viewing(&p));
    // The expert's control request was queued right behind.
    p.expert_action(UserAction::RequestControl);
    let control_prompt = open_prompt(&p);
    assert_ne!(control_prompt, view_prompt);
    let before = p.device_log.len();
    assert_eq!(
        p.answer(view_prompt, true),
        Outcome::Stale {
            prompt: view_prompt,
            open: Some(control_prompt)
        }
    );
    // Nothing granted, the control prompt still up, the stale tap audited.
    assert!(matches!(control(&p), Some(ControlState::Requested { .. })));
    assert!(p.control.is_none());
    assert!(!p.device_log[before..].contains(&R::EnableInjection));
    assert!(
        p.device_log[before..].contains(&R::Audit(AuditEvent::StaleAnswer {
            prompt: view_prompt,
            open: Some(control_prompt),
        }))
    );
    assert_eq!(p.device.open_prompt(), Some(control_prompt));
    // A decline for a closed prompt declines nothing either.
    assert!(matches!(
        p.answer(view_prompt, false),
        Outcome::Stale { .. }
    ));
    assert!(matches!(control(&p), Some(ControlState::Requested { .. })));
}

/// A resumable session with control granted whose cable was pulled: the
/// device waits for the expert; returns the token that resumes it.
fn controlling_then_cable_pulled() -> (Pair, ResumeToken) {
    let mut p = Pair::resumable();
    p.establish_control();
    let token = p.offered_token().unwrap();
    p.link_up = false;
    p.advance(DEFAULT_PEER_TIMEOUT + Duration::from_secs(1));
    assert!(p.device.is_suspended());
    (p, token)
}

#[test]
fn stop_control_while_reconnecting_holds_and_the_resume_brings_back_viewing_only() {
    let (mut p, token) = controlling_then_cable_pulled();
    // The person stops control while the expert is away: it counts.
    let out = p.device.decide(p.now, LocalCommand::StopControl);
    assert_eq!(out, Outcome::Applied);
    p.drive();
    assert!(p.device_did(&R::Audit(AuditEvent::ControlEndedWhileAway {
        reason: ControlEndReason::StoppedByUser
    })));
    // A second stop has nothing left to stop, and says so.
    assert!(matches!(
        p.device.decide(p.now, LocalCommand::StopControlHotkey),
        Outcome::Unchanged { .. }
    ));
    let enables = |p: &Pair| {
        p.device_log
            .iter()
            .filter(|r| **r == R::EnableInjection)
            .count()
    };
    let enabled_before = enables(&p);
    p.advance(Duration::from_secs(2));
    assert!(p.reconnect(token, &offer_identity("Ann Expert")));
    // Back to viewing, not controlling: no injection without a new yes.
    assert!(viewing(&p));
    assert_eq!(control(&p), Some(ControlState::None));
    assert!(p.control.is_none());
    assert_eq!(enables(&p), enabled_before);
    assert_eq!(p.device.state_name(), "viewing");
}

#[test]
fn end_while_reconnecting_ends_the_session() {
    let (mut p, token) = controlling_then_cable_pulled();
    assert_eq!(p.device.decide(p.now, LocalCommand::End), Outcome::Applied);
    p.drive();
    assert!(p.device.is_closed());
    assert_eq!(p.device_close(), Some(ByeReason::EndedByUser));
    assert!(!p.reconnect(token, &offer_identity("Ann Expert")));
}

#[test]
fn stop_control_with_nothing_to_stop_says_so() {
    let mut p = pair();
    p.establish_view();
    assert_eq!(
        p.device.decide(p.now, LocalCommand::StopControl),
        Outcome::Unchanged {
            why: "the expert does not have control"
        }
    );
}

#[test]
fn control_requests_back_off_after_a_decline() {
    let mut p = pair();
    p.establish_view();
    p.expert_action(UserAction::RequestControl);
    p.local(LocalDecision::Decline);
    // Asked again at once: declined without a prompt, with the wait.
    let prompts = |p: &Pair| {
        p.device_log
            .iter()
            .filter(|r| matches!(r, R::ShowPrompt(ConsentKind::Control)))
            .count()
    };
    assert_eq!(prompts(&p), 1);
    p.expert_action(UserAction::RequestControl);
    assert_eq!(prompts(&p), 1, "no prompt right after a decline");
    assert!(p.expert_log.iter().any(|e| matches!(
        e,
        ExpertEvent::ControlDeclined(DeclineReason::TooSoon {
            retry_after_secs: 5
        })
    )));
    // After the wait, the person is asked again; a second no doubles it.
    p.advance(DEFAULT_CONTROL_BACKOFF);
    p.expert_action(UserAction::RequestControl);
    assert_eq!(prompts(&p), 2);
    p.local(LocalDecision::Decline);
    p.advance(DEFAULT_CONTROL_BACKOFF);
    p.expert_action(UserAction::RequestControl);
    assert_eq!(prompts(&p), 2, "the second wait is twice as long");
    p.advance(DEFAULT_CONTROL_BACKOFF);
    p.expert_action(UserAction::RequestControl);
    assert_eq!(prompts(&p), 3);
    // A yes clears the back-off.
    p.local(LocalDecision::Accept);
    assert!(matches!(control(&p), Some(ControlState::Granted { .. })));
}

#[test]
fn prompt_ids_are_never_reused_within_a_run() {
    // Sessions of one agent run get disjoint prompt ids (the epoch base).
    let now = std::time::Instant::now();
    let mut a = DeviceSession::new(now, DeviceConfig::default(), 0);
    let mut b = DeviceSession::new(now, DeviceConfig::default(), 1 << 20);
    let mut ids = Vec::new();
    for s in [&mut a, &mut b] {
        s.handle(
            now,
            DeviceInput::Received(
                encode(&Message::Hello(Hello::new(Role::Expert, "t", "1", "x"))).unwrap(),
            ),
        );
        s.handle(
            now,
            DeviceInput::Received(encode(&Message::Auth(Auth::Offer)).unwrap()),
        );
        s.handle(now, DeviceInput::AuthDecided(Ok(offer_identity("Ann"))));
        ids.push(s.open_prompt().unwrap());
    }
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn swapping_buttons_does_not_bypass_the_input_rate_limit() {
    let mut p = pair();
    p.establish_control();
    let ptr = |b: u8| {
        UserAction::Pointer(Pointer {
            x: 1,
            y: 1,
            buttons: Buttons(b),
            wheel: 0,
            hwheel: 0,
        })
    };
    // The left button goes down, and drags spend the budget.
    for _ in 0..(DEFAULT_MAX_INPUT_RATE + 10) {
        p.expert_action(ptr(1));
    }
    let n = p.device_log.len();
    // Each event lets one button go and presses the other: 1000 of them
    // over the limit.
    for i in 0..1000 {
        p.expert_action(ptr(if i % 2 == 0 { 2 } else { 1 }));
    }
    let injected: Vec<u8> = p.device_log[n..]
        .iter()
        .filter_map(|r| match r {
            R::Inject {
                event: InjectEvent::Pointer(p),
                ..
            } => Some(p.buttons.0),
            _ => None,
        })
        .collect();
    // Nothing was newly pressed: what passed is at most a release.
    assert!(
        injected.iter().all(|&b| b == 0),
        "{} presses passed the limit, e.g. {:?}",
        injected.iter().filter(|&&b| b != 0).count(),
        &injected[..injected.len().min(8)]
    );
    assert!(injected.len() <= 1, "{injected:?}");
}

fn view_report(p: &Pair) -> UserAction {
    let fb = p.framebuffer.as_ref().expect("viewing has a framebuffer");
    UserAction::ReportView(Box::new(fb.view_report(1, 1)))
}

fn checks(p: &Pair) -> usize {
    p.device_log
        .iter()
        .filter(|r| matches!(r, R::CheckView { .. }))
        .count()
}

#[test]
fn view_reports_reach_the_device_while_viewing_at_most_once_a_second() {
    let mut p = pair();
    p.establish_view();
    assert!(p.expert.view_check_supported());
    let report = view_report(&p);
    p.expert_action(report.clone());
    assert_eq!(checks(&p), 1);
    assert!(
        p.expert_log.iter().any(|e| matches!(
            e,
            ExpertEvent::ViewChecked {
                compared: 2,
                differing: 0,
                ..
            }
        )),
        "the answer reaches the expert"
    );
    // A flood costs the device nothing more than counting.
    for _ in 0..50 {
        p.expert_action(report.clone());
    }
    assert_eq!(checks(&p), 1, "reports within a second are dropped");
    p.advance(MIN_VIEW_REPORT_INTERVAL);
    p.expert_action(report);
    assert_eq!(checks(&p), 2);
    assert!(viewing(&p), "dropped reports do not end the session");
}

#[test]
fn view_reports_are_not_sent_before_viewing_nor_to_an_older_device() {
    let mut p = pair();
    p.drive();
    // Waiting for consent: nothing to report, nothing sent.
    let report = UserAction::ReportView(Box::new(ViewReport {
        generation: 1,
        seq: 1,
        hashes: heapless::Vec::new(),
    }));
    p.expert_action(report.clone());
    assert_eq!(checks(&p), 0);
    assert!(!p.device_did(&R::Send("ViewChecked")));

    // A device that speaks protocol 1 never gets one (it would not know the
    // message and end the session).
    let now = std::time::Instant::now();
    let mut e = ExpertSession::new(now, ExpertConfig::new("ann", Auth::Offer));
    let mut hello = Hello::new(Role::Device, "shoulder-agent", "0.1.0", "old");
    hello.version = 1;
    e.handle(
        now,
        ExpertInput::Received(encode(&Message::Hello(hello)).unwrap()),
    );
    assert!(!e.view_check_supported());
    e.handle(now, ExpertInput::Action(report));
    while let Some(ev) = e.poll_output() {
        assert!(
            !matches!(ev, ExpertEvent::Send(Message::ViewReport(_))),
            "sent a view report to a protocol 1 device"
        );
    }
}

#[test]
fn a_view_report_before_consent_is_ignored_not_fatal() {
    let mut p = pair();
    p.drive();
    p.inject_to_device(
        encode(&Message::ViewReport(Box::new(ViewReport {
            generation: 1,
            seq: 1,
            hashes: heapless::Vec::new(),
        })))
        .unwrap(),
    );
    assert_eq!(checks(&p), 0);
    assert_eq!(p.device_close(), None);
    p.local(LocalDecision::Accept);
    assert!(viewing(&p));
}

#[test]
fn the_name_an_expert_gives_itself_is_a_clean_hint_beside_the_identified_one() {
    assert_eq!(
        crate::session::hint_name("  Ann\u{1b}[31m  Expert\r\n"),
        "Ann [31m Expert"
    );
    // The Pair's expert calls itself "Ann"; its certificate says "Ann
    // Expert": the prompt carries both.
    let mut p = pair();
    p.establish_view();
    let expert = p.device.expert().expect("an expert").clone();
    assert_eq!(expert.name, "Ann Expert");
    assert_eq!(expert.says.as_deref(), Some("Ann"));
    // The same name twice says nothing more.
    assert_eq!(crate::testing::offer_identity("Ann").says, None);
}

fn screen_lists(p: &Pair) -> Vec<ScreenList> {
    p.expert_log
        .iter()
        .filter_map(|e| match e {
            ExpertEvent::Screens(l) => Some((**l).clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_expert_picks_one_of_several_screens_while_viewing() {
    let mut p = pair();
    p.establish_view();
    let lists = screen_lists(&p);
    assert_eq!(lists.len(), 1, "the list comes with the view");
    assert_eq!(lists[0].current, 0);
    assert_eq!(lists[0].screens.len(), 2);

    p.expert_action(UserAction::SelectScreen(1));
    assert!(p.device_did(&R::SelectScreen(1)));
    let lists = screen_lists(&p);
    assert_eq!(lists.last().map(|l| l.current), Some(1));
    assert!(
        p.expert_log
            .iter()
            .any(|e| matches!(e, ExpertEvent::Screen(i) if i.generation == 3)),
        "the new screen's info reaches the expert"
    );
    // A screen the device did not list is never asked for.
    let n = p.device_log.len();
    p.expert_action(UserAction::SelectScreen(2));
    assert!(!p.device_log[n..].contains(&R::SelectScreen(2)));
    assert!(viewing(&p));
}

#[test]
fn screen_choices_before_consent_are_ignored_and_bad_lists_end_the_session() {
    let mut p = pair();
    p.drive();
    p.inject_to_device(encode(&Message::SelectScreen { index: 1 }).unwrap());
    assert!(!p.device_did(&R::SelectScreen(1)));
    assert_eq!(p.device_close(), None, "a race with consent is not fatal");
    p.local(LocalDecision::Accept);
    assert!(viewing(&p));

    // A device naming a screen it did not list breaks the protocol.
    let now = p.now;
    let bad = ScreenList {
        current: 3,
        screens: heapless::Vec::new(),
    };
    p.expert.handle(
        now,
        ExpertInput::Received(encode(&Message::Screens(Box::new(bad))).unwrap()),
    );
    assert!(p.expert.is_closed());
}

#[test]
fn an_older_expert_gets_no_screen_list() {
    let now = std::time::Instant::now();
    let mut d = DeviceSession::new(now, DeviceConfig::default(), 1);
    let mut hello = Hello::new(Role::Expert, "shoulder", "0.1.0", "old");
    hello.version = 2;
    d.handle(
        now,
        DeviceInput::Received(encode(&Message::Hello(hello)).unwrap()),
    );
    assert!(!d.screens_supported());
    let mut d = DeviceSession::new(now, DeviceConfig::default(), 1);
    let hello = Hello::new(Role::Expert, "shoulder", "0.1.0", "new");
    d.handle(
        now,
        DeviceInput::Received(encode(&Message::Hello(hello)).unwrap()),
    );
    assert!(d.screens_supported());
}

#[test]
fn deflate_is_used_only_for_an_expert_that_announced_it() {
    let now = std::time::Instant::now();
    let with = |caps: Capabilities| {
        let mut d = DeviceSession::new(now, DeviceConfig::default(), 1);
        assert!(!d.deflate_supported(), "nothing is known before the Hello");
        let mut hello = Hello::new(Role::Expert, "shoulder", "0.1.0", "e");
        hello.capabilities = caps;
        d.handle(
            now,
            DeviceInput::Received(encode(&Message::Hello(hello)).unwrap()),
        );
        d.deflate_supported()
    };
    assert!(with(Capabilities::ALL));
    assert!(!with(Capabilities(
        Capabilities::ALL.0 & !Capabilities::DEFLATE.0
    )));
}

#[test]
fn jpeg_is_used_only_for_an_expert_that_did_not_ask_for_exact_pixels() {
    let lossy = |cfg: ExpertConfig| {
        let mut p = Pair::new(DeviceConfig::default());
        p.expert = ExpertSession::new(p.now, cfg);
        p.drive();
        assert!(p.device.deflate_supported(), "the hello arrived");
        p.device.jpeg_supported()
    };
    assert!(lossy(ExpertConfig::new("e", Auth::Offer)));
    let exact = ExpertConfig {
        lossy: false,
        ..ExpertConfig::new("e", Auth::Offer)
    };
    assert!(!lossy(exact));
}

#[cfg(feature = "layouts")]
mod typing {
    use super::*;
    use crate::keyboard::{KEY_LEFTSHIFT, KEY_RIGHTALT, Layout};
    use crate::session::device::TYPE_STROKE_INTERVAL;

    fn german() -> Pair {
        Pair::new(DeviceConfig {
            keyboard: Layout::named("de"),
            ..DeviceConfig::default()
        })
    }

    fn type_text(p: &mut Pair, id: u32, s: &str) {
        p.expert_action(UserAction::TypeText {
            id,
            text: Box::new(text(s)),
        });
    }

    fn typed_keys(p: &Pair) -> Vec<Key> {
        p.device_log
            .iter()
            .filter_map(|r| match r {
                R::Inject {
                    event: InjectEvent::Key(k),
                    live: true,
                } => Some(*k),
                _ => None,
            })
            .collect()
    }

    fn answers(p: &Pair) -> Vec<(u32, u16, TypeOutcome)> {
        p.expert_log
            .iter()
            .filter_map(|e| match e {
                ExpertEvent::Typed { id, typed, outcome } => Some((*id, *typed, outcome.clone())),
                _ => None,
            })
            .collect()
    }

    fn k(code: u16, down: bool) -> Key {
        Key { code, down }
    }

    #[test]
    fn text_is_typed_one_character_at_a_time_with_the_devices_layout() {
        let mut p = german();
        p.establish_control();
        type_text(&mut p, 7, "zY@");
        // The first character goes at once, the rest at the typing pace.
        assert_eq!(typed_keys(&p), [k(21, true), k(21, false)]);
        assert!(answers(&p).is_empty());
        p.advance(TYPE_STROKE_INTERVAL * 5);
        assert_eq!(
            typed_keys(&p),
            [
                // z is where US keyboards have y…
                k(21, true),
                k(21, false),
                // …and Y (shifted) where they have z.
                k(KEY_LEFTSHIFT, true),
                k(44, true),
                k(44, false),
                k(KEY_LEFTSHIFT, false),
                // @ is AltGr+Q.
                k(KEY_RIGHTALT, true),
                k(16, true),
                k(16, false),
                k(KEY_RIGHTALT, false),
            ]
        );
        assert_eq!(answers(&p), [(7, 3, TypeOutcome::Done)]);
        // The audit says how much was typed, never what: it may be a
        // password.
        assert!(p.device_did(&R::Audit(AuditEvent::TypeText {
            chars: 3,
            layout: "de"
        })));
    }

    #[test]
    fn nothing_is_typed_without_control_a_layout_or_keys_for_every_character() {
        let mut p = german();
        p.establish_view();
        type_text(&mut p, 1, "abc");
        // The expert's machine answers without asking the device…
        assert_eq!(answers(&p), [(1, 0, TypeOutcome::NotControlling)]);
        // …and a device asked anyway refuses.
        p.inject_to_device(
            encode(&Message::TypeText {
                id: 2,
                text: Box::new(text("abc")),
            })
            .unwrap(),
        );
        assert_eq!(answers(&p)[1], (2, 0, TypeOutcome::NotControlling));

        p.expert_action(UserAction::RequestControl);
        p.local(LocalDecision::Accept);
        type_text(&mut p, 3, "Grüße 東京 ü");
        let (id, typed, outcome) = answers(&p)[2].clone();
        assert_eq!((id, typed), (3, 0));
        assert_eq!(
            outcome.sentence(0),
            "Nothing typed: the device's keyboard layout (de) has no keys for: 東 京"
        );

        let mut p = pair();
        p.establish_control();
        type_text(&mut p, 4, "abc");
        assert_eq!(answers(&p), [(4, 0, TypeOutcome::NoLayout)]);
        assert!(typed_keys(&p).is_empty());
    }

    #[test]
    fn a_second_text_waits_its_turn_and_an_empty_one_stops_the_typing() {
        let mut p = german();
        p.establish_control();
        type_text(&mut p, 1, &"x".repeat(100));
        type_text(&mut p, 2, "more");
        assert_eq!(answers(&p), [(2, 0, TypeOutcome::Busy)]);
        p.advance(TYPE_STROKE_INTERVAL * 10);
        type_text(&mut p, 3, "");
        let (id, typed, outcome) = answers(&p)[1].clone();
        assert_eq!((id, outcome), (1, TypeOutcome::Stopped));
        assert!((10..=12).contains(&typed), "typed {typed}");
        let keys = typed_keys(&p).len();
        p.advance(Duration::from_secs(5));
        assert_eq!(typed_keys(&p).len(), keys, "typed after being stopped");
        assert_eq!(keys, usize::from(typed) * 2);
    }

    #[test]
    fn the_person_at_the_device_or_the_end_of_control_stops_the_typing() {
        let mut p = german();
        p.establish_control();
        type_text(&mut p, 1, &"x".repeat(100));
        p.advance(TYPE_STROKE_INTERVAL * 5);
        p.device_input(DeviceInput::LocalUserActive(true));
        let (_, typed, outcome) = answers(&p)[0].clone();
        assert_eq!(outcome, TypeOutcome::LocalUserActive);
        assert_eq!(
            outcome.sentence(typed),
            format!("Typing stopped after {typed} characters: the person at the device used it.")
        );
        let keys = typed_keys(&p).len();
        p.advance(Duration::from_secs(5));
        assert_eq!(typed_keys(&p).len(), keys);

        p.device_input(DeviceInput::LocalUserActive(false));
        type_text(&mut p, 2, &"y".repeat(100));
        p.advance(TYPE_STROKE_INTERVAL * 3);
        p.local(LocalDecision::StopControl);
        assert_eq!(answers(&p)[1].2, TypeOutcome::ControlEnded);
        // Every key pressed was let go before control ended.
        let keys = typed_keys(&p);
        assert_eq!(keys.iter().filter(|k| k.down).count() * 2, keys.len());
        p.advance(Duration::from_secs(5));
        assert_eq!(typed_keys(&p), keys);
    }

    #[test]
    fn a_dropped_connection_stops_the_typing_and_the_resumed_one_hears_how_far_it_got() {
        let (mut p, token) = controlling_then_cable_pulled_while_typing();
        let keys = typed_keys(&p).len();
        p.advance(Duration::from_secs(2));
        assert_eq!(
            typed_keys(&p).len(),
            keys,
            "typed while the expert was away"
        );
        assert!(p.reconnect(token, &offer_identity("Ann Expert")));
        let (id, typed, outcome) = answers(&p).last().cloned().unwrap();
        assert_eq!((id, outcome), (5, TypeOutcome::ConnectionLost));
        assert_eq!(usize::from(typed) * 2, keys);
    }

    fn controlling_then_cable_pulled_while_typing() -> (Pair, ResumeToken) {
        let mut p = Pair::resumable();
        p.device = DeviceSession::new(
            p.now,
            DeviceConfig {
                keyboard: Layout::named("us"),
                ..DeviceConfig::default()
            },
            1,
        )
        .with_resume_token(ResumeToken([1; 32]));
        p.establish_control();
        let token = p.offered_token().unwrap();
        type_text(&mut p, 5, &"q".repeat(100));
        p.advance(TYPE_STROKE_INTERVAL * 4);
        p.device_input(DeviceInput::PeerClosed { error: None });
        (p, token)
    }

    #[test]
    fn typing_keeps_within_the_input_rate_and_drops_no_key() {
        let mut p = Pair::new(DeviceConfig {
            keyboard: Layout::named("us"),
            max_input_rate: 20,
            ..DeviceConfig::default()
        });
        p.establish_control();
        // Shifted: four events a character, five characters a second at
        // most.
        type_text(&mut p, 1, &"A".repeat(20));
        p.advance(Duration::from_secs(2));
        let early = typed_keys(&p).len();
        assert!(early <= 4 * (5 * 2 + 5), "{early} events in 2 s at 20/s");
        p.advance(Duration::from_secs(10));
        assert_eq!(answers(&p), [(1, 20, TypeOutcome::Done)]);
        assert_eq!(typed_keys(&p).len(), 80);
    }

    #[test]
    fn long_texts_go_in_parts_that_keep_characters_and_line_ends_whole() {
        let long = format!("{}\r\n{}", "é".repeat(511), "ü".repeat(600));
        let parts = crate::session::expert::type_text_parts(&long);
        assert!(parts.iter().all(|p| p.len() <= MAX_TYPE_TEXT_LEN));
        assert_eq!(parts.iter().map(|p| p.as_str()).collect::<String>(), long);
        assert!(parts.iter().all(|p| !p.ends_with('\r')));
    }
}

/// An expert viewing a device that speaks protocol `version`.
fn expert_viewing_a_device_of(version: u16) -> (std::time::Instant, ExpertSession) {
    let now = std::time::Instant::now();
    let mut e = ExpertSession::new(now, ExpertConfig::new("ann", Auth::Offer));
    let mut hello = Hello::new(Role::Device, "shoulder-agent", "0.1.0", "old");
    hello.version = version;
    e.handle(
        now,
        ExpertInput::Received(encode(&Message::Hello(hello)).unwrap()),
    );
    for m in [
        Message::ConsentPending {
            kind: ConsentKind::View,
            timeout_secs: 60,
        },
        Message::ConsentGranted {
            kind: ConsentKind::View,
        },
    ] {
        e.handle(now, ExpertInput::Received(encode(&m).unwrap()));
    }
    assert!(matches!(e.state(), ExpertState::Viewing { .. }));
    (now, e)
}

#[test]
fn an_older_device_is_not_sent_text_to_type() {
    let (now, mut e) = expert_viewing_a_device_of(3);
    e.handle(
        now,
        ExpertInput::Action(UserAction::TypeText {
            id: 9,
            text: Box::new(text("hello")),
        }),
    );
    let mut answered = false;
    while let Some(ev) = e.poll_output() {
        assert!(!matches!(ev, ExpertEvent::Send(Message::TypeText { .. })));
        answered |= ev
            == ExpertEvent::Typed {
                id: 9,
                typed: 0,
                outcome: TypeOutcome::Unsupported,
            };
    }
    assert!(answered);
}

#[test]
fn exact_only_mid_session_stops_lossy_pictures_for_the_rest_of_it() {
    let mut p = pair();
    p.drive();
    p.local(LocalDecision::Accept);
    assert!(viewing(&p));
    assert!(
        p.device.jpeg_supported(),
        "this expert takes lossy pictures"
    );
    assert!(p.expert.exact_only_supported());
    assert!(p.expert.lossy());

    p.expert_action(UserAction::ExactOnly);
    assert!(p.device_did(&R::ExactOnly));
    assert!(!p.device.jpeg_supported(), "no lossy pictures after");
    assert!(!p.expert.lossy(), "a resumed connection asks the same");
    // Asked once: a second click sends nothing more.
    let before = p.device_log.len();
    p.expert_action(UserAction::ExactOnly);
    assert!(!p.device_log[before..].contains(&R::ExactOnly));
    // A hostile expert repeating it gets no whole-screen update for each.
    let ignored = p.device.ignored_count();
    for _ in 0..5 {
        p.inject_to_device(encode(&Message::ExactOnly).unwrap());
    }
    assert!(!p.device_log[before..].contains(&R::ExactOnly));
    assert_eq!(p.device.ignored_count(), ignored + 5);
}

#[test]
fn exact_only_before_consent_is_ignored_and_an_older_device_is_not_sent_it() {
    // A hostile or early expert: nothing is acted on before the view.
    let mut d = DeviceSession::new(std::time::Instant::now(), DeviceConfig::default(), 0);
    d.handle(
        std::time::Instant::now(),
        DeviceInput::Received(encode(&Message::ExactOnly).unwrap()),
    );
    while let Some(o) = d.poll_output() {
        assert!(!matches!(o, DeviceOutput::ExactOnly), "{o:?}");
    }

    let (now, mut e) = expert_viewing_a_device_of(TYPE_TEXT_VERSION);
    assert!(!e.exact_only_supported());
    e.handle(now, ExpertInput::Action(UserAction::ExactOnly));
    while let Some(ev) = e.poll_output() {
        assert!(
            !matches!(ev, ExpertEvent::Send(Message::ExactOnly)),
            "{ev:?}"
        );
    }
}
