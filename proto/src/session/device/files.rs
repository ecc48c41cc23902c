//! The device side of file transfers: the rules and the consent; the
//! agent does the file I/O ([`FileOutput`] asks, [`FileInput`] answers).
//!
//! One transfer at a time, only while the expert views the screen, and
//! never while another question is on screen. Each is asked of the person
//! at the device unless they allowed files for the rest of the session on
//! an earlier prompt. The agent gets a [`FileConsent`] only after the yes;
//! cancelling, ending or losing the session withdraws it.

use std::time::Instant;

use crate::consent::{FileConsent, Revoker};
use crate::files::{
    Direction, FILE_CHUNK, FILE_WINDOW, FileMsg, FileOutcome, FileRefusal, Listing, Sha256,
    base_name, plain_name,
};
use crate::msg::{ByeReason, Message, Payload, text};

use super::{AuditEvent, DeviceOutput, DeviceSession, FileAsk, Prompt, PromptId, State, secs_u16};
use crate::msg::ConsentKind;

/// What the agent must check before anyone is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRequest {
    /// May `path` be read (inside a readable directory, a regular file, not
    /// too large)? Answered with its size.
    Get { path: String },
    /// May a file `name` of `size` bytes be dropped (no such file yet,
    /// enough free space, not too large)?
    Put { name: String, size: u64 },
}

/// The agent's part of a transfer.
#[derive(Debug)]
pub enum FileOutput {
    /// Check the request; answer [`FileInput::Checked`].
    Check { id: u32, request: FileRequest },
    /// The person said yes: start. A `Get` reads the file and sends its
    /// data, at most [`FILE_WINDOW`] ahead of the expert's acks, then
    /// `End`; a `Put` opens the temporary file for [`FileOutput::Write`].
    Start {
        id: u32,
        consent: FileConsent,
        /// A `Put`'s announced digest, which its bytes must have.
        sha256: Option<Sha256>,
    },
    /// A `Put`'s next bytes, in order; answer [`FileInput::Stored`].
    Write { id: u32, data: Vec<u8> },
    /// The expert has stored the first `received` bytes of a `Get`.
    Acked { id: u32, received: u64 },
    /// Stop and drop the transfer: a `Put`'s temporary file is removed.
    Stop { id: u32 },
    /// List `dir` beneath the readable directories (empty: name them);
    /// answer [`FileInput::Listed`]. Not asked of the person: taking a
    /// file is.
    List { id: u32, dir: String },
}

/// The agent's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileInput {
    /// The answer to [`FileOutput::Check`]: the size to show, or why not.
    Checked {
        id: u32,
        result: Result<u64, FileRefusal>,
    },
    /// A `Put` has `stored` bytes on disk.
    Stored { id: u32, stored: u64 },
    /// The transfer ended: every byte sent (a `Get`, with the digest of
    /// what was read) or verified and renamed into place (a `Put`); or
    /// how it failed.
    Finished {
        id: u32,
        result: Result<Sha256, FileOutcome>,
    },
    /// The answer to [`FileOutput::List`].
    Listed {
        id: u32,
        result: Result<Box<Listing>, FileRefusal>,
    },
}

/// A file transfer in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAudit {
    Asked {
        direction: Direction,
        name: String,
        size: u64,
    },
    Answered {
        granted: bool,
        /// Yes for this and every later file of the session.
        for_session: bool,
    },
    Ended {
        direction: Direction,
        name: String,
        size: u64,
        /// The digest of the bytes that went (when all did).
        sha256: Option<Sha256>,
        outcome: FileOutcome,
    },
    /// A directory was listed for the expert (or refused).
    Listed { dir: String, entries: Option<usize> },
}

/// Listings audited per session; more are only counted (an expert could
/// otherwise fill the disk with fsyncs).
const MAX_LISTINGS_AUDITED: u32 = 50;

#[derive(Debug)]
enum Stage {
    Checking,
    Asking { prompt: PromptId, deadline: Instant },
    Running(Running),
}

#[derive(Debug)]
struct Running {
    revoker: Revoker,
    /// `Put`: bytes the expert sent and the agent stored.
    received: u64,
    stored: u64,
}

#[derive(Debug)]
struct Transfer {
    id: u32,
    direction: Direction,
    /// As the prompt and audit show it.
    name: String,
    size: u64,
    /// A `Put`'s announced digest.
    sha256: Option<Sha256>,
    stage: Stage,
}

/// The session's transfer, and whether the person allowed files for the
/// rest of the session.
#[derive(Debug, Default)]
pub(super) struct Files {
    transfer: Option<Transfer>,
    for_session: bool,
    /// File questions declined (or run out) in a row, and when the next
    /// may be asked: as for control, an expert cannot put a question back
    /// up the moment it was answered.
    declines: u32,
    not_before: Option<Instant>,
    /// Listings asked for this session.
    listings: u32,
    /// The listing the agent is making: its id and directory.
    listing: Option<(u32, String)>,
}

