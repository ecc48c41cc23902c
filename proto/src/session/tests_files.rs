//! File transfers between both machines, virtual time: what is asked, what
//! the agent may touch and when that ends, and what a hostile expert
//! cannot do.

use std::time::Duration;

use crate::files::{FILE_CHUNK, FileMsg, FileOutcome, FileRefusal};
use crate::msg::*;
use crate::session::*;
use crate::testing::{DeviceRecord as R, Pair};

fn files_pair(get: bool, put: bool) -> Pair {
    let mut p = Pair::new(DeviceConfig {
        files: FilesOffered { get, put },
        ..DeviceConfig::default()
    });
    p.establish_view();
    assert!(matches!(p.expert.state(), ExpertState::Viewing { .. }));
    p
}

fn send(p: &mut Pair, m: FileMsg) {
    p.expert_action(UserAction::File(Box::new(m)));
}

fn get(p: &mut Pair, id: u32, path: &str) {
    send(
        p,
        FileMsg::Get {
            id,
            path: text(path),
        },
    );
}

fn put(p: &mut Pair, id: u32, name: &str, size: u64) {
    send(
        p,
        FileMsg::Put {
            id,
            name: text(name),
            size,
            sha256: [7; 32],
        },
    );
}

/// The file steps the expert heard from the device, in order.
fn heard(p: &Pair) -> Vec<FileMsg> {
    p.expert_log
        .iter()
        .filter_map(|e| match e {
            ExpertEvent::File(f) => Some((**f).clone()),
            _ => None,
        })
        .collect()
}

fn last_done(p: &Pair) -> Option<FileOutcome> {
    heard(p).into_iter().rev().find_map(|m| match m {
        FileMsg::Done { outcome, .. } => Some(outcome),
        _ => None,
    })
}

fn checks(p: &Pair) -> Vec<(u32, FileRequest)> {
    p.files
        .iter()
        .filter_map(|f| match f {
            FileOutput::Check { id, request } => Some((*id, request.clone())),
            _ => None,
        })
        .collect()
}

fn consent(p: &Pair) -> Option<&crate::consent::FileConsent> {
    p.files.iter().rev().find_map(|f| match f {
        FileOutput::Start { consent, .. } => Some(consent),
        _ => None,
    })
}

fn stopped(p: &Pair, id: u32) -> bool {
    p.files
        .iter()
        .any(|f| matches!(f, FileOutput::Stop { id: i } if *i == id))
}

fn checked(p: &mut Pair, id: u32, result: Result<u64, FileRefusal>) {
    p.device_input(DeviceInput::File(FileInput::Checked { id, result }));
}

#[test]
fn a_file_is_asked_about_by_name_and_size_and_only_a_yes_lets_the_agent_read_it() {
    let mut p = files_pair(true, false);
    get(&mut p, 1, "/var/log/kiosk/kiosk.log");
    assert_eq!(
        checks(&p),
        [(
            1,
            FileRequest::Get {
                path: "/var/log/kiosk/kiosk.log".into()
            }
        )]
    );
    assert!(
        p.prompt.is_none(),
        "nothing is asked before the agent checked"
    );
    checked(&mut p, 1, Ok(84_000));
    let prompt = p.prompt.clone().expect("the person is asked");
    assert_eq!(prompt.kind, ConsentKind::Files);
    assert_eq!(
        prompt.file,
        Some(FileAsk {
            to_device: false,
            name: "kiosk.log".into(),
            size: 84_000
        })
    );
    assert!(heard(&p).iter().any(|m| matches!(
        m,
        FileMsg::Asking {
            id: 1,
            size: 84_000,
            ..
        }
    )));
    assert!(consent(&p).is_none(), "no consent before the yes");
    assert!(!p.device_log.contains(&R::FileActivity(true)));
    p.local(LocalDecision::Accept);
    assert!(p.prompt.is_none());
    assert!(
        p.device_log.contains(&R::FileActivity(true)),
        "the strip names the transfer"
    );
    assert!(consent(&p).is_some_and(|c| c.is_live()));
    assert!(heard(&p).iter().any(|m| matches!(
        m,
        FileMsg::Accepted {
            id: 1,
            size: 84_000
        }
    )));
    // The expert's acks reach the agent; the agent's end is told.
    send(
        &mut p,
        FileMsg::Ack {
            id: 1,
            received: 65_536,
        },
    );
    assert!(p.files.iter().any(|f| matches!(
        f,
        FileOutput::Acked {
            id: 1,
            received: 65_536
        }
    )));
    p.device_input(DeviceInput::File(FileInput::Finished {
        id: 1,
        result: Ok([1; 32]),
    }));
    assert_eq!(last_done(&p), Some(FileOutcome::Done));
    assert!(!consent(&p).is_some_and(|c| c.is_live()), "spent once done");
    assert!(
        p.device_log.contains(&R::FileActivity(false)),
        "and no longer"
    );
    assert!(p.device_log.iter().any(|r| matches!(
        r,
        R::Audit(AuditEvent::File(FileAudit::Ended {
            sha256: Some(h),
            outcome: FileOutcome::Done,
            ..
        })) if *h == [1; 32]
    )));
}

