//! The capture thread of a viewing session: client-paced, coalesced.
//!
//! The expert asks for each update (`UpdateRequest`); requests that arrive
//! while one is pending merge into it. For each request the thread polls the
//! screen until something changed (or captures at once for a full request),
//! sends the parts and waits for the next request. When to poll is decided by
//! [`shoulder_capture::Pacer`]: every few milliseconds for a while after a
//! change or the expert's input, backing off on a quiet screen, so a change
//! is seen quickly and an idle session costs almost nothing; `max_fps` only
//! caps how often updates are sent. Nothing is sent unless the view consent
//! is live.
//!
//! When the screen cannot be read the expert is told `ScreenUnavailable`
//! once, with the reason. If waiting may help
//! ([`shoulder_capture::CaptureError::is_transient`]: display off, DRM
//! device gone or busy, a raw file being rewritten) the thread reopens the
//! source about once a second (the pacer's `unavailable_interval`) while
//! the expert still wants an update. Otherwise (missing `CAP_SYS_ADMIN`, a
//! pixel format we cannot read) it tries again only when the expert asks
//! for the whole screen (Refresh), as retrying would only repeat the error.
//! A source that works again starts with `ScreenInfo` and a full update.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoulder_capture::{
    CaptureError, Capturer, CapturerError, Compression, EncodedUpdate, LinkEstimate, Pacer,
    PacingConfig, Probing, Rotation,
};
use shoulder_proto::consent::ViewConsent;
use shoulder_proto::{Message, ScreenList, ViewReport, text};
use tokio::sync::mpsc;

use crate::backends::{CaptureBackend, ViewCheck};

/// What the display says the person sees, for `rotation = "auto"`: opens
/// the screen source briefly and asks it (DRM: the plane's rotation and the
/// panel's orientation; a few ioctls). `None`: it cannot tell now (no
/// display yet, a source that has no such notion, or a turn the agent
/// cannot follow, which is logged with what to do).
pub fn display_rotation(backend: &dyn CaptureBackend) -> Option<Rotation> {
    let mut source = match backend.open() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot ask the display how it is turned now");
            return None;
        }
    };
    match source.orientation()? {
        Ok(o) => match o.seen() {
            Ok(r) => {
                tracing::debug!(?o, "the display's orientation");
                Some(r)
            }
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        },
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the display's orientation");
            None
        }
    }
}

/// How often a waiting thread re-checks that the session still wants it
/// (consent expiry and a closed channel do not wake it).
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
struct Want {
    /// An update request arrived since the thread last looked.
    pending: bool,
    /// One of those requests wants the whole screen.
    full: bool,
    /// The expert's input was injected since the thread last looked.
    input: bool,
    /// A view self-check to answer (a newer one replaces an older one).
    check: Option<Box<ViewReport>>,
    /// The panel was turned (`ctl rotate`).
    rotation: Option<Rotation>,
    /// The expert chose another screen.
    screen: Option<u8>,
    /// The expert asked for exact pictures only.
    exact: bool,
    stop: bool,
}

type Shared = Arc<(Mutex<Want>, Condvar)>;

/// What the expert's client decodes beyond the basics (its capabilities).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decodes {
    /// How rectangles are compressed (deflate per rectangle or as one
    /// stream, else lz4).
    pub compression: Compression,
    /// Lossy JPEG rectangles: sent for photo-like areas when the link is
    /// slow, refined to exact pixels once still.
    pub jpeg: bool,
}

impl Decodes {
    /// What to send an expert that takes deflate, the deflate stream and
    /// JPEG as said; lossy pictures only if the device allows them
    /// (`lossy` in agent.toml) and the agent was built with them.
    pub fn for_expert(deflate: bool, stream: bool, jpeg: bool, lossy_allowed: bool) -> Self {
        Self {
            compression: Compression::for_expert(deflate, stream),
            jpeg: cfg!(feature = "jpeg") && jpeg && lossy_allowed,
        }
    }
}

/// The session's handle on its capture thread.
#[derive(Debug)]
pub struct CaptureHandle {
    want: Shared,
    thread: Option<JoinHandle<()>>,
}

impl CaptureHandle {
    /// Starts the thread for one viewing: `rotation` turns the screen
    /// upright for the expert (a sideways panel), `max_fps` caps updates,
    /// `decodes` says which encodings the expert takes.
    pub fn start(
        view: ViewConsent,
        backend: Arc<dyn CaptureBackend>,
        tx: mpsc::Sender<Message>,
        max_fps: u32,
        rotation: Rotation,
        decodes: Decodes,
    ) -> Self {
        let pacing = PacingConfig::with_max_rate(max_fps.max(1));
        Self::start_paced(view, backend, tx, pacing, rotation, decodes)
    }

    /// [`Self::start`] with its own polling intervals.
    fn start_paced(
        view: ViewConsent,
        backend: Arc<dyn CaptureBackend>,
        tx: mpsc::Sender<Message>,
        pacing: PacingConfig,
        rotation: Rotation,
        decodes: Decodes,
    ) -> Self {
        let want: Shared = Default::default();
        let w = want.clone();
        let pacer = Pacer::new(pacing);
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                Worker {
                    view,
                    backend,
                    want: w,
                    tx,
                    pacer,
                    last_sent: None,
                    source: None,
                    rotation,
                    decodes,
                    link: LinkEstimate::new(),
                    screens: Vec::new(),
                    current: 0,
                    listed: false,
                    unavailable: false,
                    gave_up: false,
                }
                .run()
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the capture thread"))
            .ok();
        Self { want, thread }
    }

