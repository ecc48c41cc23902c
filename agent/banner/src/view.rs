//! What the banner shows: a small plain struct, filled from the session's
//! outputs ([`Prompt`], [`Phase`], chat, close reasons) or by hand in tests.

use std::time::{Duration, Instant};

use shoulder_proto::msg::{ByeReason, ConsentKind, ControlEndReason};
use shoulder_proto::session::{Phase, Prompt};

/// Everything on screen at one moment. Each part is optional; an empty view
/// shows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// An open consent prompt.
    pub prompt: Option<PromptView>,
    /// The session strip, shown for the whole session.
    pub strip: Option<StripView>,
    /// The latest chat line from the expert.
    pub chat: Option<String>,
    /// A short notice: "Control stopped", "Session ended: …", "Reconnecting…".
    pub notice: Option<String>,
}

impl View {
    pub fn is_empty(&self) -> bool {
        self.prompt.is_none()
            && self.strip.is_none()
            && self.chat.is_none()
            && self.notice.is_none()
    }
}

/// A consent question to the person at the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptView {
    pub kind: ConsentKind,
    /// Who asks: the certificate's name, or whom the invitation is for.
    pub expert: String,
    /// How they were authenticated ("plant certificate", "invitation …").
    pub how: String,
    /// The name they gave themselves, when it differs (a hint).
    pub says: Option<String>,
    /// Seconds until the prompt declines by itself.
    pub seconds_left: u32,
    /// Just shown: taps and keys do not answer it yet (the buttons are
    /// drawn greyed out), so an Enter or tap already on its way when it
    /// appeared cannot answer it.
    pub arming: bool,
    /// The person asked for help (`ctl help`) and this is a request to
    /// see the screen: how long ago, and what they wrote.
    pub help: Option<HelpAsked>,
    /// The file a files prompt asks about.
    pub file: Option<shoulder_proto::session::FileAsk>,
}

/// A help request the person at the device made, as a prompt recalls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpAsked {
    pub secs_ago: u64,
    /// What they wrote (may be empty).
    pub text: String,
}

impl PromptView {
    /// The prompt the session machine asked for, as of `now`.
    pub fn from_prompt(prompt: &Prompt, now: Instant) -> Self {
        Self {
            kind: prompt.kind,
            expert: prompt.expert.name.clone(),
            how: prompt.expert.how(),
            says: prompt.expert.says.clone(),
            seconds_left: seconds_until(prompt.deadline, now),
            arming: false,
            help: None,
            file: prompt.file.clone(),
        }
    }
}

/// Whether the expert only sees the screen or also controls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripMode {
    Viewing,
    Controlling,
    /// The connection dropped and the expert may come back; nothing is
    /// shown to anyone meanwhile, but the person can end the session.
    Reconnecting,
}

/// The session strip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripView {
    pub mode: StripMode,
    pub expert: String,
    /// Time since the session (viewing) started.
    pub elapsed: Duration,
    /// The hotkey that takes control back, as the person should type it
    /// ("Ctrl+Alt+Pause"); shown while controlled.
    pub stop_hotkey: String,
    /// A file going to or from the device now: named on the strip, with a
    /// button that cancels it.
    pub file: Option<shoulder_proto::session::FileAsk>,
}

impl StripView {
    /// The strip for a session phase, or `None` when no strip is due (before
    /// consent, after close). `since` of the controlling phase is when control
    /// began; the strip shows time since `session_start` when given, so the
    /// clock does not jump back when control is granted.
    pub fn from_phase(
        phase: &Phase,
        now: Instant,
        session_start: Option<Instant>,
        stop_hotkey: &str,
    ) -> Option<Self> {
        let (mode, expert, since) = match phase {
            Phase::Viewing { expert, since } => (StripMode::Viewing, expert, *since),
            Phase::Controlling { expert, since } => (StripMode::Controlling, expert, *since),
            Phase::Reconnecting { expert, .. } => (
                StripMode::Reconnecting,
                expert,
                session_start.unwrap_or(now),
            ),
            Phase::AwaitingView { .. } | Phase::Closed { .. } => return None,
        };
        let start = session_start.unwrap_or(since);
        Some(Self {
            mode,
            expert: expert.name.clone(),
            elapsed: now.saturating_duration_since(start),
            stop_hotkey: stop_hotkey.to_string(),
            file: None,
        })
    }
}

