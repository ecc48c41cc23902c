//! The person at the device: the banner drawn into a (memory) scanout
//! buffer, taps and keys answering prompts, grabs while prompting, hotkeys
//! and local activity.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoulder_agent::backends::{ACTIVITY_EVERY, LocalEvent};
use shoulder_agent::config::InputConfig;
use shoulder_agent::ui::{LocalDevices, PROMPT_ARMING, ScreenOpener, start_with};
use shoulder_banner::present::{
    BufferId, PresentError, ScanoutPresenter, ScanoutTarget, ScanoutThread,
};
use shoulder_banner::{BannerState, PixelFormat, Renderer, ScreenSpec, Style, Surface};
use shoulder_input::local::{LocalEventKind, PointerButton};
use shoulder_proto::ConsentKind;
use shoulder_proto::rotation::Rotation;
use shoulder_proto::session::{
    AuthMethod, ExpertIdentity, LocalCommand, LocalDecision, Phase, Prompt, PromptId,
};
use tokio::sync::mpsc;

const W: u32 = 480;
const H: u32 = 320;
const WAIT: Duration = Duration::from_secs(10);

/// A display whose one buffer is plain memory, `size` pixels of it (the
/// test changes the size as a mode change would).
struct MemTarget {
    buf: Arc<Mutex<Vec<u8>>>,
    size: Arc<Mutex<(u32, u32)>>,
}

impl MemTarget {
    fn new(buf: &Arc<Mutex<Vec<u8>>>) -> Self {
        Self {
            buf: buf.clone(),
            size: Arc::new(Mutex::new((W, H))),
        }
    }
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
        let (w, h) = *self.size.lock().unwrap();
        let mut b = self.buf.lock().unwrap();
        let mut s = Surface::new(w, h, w as usize * 4, PixelFormat::Xrgb8888, &mut b).unwrap();
        Ok(Some(f(&mut s)))
    }
}

/// Local devices fed by the test; counts live grabs and records the screen
/// sizes it is told.
struct FakeLocal {
    rx: mpsc::Receiver<LocalEventKind>,
    grabs: Arc<AtomicUsize>,
    screens: Arc<Mutex<Vec<(u32, u32)>>>,
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
    fn set_screen(&self, width: u32, height: u32) {
        self.screens.lock().unwrap().push((width, height));
    }
}

impl FakeLocal {
    /// The fake, the sender of its events, its live grabs and the sizes it
    /// was told.
    #[allow(clippy::type_complexity)]
    fn new() -> (
        Self,
        mpsc::Sender<LocalEventKind>,
        Arc<AtomicUsize>,
        Arc<Mutex<Vec<(u32, u32)>>>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let grabs = Arc::new(AtomicUsize::new(0));
        let screens = Arc::new(Mutex::new(Vec::new()));
        let fake = Self {
            rx,
            grabs: grabs.clone(),
            screens: screens.clone(),
        };
        (fake, tx, grabs, screens)
    }
}

fn spec(width: u32, height: u32) -> ScreenSpec {
    ScreenSpec {
        width,
        height,
        format: PixelFormat::Xrgb8888,
    }
}

fn ann() -> ExpertIdentity {
    ExpertIdentity {
        name: "Ann Expert".into(),
        method: AuthMethod::Offer {
            fingerprint: shoulder_proto::Fingerprint([1; 32]),
        },
        says: None,
    }
}