#[test]
fn a_no_or_no_answer_refuses_and_the_agent_drops_what_it_checked() {
    let mut p = files_pair(true, false);
    get(&mut p, 1, "/var/log/kiosk/a.log");
    checked(&mut p, 1, Ok(10));
    p.local(LocalDecision::Decline);
    assert_eq!(last_done(&p), Some(FileOutcome::Declined));
    assert!(consent(&p).is_none());
    assert!(stopped(&p, 1));

    p.advance(DEFAULT_CONTROL_BACKOFF);
    get(&mut p, 2, "/var/log/kiosk/a.log");
    checked(&mut p, 2, Ok(10));
    assert!(p.prompt.is_some());
    p.advance(DEFAULT_CONSENT_TIMEOUT + Duration::from_secs(1));
    assert!(p.prompt.is_none(), "the prompt goes when it runs out");
    assert_eq!(last_done(&p), Some(FileOutcome::TimedOut));
    assert!(stopped(&p, 2));
    assert!(consent(&p).is_none());
}

#[test]
fn a_question_the_expert_withdraws_leaves_the_screen() {
    let mut p = files_pair(true, false);
    get(&mut p, 1, "/var/log/kiosk/a.log");
    checked(&mut p, 1, Ok(10));
    assert!(p.prompt.is_some());
    send(&mut p, FileMsg::Cancel { id: 1 });
    assert!(p.prompt.is_none(), "no dead question stays on screen");
    assert_eq!(last_done(&p), Some(FileOutcome::CancelledByExpert));
    assert!(p.device.open_prompt().is_none());
    // And the person's cancel of a question, too.
    p.advance(DEFAULT_CONTROL_BACKOFF);
    get(&mut p, 2, "/var/log/kiosk/a.log");
    checked(&mut p, 2, Ok(10));
    assert!(p.prompt.is_some());
    p.local(LocalDecision::CancelFile);
    assert!(p.prompt.is_none());
    assert_eq!(last_done(&p), Some(FileOutcome::CancelledOnDevice));
}

#[test]
fn a_declined_file_cannot_be_asked_again_at_once() {
    let mut p = files_pair(true, false);
    get(&mut p, 1, "/var/log/kiosk/a.log");
    checked(&mut p, 1, Ok(10));
    p.local(LocalDecision::Decline);
    get(&mut p, 2, "/var/log/kiosk/a.log");
    assert_eq!(
        last_done(&p),
        Some(FileOutcome::Refused(FileRefusal::TooSoon {
            retry_after_secs: 5
        }))
    );
    assert!(
        checks(&p).iter().all(|(id, _)| *id == 1),
        "not even checked"
    );
    assert!(p.prompt.is_none());
    // Once the wait is over the person is asked again; a second no doubles it.
    p.advance(DEFAULT_CONTROL_BACKOFF);
    get(&mut p, 3, "/var/log/kiosk/a.log");
    checked(&mut p, 3, Ok(10));
    assert!(p.prompt.is_some());
    p.local(LocalDecision::Decline);
    get(&mut p, 4, "/var/log/kiosk/a.log");
    assert_eq!(
        last_done(&p),
        Some(FileOutcome::Refused(FileRefusal::TooSoon {
            retry_after_secs: 10
        }))
    );
}

