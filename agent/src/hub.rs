//! The meeting point of the live session and the device side: who holds the
//! one session slot, what the banner and control socket show, and where the
//! person's decisions go.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoulder_proto::ConsentKind;
use shoulder_proto::rotation::Rotation;
use shoulder_proto::session::{LocalCommand, LocalDecision, Outcome, PromptId};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use crate::records::{AgentStatus, PromptStatus, SessionStatus};

/// Events queued for each control-socket listener before it counts as
/// lagging (a listener that does not read loses events, not the agent).
const EVENT_BUFFER: usize = 64;
/// Commands queued for the session (the person cannot click faster).
pub const COMMAND_BUFFER: usize = 16;

/// What the person at the device (or a script) asks of the session.
#[derive(Debug)]
pub enum SessionCommand {
    /// A decision; the session says what it did on `reply`, if given.
    Local {
        command: LocalCommand,
        reply: Option<oneshot::Sender<Outcome>>,
    },
    Chat(String),
    /// The person used a local device (expert input is held back a while).
    Activity,
    /// The panel's rotation changed (`ctl rotate`).
    Rotate(Rotation),
}

/// An open consent prompt, as `status` shows it.
#[derive(Debug, Clone)]
pub struct PromptInfo {
    pub id: PromptId,
    pub kind: ConsentKind,
    pub deadline: Instant,
}

#[derive(Debug)]
struct Slot {
    token: u64,
    id: String,
    expert: String,
    how: String,
    source: String,
    phase: &'static str,
    since: Instant,
    prompt: Option<PromptInfo>,
    /// The newest prompt shown in this session: an answer may only name a
    /// prompt that exists already, never one still to come.
    newest_prompt: Option<PromptId>,
    commands: mpsc::Sender<SessionCommand>,
}

#[derive(Debug, Default)]
struct State {
    slot: Option<Slot>,
    next_token: u64,
    /// How the framebuffer is turned for the person now: what the display
    /// says (`rotation = "auto"`), the config's value, or `ctl rotate`'s.
    rotation: Rotation,
    /// Set by the config (`rotation = DEGREES`) or `ctl rotate`: what the
    /// display says no longer changes the rotation.
    rotation_pinned: bool,
    /// The broker link's state for `status`.
    broker: Option<Value>,
}

/// Shared by the service, the session and the control socket.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    /// Woken whenever the slot is freed.
    freed: Notify,
    events: broadcast::Sender<Value>,
    /// Static facts for `status`.
    pub info: Value,
}

/// Why a command could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no session is running")]
    NoSession,
    #[error("no prompt is open")]
    NoPrompt,
    #[error("prompt {0} has not been shown; answer a prompt by the id `status` gives")]
    NotShown(PromptId),

    #[error("the session is not taking commands right now; try again")]
    Full,
}