impl Files {
    pub(super) fn prompt(&self) -> Option<PromptId> {
        match self.transfer.as_ref()?.stage {
            Stage::Asking { prompt, .. } => Some(prompt),
            _ => None,
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.transfer.as_ref()?.stage {
            Stage::Asking { deadline, .. } => Some(deadline),
            _ => None,
        }
    }
}

impl DeviceSession {
    /// A file message from a viewing expert.
    pub(super) fn file_message(&mut self, now: Instant, msg: FileMsg) {
        match msg {
            FileMsg::Get { id, path } => {
                let request = FileRequest::Get {
                    path: path.to_string(),
                };
                self.file_request(
                    now,
                    id,
                    Direction::Get,
                    base_name(&path).to_string(),
                    None,
                    request,
                );
            }
            FileMsg::Put {
                id,
                name,
                size,
                sha256,
            } => {
                if !plain_name(&name) {
                    return self.file_refused(now, id, FileRefusal::BadName);
                }
                let request = FileRequest::Put {
                    name: name.to_string(),
                    size,
                };
                self.file_request(
                    now,
                    id,
                    Direction::Put,
                    name.to_string(),
                    Some((size, sha256)),
                    request,
                );
            }
            FileMsg::Data { id, offset, data } => self.file_data(now, id, offset, data),
            FileMsg::Ack { id, received } => {
                if let Some(t) = &self.files.transfer
                    && t.id == id
                    && t.direction == Direction::Get
                    && matches!(t.stage, Stage::Running(_))
                {
                    if received > t.size {
                        return self.close(
                            now,
                            ByeReason::ProtocolError,
                            "file ack beyond the end of the file".into(),
                        );
                    }
                    self.push(DeviceOutput::File(FileOutput::Acked { id, received }));
                }
                // Acks that crossed the end of their transfer are harmless.
            }
            FileMsg::Cancel { id } => {
                if self.files.transfer.as_ref().is_some_and(|t| t.id == id) {
                    self.file_done(now, FileOutcome::CancelledByExpert, None);
                }
            }
            FileMsg::List { id, dir } => {
                if !self.config.files.get {
                    return self.file_refused(now, id, FileRefusal::NotOffered);
                }
                // One at a time (the agent answers at once).
                if self.files.listing.is_some() {
                    return self.file_refused(now, id, FileRefusal::Busy);
                }
                self.files.listing = Some((id, dir.to_string()));
                self.push(DeviceOutput::File(FileOutput::List {
                    id,
                    dir: dir.to_string(),
                }));
            }
            m @ (FileMsg::Asking { .. }
            | FileMsg::Accepted { .. }
            | FileMsg::End { .. }
            | FileMsg::Done { .. }
            | FileMsg::Listing(_)) => {
                let what = match m {
                    FileMsg::Asking { .. } => "Asking",
                    FileMsg::Accepted { .. } => "Accepted",
                    FileMsg::End { .. } => "End",
                    FileMsg::Listing(_) => "Listing",
                    _ => "Done",
                };
                self.close(
                    now,
                    ByeReason::ProtocolError,
                    format!("unexpected File({what}) from the expert"),
                );
            }
        }
    }

    /// A file message before the view was consented to: refused, never
    /// acted on.
    pub(super) fn file_before_consent(&mut self, now: Instant, msg: &FileMsg) {
        if let FileMsg::Get { id, .. } | FileMsg::Put { id, .. } | FileMsg::List { id, .. } = msg {
            self.send_done(now, *id, FileOutcome::Refused(FileRefusal::NotViewing));
        }
        self.ignored("File", "before consent");
    }

    fn file_request(
        &mut self,
        now: Instant,
        id: u32,
        direction: Direction,
        name: String,
        put: Option<(u64, Sha256)>,
        request: FileRequest,
    ) {
        let offered = match direction {
            Direction::Get => self.config.files.get,
            Direction::Put => self.config.files.put,
        };
        if !offered {
            return self.file_refused(now, id, FileRefusal::NotOffered);
        }
        if self.files.transfer.is_some() || self.open_prompt().is_some() {
            return self.file_refused(now, id, FileRefusal::Busy);
        }
        if let Some(t) = self.files.not_before.filter(|t| now < *t)
            && !self.files.for_session
        {
            let wait = t.saturating_duration_since(now);
            let retry_after_secs =
                u16::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u16::MAX);
            self.ignored("File", "too soon after a declined file");
            return self.file_refused(now, id, FileRefusal::TooSoon { retry_after_secs });
        }
        self.files.transfer = Some(Transfer {
            id,
            direction,
            name,
            size: put.map_or(0, |p| p.0),
            sha256: put.map(|p| p.1),
            stage: Stage::Checking,
        });
        self.push(DeviceOutput::File(FileOutput::Check { id, request }));
    }