#[test]
fn allowing_files_for_the_session_skips_later_prompts_but_stays_on_the_record() {
    let mut p = files_pair(true, true);
    get(&mut p, 1, "/var/log/kiosk/a.log");
    checked(&mut p, 1, Ok(10));
    p.local(LocalDecision::AllowFiles);
    assert!(consent(&p).is_some_and(|c| c.is_live()));
    p.device_input(DeviceInput::File(FileInput::Finished {
        id: 1,
        result: Ok([0; 32]),
    }));
    let prompts = p
        .device_log
        .iter()
        .filter(|r| matches!(r, R::ShowPrompt(ConsentKind::Files)))
        .count();
    put(&mut p, 2, "update.bin", 100);
    checked(&mut p, 2, Ok(100));
    assert!(p.prompt.is_none(), "not asked again");
    assert_eq!(
        p.device_log
            .iter()
            .filter(|r| matches!(r, R::ShowPrompt(ConsentKind::Files)))
            .count(),
        prompts
    );
    assert!(
        heard(&p)
            .iter()
            .any(|m| matches!(m, FileMsg::Accepted { id: 2, .. }))
    );
    let asked = p
        .device_log
        .iter()
        .filter(|r| matches!(r, R::Audit(AuditEvent::File(FileAudit::Asked { .. }))))
        .count();
    assert_eq!(asked, 2, "both transfers are audited");
}

#[test]
fn a_plain_accept_allows_one_file_only() {
    let mut p = files_pair(true, false);
    get(&mut p, 1, "/var/log/kiosk/a.log");
    checked(&mut p, 1, Ok(10));
    p.local(LocalDecision::Accept);
    p.device_input(DeviceInput::File(FileInput::Finished {
        id: 1,
        result: Ok([0; 32]),
    }));
    get(&mut p, 2, "/var/log/kiosk/a.log");
    checked(&mut p, 2, Ok(10));
    assert!(p.prompt.is_some(), "asked again");
}

#[test]
fn what_the_device_does_not_offer_or_cannot_name_is_refused_before_anyone_is_asked() {
    let mut p = files_pair(false, false);
    get(&mut p, 1, "/etc/shadow");
    assert_eq!(
        last_done(&p),
        Some(FileOutcome::Refused(FileRefusal::NotOffered))
    );
    put(&mut p, 2, "x", 1);
    assert_eq!(
        last_done(&p),
        Some(FileOutcome::Refused(FileRefusal::NotOffered))
    );
    let mut p = files_pair(true, true);
    for bad in ["../etc/passwd", ".profile", "a/b", "x\u{1b}[2J"] {
        put(&mut p, 3, bad, 1);
        assert_eq!(
            last_done(&p),
            Some(FileOutcome::Refused(FileRefusal::BadName)),
            "{bad:?}"
        );
    }
    assert!(checks(&p).is_empty(), "the agent never saw those names");
    assert!(p.prompt.is_none());
    // The agent's refusal is passed on; nobody is asked.
    get(&mut p, 4, "/var/log/kiosk/../../../etc/shadow");
    checked(&mut p, 4, Err(FileRefusal::OutsideAllowed));
    assert_eq!(
        last_done(&p),
        Some(FileOutcome::Refused(FileRefusal::OutsideAllowed))
    );
    assert!(p.prompt.is_none());
    assert!(
        p.expert.state() != ExpertState::Closed,
        "the session goes on"
    );
}