/// Whole seconds left until `deadline`, rounded up so "0 s" shows only when
/// the time is really up.
pub fn seconds_until(deadline: Instant, now: Instant) -> u32 {
    let left = deadline.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// "12:34", or "1:02:03" past an hour.
pub fn format_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The notice for a closed session, worded for the person at the device.
pub fn session_ended_notice(reason: &ByeReason, detail: &str) -> String {
    let why = match reason {
        ByeReason::EndedByUser => return "Session ended".into(),
        ByeReason::Normal => "the expert left",
        ByeReason::Declined => "declined",
        ByeReason::ConsentTimeout => "no answer in time",
        ByeReason::PeerTimeout => "connection lost",
        ByeReason::ShuttingDown => "assistance service stopped",
        ByeReason::AuditFailure => "audit log unavailable",
        ByeReason::Disabled => "remote assistance is turned off",
        _ if !detail.is_empty() => detail,
        _ => "error",
    };
    format!("Session ended: {why}")
}

/// The notice when control ends while viewing goes on.
pub fn control_ended_notice(reason: ControlEndReason) -> String {
    match reason {
        ControlEndReason::StoppedByUser | ControlEndReason::Hotkey => "Control stopped".into(),
        ControlEndReason::Released => "The expert gave control back".into(),
        ControlEndReason::DeviceFault => "Control stopped: input failed on this device".into(),
    }
}

/// Shown while the connection is being re-established.
pub const RECONNECTING_NOTICE: &str = "Reconnecting...";

/// How long a notice stays up: long enough to read a short sentence.
pub const NOTICE_DURATION: Duration = Duration::from_secs(6);
/// How long the expert's latest chat line stays up unless replaced: a
/// minute to read and act on it, then it stops covering the app.
pub const CHAT_DURATION: Duration = Duration::from_secs(60);

/// Tracks what the session asked the banner to show, and turns it into a
/// [`View`] at any moment. The agent feeds it the device session's outputs
/// (`ShowPrompt`, `HidePrompt`, `Phase`, `ShowChat`) and renders
/// [`view`](Self::view) again at [`next_change`](Self::next_change).
#[derive(Debug, Clone, Default)]
pub struct BannerState {
    prompt: Option<Prompt>,
    /// Until when the open prompt ignores answers.
    armed_at: Option<Instant>,
    phase: Option<Phase>,
    session_start: Option<Instant>,
    chat: Option<(String, Instant)>,
    notice: Option<(String, Instant)>,
    stop_hotkey: String,
    /// The person's open help request: when it was made, and its text.
    help: Option<(Instant, String)>,
    /// The file going to or from the device now.
    file: Option<shoulder_proto::session::FileAsk>,
}

impl BannerState {
    /// `stop_hotkey` is shown on the strip while the expert has control.
    pub fn new(stop_hotkey: &str) -> Self {
        Self {
            stop_hotkey: stop_hotkey.to_string(),
            ..Self::default()
        }
    }

    pub fn show_prompt(&mut self, prompt: Prompt) {
        self.prompt = Some(prompt);
        self.armed_at = None;
    }

    /// Shows `prompt` with its buttons greyed out until `armed_at`.
    pub fn show_prompt_arming(&mut self, prompt: Prompt, armed_at: Instant) {
        self.prompt = Some(prompt);
        self.armed_at = Some(armed_at);
    }

    pub fn hide_prompt(&mut self) {
        self.prompt = None;
        self.armed_at = None;
    }

    /// The person's open help request (`None`: none), recalled by the next
    /// request to see the screen.
    pub fn set_help(&mut self, help: Option<(Instant, String)>) {
        self.help = help;
    }

    /// A new session phase. A closed session leaves only a notice saying
    /// why; the first viewing phase starts the strip's clock.
    pub fn set_phase(&mut self, phase: Phase, now: Instant) {
        match &phase {
            Phase::Viewing { since, .. } | Phase::Controlling { since, .. } => {
                self.session_start.get_or_insert(*since);
            }
            Phase::Closed { reason, detail } => {
                self.notice(session_ended_notice(reason, detail), now);
                self.prompt = None;
                self.chat = None;
                self.session_start = None;
                self.file = None;
            }
            Phase::AwaitingView { .. } | Phase::Reconnecting { .. } => {}
        }
        self.phase = Some(phase);
    }

    /// A file transfer started (`Some`) or ended.
    pub fn set_file(&mut self, file: Option<shoulder_proto::session::FileAsk>) {
        self.file = file;
    }

    pub fn chat(&mut self, text: String, now: Instant) {
        self.chat = Some((text, now + CHAT_DURATION));
    }

    pub fn notice(&mut self, text: String, now: Instant) {
        self.notice = Some((text, now + NOTICE_DURATION));
    }

    /// What to show at `now`.
    pub fn view(&self, now: Instant) -> View {
        let live = |item: &Option<(String, Instant)>| {
            item.as_ref()
                .filter(|(_, until)| now < *until)
                .map(|(t, _)| t.clone())
        };
        View {
            prompt: self.prompt.as_ref().map(|p| PromptView {
                arming: self.armed_at.is_some_and(|t| now < t),
                help: self
                    .help
                    .as_ref()
                    .filter(|_| p.kind == ConsentKind::View)
                    .map(|(at, text)| HelpAsked {
                        secs_ago: now.saturating_duration_since(*at).as_secs(),
                        text: text.clone(),
                    }),
                ..PromptView::from_prompt(p, now)
            }),
            strip: self
                .phase
                .as_ref()
                .and_then(|p| StripView::from_phase(p, now, self.session_start, &self.stop_hotkey))
                .map(|s| StripView {
                    file: self.file.clone(),
                    ..s
                }),
            chat: live(&self.chat),
            notice: live(&self.notice),
        }
    }

    /// When [`view`](Self::view) will next look different (a countdown or
    /// clock second, a notice or chat line expiring), or `None` if never.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(t) = self.armed_at {
            consider(t);
        }
        if let Some(p) = &self.prompt {
            // The shown number changes when the time left crosses a whole second.
            let left = p.deadline.saturating_duration_since(now);
            let frac = Duration::from_nanos(u64::from(left.subsec_nanos()));
            consider(
                now + if frac.is_zero() {
                    Duration::from_secs(1)
                } else {
                    frac
                },
            );
        }
        if let (Some(start), Some(Phase::Viewing { .. } | Phase::Controlling { .. })) =
            (self.session_start, &self.phase)
        {
            let elapsed = now.saturating_duration_since(start);
            consider(start + Duration::from_secs(elapsed.as_secs() + 1));
        }
        for (_, until) in self.chat.iter().chain(&self.notice) {
            consider(*until);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::session::{AuthMethod, ExpertIdentity};

    fn expert() -> ExpertIdentity {
        ExpertIdentity {
            name: "Jane Expert".into(),
            method: AuthMethod::Offer {
                fingerprint: shoulder_proto::Fingerprint([0; 32]),
            },
            says: None,
        }
    }

    #[test]
    fn prompt_counts_down_in_whole_seconds_rounded_up() {
        let now = Instant::now();
        let p = Prompt {
            id: shoulder_proto::session::PromptId(1),
            kind: ConsentKind::View,
            expert: expert(),
            deadline: now + Duration::from_millis(59_200),
            file: None,
        };
        let v = PromptView::from_prompt(&p, now);
        assert_eq!(v.seconds_left, 60);
        assert_eq!(v.how, "plant certificate");
        assert_eq!(
            PromptView::from_prompt(&p, now + Duration::from_secs(70)).seconds_left,
            0
        );
    }

    #[test]
    fn strip_follows_the_phase() {
        let t0 = Instant::now();
        let viewing = Phase::Viewing {
            expert: expert(),
            since: t0,
        };
        let s = StripView::from_phase(&viewing, t0 + Duration::from_secs(75), None, "F12").unwrap();
        assert_eq!(s.mode, StripMode::Viewing);
        assert_eq!(format_elapsed(s.elapsed), "1:15");
        let controlling = Phase::Controlling {
            expert: expert(),
            since: t0 + Duration::from_secs(60),
        };
        let s = StripView::from_phase(&controlling, t0 + Duration::from_secs(75), Some(t0), "F12")
            .unwrap();
        assert_eq!(s.mode, StripMode::Controlling);
        assert_eq!(
            s.elapsed,
            Duration::from_secs(75),
            "clock counts from session start"
        );
        assert!(
            StripView::from_phase(&Phase::AwaitingView { expert: expert() }, t0, None, "")
                .is_none()
        );
    }

    #[test]
    fn state_follows_a_session() {
        let t0 = Instant::now();
        let mut st = BannerState::new("Ctrl+Alt+Pause");
        assert!(st.view(t0).is_empty());
        assert_eq!(st.next_change(t0), None, "nothing to update");
        st.set_phase(Phase::AwaitingView { expert: expert() }, t0);
        st.show_prompt(Prompt {
            id: shoulder_proto::session::PromptId(1),
            kind: ConsentKind::View,
            expert: expert(),
            deadline: t0 + Duration::from_millis(30_500),
            file: None,
        });
        let v = st.view(t0);
        assert_eq!(v.prompt.as_ref().unwrap().seconds_left, 31);
        assert!(v.strip.is_none());
        assert_eq!(st.next_change(t0), Some(t0 + Duration::from_millis(500)));
        let t1 = t0 + Duration::from_secs(2);
        st.hide_prompt();
        st.set_phase(
            Phase::Viewing {
                expert: expert(),
                since: t1,
            },
            t1,
        );
        st.chat("hello".into(), t1);
        let t2 = t1 + Duration::from_millis(61_200);
        let v = st.view(t2);
        assert_eq!(
            v.strip.as_ref().unwrap().elapsed,
            Duration::from_millis(61_200)
        );
        assert!(v.chat.is_none(), "chat expired after a minute");
        assert_eq!(
            st.next_change(t2),
            Some(t1 + Duration::from_secs(62)),
            "next clock second"
        );
        st.set_phase(
            Phase::Controlling {
                expert: expert(),
                since: t2,
            },
            t2,
        );
        assert_eq!(
            st.view(t2).strip.unwrap().elapsed,
            Duration::from_millis(61_200),
            "the clock keeps counting from the session start"
        );
        st.set_phase(
            Phase::Closed {
                reason: ByeReason::EndedByUser,
                detail: String::new(),
            },
            t2,
        );
        let v = st.view(t2);
        assert!(v.strip.is_none() && v.prompt.is_none());
        assert_eq!(v.notice.as_deref(), Some("Session ended"));
        assert_eq!(st.next_change(t2), Some(t2 + NOTICE_DURATION));
        assert!(
            st.view(t2 + NOTICE_DURATION).is_empty(),
            "the notice goes away"
        );
    }

    #[test]
    fn elapsed_and_notices_read_well() {
        assert_eq!(format_elapsed(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(
            session_ended_notice(&ByeReason::EndedByUser, ""),
            "Session ended"
        );
        assert_eq!(
            session_ended_notice(&ByeReason::PeerTimeout, ""),
            "Session ended: connection lost"
        );
        assert_eq!(
            session_ended_notice(&ByeReason::InternalError, "capture failed"),
            "Session ended: capture failed"
        );
        assert_eq!(
            control_ended_notice(ControlEndReason::Hotkey),
            "Control stopped"
        );
    }
}
