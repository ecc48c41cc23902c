//! One connection's session: the sans-I/O machine fed frame by frame,
//! screen updates applied to the shared framebuffer, statistics, latency
//! probes and view checks.

use std::time::{Duration, Instant};

use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::{self, HEADER_LEN, MAX_FRAME_LEN};
use shoulder_proto::msg::Encoding;
use shoulder_proto::session::{ExpertEvent, ExpertInput, ExpertSession, ExpertState, UserAction};
use shoulder_proto::{ByeReason, ControlEndReason, DeclineReason, Message, ResumeToken};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::ClientError;

use super::{ClientEvent, Dirty, SharedView, View, monotonic_us};

/// Our own latency probes: often enough for a live ping figure, rare enough
/// to cost nothing (a ping is 10 bytes).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the view checks itself against the device (a hash per band of
/// the framebuffer, about 2 ms at 1080p; the device answers and sends again
/// what differs).
pub const VIEW_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The device takes one view report a second; asked more often (the
/// technician pressing "refresh"), the client waits this long in between.
const MIN_VIEW_CHECK_GAP: Duration = shoulder_proto::session::MIN_VIEW_REPORT_INTERVAL;
/// Probe nonces have the top bit set so they never collide with the session
/// machine's keepalive nonces (which count up from 1).
const PROBE_BIT: u64 = 1 << 63;
/// Read chunk: large enough for update bursts, small enough to stay cheap.
const READ_CHUNK: usize = 64 * 1024;

/// How [`drive`] ended.
#[derive(Debug)]
pub struct DriveEnd {
    /// `None`: the expert disconnected.
    pub end: Option<ClientError>,
    /// Set when the connection died while the device was keeping the
    /// session for a resume: reconnect within `grace` and authenticate
    /// with `token`.
    pub resume: Option<ResumeChance>,
    /// The connection died (no `Bye` either way), resumable or not.
    pub lost: bool,
    /// The technician asked for exact pictures only on this connection
    /// (`UserAction::ExactOnly`): a resumed one asks the same.
    pub exact_only: bool,
}

/// The device's offer to resume a dropped session.
#[derive(Debug, Clone)]
pub struct ResumeChance {
    pub token: ResumeToken,
    pub grace: Duration,
}

/// Per-connection bookkeeping of the driver.
struct Driver<'a> {
    view: SharedView,
    emit: &'a mut (dyn FnMut(ClientEvent) + Send),
    wbuf: Vec<u8>,
    /// Wire bytes of the update being received (all its parts so far).
    update_bytes: u64,
    update_rects: u32,
    end: Option<Option<ClientError>>,
    transport_error: Option<ClientError>,
    probe: Option<(u64, Instant)>,
    probe_nonce: u64,
    window_start: Instant,
    window_updates: u32,
    window_bytes: u64,
    viewing: bool,
    /// The device's latest resume offer.
    resume: Option<ResumeChance>,
    /// The update the framebuffer shows, once fully applied: (generation,
    /// seq). None after a new screen until its first update is complete.
    applied: Option<(u32, u32)>,
    /// An update's parts are arriving: its framebuffer is half-made.
    mid_update: bool,
    /// A view check is wanted (periodic or asked for) once allowed.
    check_wanted: bool,
    /// The technician asked for the pending check (or the one in flight).
    check_asked: bool,
    /// When the last view report was sent.
    last_check: Option<Instant>,
    /// When the read of the frame being handled returned.
    read_at: Instant,
}