    /// The expert asked for the next update (`full`: the whole screen).
    pub fn request(&self, full: bool) {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        w.pending = true;
        w.full |= full;
        cv.notify_one();
    }

    /// The expert reported what its view shows: compare, answer, and send
    /// again what differs.
    pub fn check_view(&self, report: Box<ViewReport>) {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        w.check = Some(report);
        cv.notify_one();
    }

    /// The panel was turned: the next update shows the picture upright the
    /// new way (a new screen when its sides swap).
    pub fn rotate(&self, rotation: Rotation) {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        w.rotation = Some(rotation);
        cv.notify_one();
    }

    /// The expert asked for exact pictures only: no more lossy rectangles
    /// this viewing, and the whole screen exact now (which makes what was
    /// approximate exact).
    pub fn exact_only(&self) {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        w.exact = true;
        w.pending = true;
        w.full = true;
        cv.notify_one();
    }

    /// The expert chose screen `index` of the list they were sent: the
    /// next update is that screen, whole, with its screen info.
    pub fn select_screen(&self, index: u8) {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        w.screen = Some(index);
        cv.notify_one();
    }

    /// Input happened (the expert's injected, or the person starting to use
    /// the device): the screen is about to change, so poll fast.
    pub fn input(&self) {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        if !w.input {
            w.input = true;
            cv.notify_one();
        }
    }

    /// Stops the thread (it ends within one capture).
    pub fn stop(mut self) {
        self.signal_stop();
        // Do not wait for it: a capture in progress finishes on its own and
        // its results are dropped with the channel.
        self.thread.take();
    }