fn view_prompt() -> Prompt {
    Prompt {
        id: PromptId(1),
        kind: ConsentKind::View,
        expert: ann(),
        deadline: Instant::now() + Duration::from_secs(60),
        file: None,
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

/// The banner on a W×H framebuffer turned by `rotation`, showing
/// [`view_prompt`].
fn prompt_on(
    thread: ScanoutThread,
    local: FakeLocal,
    input: &InputConfig,
    rotation: Rotation,
) -> (
    Box<dyn shoulder_agent::backends::Presenter>,
    mpsc::Receiver<LocalEvent>,
) {
    let (mut presenter, events) = start_with(
        vec![(thread, spec(W, H))],
        None,
        Some(Box::new(local)),
        input,
        rotation,
        false,
    );
    presenter.phase(&Phase::AwaitingView { expert: ann() });
    presenter.show_prompt(&view_prompt());
    (presenter, events)
}

/// Where the Accept button of [`view_prompt`] is on a `screen` as the person
/// sees it.
fn accept_centre(screen: ScreenSpec, input: &InputConfig) -> embedded_graphics::prelude::Point {
    let mut state = BannerState::new(&input.stop_hotkey);
    state.show_prompt(view_prompt());
    Renderer::new(screen, Style::default())
        .unwrap()
        .layout(&state.view(Instant::now()))
        .button(LocalDecision::Accept)
        .expect("an accept button")
        .center()
}

/// A tap at (`x`, `y`) answers the prompt on screen: Accept.
async fn tap_accepts(
    local: &mpsc::Sender<LocalEventKind>,
    events: &mut mpsc::Receiver<LocalEvent>,
    x: u16,
    y: u16,
) {
    for down in [true, false] {
        local
            .send(LocalEventKind::Button {
                button: PointerButton::Left,
                down,
                x,
                y,
            })
            .await
            .unwrap();
    }
    loop {
        match next(events).await {
            LocalEvent::Decision(d) => {
                assert_eq!(
                    d,
                    LocalCommand::Answer {
                        prompt: PromptId(1),
                        accept: true
                    }
                );
                return;
            }
            LocalEvent::Activity => {}
        }
    }
}

fn key(code: u16, down: bool) -> LocalEventKind {
    LocalEventKind::Key { code, down }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_prompts_are_drawn_and_answered_by_tap_and_key() {
    let buf = Arc::new(Mutex::new(vec![0u8; (W * H * 4) as usize]));
    let thread = ScanoutThread::spawn(ScanoutPresenter::new(MemTarget::new(&buf))).unwrap();
    let spec = spec(W, H);
    let (fake, local_tx, grabs, _) = FakeLocal::new();
    let input = InputConfig {
        local_idle: Duration::from_millis(200),
        ..InputConfig::default()
    };
    let (mut presenter, mut events) = start_with(
        vec![(thread, spec)],
        None,
        Some(Box::new(fake)),
        &input,
        Rotation::Deg0,
        false,
    );

    let expert = ann();
    let prompt = view_prompt();
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
    let tap = |down| LocalEventKind::Button {
        button: PointerButton::Left,
        down,
        x: c.x as u16,
        y: c.y as u16,
    };
    // A tap the moment the prompt appears (a tap timed by someone watching
    // the screen, or already on its way) answers nothing, not even when it
    // is let go once the prompt is armed.
    local_tx.send(tap(true)).await.unwrap();
    tokio::time::sleep(PROMPT_ARMING + Duration::from_millis(300)).await;
    local_tx.send(tap(false)).await.unwrap();
    // Pressed and let go on Accept once armed: the answer names the prompt.
    local_tx.send(tap(true)).await.unwrap();
    local_tx.send(tap(false)).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        LocalEvent::Decision(LocalCommand::Answer {
            prompt: PromptId(1),
            accept: true
        })
    );

    // Esc declines a control prompt (pressed once the prompt is up, as a
    // person would: before that, a key is only local activity).
    presenter.hide_prompt();
    until("grab released with the view prompt", || {
        grabs.load(Ordering::SeqCst) == 0
    })
    .await;
    presenter.show_prompt(&Prompt {
        id: PromptId(2),
        kind: ConsentKind::Control,
        ..prompt.clone()
    });
    until("devices grabbed for the control prompt", || {
        grabs.load(Ordering::SeqCst) == 1
    })
    .await;
    // An Esc pressed before the prompt is armed (a scanner's key, say)
    // declines nothing; one pressed and let go after it does.
    local_tx.send(key(1, true)).await.unwrap();
    local_tx.send(key(1, false)).await.unwrap();
    tokio::time::sleep(PROMPT_ARMING + Duration::from_millis(300)).await;
    local_tx.send(key(1, true)).await.unwrap();
    local_tx.send(key(1, false)).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        LocalEvent::Decision(LocalCommand::Answer {
            prompt: PromptId(2),
            accept: false
        })
    );
    presenter.hide_prompt();
    until("grab released with the prompt", || {
        grabs.load(Ordering::SeqCst) == 0
    })
    .await;

    // Using the device without a prompt is passed on (the session holds
    // expert input back for a while), at most once per ACTIVITY_EVERY.
    local_tx.send(key(30, true)).await.unwrap();
    local_tx.send(key(30, false)).await.unwrap();
    assert_eq!(next(&mut events).await, LocalEvent::Activity);
    tokio::time::sleep(ACTIVITY_EVERY / 2).await;
    assert!(
        events.try_recv().is_err(),
        "activity passed on twice at once"
    );

    // The stop-control hotkey (Ctrl+Alt+Shift+S).
    for code in [29, 56, 42, 31] {
        local_tx.send(key(code, true)).await.unwrap();
    }
    loop {
        match next(&mut events).await {
            LocalEvent::Decision(d) => {
                assert_eq!(d, LocalCommand::StopControlHotkey);
                break;
            }
            LocalEvent::Activity => {}
        }
    }

    // Nothing to show: the banner comes down.
    presenter.phase(&Phase::Closed {
        reason: shoulder_proto::ByeReason::Normal,
        detail: String::new(),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_missing_at_start_is_found_when_a_session_needs_the_banner() {
    let buf = Arc::new(Mutex::new(vec![0u8; (W * H * 4) as usize]));
    // No display at the first prompt; there at the next.
    let tries = Arc::new(AtomicUsize::new(0));
    let (counted, target_buf) = (tries.clone(), buf.clone());
    let opener: ScreenOpener = Box::new(move || {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("/dev/dri: no display found".into());
        }
        let t = ScanoutThread::spawn(ScanoutPresenter::new(MemTarget::new(&target_buf)))
            .map_err(|e| e.to_string())?;
        Ok(vec![(t, spec(W, H))])
    });
    let (fake, _local_tx, grabs, screens) = FakeLocal::new();
    let (mut presenter, _events) = start_with(
        Vec::new(),
        Some(opener),
        Some(Box::new(fake)),
        &InputConfig::default(),
        Rotation::Deg0,
        false,
    );

    presenter.phase(&Phase::AwaitingView { expert: ann() });
    presenter.show_prompt(&view_prompt());
    until("the display looked for", || {
        tries.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(buf.lock().unwrap().iter().all(|&b| b == 0));
    // Nothing on screen: the devices are not grabbed (the person could not
    // see what they would be answering).
    assert_eq!(grabs.load(Ordering::SeqCst), 0);

    // The next prompt finds the display: the banner is drawn, taps are
    // placed for its size and the devices are grabbed.
    presenter.hide_prompt();
    presenter.show_prompt(&view_prompt());
    until("the banner is drawn", || {
        buf.lock().unwrap().iter().any(|&b| b != 0)
    })
    .await;
    assert_eq!(*screens.lock().unwrap(), vec![(W, H)]);
    until("devices grabbed", || grabs.load(Ordering::SeqCst) == 1).await;
    // Each new session looks again, for screens lit or gone out since.
    presenter.hide_prompt();
    presenter.show_prompt(&view_prompt());
    until("looked for again", || tries.load(Ordering::SeqCst) == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_mode_change_taps_are_placed_for_the_new_size() {
    let buf = Arc::new(Mutex::new(vec![0u8; (W * H * 4) as usize]));
    let target = MemTarget::new(&buf);
    let size = target.size.clone();
    let thread = ScanoutThread::spawn(ScanoutPresenter::new(target)).unwrap();
    let (fake, local_tx, _grabs, screens) = FakeLocal::new();
    let input = InputConfig::default();
    let (_presenter, mut events) = prompt_on(thread, fake, &input, Rotation::Deg0);
    until("the banner is drawn", || {
        buf.lock().unwrap().iter().any(|&b| b != 0)
    })
    .await;

    // The screen becomes 320x240 (the buffer is big enough for both).
    *size.lock().unwrap() = (320, 240);
    until("the new size reaches local input", || {
        screens.lock().unwrap().contains(&(320, 240))
    })
    .await;
    // A tap on the new layout's Accept button answers the prompt.
    let c = accept_centre(spec(320, 240), &input);
    tokio::time::sleep(PROMPT_ARMING).await;
    tap_accepts(&local_tx, &mut events, c.x as u16, c.y as u16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_turned_panel_the_prompt_is_answered_where_the_person_sees_it() {
    turned_panel_accepts(false).await;
}

/// `ctl rotate` while a prompt is up: the banner is laid out again, upright
/// the new way, and answered where it now shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panel_turned_while_a_prompt_is_up_is_answered_where_it_now_shows() {
    turned_panel_accepts(true).await;
}

/// The framebuffer is W×H; the panel is mounted so the person sees H×W
/// (known from the start, or told once the prompt is up).
async fn turned_panel_accepts(told_later: bool) {
    let turn = Rotation::Deg90;
    let buf = Arc::new(Mutex::new(vec![0u8; (W * H * 4) as usize]));
    let thread = ScanoutThread::spawn(ScanoutPresenter::new(MemTarget::new(&buf))).unwrap();
    let (fake, local_tx, _grabs, _) = FakeLocal::new();
    let input = InputConfig::default();
    let start = if told_later { Rotation::Deg0 } else { turn };
    let (mut presenter, mut events) = prompt_on(thread, fake, &input, start);
    if told_later {
        presenter.rotation(turn);
    }
    // The Accept button as the person sees it: laid out upright, H×W.
    let c = accept_centre(spec(H, W), &input);
    // Where that is in the framebuffer (and where the touchscreen, mounted
    // with the panel, reports it).
    let (bx, by) = turn.to_buffer(c.x as u32, c.y as u32, W, H);
    until("the button is drawn where the person sees it", || {
        let b = buf.lock().unwrap();
        let i = ((by * W + bx) * 4) as usize;
        b[i..i + 3] != [0, 0, 0]
    })
    .await;
    tokio::time::sleep(PROMPT_ARMING).await;
    tap_accepts(&local_tx, &mut events, bx as u16, by as u16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_shows_on_every_screen_and_goes_from_every_screen() {
    // Two screens of different sizes, as two outputs of one device.
    let left = Arc::new(Mutex::new(vec![0u8; (W * H * 4) as usize]));
    let right = Arc::new(Mutex::new(vec![0u8; (W * H * 4) as usize]));
    let mut small = MemTarget::new(&right);
    let (sw, sh) = (W - 80, H - 20);
    small.size = Arc::new(Mutex::new((sw, sh)));
    let screens = vec![
        (
            ScanoutThread::spawn(ScanoutPresenter::new(MemTarget::new(&left))).unwrap(),
            spec(W, H),
        ),
        (
            ScanoutThread::spawn(ScanoutPresenter::new(small)).unwrap(),
            spec(sw, sh),
        ),
    ];
    let (fake, local_tx, _grabs, _) = FakeLocal::new();
    let input = InputConfig::default();
    let (mut presenter, mut events) = start_with(
        screens,
        None,
        Some(Box::new(fake)),
        &input,
        Rotation::Deg0,
        false,
    );
    presenter.phase(&Phase::AwaitingView { expert: ann() });
    presenter.show_prompt(&view_prompt());
    let drawn = |b: &Arc<Mutex<Vec<u8>>>| b.lock().unwrap().iter().any(|&p| p != 0);
    until("the prompt on the first screen", || drawn(&left)).await;
    until("the prompt on the second screen", || drawn(&right)).await;
    // The second screen's prompt fits its own size: nothing past it.
    let row = (sw * 4) as usize;
    assert!(
        right.lock().unwrap()[row * sh as usize..]
            .iter()
            .all(|&p| p == 0),
        "the small screen's banner was laid out for another size"
    );

    // Taps answer on the first screen.
    tokio::time::sleep(PROMPT_ARMING + Duration::from_millis(200)).await;
    let c = accept_centre(spec(W, H), &input);
    tap_accepts(&local_tx, &mut events, c.x as u16, c.y as u16).await;

    // The session ends: the banner goes from both.
    presenter.hide_prompt();
    presenter.phase(&Phase::Closed {
        reason: shoulder_proto::ByeReason::Normal,
        detail: String::new(),
    });
    let clear = |b: &Arc<Mutex<Vec<u8>>>| b.lock().unwrap().iter().all(|&p| p == 0);
    until("the first screen is clear", || clear(&left)).await;
    until("the second screen is clear", || clear(&right)).await;
}