impl Driver<'_> {
    /// Drains the machine's outputs. `frame_len` is the wire size of the frame
    /// that produced them (0 for non-network inputs).
    fn outputs(&mut self, session: &mut ExpertSession, frame_len: u64) {
        while let Some(ev) = session.poll_output() {
            match ev {
                ExpertEvent::Send(m) => {
                    if let Err(e) = frame::encode_into(&m, &mut self.wbuf) {
                        tracing::warn!("cannot send {}: {e}", m.name());
                    }
                }
                ExpertEvent::StateChanged(s) => {
                    if matches!(s, ExpertState::WaitingForConsent { .. })
                        && session.device_records()
                    {
                        (self.emit)(ClientEvent::Recorded);
                    }
                    self.viewing = matches!(s, ExpertState::Viewing { .. });
                    self.view.lock().exact_offer =
                        self.viewing && session.exact_only_supported() && session.lossy();
                    (self.emit)(ClientEvent::State(s));
                }
                ExpertEvent::Screen(info) => {
                    self.applied = None;
                    self.mid_update = false;
                    let mut v = self.view.lock();
                    match Framebuffer::new(&info) {
                        Ok(fb) => {
                            v.dirty = Some(Dirty {
                                x0: 0,
                                y0: 0,
                                x1: fb.width(),
                                y1: fb.height(),
                            });
                            v.fb = Some(fb);
                        }
                        Err(e) => tracing::warn!("bad screen: {e}"),
                    }
                    drop(v);
                    (self.emit)(ClientEvent::Screen(info));
                }
                ExpertEvent::ScreenUnavailable(s) => (self.emit)(ClientEvent::ScreenUnavailable(s)),
                ExpertEvent::Screens(list) => (self.emit)(ClientEvent::Screens(list)),
                ExpertEvent::Update(part) => {
                    self.update_bytes += frame_len;
                    let failed = {
                        let mut v = self.view.lock();
                        let View {
                            fb, dirty, stats, ..
                        } = &mut *v;
                        let mut failed = None;
                        if let Some(fb) = fb.as_mut() {
                            for r in &part.rects {
                                match fb.apply_rect(r) {
                                    Ok(()) => {
                                        self.update_rects += 1;
                                        if matches!(r.encoding, Encoding::Jpeg(_)) {
                                            stats.lossy_rects += 1;
                                        }
                                        Dirty::add(dirty, r.x, r.y, r.w, r.h);
                                    }
                                    Err(e) => {
                                        failed = Some(e);
                                        break;
                                    }
                                }
                            }
                        }
                        failed
                    };
                    self.mid_update = !part.last;
                    if failed.is_none() && part.last {
                        self.applied = Some((part.generation, part.seq));
                    }
                    if let Some(e) = failed {
                        // Ask for the whole screen again rather than show a
                        // wrong picture.
                        self.applied = None;
                        tracing::warn!("bad screen update: {e}");
                        session.handle(
                            Instant::now(),
                            ExpertInput::Action(UserAction::RefreshScreen),
                        );
                    }
                    if part.last {
                        let t_mono_us = monotonic_us();
                        let since_read = Instant::now().saturating_duration_since(self.read_at);
                        let t_recv_us = t_mono_us.saturating_sub(since_read.as_micros() as u64);
                        let (bytes, rects) = (self.update_bytes, self.update_rects);
                        self.update_bytes = 0;
                        self.update_rects = 0;
                        self.window_updates += 1;
                        self.view.lock().stats.updates_total += 1;
                        (self.emit)(ClientEvent::UpdateApplied {
                            seq: part.seq,
                            bytes,
                            rects,
                            t_mono_us,
                            t_recv_us,
                        });
                    }
                }
                ExpertEvent::CursorShape(c) => {
                    let mut v = self.view.lock();
                    v.cursor = Some(*c);
                    v.cursor_changed = true;
                }
                ExpertEvent::CursorPosition { x, y, visible } => {
                    self.view.lock().cursor_pos = Some((x, y, visible))
                }
                ExpertEvent::ControlDeclined(r) => {
                    (self.emit)(ClientEvent::ControlDeclined(decline_sentence(r)))
                }
                ExpertEvent::ControlEnded(r) => {
                    (self.emit)(ClientEvent::ControlEnded(control_end_sentence(r)))
                }
                ExpertEvent::Chat(t) => (self.emit)(ClientEvent::Chat(t)),
                ExpertEvent::Typed { id, typed, outcome } => {
                    (self.emit)(ClientEvent::Typed { id, typed, outcome })
                }
                ExpertEvent::File(f) => (self.emit)(ClientEvent::File(f)),
                ExpertEvent::Rtt(d) => self.view.lock().stats.rtt = Some(d),
                ExpertEvent::ViewChecked {
                    seq,
                    compared,
                    differing,
                } => {
                    {
                        let mut v = self.view.lock();
                        v.stats.view_checks += 1;
                        if differing > 0 {
                            v.stats.view_repairs += 1;
                        }
                    }
                    if differing > 0 {
                        tracing::info!(
                            seq,
                            compared,
                            differing,
                            "the view differed from the device screen; the device sends those parts again"
                        );
                    } else {
                        tracing::debug!(seq, compared, "view checked: it matches the device");
                    }
                    let asked = std::mem::take(&mut self.check_asked);
                    (self.emit)(ClientEvent::ViewChecked {
                        compared,
                        differing,
                        asked,
                    });
                }
                ExpertEvent::ResumeOffer { token, grace } => {
                    self.resume = (!grace.is_zero()).then_some(ResumeChance { token, grace });
                }
                ExpertEvent::Closed {
                    reason, sentence, ..
                } => {
                    let end = if let Some(t) = self.transport_error.take() {
                        Some(t)
                    } else if sentence == "You disconnected." {
                        None
                    } else if reason == ByeReason::Normal
                        && sentence == "The connection to the device was lost."
                    {
                        Some(ClientError::Lost {
                            detail: "the device closed the connection".into(),
                        })
                    } else {
                        Some(ClientError::Session { reason, sentence })
                    };
                    self.end = Some(end);
                }
            }
        }
    }

    /// Sends a view report when one is wanted and may go: viewing, between
    /// updates, at most one per [`MIN_VIEW_CHECK_GAP`]. A device too old
    /// for checks gets a full refresh when the technician asks.
    fn check_view(&mut self, session: &mut ExpertSession, now: Instant) {
        if !self.check_wanted || !self.viewing || self.mid_update {
            return;
        }
        if !session.view_check_supported() {
            self.check_wanted = false;
            if std::mem::take(&mut self.check_asked) {
                session.handle(now, ExpertInput::Action(UserAction::RefreshScreen));
            }
            return;
        }
        if self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_VIEW_CHECK_GAP)
        {
            return;
        }
        let Some((generation, seq)) = self.applied else {
            return;
        };
        let report = match self.view.lock().fb.as_ref() {
            Some(fb) => fb.view_report(generation, seq),
            None => return,
        };
        self.check_wanted = false;
        self.last_check = Some(now);
        session.handle(
            now,
            ExpertInput::Action(UserAction::ReportView(Box::new(report))),
        );
    }

    fn tick_stats(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.window_start);
        if dt >= PROBE_INTERVAL {
            let secs = dt.as_secs_f64();
            let mut v = self.view.lock();
            v.stats.fps = (f64::from(self.window_updates) / secs) as f32;
            v.stats.bytes_per_sec = self.window_bytes as f64 / secs;
            self.window_start = now;
            self.window_updates = 0;
            self.window_bytes = 0;
        }
    }
}