    fn signal_stop(&self) {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        w.stop = true;
        cv.notify_one();
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// What woke the thread.
struct Wake {
    /// `Some(full)`: an update request.
    request: Option<bool>,
    input: bool,
    check: Option<Box<ViewReport>>,
    rotation: Option<Rotation>,
    screen: Option<u8>,
    exact: bool,
}

struct Worker {
    view: ViewConsent,
    backend: Arc<dyn CaptureBackend>,
    want: Shared,
    tx: mpsc::Sender<Message>,
    pacer: Pacer,
    /// When the last update was captured: full requests are paced to
    /// `max_fps` too (the pacer only delays incremental ones), so a storm of
    /// them cannot make the thread capture flat out.
    last_sent: Option<Instant>,
    source: Option<Capturer>,
    rotation: Rotation,
    /// The encodings the expert takes.
    decodes: Decodes,
    /// How fast updates reach the expert: sets the lossy quality.
    link: LinkEstimate,
    /// The screens to choose from (empty: the one the backend opens), as
    /// listed when the source was last opened, and the one shown.
    screens: Vec<crate::screens::Screen>,
    current: usize,
    /// A list of several screens went out last.
    listed: bool,
    /// The expert was told the screen is unavailable and nothing was sent
    /// since: further failures are not news.
    unavailable: bool,
    /// The last failure was not transient: no retries until the expert asks
    /// for the whole screen.
    gave_up: bool,
}

impl Worker {
    fn run(mut self) {
        while let Some(wake) = self.wait() {
            let now = Instant::now();
            if wake.exact && self.decodes.jpeg {
                // Before the full update the expert asked with it.
                self.decodes.jpeg = false;
                if let Some(src) = self.source.as_mut() {
                    src.set_lossy(None);
                }
            }
            if let Some(full) = wake.request {
                self.link.requested(now);
                self.pacer.request(now, !full);
                if full && std::mem::take(&mut self.gave_up) {
                    tracing::info!("the expert asked for the whole screen: trying it again");
                }
            }
            if wake.input {
                self.pacer.input(now);
            }
            if let Some(r) = wake.rotation {
                self.rotation = r;
                if let Some(src) = self.source.as_mut() {
                    src.set_rotation(r);
                }
                // The screens' upright sizes turned too.
                self.send_screen_list();
                // Everything on screen moved: look at once.
                self.pacer.input(now);
            }
            if let Some(report) = wake.check {
                self.check_view(&report, now);
            }
            if let Some(index) = wake.screen {
                self.select_screen(usize::from(index), now);
            }
            if self.pacer.watch_timeout().is_some_and(|d| now >= d) {
                // Between slow polls: one cheap look at which buffer is on
                // screen, so a page flip is captured at once.
                let flipped = self.source.as_mut().and_then(Capturer::flipped);
                self.pacer.watched(now, flipped);
            }
            if self.next_poll().is_none_or(|d| now < d) {
                continue;
            }
            if self.source.is_none() && !self.open(now) {
                continue;
            }
            let Some(src) = self.source.as_mut() else {
                continue;
            };
            if self.decodes.jpeg {
                src.set_lossy(shoulder_capture::lossy::policy(self.link.bits_per_second()));
            }
            // Parts of a large update go as they are made: the expert
            // decodes the top of a page while the rest is encoded. Each
            // goes only while the view consent is live.
            let (view, tx) = (&self.view, &self.tx);
            let mut early_screen = false;
            let mut early = |m: Message| {
                early_screen |= matches!(m, Message::ScreenInfo(_));
                view.is_live() && tx.blocking_send(m).is_ok()
            };
            let captured = src.capture_into(view, self.pacer.full_requested(), &mut early);
            match captured {
                Ok(None) => {
                    // A moving pointer keeps the polls fast, as a changing
                    // screen does.
                    let moved = self.send_cursor();
                    self.pacer.captured(now, moved);
                }
                Ok(Some(EncodedUpdate {
                    screen,
                    parts,
                    stats,
                })) => {
                    // What goes on the wire, near enough: pixels and a
                    // header per rectangle; from now, not from before the
                    // encode (a photograph takes tens of ms to encode, which
                    // is not the link's time).
                    self.link
                        .sent(Instant::now(), stats.payload_bytes + stats.rects * 16 + 64);
                    if (early_screen || screen.is_some()) && self.unavailable {
                        tracing::info!("the screen is readable again");
                    }
                    if let Some(info) = screen
                        && !self.send(Message::ScreenInfo(info))
                    {
                        return;
                    }
                    self.unavailable = false;
                    self.send_parts(parts);
                    self.send_cursor();
                    self.sent(now);
                }
                Err(_) if !self.view.is_live() => {
                    // The view ended while capturing (session over, control
                    // of the screen taken back): not a screen problem.
                    return;
                }
                Err(CapturerError::Capture(e)) => {
                    // Reopened from scratch: a device that went away comes
                    // back as a new one, announced with ScreenInfo and a
                    // full update (a fresh encoder).
                    self.source = None;
                    self.failed(&e, now);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "capture stopped");
                    return;
                }
            }
        }
    }

    /// Answers the expert's view self-check; bands that differ go out with
    /// the next capture, which comes soon (as after input).
    fn check_view(&mut self, report: &ViewReport, now: Instant) {
        let c = self
            .source
            .as_mut()
            .map(|s| s.check_view(report))
            .unwrap_or(ViewCheck {
                stale: true,
                ..ViewCheck::default()
            });
        if c.differing > 0 {
            tracing::debug!(
                seq = report.seq,
                compared = c.compared,
                differing = c.differing,
                "view check: the expert's view differs; sending those bands again"
            );
            self.pacer.input(now);
        } else {
            tracing::debug!(
                seq = report.seq,
                compared = c.compared,
                stale = c.stale,
                "view check: the expert's view matches"
            );
        }
        self.send(Message::ViewChecked {
            seq: report.seq,
            compared: c.compared,
            differing: c.differing,
        });
    }

    /// An update was sent from the capture made at `now`.
    fn sent(&mut self, now: Instant) {
        self.pacer.captured(now, true);
        self.last_sent = Some(now);
    }

    /// When to capture next (None: not until a request): the pacer's poll,
    /// but never sooner than `1 / max_fps` after the last update.
    fn next_poll(&self) -> Option<Instant> {
        if self.gave_up {
            return None;
        }
        let due = self.pacer.poll_timeout()?;
        Some(match self.last_sent {
            Some(t) => due.max(t + self.pacer.config().min_update_interval),
            None => due,
        })
    }

    /// When to wake next: the next poll, or sooner the next look at which
    /// buffer is on screen.
    fn next_wake(&self) -> Option<Instant> {
        let poll = self.next_poll()?;
        Some(self.pacer.watch_timeout().map_or(poll, |w| w.min(poll)))
    }

    /// Shows screen `index` instead: its source replaces the current one
    /// (the encoder starts over, with the next generation), and the expert
    /// is told the list with the new choice.
    fn select_screen(&mut self, index: usize, now: Instant) {
        if index == self.current || index >= self.screens.len() {
            return;
        }
        self.current = index;
        tracing::info!(screen = %self.screens[index].name, "the expert chose another screen");
        let Some(capturer) = self.source.as_mut() else {
            // Opened with the new choice at the next poll.
            self.pacer.input(now);
            return;
        };
        match self.backend.open_screen(&self.screens[index]) {
            Ok(s) => {
                capturer.replace_source(s);
                self.pacer.watch_flips(true);
                self.send_screen_list();
                // The whole new screen, at once.
                self.pacer.input(now);
            }
            Err(e) => {
                self.source = None;
                self.failed(&e, now);
            }
        }
    }

    /// Tells the session the screens and which one is shown: it places the
    /// expert's input there, and passes the list on to experts that take it.
    /// Down to one screen, an empty list tells the session there is nothing
    /// to place any more (it is not passed on).
    fn send_screen_list(&mut self) {
        if self.screens.len() > 1 || std::mem::take(&mut self.listed) {
            let list = crate::screens::list(&self.screens, self.current, self.rotation);
            self.listed = self.screens.len() > 1;
            let list = if self.listed {
                list
            } else {
                ScreenList {
                    current: 0,
                    screens: heapless::Vec::new(),
                }
            };
            self.send(Message::Screens(Box::new(list)));
        }
    }

    /// Opens the source (its first capture announces the screen).
    fn open(&mut self, now: Instant) -> bool {
        // Looked up again at every (re)open: a screen plugged in or out.
        let screens = self.backend.screens();
        let same = self.screens.get(self.current).map(|s| &s.name);
        self.current = same
            .and_then(|n| screens.iter().position(|s| &s.name == n))
            .unwrap_or(0);
        self.screens = screens;
        let opened = match self.screens.get(self.current) {
            Some(screen) => self.backend.open_screen(screen),
            None => self.backend.open(),
        };
        match opened {
            Ok(s) => {
                self.send_screen_list();
                // Sparse probing: an unchanged screen (most polls) costs
                // about a sixth of a full compare; thin changes are still
                // found within a few polls.
                self.source = Some(
                    Capturer::new(s)
                        .with_probing(Probing::default())
                        .with_rotation(self.rotation)
                        .with_compression(self.decodes.compression),
                );
                // Asked between polls; a source that cannot tell says so at
                // the first look and is not asked again.
                self.pacer.watch_flips(true);
                true
            }
            Err(e) => {
                self.failed(&e, now);
                false
            }
        }
    }

    /// The screen cannot be read: tell the expert once per outage (later
    /// failures only go to the debug log; one a second would flood both),
    /// then retry soon if waiting may help, otherwise not until asked.
    fn failed(&mut self, e: &CaptureError, now: Instant) {
        let detail = e.to_string();
        let transient = e.is_transient();
        if self.unavailable {
            tracing::debug!(error = %detail, "the screen is still unavailable");
        } else if transient {
            tracing::warn!(error = %detail, "the screen is unavailable; retrying");
        } else {
            tracing::error!(
                error = %detail,
                "the screen cannot be read; not retrying until the expert asks for the whole screen"
            );
        }
        if !self.unavailable
            && self.send(Message::ScreenUnavailable {
                detail: text(&detail),
            })
        {
            self.unavailable = true;
        }
        self.pacer.unavailable(now);
        self.gave_up = !transient;
    }

    fn send_parts(&mut self, parts: Vec<shoulder_proto::UpdatePart>) {
        for p in parts {
            if !self.send(Message::Update(Box::new(p))) {
                return;
            }
        }
    }

    /// Sends what changed about the cursor; whether anything did.
    fn send_cursor(&mut self) -> bool {
        let Some(src) = self.source.as_mut() else {
            return false;
        };
        let update = match src.cursor() {
            Ok(Some(u)) => u,
            Ok(None) => return false,
            Err(e) => {
                // The screen itself still streams; the expert just sees no
                // cursor until it reads again.
                tracing::debug!(error = %e, "cannot read the cursor plane");
                return false;
            }
        };
        let changed = !update.is_empty();
        for m in update.into_messages() {
            if !self.send(m) {
                break;
            }
        }
        changed
    }

    /// Sends towards the socket, only under a live consent.
    fn send(&self, m: Message) -> bool {
        self.view.is_live() && self.tx.blocking_send(m).is_ok()
    }

    /// Waits until the pacer's next poll, a request or input; None when the
    /// session no longer wants updates.
    fn wait(&self) -> Option<Wake> {
        let (m, cv) = &*self.want;
        let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if w.stop || !self.view.is_live() || self.tx.is_closed() {
                return None;
            }
            let due = self.next_wake();
            let now = Instant::now();
            if w.pending
                || w.input
                || w.check.is_some()
                || w.rotation.is_some()
                || w.screen.is_some()
                || due.is_some_and(|d| now >= d)
            {
                let request = std::mem::take(&mut w.pending).then_some(w.full);
                w.full = false;
                let input = std::mem::take(&mut w.input);
                let check = w.check.take();
                let rotation = w.rotation.take();
                let screen = w.screen.take();
                let exact = std::mem::take(&mut w.exact);
                return Some(Wake {
                    request,
                    input,
                    check,
                    rotation,
                    screen,
                    exact,
                });
            }
            let timeout = due.map_or(POLL, |d| (d - now).min(POLL));
            w = cv
                .wait_timeout(w, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lossy_pictures_only_where_the_device_and_the_expert_allow_them() {
        let off = Decodes::for_expert(true, true, true, false);
        assert!(!off.jpeg, "agent.toml lossy = false");
        assert_eq!(off.compression, Compression::DeflateStream);
        let on = Decodes::for_expert(true, true, true, true);
        assert_eq!(on.jpeg, cfg!(feature = "jpeg"));
        assert!(!Decodes::for_expert(true, false, false, true).jpeg);
        assert_eq!(
            Decodes::for_expert(false, false, true, true).compression,
            Compression::Lz4
        );
    }

    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::backends::{FrameSource, PatternCapture};
    use shoulder_capture::{CursorState, CursorUpdate, Frame, ScreenGeometry};

    /// A source that passes everything to `inner`, except what a test
    /// replaces.
    struct Wrapped<F> {
        inner: Box<dyn FrameSource>,
        capture: F,
        cursor: Option<Box<dyn FnMut() -> Option<CursorUpdate> + Send>>,
    }

    impl<F: FnMut() -> Result<(), CaptureError> + Send> FrameSource for Wrapped<F> {
        fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
            self.inner.geometry()
        }
        fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
            (self.capture)()?;
            self.inner.capture()
        }
        fn cursor(&mut self) -> Result<Option<CursorUpdate>, CaptureError> {
            Ok(self.cursor.as_mut().and_then(|c| c()))
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
    }

    fn wrapped<F: FnMut() -> Result<(), CaptureError> + Send + 'static>(
        inner: Box<dyn FrameSource>,
        capture: F,
    ) -> Box<dyn FrameSource> {
        Box::new(Wrapped {
            inner,
            capture,
            cursor: None,
        })
    }

    /// The test pattern, or errors while `down` (open and capture both, as
    /// when a DRM device goes away): transient ones, or with `broken` ones
    /// that waiting does not fix.
    struct Flaky {
        down: Arc<AtomicBool>,
        broken: bool,
        attempts: Arc<AtomicU32>,
        inner: PatternCapture,
    }

    impl Flaky {
        fn error(broken: bool) -> CaptureError {
            if broken {
                CaptureError::MissingCapSysAdmin {
                    path: "/dev/dri/card0".into(),
                }
            } else {
                CaptureError::DisplayOff {
                    detail: "crtc 41 is inactive".into(),
                }
            }
        }
    }

    impl CaptureBackend for Flaky {
        fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
            if self.down.load(Ordering::SeqCst) {
                self.attempts.fetch_add(1, Ordering::SeqCst);
                return Err(match self.broken {
                    true => Self::error(true),
                    false => CaptureError::Open {
                        path: "/dev/dri/card0".into(),
                        source: std::io::Error::from_raw_os_error(19),
                    },
                });
            }
            let (down, attempts, broken) = (self.down.clone(), self.attempts.clone(), self.broken);
            Ok(wrapped(self.inner.open()?, move || {
                if down.load(Ordering::SeqCst) {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    return Err(Self::error(broken));
                }
                Ok(())
            }))
        }
    }