    fn file_refused(&mut self, now: Instant, id: u32, why: FileRefusal) {
        self.send_done(now, id, FileOutcome::Refused(why));
    }

    fn send_done(&mut self, now: Instant, id: u32, outcome: FileOutcome) {
        self.send(now, Message::File(Box::new(FileMsg::Done { id, outcome })));
    }

    fn file_data(&mut self, now: Instant, id: u32, offset: u64, data: Payload) {
        let Some(t) = self.files.transfer.as_mut().filter(|t| t.id == id) else {
            // Data that crossed a cancel or a refusal: dropped.
            return;
        };
        let (Direction::Put, Stage::Running(r)) = (t.direction, &mut t.stage) else {
            return self.close(
                now,
                ByeReason::ProtocolError,
                "file data the device did not ask for".into(),
            );
        };
        let len = data.0.len() as u64;
        let fault = if offset != r.received {
            Some("file data out of order")
        } else if data.0.len() > FILE_CHUNK || data.0.is_empty() {
            Some("file data chunk of a bad size")
        } else if r.received + len > t.size {
            Some("file data beyond the announced size")
        } else if r.received + len - r.stored > FILE_WINDOW {
            Some("file data beyond the window the device acknowledged")
        } else {
            None
        };
        if let Some(fault) = fault {
            return self.close(now, ByeReason::ProtocolError, fault.into());
        }
        r.received += len;
        self.push(DeviceOutput::File(FileOutput::Write { id, data: data.0 }));
    }

    /// The agent's answers.
    pub(super) fn file_input(&mut self, now: Instant, input: FileInput) {
        if !matches!(self.state, State::Active(_)) {
            return;
        }
        match input {
            FileInput::Listed { id, result } => {
                let Some((_, dir)) = self.files.listing.take_if(|l| l.0 == id) else {
                    return;
                };
                self.files.listings += 1;
                if self.files.listings <= MAX_LISTINGS_AUDITED {
                    self.audit(AuditEvent::File(FileAudit::Listed {
                        dir,
                        entries: result.as_ref().ok().map(|l| l.entries.len()),
                    }));
                }
                match result {
                    Ok(mut listing) => {
                        listing.id = id;
                        self.send(now, Message::File(Box::new(FileMsg::Listing(listing))));
                    }
                    Err(why) => self.file_refused(now, id, why),
                }
            }
            FileInput::Checked { id, result } => {
                let Some(t) = self.files.transfer.as_mut().filter(|t| t.id == id) else {
                    return;
                };
                if !matches!(t.stage, Stage::Checking) {
                    return;
                }
                let size = match result {
                    Ok(size) => size,
                    Err(why) => {
                        self.files.transfer = None;
                        return self.file_refused(now, id, why);
                    }
                };
                t.size = size;
                if self.files.for_session {
                    return self.file_start(now, true);
                }
                if self.open_prompt().is_some() {
                    self.files.transfer = None;
                    return self.file_refused(now, id, FileRefusal::Busy);
                }
                let State::Active(a) = &self.state else {
                    return;
                };
                let expert = a.expert.clone();
                let prompt = self.next_prompt();
                let deadline = now + self.config.consent_timeout;
                let Some(t) = self.files.transfer.as_mut() else {
                    return;
                };
                t.stage = Stage::Asking { prompt, deadline };
                let (direction, name, size) = (t.direction, t.name.clone(), t.size);
                self.send(
                    now,
                    Message::File(Box::new(FileMsg::Asking {
                        id,
                        name: text(&name),
                        size,
                        timeout_secs: secs_u16(self.config.consent_timeout),
                    })),
                );
                self.audit(AuditEvent::File(FileAudit::Asked {
                    direction,
                    name: name.clone(),
                    size,
                }));
                self.push(DeviceOutput::ShowPrompt(Prompt {
                    id: prompt,
                    kind: ConsentKind::Files,
                    expert,
                    deadline,
                    file: Some(FileAsk {
                        to_device: direction == Direction::Put,
                        name,
                        size,
                    }),
                }));
            }
            FileInput::Stored { id, stored } => {
                if let Some(Transfer {
                    stage: Stage::Running(r),
                    ..
                }) = self.files.transfer.as_mut().filter(|t| t.id == id)
                {
                    r.stored = stored.min(r.received);
                    let received = r.stored;
                    self.send(now, Message::File(Box::new(FileMsg::Ack { id, received })));
                }
            }
            FileInput::Finished { id, result } => {
                if self
                    .files
                    .transfer
                    .as_ref()
                    .is_some_and(|t| t.id == id && matches!(t.stage, Stage::Running(_)))
                {
                    match result {
                        Ok(sha) => self.file_done(now, FileOutcome::Done, Some(sha)),
                        Err(outcome) => self.file_done(now, outcome, None),
                    }
                }
            }
        }
    }

