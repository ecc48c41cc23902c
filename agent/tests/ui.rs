//! The person at the device: the banner drawn into a (memory) scanout
//! buffer, taps and keys answering prompts, grabs while prompting, hotkeys
//! and local activity.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoulder_agent::backends::LocalEvent;
use shoulder_agent::config::InputConfig;
use shoulder_agent::ui::{LocalDevices, start_with};
use shoulder_banner::present::{
    BufferId, PresentError, ScanoutPresenter, ScanoutTarget, ScanoutThread,
};
use shoulder_banner::{BannerState, PixelFormat, Renderer, ScreenSpec, Style, Surface};
use shoulder_input::local::{LocalEventKind, PointerButton};
use shoulder_proto::ConsentKind;
use shoulder_proto::session::{AuthMethod, ExpertIdentity, LocalDecision, Phase, Prompt};
use tokio::sync::mpsc;

const W: u32 = 480;
const H: u32 = 320;
const WAIT: Duration = Duration::from_secs(10);

/// A display whose one buffer is plain memory.
struct MemTarget {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl ScanoutTarget for MemTarget {
    fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
        Ok(Some(BufferId(1)))
    }
    fn with_buffer<R>(
        &mut self,
        _id: BufferId,
        f: impl FnOnce(&mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError> {
        let mut b = self.buf.lock().unwrap();
        let mut s = Surface::new(W, H, W as usize * 4, PixelFormat::Xrgb8888, &mut b).unwrap();
        Ok(Some(f(&mut s)))
    }
}

/// Local devices fed by the test; counts live grabs.
struct FakeLocal {
    rx: mpsc::Receiver<LocalEventKind>,
    grabs: Arc<AtomicUsize>,
}

struct Grab(Arc<AtomicUsize>);

impl Drop for Grab {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LocalDevices for FakeLocal {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<LocalEventKind>> + Send + '_>>
    {
        Box::pin(self.rx.recv())
    }
    fn grab(&self) -> Box<dyn Send> {
        self.grabs.fetch_add(1, Ordering::SeqCst);
        Box::new(Grab(self.grabs.clone()))
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next(events: &mut mpsc::Receiver<LocalEvent>) -> LocalEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap()
}

fn key(code: u16, down: bool) -> LocalEventKind {
    LocalEventKind::Key { code, down }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_prompts_are_drawn_and_answered_by_tap_and_key() {
    let buf = Arc::new(Mutex::new(vec![0u8; (W * H * 4) as usize]));
    let thread =
        ScanoutThread::spawn(ScanoutPresenter::new(MemTarget { buf: buf.clone() })).unwrap();
    let spec = ScreenSpec {
        width: W,
        height: H,
        format: PixelFormat::Xrgb8888,
    };
    let (local_tx, local_rx) = mpsc::channel(16);
    let grabs = Arc::new(AtomicUsize::new(0));
    let fake = FakeLocal {
        rx: local_rx,
        grabs: grabs.clone(),
    };
    let input = InputConfig {
        local_idle: Duration::from_millis(200),
        ..InputConfig::default()
    };
    let (mut presenter, mut events) =
        start_with(Some((thread, spec)), Some(Box::new(fake)), &input);

    let expert = ExpertIdentity {
        name: "Ann Expert".into(),
        method: AuthMethod::Offer {
            fingerprint: [1; 32],
        },
    };
    let prompt = Prompt {
        kind: ConsentKind::View,
        expert: expert.clone(),
        deadline: Instant::now() + Duration::from_secs(60),
    };
    presenter.phase(&Phase::AwaitingView {
        expert: expert.clone(),
    });
    presenter.show_prompt(&prompt);
    until("the banner is drawn", || {
        buf.lock().unwrap().iter().any(|&b| b != 0)
    })
    .await;
    until("devices grabbed while prompting", || {
        grabs.load(Ordering::SeqCst) == 1
    })
    .await;

    // Where the Accept button is, laid out as the UI does.
    let mut state = BannerState::new(&input.stop_hotkey);
    state.show_prompt(prompt.clone());
    let layout = Renderer::new(spec, Style::default())
        .unwrap()
        .layout(&state.view(Instant::now()));
    let accept = layout
        .button(LocalDecision::Accept)
        .expect("an accept button");
    let c = accept.center();
    local_tx
        .send(LocalEventKind::Button {
            button: PointerButton::Left,
            down: true,
            x: c.x as u16,
            y: c.y as u16,
        })
        .await
        .unwrap();
    assert_eq!(
        next(&mut events).await,
        LocalEvent::Decision(LocalDecision::Accept)
    );

    // Esc declines a control prompt (pressed once the prompt is up, as a
    // person would: before that, a key is only local activity).
    presenter.hide_prompt();
    until("grab released with the view prompt", || {
        grabs.load(Ordering::SeqCst) == 0
    })
    .await;
    presenter.show_prompt(&Prompt {
        kind: ConsentKind::Control,
        ..prompt.clone()
    });
    until("devices grabbed for the control prompt", || {
        grabs.load(Ordering::SeqCst) == 1
    })
    .await;
    local_tx.send(key(1, true)).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        LocalEvent::Decision(LocalDecision::Decline)
    );
    presenter.hide_prompt();
    until("grab released with the prompt", || {
        grabs.load(Ordering::SeqCst) == 0
    })
    .await;

    // Using the device without a prompt holds expert input back for a while.
    local_tx.send(key(30, true)).await.unwrap();
    assert_eq!(next(&mut events).await, LocalEvent::UserActive(true));
    assert_eq!(next(&mut events).await, LocalEvent::UserActive(false));

    // The stop-control hotkey (Ctrl+Alt+Shift+S).
    for code in [29, 56, 42, 31] {
        local_tx.send(key(code, true)).await.unwrap();
    }
    loop {
        match next(&mut events).await {
            LocalEvent::Decision(d) => {
                assert_eq!(d, LocalDecision::StopControlHotkey);
                break;
            }
            LocalEvent::UserActive(_) => {}
        }
    }

    // Nothing to show: the banner comes down.
    presenter.phase(&Phase::Closed {
        reason: shoulder_proto::ByeReason::Normal,
        detail: String::new(),
    });
}
