//! Runs a [`ScanoutPresenter`] on its own thread: ticks every
//! [`TICK_INTERVAL`] while a banner is up or left to restore, sleeps on its
//! command channel otherwise. The agent talks to it through
//! [`ScanoutThread`], which is itself a [`BannerPresenter`].

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::scanout::{ScanoutPresenter, ScanoutTarget, TICK_INTERVAL, TickStats};
use super::{BannerPresenter, PresentError};
use crate::layout::Banner;

/// Errors kept for the agent to pick up; more are dropped (counted) so a
/// failing device cannot grow memory at the tick rate.
pub const MAX_PENDING_ERRORS: usize = 16;

/// Nice value of the banner thread. It must run within a few milliseconds
/// of each flip even when the kiosk app keeps the CPU busy, and its work per
/// tick is small, so it gets a clearly higher priority than normal
/// processes (needs CAP_SYS_NICE, which the root agent has; without it the
/// thread runs at normal priority).
pub const BANNER_NICE: i32 = -10;

/// After an error the loop waits this long before the next tick, so a
/// display that went away is not hammered 300 times a second.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(200);

enum Command {
    Show(Arc<Banner>),
    Hide,
    Refresh,
    Stop,
}

/// A [`ScanoutPresenter`] running on a thread of its own.
#[derive(Debug)]
pub struct ScanoutThread {
    tx: Sender<Command>,
    errors: Receiver<PresentError>,
    banner: Option<Arc<Banner>>,
    join: Option<JoinHandle<TickStats>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Show(_) => "Show",
            Command::Hide => "Hide",
            Command::Refresh => "Refresh",
            Command::Stop => "Stop",
        })
    }
}

impl ScanoutThread {
    /// Starts the loop on a thread named `banner`.
    pub fn spawn<T>(presenter: ScanoutPresenter<T>) -> std::io::Result<Self>
    where
        T: ScanoutTarget + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let (err_tx, errors) = mpsc::sync_channel(MAX_PENDING_ERRORS);
        let join = std::thread::Builder::new()
            .name("banner".into())
            .spawn(move || run(presenter, rx, err_tx))?;
        Ok(Self {
            tx,
            errors,
            banner: None,
            join: Some(join),
        })
    }

    /// Errors the loop met since the last call (oldest first).
    /// [`PresentError::ScreenChanged`] asks for a new render.
    pub fn take_errors(&self) -> Vec<PresentError> {
        self.errors.try_iter().collect()
    }

    /// Takes the banner down, stops the thread and says what the loop did.
    pub fn stop(mut self) -> TickStats {
        let _ = self.tx.send(Command::Stop);
        self.join
            .take()
            .and_then(|j| j.join().ok())
            .unwrap_or_default()
    }

    fn send(&self, cmd: Command) -> Result<(), PresentError> {
        self.tx.send(cmd).map_err(|_| {
            PresentError::Unsupported(
                "the banner thread has stopped (a panic in the presenter?): restart the agent"
                    .into(),
            )
        })
    }
}

fn run<T: ScanoutTarget>(
    mut p: ScanoutPresenter<T>,
    rx: Receiver<Command>,
    errors: SyncSender<PresentError>,
) -> TickStats {
    // On Linux a thread id names just this thread for setpriority.
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BANNER_NICE);
    loop {
        let cmd = if p.busy() {
            match rx.recv_timeout(TICK_INTERVAL) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Command::Stop),
            }
        } else {
            // Nothing on screen: no polling at all until told.
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => Some(Command::Stop),
            }
        };
        let result = match cmd {
            Some(Command::Show(b)) => p.show(b),
            Some(Command::Hide) => p.hide(),
            Some(Command::Refresh) => p.refresh(),
            Some(Command::Stop) => {
                let _ = p.hide();
                return p.stats();
            }
            None => p.tick().map(drop),
        };
        if let Err(e) = result {
            match errors.try_send(e) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return p.stats(),
            }
            std::thread::sleep(ERROR_BACKOFF);
        }
    }
}

impl BannerPresenter for ScanoutThread {
    /// Queues the banner; the thread draws it at once. Errors arrive
    /// through [`take_errors`](ScanoutThread::take_errors).
    fn show(&mut self, banner: Arc<Banner>) -> Result<(), PresentError> {
        self.banner = Some(banner.clone());
        self.send(Command::Show(banner))
    }

    fn hide(&mut self) -> Result<(), PresentError> {
        self.banner = None;
        self.send(Command::Hide)
    }

    fn refresh(&mut self) -> Result<(), PresentError> {
        self.send(Command::Refresh)
    }

    fn in_scanout(&self) -> bool {
        true
    }

    fn current(&self) -> Option<&Arc<Banner>> {
        self.banner.as_ref()
    }
}

impl Drop for ScanoutThread {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::{PixelBuffer, PixelFormat, Surface};
    use crate::present::scanout::BufferId;
    use embedded_graphics::pixelcolor::Rgb888;
    use std::sync::Mutex;
    use std::time::Instant;

    /// One buffer shared with the test, so it can play the app.
    #[derive(Clone)]
    struct Shared(Arc<Mutex<PixelBuffer>>);

    impl ScanoutTarget for Shared {
        fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
            Ok(Some(BufferId(1)))
        }
        fn with_buffer<R>(
            &mut self,
            _id: BufferId,
            f: impl FnOnce(&mut Surface<'_>) -> R,
        ) -> Result<Option<R>, PresentError> {
            let mut b = self.0.lock().unwrap();
            Ok(Some(f(&mut b.surface())))
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        // Bounded: the loop ticks every 3 ms, so a second is plenty.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_real_targets_can_run_on_the_thread() {
        fn send<T: Send>() {}
        send::<crate::present::CaptureScanout<shoulder_display::drm::DrmDisplay>>();
        send::<crate::present::CaptureScanout<shoulder_display::fbdev::FbdevDisplay>>();
        send::<crate::present::FbdevTarget>();
    }

    #[test]
    fn the_thread_keeps_the_banner_up_and_takes_it_down() {
        let mut screen = PixelBuffer::new(320, 240, PixelFormat::Xrgb8888).unwrap();
        screen.clear(Rgb888::new(10, 20, 30));
        let shared = Shared(Arc::new(Mutex::new(screen)));
        let mut t = ScanoutThread::spawn(ScanoutPresenter::new(shared.clone())).unwrap();
        let banner = crate::present::test_banners::viewing_strip(320, 240);
        let corner = banner.patches[0].pixels.pixel(0, 0);
        t.show(banner).unwrap();
        let px = || shared.0.lock().unwrap().pixel(0, 0);
        wait_for("the banner", || px() == corner);
        // The app repaints the whole screen; the loop puts the banner back.
        shared.0.lock().unwrap().clear(Rgb888::new(200, 0, 0));
        wait_for("the repair", || px() == corner);
        t.hide().unwrap();
        wait_for("the app's pixels", || px() == Some(Rgb888::new(200, 0, 0)));
        assert!(t.take_errors().is_empty());
    }
}