    /// The person answered the file prompt.
    pub(super) fn file_answered(&mut self, now: Instant, accept: bool, for_session: bool) {
        self.audit(AuditEvent::File(FileAudit::Answered {
            granted: accept,
            for_session: accept && for_session,
        }));
        if accept {
            self.push(DeviceOutput::HidePrompt);
            self.files.for_session |= for_session;
            self.files.declines = 0;
            self.files.not_before = None;
            self.file_start(now, false);
        } else {
            self.file_declined(now);
            self.file_done(now, FileOutcome::Declined, None);
        }
    }

    fn file_start(&mut self, now: Instant, allowed_before: bool) {
        let (consent, revoker) = FileConsent::mint(self.epoch());
        let Some(t) = self.files.transfer.as_mut() else {
            return;
        };
        t.stage = Stage::Running(Running {
            revoker,
            received: 0,
            stored: 0,
        });
        let (id, size, direction, name, sha256) =
            (t.id, t.size, t.direction, t.name.clone(), t.sha256);
        if allowed_before {
            // Not asked, but on the record all the same.
            self.audit(AuditEvent::File(FileAudit::Asked {
                direction,
                name,
                size,
            }));
            self.audit(AuditEvent::File(FileAudit::Answered {
                granted: true,
                for_session: true,
            }));
        }
        self.send(now, Message::File(Box::new(FileMsg::Accepted { id, size })));
        self.push(DeviceOutput::FileActivity(Some(FileAsk {
            to_device: direction == Direction::Put,
            name: self
                .files
                .transfer
                .as_ref()
                .map_or_else(String::new, |t| t.name.clone()),
            size,
        })));
        self.push(DeviceOutput::File(FileOutput::Start {
            id,
            consent,
            sha256,
        }));
    }

    /// The prompt ran out.
    pub(super) fn file_timed_out(&mut self, now: Instant) {
        self.audit(AuditEvent::File(FileAudit::Answered {
            granted: false,
            for_session: false,
        }));
        self.file_declined(now);
        self.file_done(now, FileOutcome::TimedOut, None);
    }

    /// A file question ended without a yes: the next one waits, longer
    /// with each no in a row (the control request's backoff).
    fn file_declined(&mut self, now: Instant) {
        let base = self.config.control_backoff;
        if base.is_zero() {
            return;
        }
        self.files.declines = self.files.declines.saturating_add(1);
        let factor = 1u32 << self.files.declines.saturating_sub(1).min(8);
        let wait = base.saturating_mul(factor).min(super::MAX_CONTROL_BACKOFF);
        self.files.not_before = Some(now + wait);
    }

    /// The person at the device cancels the transfer under way. False when
    /// there is none.
    pub(super) fn file_cancel_locally(&mut self, now: Instant) -> bool {
        if self.files.transfer.is_none() {
            return false;
        }
        self.file_done(now, FileOutcome::CancelledOnDevice, None);
        true
    }

    /// Ends the transfer: withdraws its consent, tells the agent to stop
    /// (a `Put`'s temporary file goes), tells the expert and the audit log.
    fn file_done(&mut self, now: Instant, outcome: FileOutcome, sha256: Option<Sha256>) {
        let Some(t) = self.files.transfer.take() else {
            return;
        };
        self.file_ended(&t, outcome.clone(), sha256);
        self.send_done(now, t.id, outcome);
    }

    /// The session is ending or the connection dropped: the transfer stops
    /// without a word to the expert (the `Bye`, or the lost connection,
    /// says it).
    pub(super) fn file_teardown(&mut self) {
        if let Some(t) = self.files.transfer.take() {
            self.file_ended(&t, FileOutcome::CancelledOnDevice, None);
        }
    }

    fn file_ended(&mut self, t: &Transfer, outcome: FileOutcome, sha256: Option<Sha256>) {
        match &t.stage {
            Stage::Running(r) => {
                r.revoker.revoke();
                self.push(DeviceOutput::FileActivity(None));
            }
            // Whoever ended it (a no, the clock, a cancel on either side,
            // the end of the session), the question leaves the screen.
            Stage::Asking { .. } => self.push(DeviceOutput::HidePrompt),
            Stage::Checking => {}
        }
        // Always: the agent may hold the file it checked.
        self.push(DeviceOutput::File(FileOutput::Stop { id: t.id }));
        self.audit(AuditEvent::File(FileAudit::Ended {
            direction: t.direction,
            name: t.name.clone(),
            size: t.size,
            sha256: sha256.or(t.sha256.filter(|_| outcome == FileOutcome::Done)),
            outcome,
        }));
    }
}