#[test]
fn one_question_at_a_time_and_one_transfer_at_a_time() {
    let mut p = files_pair(true, true);
    get(&mut p, 1, "/var/log/kiosk/a.log");
    get(&mut p, 2, "/var/log/kiosk/b.log");
    assert_eq!(last_done(&p), Some(FileOutcome::Refused(FileRefusal::Busy)));
    checked(&mut p, 1, Ok(10));
    // A control request while the file question is on screen.
    p.expert_action(UserAction::RequestControl);
    assert!(p.expert_log.iter().any(|e| matches!(
        e,
        ExpertEvent::ControlDeclined(DeclineReason::AlreadyPending)
    )));
    assert_eq!(p.prompt.as_ref().map(|p| p.kind), Some(ConsentKind::Files));
    p.local(LocalDecision::Decline);
    // A file while the control question is on screen.
    p.expert_action(UserAction::RequestControl);
    assert_eq!(
        p.prompt.as_ref().map(|p| p.kind),
        Some(ConsentKind::Control)
    );
    put(&mut p, 3, "x.bin", 5);
    assert_eq!(last_done(&p), Some(FileOutcome::Refused(FileRefusal::Busy)));
    assert_eq!(
        p.prompt.as_ref().map(|p| p.kind),
        Some(ConsentKind::Control)
    );
}

#[test]
fn an_answer_meant_for_another_prompt_cannot_allow_a_file() {
    let mut p = files_pair(true, false);
    let view_prompt = p
        .device_log
        .iter()
        .position(|r| matches!(r, R::ShowPrompt(ConsentKind::View)))
        .map(|_| PromptId(1))
        .expect("the view prompt was shown");
    get(&mut p, 1, "/var/log/kiosk/a.log");
    checked(&mut p, 1, Ok(10));
    // A tap that was meant for the view prompt, arriving late.
    let o = p.device.decide(
        p.now,
        LocalCommand::AllowFiles {
            prompt: view_prompt,
        },
    );
    p.drive();
    assert!(matches!(o, Outcome::Stale { .. }), "{o:?}");
    assert!(consent(&p).is_none());
    assert!(p.prompt.is_some());
}

#[test]
fn a_put_is_written_in_order_within_the_window_and_acked_as_stored() {
    let mut p = files_pair(false, true);
    let size = 3 * FILE_CHUNK as u64;
    put(&mut p, 9, "update.bin", size);
    assert_eq!(
        checks(&p),
        [(
            9,
            FileRequest::Put {
                name: "update.bin".into(),
                size
            }
        )]
    );
    checked(&mut p, 9, Ok(size));
    p.local(LocalDecision::Accept);
    for i in 0..3u64 {
        send(
            &mut p,
            FileMsg::Data {
                id: 9,
                offset: i * FILE_CHUNK as u64,
                data: Payload(vec![i as u8; FILE_CHUNK]),
            },
        );
    }
    let written: usize = p
        .files
        .iter()
        .filter_map(|f| match f {
            FileOutput::Write { id: 9, data } => Some(data.len()),
            _ => None,
        })
        .sum();
    assert_eq!(written as u64, size);
    p.device_input(DeviceInput::File(FileInput::Stored {
        id: 9,
        stored: size,
    }));
    assert!(
        heard(&p)
            .iter()
            .any(|m| matches!(m, FileMsg::Ack { id: 9, received } if *received == size))
    );
}

fn running_put(size: u64) -> Pair {
    let mut p = files_pair(false, true);
    put(&mut p, 1, "big.bin", size);
    checked(&mut p, 1, Ok(size));
    p.local(LocalDecision::Accept);
    p
}

fn data(p: &mut Pair, offset: u64, len: usize) {
    send(
        p,
        FileMsg::Data {
            id: 1,
            offset,
            data: Payload(vec![0; len]),
        },
    );
}

