//! A technician who reconnects the instant a session ended is let in, never
//! told "another expert is connected": whichever side ended the session,
//! the device's one session slot is free by the time the next connection
//! asks for it.

use shoulder_agent::control::Request;
use shoulder_proto::ByeReason;
use shoulder_proto::session::{ExpertEvent, ExpertState, UserAction};
use shoulder_testkit::agent::Agent;
use shoulder_testkit::pki::{ExpertCert, Pki};
use shoulder_testkit::tls_expert::TlsExpert;
use tokio::io::AsyncWriteExt;

/// Sessions ended and started again back to back, per test: enough that
/// the race this guards against (about one in ten before the fix, under
/// load) shows.
const ROUNDS: usize = 50;

/// Connects, waits until the device asks its person for consent (the
/// session holds the slot then). Returns the expert, or why the device
/// closed the session instead.
async fn connect_until_prompt(
    agent: &Agent,
    cert: &ExpertCert,
) -> Result<TlsExpert, (ByeReason, String)> {
    let mut e = TlsExpert::offer(agent, Some(cert)).await;
    match e
        .wait_for("the consent prompt or the end", |ev| {
            matches!(
                ev,
                ExpertEvent::StateChanged(ExpertState::WaitingForConsent { .. })
                    | ExpertEvent::Closed { .. }
            )
        })
        .await
    {
        ExpertEvent::Closed { reason, detail, .. } => Err((reason, detail)),
        _ => Ok(e),
    }
}

/// Who ends each session before the expert reconnects.
#[derive(Clone, Copy)]
enum Ending {
    /// As the expert program ends a session: Bye, TLS close, gone;
    /// nothing waits for the device to finish.
    ExpertSaysBye,
    /// The person ends it; the expert reconnects as soon as it hears.
    DeviceEnds,
}

/// Ends and starts a session [`ROUNDS`] times back to back; fails with the
/// rounds the device refused and why.
async fn reconnect_at_once(ending: Ending) {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut refused = Vec::new();
    for round in 0..ROUNDS {
        let mut e = match connect_until_prompt(&agent, &ann).await {
            Ok(e) => e,
            Err((reason, detail)) => {
                refused.push((round, reason, detail));
                continue;
            }
        };
        match ending {
            Ending::ExpertSaysBye => {
                e.act(UserAction::Disconnect).await;
                let _ = e.tls.shutdown().await;
            }
            Ending::DeviceEnds => {
                agent.ctl_ok(Request::End).await;
                let (reason, ..) = e.closed().await;
                assert_eq!(reason, ByeReason::EndedByUser, "round {round}");
            }
        }
        drop(e);
    }
    assert!(
        refused.is_empty(),
        "{} of {ROUNDS} immediate reconnects were refused: {refused:?}",
        refused.len()
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expert_who_says_bye_and_reconnects_at_once_is_never_told_busy() {
    reconnect_at_once(Ending::ExpertSaysBye).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expert_whose_session_the_device_ended_reconnects_at_once() {
    reconnect_at_once(Ending::DeviceEnds).await;
}