/// Runs `session` over `io` until it closes.
pub async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    label: &str,
    mut session: ExpertSession,
    view: SharedView,
    actions: &mut mpsc::Receiver<UserAction>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> DriveEnd {
    let mut d = Driver {
        view,
        emit,
        wbuf: Vec::new(),
        update_bytes: 0,
        update_rects: 0,
        end: None,
        transport_error: None,
        probe: None,
        probe_nonce: 0,
        window_start: Instant::now(),
        window_updates: 0,
        window_bytes: 0,
        viewing: false,
        resume: None,
        applied: None,
        mid_update: false,
        check_wanted: false,
        check_asked: false,
        last_check: None,
        read_at: Instant::now(),
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut rbuf = vec![0u8; READ_CHUNK];
    let mut probe_timer = tokio::time::interval(PROBE_INTERVAL);
    probe_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut actions_open = true;
    loop {
        d.outputs(&mut session, 0);
        d.check_view(&mut session, Instant::now());
        d.outputs(&mut session, 0);
        if !d.wbuf.is_empty() {
            let out = std::mem::take(&mut d.wbuf);
            let res = async {
                io.write_all(&out).await?;
                io.flush().await
            }
            .await;
            if let Err(e) = res {
                if d.end.is_none() {
                    d.transport_error = Some(ClientError::from_tls(label, &e));
                    session.handle(
                        Instant::now(),
                        ExpertInput::PeerClosed {
                            error: Some(e.to_string()),
                        },
                    );
                    d.outputs(&mut session, 0);
                }
                d.wbuf.clear();
            }
        }
        if let Some(end) = d.end.take() {
            // The Bye (if any) is written; close TLS politely, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
            let resume = if session.connection_lost() && actions_open {
                d.resume.take()
            } else {
                None
            };
            return DriveEnd {
                end,
                resume,
                lost: session.connection_lost(),
                exact_only: !session.lossy(),
            };
        }
        let deadline = session
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = io.read(&mut rbuf) => {
                let now = Instant::now();
                match r {
                    Ok(0) => session.handle(now, ExpertInput::PeerClosed { error: None }),
                    Ok(n) => {
                        d.window_bytes += n as u64;
                        d.view.lock().stats.bytes_total += n as u64;
                        pending.extend_from_slice(&rbuf[..n]);
                        feed_frames(&mut d, &mut session, &mut pending, now);
                    }
                    Err(e) => {
                        let err = ClientError::from_tls(label, &e);
                        d.transport_error = Some(err);
                        session.handle(now, ExpertInput::PeerClosed { error: Some(e.to_string()) });
                    }
                }
            }
            a = actions.recv(), if actions_open => {
                match a {
                    Some(UserAction::CheckView) => {
                        d.check_wanted = true;
                        d.check_asked = true;
                    }
                    Some(a) => {
                        let exact = a == UserAction::ExactOnly;
                        session.handle(Instant::now(), ExpertInput::Action(a));
                        if exact {
                            d.view.lock().exact_offer = false;
                        }
                    }
                    None => {
                        actions_open = false;
                        session.handle(Instant::now(), ExpertInput::Action(UserAction::Disconnect));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                session.handle_timeout(Instant::now());
            }
            _ = probe_timer.tick() => {
                let now = Instant::now();
                d.tick_stats(now);
                if d.viewing
                    && d.last_check.is_none_or(|t| now.saturating_duration_since(t) >= VIEW_CHECK_INTERVAL)
                {
                    d.check_wanted = true;
                }
                if d.viewing && d.probe.is_none_or(|(_, at)| now.duration_since(at) > 4 * PROBE_INTERVAL) {
                    d.probe_nonce += 1;
                    let nonce = PROBE_BIT | d.probe_nonce;
                    d.probe = Some((nonce, now));
                    let _ = frame::encode_into(&Message::Ping { nonce }, &mut d.wbuf);
                }
            }
        }
    }
}

/// Splits `pending` into whole frames and feeds them to the session one by
/// one, so every update is charged its exact wire size.
fn feed_frames(
    d: &mut Driver<'_>,
    session: &mut ExpertSession,
    pending: &mut Vec<u8>,
    now: Instant,
) {
    let mut start = 0;
    loop {
        let frame_bytes = match frame::split_frame(&pending[start..], MAX_FRAME_LEN) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                // Let the machine report the oversize frame; never buffer it.
                session.handle(now, ExpertInput::Received(pending[start..].to_vec()));
                d.outputs(session, 0);
                pending.clear();
                return;
            }
        };
        let total = frame_bytes.len();
        // Our latency probes come back as Pong with the probe bit.
        if let Some(nonce) = frame::pong_nonce(&frame_bytes[HEADER_LEN..])
            && nonce & PROBE_BIT != 0
            && let Some((n, at)) = d.probe
            && n == nonce
        {
            d.probe = None;
            d.view.lock().stats.rtt = Some(now.saturating_duration_since(at));
        }
        d.read_at = now;
        session.handle(now, ExpertInput::Received(frame_bytes.to_vec()));
        d.outputs(session, total as u64);
        start += total;
        if session.is_closed() {
            break;
        }
    }
    pending.drain(..start);
}

fn decline_sentence(r: DeclineReason) -> String {
    match r {
        DeclineReason::Declined => "The person at the device declined control.".into(),
        DeclineReason::TimedOut => {
            "Nobody at the device answered the control request in time — ask them to stand by and try again.".into()
        }
        DeclineReason::ViewOnly => "This device is view-only: control is turned off.".into(),
        DeclineReason::AlreadyPending => "A control request is already waiting.".into(),
        DeclineReason::TooSoon { retry_after_secs } => format!(
            "Control was declined a moment ago; you can ask again in {retry_after_secs} s."
        ),
    }
}

fn control_end_sentence(r: ControlEndReason) -> String {
    match r {
        ControlEndReason::StoppedByUser => {
            "The person at the device took control back — you can still watch.".into()
        }
        ControlEndReason::Hotkey => {
            "The person at the device took control back with the hotkey — you can still watch."
                .into()
        }
        ControlEndReason::Released => "You released control.".into(),
        ControlEndReason::DeviceFault => {
            "Input could not be injected on the device, so control ended — try requesting it again."
                .into()
        }
    }
}