#[test]
fn an_expert_that_floods_past_the_window_or_out_of_order_is_cut_off() {
    // Never acknowledged: the ninth chunk is over the window.
    let mut p = running_put(64 * FILE_CHUNK as u64);
    for i in 0..8u64 {
        data(&mut p, i * FILE_CHUNK as u64, FILE_CHUNK);
    }
    assert!(p.device_close().is_none());
    data(&mut p, 8 * FILE_CHUNK as u64, FILE_CHUNK);
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));
    assert!(stopped(&p, 1), "the temporary file goes");
    assert!(!consent(&p).is_some_and(|c| c.is_live()));

    let mut p = running_put(64 * FILE_CHUNK as u64);
    data(&mut p, 0, 100);
    data(&mut p, 200, 100);
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));

    let mut p = running_put(100);
    data(&mut p, 0, 101);
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));
}

#[test]
fn data_before_the_yes_is_a_protocol_error_and_never_written() {
    let mut p = files_pair(false, true);
    put(&mut p, 1, "x.bin", 10);
    checked(&mut p, 1, Ok(10));
    data(&mut p, 0, 10);
    assert_eq!(p.device_close(), Some(ByeReason::ProtocolError));
    assert!(
        !p.files
            .iter()
            .any(|f| matches!(f, FileOutput::Write { .. }))
    );
}

#[test]
fn cancelling_on_either_side_or_ending_withdraws_the_consent() {
    let mut p = running_put(1000);
    send(&mut p, FileMsg::Cancel { id: 1 });
    assert_eq!(last_done(&p), Some(FileOutcome::CancelledByExpert));
    assert!(stopped(&p, 1));
    assert!(!consent(&p).unwrap().is_live());
    // Data that crossed the cancel is dropped, not fatal.
    data(&mut p, 0, 10);
    assert!(p.device_close().is_none());

    // The strip's button (a decision with no prompt to name).
    let mut p = running_put(1000);
    p.local(LocalDecision::CancelFile);
    assert_eq!(last_done(&p), Some(FileOutcome::CancelledOnDevice));
    assert!(!consent(&p).unwrap().is_live());
    assert!(p.device_log.contains(&R::FileActivity(false)));

    let mut p = running_put(1000);
    p.local(LocalDecision::End);
    assert!(stopped(&p, 1));
    assert!(!consent(&p).unwrap().is_live());

    // A dropped connection: the transfer does not survive it.
    let mut p = Pair::resumable();
    p.device = DeviceSession::new(
        p.now,
        DeviceConfig {
            files: FilesOffered {
                get: true,
                put: true,
            },
            ..DeviceConfig::default()
        },
        0,
    )
    .with_resume_token(ResumeToken([3; 32]));
    p.establish_view();
    put(&mut p, 1, "x.bin", 10);
    checked(&mut p, 1, Ok(10));
    p.local(LocalDecision::Accept);
    assert!(consent(&p).unwrap().is_live());
    p.link_up = false;
    p.device_input(DeviceInput::PeerClosed { error: None });
    assert!(p.device.is_suspended());
    assert!(!consent(&p).unwrap().is_live());
    assert!(stopped(&p, 1));
}

#[test]
fn files_before_the_view_is_granted_are_refused_not_acted_on() {
    let mut p = Pair::new(DeviceConfig {
        files: FilesOffered {
            get: true,
            put: true,
        },
        ..DeviceConfig::default()
    });
    p.drive();
    // The client machine does not send it; a hostile one does.
    p.inject_to_device(
        crate::frame::encode(&Message::File(Box::new(FileMsg::Get {
            id: 1,
            path: text("/var/log/kiosk/a.log"),
        })))
        .unwrap(),
    );
    assert!(checks(&p).is_empty());
    assert!(p.device_close().is_none(), "ignored, not fatal");
}

fn lists(p: &Pair) -> Vec<(u32, String)> {
    p.files
        .iter()
        .filter_map(|f| match f {
            FileOutput::List { id, dir } => Some((*id, dir.clone())),
            _ => None,
        })
        .collect()
}

fn list(p: &mut Pair, id: u32, dir: &str) {
    send(p, FileMsg::List { id, dir: text(dir) });
}