    fn next(rx: &mut mpsc::Receiver<Message>) -> Message {
        let t0 = Instant::now();
        loop {
            if let Ok(m) = rx.try_recv() {
                return m;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no message");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The test pattern's first screen, then unchanged until `change` is set
    /// (each set is one change); counts captures.
    struct Scripted {
        change: Arc<AtomicBool>,
        captures: Arc<AtomicU32>,
        inner: PatternCapture,
    }

    impl CaptureBackend for Scripted {
        fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
            let (change, captures) = (self.change.clone(), self.captures.clone());
            let mut n = 0;
            Ok(Box::new(self.inner.source_with(move || {
                captures.fetch_add(1, Ordering::SeqCst);
                if change.swap(false, Ordering::SeqCst) {
                    n += 1;
                }
                n
            })))
        }
    }

    fn scripted(
        max_fps: u32,
    ) -> (
        CaptureHandle,
        mpsc::Receiver<Message>,
        Arc<AtomicBool>,
        Arc<AtomicU32>,
    ) {
        let (_pair, view) = shoulder_proto::testing::granted_view();
        let change = Arc::new(AtomicBool::new(false));
        let captures = Arc::new(AtomicU32::new(0));
        let backend = Arc::new(Scripted {
            change: change.clone(),
            captures: captures.clone(),
            inner: PatternCapture::new(64, 48),
        });
        let (handle, rx) = started(view, backend, max_fps);
        (handle, rx, change, captures)
    }

    /// A capture worker on `backend`, past its first screen and full update.
    fn started(
        view: ViewConsent,
        backend: Arc<dyn CaptureBackend>,
        max_fps: u32,
    ) -> (CaptureHandle, mpsc::Receiver<Message>) {
        started_paced(view, backend, PacingConfig::with_max_rate(max_fps))
    }

    /// [`started`] with its own polling intervals.
    fn started_paced(
        view: ViewConsent,
        backend: Arc<dyn CaptureBackend>,
        pacing: PacingConfig,
    ) -> (CaptureHandle, mpsc::Receiver<Message>) {
        let (tx, mut rx) = mpsc::channel(16);
        let handle = CaptureHandle::start_paced(
            view,
            backend,
            tx,
            pacing,
            Rotation::Deg0,
            Decodes::default(),
        );
        handle.request(true);
        assert!(matches!(next(&mut rx), Message::ScreenInfo(_)));
        while !matches!(next(&mut rx), Message::Update(p) if p.last) {}
        (handle, rx)
    }

    /// A still screen of noise (every update of it is large): each open
    /// shows the same picture.
    struct Noise {
        geometry: ScreenGeometry,
        pixels: Vec<u8>,
    }

    impl Noise {
        fn new(width: u32, height: u32) -> Self {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let pixels = (0..width * height * 4)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            Self {
                geometry: ScreenGeometry {
                    width,
                    height,
                    format: shoulder_capture::PixelFormat::Xrgb8888,
                },
                pixels,
            }
        }
    }

    impl FrameSource for Noise {
        fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
            Ok(self.geometry)
        }
        fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
            let pitch = self.geometry.width as usize * 4;
            Ok(Frame::new(&self.pixels, self.geometry, pitch).expect("a whole frame"))
        }
        fn describe(&self) -> String {
            "noise".into()
        }
    }

