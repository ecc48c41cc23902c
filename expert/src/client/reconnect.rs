//! A whole session: connect, drive, and after a drop reconnect to the same
//! device and resume while it keeps the session.

use std::time::{Duration, Instant};

use shoulder_proto::Fingerprint;
use shoulder_proto::session::{ExpertConfig, ExpertSession, UserAction};
use shoulder_proto::{Auth, ResumeToken};
use tokio::sync::mpsc;

use crate::error::ClientError;

use super::connect::{Connected, Dialer, TcpDialer, auth_for, connect_to};
use super::driver::drive;
use super::{ClientEvent, ConnectOptions, SharedView};

/// First pause between reconnection attempts after a drop; it doubles up to
/// [`RECONNECT_MAX_PAUSE`]. Short, because the device keeps the session only
/// for its grace period (20 s by default).
pub const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(250);
/// Longest pause between reconnection attempts.
pub const RECONNECT_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Connects and runs a whole session. Returns the same value as the final
/// [`ClientEvent::Ended`].
///
/// When the connection dies (no `Bye` either way) after the device offered
/// a resume, the client reconnects by itself, to the same device only, and
/// resumes the session without a new prompt; see [`ClientEvent::Reconnecting`].
pub async fn run(
    opts: ConnectOptions,
    view: SharedView,
    actions: mpsc::Receiver<UserAction>,
    emit: Box<dyn FnMut(ClientEvent) + Send>,
) -> Option<ClientError> {
    run_via(opts, &TcpDialer, view, actions, emit).await
}

/// [`run`] over the streams `dialer` opens instead of TCP.
pub async fn run_via(
    opts: ConnectOptions,
    dialer: &dyn Dialer,
    view: SharedView,
    mut actions: mpsc::Receiver<UserAction>,
    mut emit: Box<dyn FnMut(ClientEvent) + Send>,
) -> Option<ClientError> {
    let end = run_session(&opts, dialer, &view, &mut actions, &mut *emit).await;
    emit(ClientEvent::Ended(end.clone()));
    end
}

async fn run_session(
    opts: &ConnectOptions,
    dialer: &dyn Dialer,
    view: &SharedView,
    actions: &mut mpsc::Receiver<UserAction>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Option<ClientError> {
    let auth = match auth_for(opts) {
        Ok(a) => a,
        Err(e) => return Some(e),
    };
    let mut conn = match connect_to(opts, None, dialer, emit).await {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    emit(ClientEvent::Connected {
        device_name: conn.device_name.clone(),
        fingerprint: conn.fingerprint,
    });
    let device = conn.fingerprint;
    let mut lossless = opts.lossless;
    let mut session = ExpertSession::new(Instant::now(), expert_config(opts, lossless, auth));
    // The resume under way: its token, the end of the device's grace period
    // and its length. The device answers a resume with a new offer; until
    // then a connection that dies again retries the same token.
    let mut resuming: Option<(ResumeToken, Instant, Duration)> = None;
    loop {
        let label = conn.label.clone();
        let out = drive(conn.stream, &label, session, view.clone(), actions, emit).await;
        lossless |= out.exact_only;
        let (token, until, grace) = match (out.resume, resuming.take()) {
            (Some(chance), _) => (chance.token, Instant::now() + chance.grace, chance.grace),
            (None, Some(r)) if out.lost && Instant::now() < r.1 => r,
            _ => return out.end,
        };
        conn = match reconnect(opts, dialer, device, until, grace, out.end, actions, emit).await {
            Ok(c) => c,
            Err(end) => return end,
        };
        emit(ClientEvent::Resuming);
        resuming = Some((token.clone(), until, grace));
        let auth = Auth::Resume { token };
        session = ExpertSession::new(Instant::now(), expert_config(opts, lossless, auth));
    }
}

/// The session machine's settings for `opts`; `lossless` as `--lossless`,
/// or as the technician chose during the session.
fn expert_config(opts: &ConnectOptions, lossless: bool, auth: Auth) -> ExpertConfig {
    ExpertConfig {
        lossy: !lossless,
        ..ExpertConfig::new(&opts.name, auth)
    }
}

/// Reconnects to `device` before `until`, the end of the device's `grace`
/// period, after a drop (`lost` says how the connection died). `Err(None)`
/// means the expert chose to disconnect meanwhile.
#[allow(clippy::too_many_arguments)]
async fn reconnect(
    opts: &ConnectOptions,
    dialer: &dyn Dialer,
    device: Fingerprint,
    until: Instant,
    grace: Duration,
    lost: Option<ClientError>,
    actions: &mut mpsc::Receiver<UserAction>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, Option<ClientError>> {
    let mut last = lost.map(|e| e.sentence());
    let mut pause = RECONNECT_FIRST_PAUSE;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        emit(ClientEvent::Reconnecting {
            attempt,
            until,
            last_error: last.clone(),
        });
        let deadline = tokio::time::Instant::from_std(until);
        // Progress events of the attempts would send the UI back to its
        // start screen: the Reconnecting events stand for them.
        let mut quiet = |_: ClientEvent| {};
        let attempt_fut =
            tokio::time::timeout_at(deadline, connect_to(opts, Some(device), dialer, &mut quiet));
        tokio::pin!(attempt_fut);
        let result = loop {
            tokio::select! {
                r = &mut attempt_fut => break r,
                a = actions.recv() => {
                    if matches!(a, None | Some(UserAction::Disconnect)) {
                        return Err(None);
                    }
                    // Nothing can reach the device now; input is dropped
                    // (the device released everything when the link died).
                }
            }
        };
        match result {
            Ok(Ok(c)) => return Ok(c),
            // A question of trust does not change by trying again.
            Ok(Err(
                e @ (ClientError::ChangedOnReconnect { .. }
                | ClientError::DeviceNotTrusted { .. }
                | ClientError::ExpertNotTrusted
                | ClientError::ExpertCertExpired
                | ClientError::Local(_)),
            )) => return Err(Some(e)),
            // Anything else may be the flaky link itself (a handshake record
            // mangled on the way fails TLS): try again while there is time.
            Ok(Err(e)) => last = Some(e.sentence()),
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= until {
            return Err(Some(ClientError::ReconnectFailed {
                secs: grace.as_secs(),
                detail: last
                    .map(|s| s.trim_end_matches('.').to_string())
                    .unwrap_or_else(|| "no answer".into()),
            }));
        }
        // The last attempt comes right at the end of the grace period.
        let sleep = tokio::time::sleep(pause.min(until - now));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                a = actions.recv() => {
                    if matches!(a, None | Some(UserAction::Disconnect)) {
                        return Err(None);
                    }
                }
            }
        }
        pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
    }
}