fn listing(id: u32, dir: &str, names: &[&str]) -> Box<crate::files::Listing> {
    let mut entries = heapless::Vec::new();
    for n in names {
        let _ = entries.push(crate::files::DirEntry {
            name: text(n),
            dir: false,
            size: 3,
            modified: 0,
        });
    }
    Box::new(crate::files::Listing {
        id,
        dir: text(dir),
        entries,
        omitted: 0,
    })
}

#[test]
fn a_viewing_expert_lists_the_readable_directories_without_a_question() {
    let mut p = files_pair(true, false);
    assert!(p.expert.files_listed());
    list(&mut p, 4, "/var/log/kiosk");
    assert_eq!(lists(&p), [(4, "/var/log/kiosk".to_string())]);
    assert!(p.prompt.is_none(), "a listing is not asked");
    // A second one while the first is being made: busy.
    list(&mut p, 5, "/var/log/kiosk");
    assert_eq!(last_done(&p), Some(FileOutcome::Refused(FileRefusal::Busy)));
    // The agent's answer goes to the expert under the asked id, audited.
    p.device_input(DeviceInput::File(FileInput::Listed {
        id: 4,
        result: Ok(listing(99, "/var/log/kiosk", &["a.log", "b.log"])),
    }));
    let got = heard(&p)
        .into_iter()
        .find_map(|m| match m {
            FileMsg::Listing(l) => Some(l),
            _ => None,
        })
        .expect("a listing");
    assert_eq!(got.id, 4);
    assert_eq!(got.entries.len(), 2);
    assert!(
        p.device_log
            .contains(&R::Audit(AuditEvent::File(FileAudit::Listed {
                dir: "/var/log/kiosk".into(),
                entries: Some(2),
            })))
    );
    // An answer for a listing nobody asked for goes nowhere.
    let before = heard(&p).len();
    p.device_input(DeviceInput::File(FileInput::Listed {
        id: 4,
        result: Ok(listing(4, "/etc", &["shadow"])),
    }));
    assert_eq!(heard(&p).len(), before);
    // A refusal is said.
    list(&mut p, 6, "/etc");
    p.device_input(DeviceInput::File(FileInput::Listed {
        id: 6,
        result: Err(FileRefusal::OutsideAllowed),
    }));
    assert_eq!(
        last_done(&p),
        Some(FileOutcome::Refused(FileRefusal::OutsideAllowed))
    );
}

#[test]
fn listings_need_readable_directories_and_a_granted_view() {
    // Only a drop directory: nothing to list, and the expert knows it
    // without asking.
    let mut p = files_pair(false, true);
    assert!(!p.expert.files_listed());
    list(&mut p, 1, "");
    assert!(lists(&p).is_empty());
    assert_eq!(
        last_done(&p),
        Some(FileOutcome::Refused(FileRefusal::NotOffered))
    );
    // A hostile expert asks anyway: refused, not acted on.
    p.inject_to_device(
        crate::frame::encode(&Message::File(Box::new(FileMsg::List {
            id: 2,
            dir: text(""),
        })))
        .unwrap(),
    );
    assert!(lists(&p).is_empty());
    // Before the view is granted.
    let mut p = Pair::new(DeviceConfig {
        files: FilesOffered {
            get: true,
            put: false,
        },
        ..DeviceConfig::default()
    });
    p.drive();
    p.inject_to_device(
        crate::frame::encode(&Message::File(Box::new(FileMsg::List {
            id: 3,
            dir: text("/var/log/kiosk"),
        })))
        .unwrap(),
    );
    assert!(lists(&p).is_empty());
    assert!(p.device_close().is_none(), "ignored, not fatal");
    // A device may not send a listing request to the expert's side either
    // way round: an expert sending a `Listing` is cut off.
    let mut p = files_pair(true, false);
    p.inject_to_device(
        crate::frame::encode(&Message::File(Box::new(FileMsg::Listing(listing(
            1,
            "/",
            &[],
        )))))
        .unwrap(),
    );
    assert!(p.device_close().is_some());
}