impl Hub {
    pub fn new(info: Value) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(Self {
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            events,
            info,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the framebuffer is turned for the person now.
    pub fn rotation(&self) -> Rotation {
        self.lock().rotation
    }

    /// The panel's rotation changed (`ctl rotate`): sessions from now on
    /// use it, and the running one turns its view, input and banner
    /// (`SessionCommand::Rotate`). Whether it changed anything.
    pub fn set_rotation(&self, rotation: Rotation) -> bool {
        let mut st = self.lock();
        st.rotation_pinned = true;
        Self::turn(&mut st, rotation)
    }

    /// What the display says the person sees (`rotation = "auto"`): taken
    /// unless the config or `ctl rotate` set the rotation. Whether it
    /// changed anything.
    pub fn follow_display(&self, rotation: Rotation) -> bool {
        let mut st = self.lock();
        !st.rotation_pinned && Self::turn(&mut st, rotation)
    }

    /// `ctl rotate auto`: what the display says counts again (asked when
    /// the next session starts). Whether it was pinned.
    pub fn unpin_rotation(&self) -> bool {
        std::mem::replace(&mut self.lock().rotation_pinned, false)
    }

    /// Whether the rotation follows the display (nothing pinned it).
    pub fn follows_display(&self) -> bool {
        !self.lock().rotation_pinned
    }

    fn turn(st: &mut State, rotation: Rotation) -> bool {
        if st.rotation == rotation {
            return false;
        }
        st.rotation = rotation;
        if let Some(slot) = &st.slot
            && slot
                .commands
                .try_send(SessionCommand::Rotate(rotation))
                .is_err()
        {
            // The session's queue is full of the person's commands: it
            // finds the new rotation when it takes the next one.
            tracing::debug!("rotation queued behind other commands");
        }
        true
    }

    /// Whether a session holds the slot.
    pub fn is_busy(&self) -> bool {
        self.lock().slot.is_some()
    }

    /// Waits until no session holds the slot, for at most `within`.
    /// Returns whether it is free (it may be taken again at any moment:
    /// [`Hub::claim`] decides).
    pub async fn wait_until_free(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so a release in between wakes it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.is_busy() {
                return true;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return !self.is_busy();
            }
        }
    }

    /// Takes the one session slot, or None if another session holds it.
    pub fn claim(
        self: &Arc<Self>,
        id: &str,
        expert: &str,
        how: &str,
        source: &str,
    ) -> Option<(SlotGuard, mpsc::Receiver<SessionCommand>)> {
        let mut st = self.lock();
        if st.slot.is_some() {
            return None;
        }
        st.next_token += 1;
        let token = st.next_token;
        let (tx, rx) = mpsc::channel(COMMAND_BUFFER);
        st.slot = Some(Slot {
            token,
            id: id.into(),
            expert: expert.into(),
            how: how.into(),
            source: source.into(),
            phase: "authenticated",
            since: Instant::now(),
            prompt: None,
            newest_prompt: None,
            commands: tx,
        });
        Some((
            SlotGuard {
                hub: self.clone(),
                token,
            },
            rx,
        ))
    }

    /// Sends a command to the live session.
    pub fn command(&self, cmd: SessionCommand) -> Result<(), CommandError> {
        let st = self.lock();
        let slot = st.slot.as_ref().ok_or(CommandError::NoSession)?;
        slot.commands.try_send(cmd).map_err(|_| CommandError::Full)
    }

    /// Sends a decision to the live session. An answer names `prompt`, or
    /// without one the prompt open at this moment (never a later one); the
    /// returned receiver says what the session did with it.
    pub fn decide(
        &self,
        decision: LocalDecision,
        prompt: Option<PromptId>,
    ) -> Result<oneshot::Receiver<Outcome>, CommandError> {
        let st = self.lock();
        let slot = st.slot.as_ref().ok_or(CommandError::NoSession)?;
        let open = slot.prompt.as_ref().map(|p| p.id);
        let named = match (decision, prompt) {
            (LocalDecision::Accept | LocalDecision::Decline, None) => {
                Some(open.ok_or(CommandError::NoPrompt)?)
            }
            (LocalDecision::Accept | LocalDecision::Decline, Some(p)) => {
                if slot.newest_prompt.is_none_or(|n| p > n) {
                    return Err(CommandError::NotShown(p));
                }
                Some(p)
            }
            (_, p) => p,
        };
        let command = decision.on(named).ok_or(CommandError::NoPrompt)?;
        let (tx, rx) = oneshot::channel();
        slot.commands
            .try_send(SessionCommand::Local {
                command,
                reply: Some(tx),
            })
            .map_err(|_| CommandError::Full)?;
        Ok(rx)
    }

    /// The broker link's state, as `status` shows it.
    pub fn set_broker_state(&self, state: &str, detail: Option<&str>) {
        let mut v = serde_json::json!({ "state": state });
        if let Some(d) = detail {
            v["detail"] = d.into();
        }
        self.lock().broker = Some(v);
    }

    /// Publishes an event to control-socket listeners.
    pub fn publish(&self, event: Value) {
        // No listeners is fine.
        let _ = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.events.subscribe()
    }

    /// The `status` reply.
    pub(crate) fn status(&self) -> AgentStatus {
        let st = self.lock();
        let now = Instant::now();
        let session = st.slot.as_ref().map(|s| SessionStatus {
            id: s.id.clone(),
            expert: s.expert.clone(),
            how: s.how.clone(),
            source: s.source.clone(),
            phase: s.phase,
            since_secs: now.saturating_duration_since(s.since).as_secs(),
            prompt: s.prompt.as_ref().map(|p| PromptStatus {
                id: p.id.0,
                kind: kind_name(p.kind),
                remaining_secs: p.deadline.saturating_duration_since(now).as_secs(),
            }),
        });
        AgentStatus {
            agent: self.info.clone(),
            session,
            broker: st.broker.clone(),
        }
    }

    fn with_slot(&self, token: u64, f: impl FnOnce(&mut Slot)) {
        let mut st = self.lock();
        if let Some(s) = st.slot.as_mut().filter(|s| s.token == token) {
            f(s);
        }
    }
}

/// Holds the session slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotGuard {
    hub: Arc<Hub>,
    token: u64,
}

impl SlotGuard {
    pub fn set_phase(&self, phase: &'static str) {
        self.hub.with_slot(self.token, |s| s.phase = phase);
    }

    pub fn set_prompt(&self, prompt: Option<PromptInfo>) {
        self.hub.with_slot(self.token, |s| {
            if let Some(p) = &prompt {
                s.newest_prompt = s.newest_prompt.max(Some(p.id));
            }
            s.prompt = prompt;
        });
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        if st.slot.as_ref().is_some_and(|s| s.token == self.token) {
            st.slot = None;
            drop(st);
            self.hub.freed.notify_waiters();
        }
    }
}

pub fn kind_name(kind: ConsentKind) -> &'static str {
    match kind {
        ConsentKind::View => "view",
        ConsentKind::Control => "control",
        ConsentKind::Files => "file",
    }
}