    struct NoiseBackend(u32, u32);

    impl CaptureBackend for NoiseBackend {
        fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
            Ok(Box::new(Noise::new(self.0, self.1)))
        }
    }

    /// The person ends the session while a large update goes out in early
    /// parts: the parts already made may still arrive (the queue holds one,
    /// one more may be on its way into it), nothing made after, the update
    /// is never finished, and the capture stops.
    #[test]
    fn consent_withdrawn_between_two_early_parts_stops_the_update() {
        let (mut pair, view) = shoulder_proto::testing::granted_view();
        let (tx, mut rx) = mpsc::channel(1);
        let handle = CaptureHandle::start(
            view,
            Arc::new(NoiseBackend(1280, 720)),
            tx,
            30,
            Rotation::Deg0,
            Decodes::default(),
        );
        handle.request(true);
        assert!(matches!(next(&mut rx), Message::ScreenInfo(_)));
        let first = next(&mut rx);
        assert!(
            matches!(&first, Message::Update(p) if !p.last),
            "a 1280x720 noise screen goes in several parts: {}",
            first.name()
        );
        pair.local(shoulder_proto::session::LocalDecision::End);
        assert!(pair.device.is_closed(), "the person ended the session");

        let t0 = Instant::now();
        let mut after = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(m) => after.push(m),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    assert!(
                        t0.elapsed() < Duration::from_secs(20),
                        "the capture did not stop after the consent ended"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        assert!(
            after.len() <= 2,
            "{} messages after the consent ended (at most the queued one and one on its way)",
            after.len()
        );
        assert!(
            !after
                .iter()
                .any(|m| matches!(m, Message::Update(p) if p.last)),
            "the update was finished after the consent ended"
        );
    }

    /// The test pattern with a separate cursor: each `cursor()` call takes
    /// the next scripted cursor update.
    struct WithCursor {
        script: Arc<Mutex<std::collections::VecDeque<CursorUpdate>>>,
        inner: PatternCapture,
    }

    impl CaptureBackend for WithCursor {
        fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
            let script = self.script.clone();
            Ok(Box::new(Wrapped {
                // A still screen: only the cursor moves.
                inner: Box::new(self.inner.source_with(|| 0)),
                capture: || Ok(()),
                cursor: Some(Box::new(move || script.lock().unwrap().pop_front())),
            }))
        }
    }

    #[test]
    fn the_cursor_follows_the_screen_and_moves_on_its_own() {
        let (_pair, view) = shoulder_proto::testing::granted_view();
        let image = shoulder_proto::CursorShape {
            width: 2,
            height: 2,
            hot_x: 0,
            hot_y: 0,
            pixels: shoulder_proto::Payload(vec![255; 16]),
        };
        let shape = Message::CursorShape(Box::new(image.clone()));
        let state = |x| CursorState {
            x,
            y: 5,
            visible: true,
        };
        let at = |x| Message::CursorPosition {
            x,
            y: 5,
            visible: true,
        };
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from([
            CursorUpdate {
                shape: Some(image),
                position: Some(state(1)),
            },
        ])));
        let backend = Arc::new(WithCursor {
            script: script.clone(),
            inner: PatternCapture::new(64, 48),
        });
        // The screen first, then the cursor over it.
        let (handle, mut rx) = started(view, backend, 30);
        assert_eq!(next(&mut rx), shape);
        assert_eq!(next(&mut rx), at(1));
        // The pointer moves over an unchanged screen: only its position.
        handle.request(false);
        script.lock().unwrap().push_back(CursorUpdate {
            shape: None,
            position: Some(state(40)),
        });
        assert_eq!(next(&mut rx), at(40));
        handle.stop();
    }

    #[test]
    fn a_change_is_sent_without_waiting_a_whole_update_interval() {
        // One update a second at most, but a change after a quiet while is
        // still seen within the idle poll interval (50 ms), not up to 1 s.
        let (handle, mut rx, change, _) = scripted(1);
        handle.request(false);
        std::thread::sleep(Duration::from_millis(1500));
        assert!(rx.try_recv().is_err(), "sent without a change");
        change.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        while !matches!(next(&mut rx), Message::Update(p) if p.last) {}
        let waited = t0.elapsed();
        assert!(
            waited < Duration::from_millis(400),
            "the change took {waited:?} to be sent"
        );
        handle.stop();
    }

    #[test]
    fn a_quiet_screen_is_polled_slowly_and_updates_are_capped_to_max_fps() {
        const FPS: u32 = 20;
        let (handle, mut rx, change, captures) = scripted(FPS);
        handle.request(false);
        // Fast polling lasts about a second after the last update, then
        // backs off to about 20 polls a second (sparse probes, each a
        // sixteenth of a frame compare).
        std::thread::sleep(Duration::from_millis(2000));
        let before = captures.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1000));
        let polls = captures.load(Ordering::SeqCst) - before;
        assert!(polls <= 30, "{polls} polls in 1 s of a quiet screen");
        assert!(polls >= 1, "the screen was not polled at all");
        // A screen that changes all the time: at most FPS updates a second.
        let t0 = Instant::now();
        for _ in 0..10 {
            change.store(true, Ordering::SeqCst);
            while !matches!(next(&mut rx), Message::Update(p) if p.last) {}
            handle.request(false);
        }
        let elapsed = t0.elapsed();
        let floor = Duration::from_secs(9) / FPS;
        assert!(
            elapsed >= floor.mul_f32(0.9),
            "10 updates in {elapsed:?}: not capped to {FPS}/s"
        );
        handle.stop();
    }

    /// A page-flipping application's screen: buffer `shown` (an id that
    /// grows with each flip) is on screen; each flip shows `pictures[id %
    /// 2]`. Counts captures and looks at the buffer on screen.
    struct Flipping {
        pictures: [Noise; 2],
        /// Whether it says which buffer is on screen without a capture.
        tells: bool,
        shown: Arc<AtomicU32>,
        captures: Arc<AtomicU32>,
        looks: Arc<AtomicU32>,
    }

    impl FrameSource for Flipping {
        fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
            Ok(self.pictures[0].geometry)
        }
        fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
            self.captures.fetch_add(1, Ordering::SeqCst);
            let id = self.shown.load(Ordering::SeqCst);
            let frame = self.pictures[id as usize % 2].capture()?;
            Ok(frame.with_buffer(id))
        }
        fn buffer_on_screen(&mut self) -> Option<u32> {
            self.looks.fetch_add(1, Ordering::SeqCst);
            self.tells.then(|| self.shown.load(Ordering::SeqCst))
        }
        fn describe(&self) -> String {
            "flipping".into()
        }
    }

    struct FlippingBackend {
        /// The two pictures differ (otherwise every flip shows the same).
        differ: bool,
        tells: bool,
        shown: Arc<AtomicU32>,
        captures: Arc<AtomicU32>,
        looks: Arc<AtomicU32>,
    }

    impl CaptureBackend for FlippingBackend {
        fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
            let mut second = Noise::new(32, 24);
            if self.differ {
                second.pixels.iter_mut().for_each(|b| *b = !*b);
            }
            Ok(Box::new(Flipping {
                pictures: [Noise::new(32, 24), second],
                tells: self.tells,
                shown: self.shown.clone(),
                captures: self.captures.clone(),
                looks: self.looks.clone(),
            }))
        }
    }

    /// A worker on a [`FlippingBackend`] that polls only once a minute.
    fn flipping_slowly(
        differ: bool,
    ) -> (CaptureHandle, mpsc::Receiver<Message>, [Arc<AtomicU32>; 3]) {
        let minute = Duration::from_secs(60);
        let pacing = PacingConfig {
            fast_interval: minute,
            idle_interval: minute,
            ..PacingConfig::default()
        };
        flipping(differ, true, pacing)
    }

    /// A worker on a [`FlippingBackend`] past its first update, with the
    /// next one requested; returns the shown buffer, the capture and look
    /// counters.
    fn flipping(
        differ: bool,
        tells: bool,
        pacing: PacingConfig,
    ) -> (CaptureHandle, mpsc::Receiver<Message>, [Arc<AtomicU32>; 3]) {
        let (_pair, view) = shoulder_proto::testing::granted_view();
        let counters: [Arc<AtomicU32>; 3] = Default::default();
        let backend = Arc::new(FlippingBackend {
            differ,
            tells,
            shown: counters[0].clone(),
            captures: counters[1].clone(),
            looks: counters[2].clone(),
        });
        let (handle, rx) = started_paced(view, backend, pacing);
        handle.request(false);
        (handle, rx, counters)
    }

    /// Waits (at most 10 s) for the request's own capture, then a little
    /// more for the idle session's looks at the buffer on screen.
    fn settle(captures: &AtomicU32) {
        let t0 = Instant::now();
        while captures.load(Ordering::SeqCst) < 2 {
            assert!(t0.elapsed() < Duration::from_secs(10), "never captured");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    #[test]
    fn a_page_flip_is_sent_without_waiting_for_the_next_poll() {
        let (handle, mut rx, [shown, captures, looks]) = flipping_slowly(true);
        // The request's own capture, then nothing is polled for a minute;
        // the buffer on screen is looked at meanwhile.
        settle(&captures);
        assert!(
            looks.load(Ordering::SeqCst) > 0,
            "never looked at the buffer"
        );
        shown.store(1, Ordering::SeqCst);
        // Not a minute: `next` gives up after 10 s.
        while !matches!(next(&mut rx), Message::Update(p) if p.last) {}
        assert_eq!(
            captures.load(Ordering::SeqCst),
            3,
            "one capture for the flip"
        );
        handle.stop();
    }

    #[test]
    fn an_app_flipping_the_same_picture_is_not_captured_at_every_flip() {
        let (handle, mut rx, [shown, captures, _]) = flipping_slowly(false);
        settle(&captures);
        // A steady 500 flips a second of the same picture for a second:
        // the first flip is captured (and found unchanged), the others wait
        // for the polls.
        for id in 1..=500 {
            shown.store(id, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
        }
        let n = captures.load(Ordering::SeqCst);
        assert!(n <= 3, "{n} captures for 500 flips of the same picture");
        assert!(rx.try_recv().is_err(), "nothing changed, nothing sent");
        handle.stop();
    }

    /// What looking for page flips costs an idle session: the capture
    /// thread's CPU (the whole test process, of which it is nearly all)
    /// over 20 s of a viewed screen that neither changes nor flips, with
    /// looks at the default cadence and without looks. A measurement, not
    /// a check (BENCHMARKS.md): `cargo test --release -p shoulder-agent
    /// --lib idle_cost_of_looking_for_flips -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement of 40 s; run by hand"]
    fn idle_cost_of_looking_for_flips() {
        fn cpu_ticks() -> u64 {
            let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
            let f: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
        }
        let ticks_per_s = 100.0; // USER_HZ
        for look in [true, false] {
            let (handle, _rx, [_, _, looks]) = flipping(true, look, PacingConfig::default());
            let pacing = PacingConfig::default();
            std::thread::sleep(pacing.fast_for * 3);
            let (c0, l0, t0) = (cpu_ticks(), looks.load(Ordering::SeqCst), Instant::now());
            std::thread::sleep(Duration::from_secs(20));
            let secs = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ticks() - c0) as f64 / ticks_per_s / secs * 100.0;
            let n = f64::from(looks.load(Ordering::SeqCst) - l0) / secs;
            eprintln!(
                "looks every {:?}: {}; {n:.0} looks a second, {cpu:.2} % of a core",
                pacing.flip_interval,
                if look { "on" } else { "off" },
            );
            handle.stop();
        }
    }

    /// A worker past its first update whose screen has just gone (see
    /// [`Flaky`]); the expert asked for the next update.
    fn flaky(
        broken: bool,
    ) -> (
        CaptureHandle,
        mpsc::Receiver<Message>,
        Arc<AtomicBool>,
        Arc<AtomicU32>,
    ) {
        let (_pair, view) = shoulder_proto::testing::granted_view();
        let down = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU32::new(0));
        let backend = Arc::new(Flaky {
            down: down.clone(),
            broken,
            attempts: attempts.clone(),
            inner: PatternCapture::new(64, 48),
        });
        let (handle, rx) = started(view, backend, 30);
        down.store(true, Ordering::SeqCst);
        handle.request(false);
        (handle, rx, down, attempts)
    }

    /// The screen is announced anew and sent whole.
    fn comes_back(rx: &mut mpsc::Receiver<Message>) {
        match next(rx) {
            Message::ScreenInfo(info) => assert_eq!((info.width, info.height), (64, 48)),
            m => panic!("expected ScreenInfo, got {}", m.name()),
        }
        while !matches!(next(rx), Message::Update(p) if p.last) {}
    }

    #[test]
    fn screen_unavailable_is_sent_once_and_the_screen_comes_back() {
        let (handle, mut rx, down, attempts) = flaky(false);
        match next(&mut rx) {
            Message::ScreenUnavailable { detail } => {
                assert_eq!(
                    detail.to_string(),
                    "the display is off: crtc 41 is inactive"
                )
            }
            m => panic!("expected ScreenUnavailable, got {}", m.name()),
        }
        // Retried (slowly) while down, told only once.
        let t0 = Instant::now();
        while attempts.load(Ordering::SeqCst) < 3 {
            assert!(t0.elapsed() < Duration::from_secs(10), "no retries");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(rx.try_recv().is_err(), "told more than once");

        down.store(false, Ordering::SeqCst);
        comes_back(&mut rx);
        handle.stop();
    }

    #[test]
    fn a_screen_that_waiting_cannot_fix_is_retried_only_when_the_expert_asks() {
        let (handle, mut rx, down, attempts) = flaky(true);
        match next(&mut rx) {
            Message::ScreenUnavailable { detail } => {
                assert!(detail.to_string().contains("CAP_SYS_ADMIN"), "{detail}")
            }
            m => panic!("expected ScreenUnavailable, got {}", m.name()),
        }
        // A transient outage is retried about once a second; this one is not
        // retried at all while the expert only waits for changes.
        handle.request(false);
        std::thread::sleep(Duration::from_millis(3500));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "retried on its own");
        assert!(rx.try_recv().is_err(), "told more than once");

        // The expert presses Refresh: tried again, and the screen is back.
        down.store(false, Ordering::SeqCst);
        handle.request(true);
        comes_back(&mut rx);
        handle.stop();
    }

    #[test]
    fn the_expert_is_told_the_screens_and_switches_to_another() {
        let (_pair, view) = shoulder_proto::testing::granted_view();
        let (tx, mut rx) = mpsc::channel(64);
        let handle = CaptureHandle::start(
            view,
            Arc::new(crate::backends::PatternScreens::new(&[(64, 48), (80, 48)])),
            tx,
            30,
            Rotation::Deg0,
            Decodes {
                compression: Compression::DeflateStream,
                jpeg: false,
            },
        );
        handle.request(true);
        let Message::Screens(list) = next(&mut rx) else {
            panic!("the list comes first");
        };
        assert_eq!((list.current, list.screens.len()), (0, 2));
        assert_eq!(list.screens[1].x, 64);
        let Message::ScreenInfo(first) = next(&mut rx) else {
            panic!("then the first screen");
        };
        assert_eq!(first.width, 64);
        while !matches!(next(&mut rx), Message::Update(p) if p.last) {}

        handle.select_screen(1);
        handle.request(true);
        let Message::Screens(list) = next(&mut rx) else {
            panic!("the new choice is told");
        };
        assert_eq!(list.current, 1);
        let info = loop {
            if let Message::ScreenInfo(i) = next(&mut rx) {
                break i;
            }
        };
        assert_eq!(info.width, 80, "the second screen, whole");
        assert!(
            info.generation > first.generation,
            "late updates stay recognisable"
        );
        // A screen that was never listed changes nothing.
        handle.select_screen(7);
        handle.stop();
    }
}
