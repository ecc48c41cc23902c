//! The synthetic screen: the demo kiosk UI ([`shoulder_kiosk_ui`]) drawn in
//! memory, animated by the clock, and changed by input through
//! [`SyntheticControls`] (the agent's synthetic input sink calls it, so an
//! expert's click on the counter button increments the counter).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoulder_kiosk_ui::{Action, KioskUi, Xrgb8888Canvas};

use crate::source::{CaptureError, Frame, FrameSource, PixelFormat, ScreenGeometry};

/// The animation advances in steps of this much time: 25 frames per second
/// is smooth for a demo, and between steps a capture costs no redraw.
pub const ANIMATION_STEP: Duration = Duration::from_millis(40);

/// What time the screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The wall clock (UTC time of day), animated.
    Wall,
    /// A frozen instant: the screen changes only through input. For tests.
    Fixed(Duration),
}

#[derive(Debug)]
struct Shared {
    ui: KioskUi,
    size: (u32, u32),
    /// Bumped on every visible state change, so the screen knows to redraw.
    version: u64,
    buttons: u8,
    touching: bool,
}

/// The demo kiosk screen as a frame source.
#[derive(Debug)]
pub struct SyntheticScreen {
    shared: Arc<Mutex<Shared>>,
    geometry: ScreenGeometry,
    pixels: Vec<u8>,
    clock: Clock,
    drawn: Option<(u64, Duration)>,
}

/// A handle that changes the synthetic screen's state, as input would.
/// Cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub struct SyntheticControls {
    shared: Arc<Mutex<Shared>>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The state stays consistent even if a holder panicked: every change is
    // a single assignment.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SyntheticScreen {
    /// A `width`×`height` kiosk screen showing the wall clock. Sizes are
    /// clamped to 1..=8192.
    pub fn new(width: u32, height: u32) -> Self {
        SyntheticControls::new(width, height).screen()
    }

    fn with_shared(shared: Arc<Mutex<Shared>>) -> Self {
        let (width, height) = lock(&shared).size;
        Self {
            shared,
            geometry: ScreenGeometry {
                width,
                height,
                format: PixelFormat::Xrgb8888,
            },
            pixels: vec![0; width as usize * height as usize * 4],
            clock: Clock::Wall,
            drawn: None,
        }
    }

    /// The same screen with another clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self.drawn = None;
        self
    }

    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// A handle for the input side.
    pub fn controls(&self) -> SyntheticControls {
        SyntheticControls {
            shared: self.shared.clone(),
        }
    }

    fn now(&self) -> Duration {
        match self.clock {
            Clock::Fixed(t) => t,
            Clock::Wall => {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let step = ANIMATION_STEP.as_millis() as u64;
                Duration::from_millis(t.as_millis() as u64 / step * step)
            }
        }
    }
}

impl FrameSource for SyntheticScreen {
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        Ok(self.geometry)
    }

    fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
        let now = self.now();
        let shared = lock(&self.shared);
        if self.drawn != Some((shared.version, now)) {
            let (w, h) = (self.geometry.width, self.geometry.height);
            // Cannot fail: the buffer was sized for exactly this frame.
            if let Ok(mut canvas) = Xrgb8888Canvas::new(&mut self.pixels, w, h, w as usize * 4) {
                // Infallible target: the canvas clips.
                let _ = shared.ui.draw(&mut canvas, now);
            }
            self.drawn = Some((shared.version, now));
        }
        drop(shared);
        Frame::new(
            &self.pixels,
            self.geometry,
            self.geometry.width as usize * 4,
        )
        .map_err(|source| CaptureError::Frame {
            path: "synthetic".into(),
            source,
        })
    }

    fn describe(&self) -> String {
        format!("synthetic kiosk screen {}", self.geometry)
    }
}

impl SyntheticControls {
    /// The state of a `width`×`height` kiosk screen (sizes clamped to
    /// 1..=8192), before any screen shows it: the agent makes this once, gives
    /// it to the input sink, and opens [`Self::screen`] for each viewing
    /// session, so the counter survives sessions.
    pub fn new(width: u32, height: u32) -> Self {
        let (width, height) = (width.clamp(1, 8192), height.clamp(1, 8192));
        Self {
            shared: Arc::new(Mutex::new(Shared {
                ui: KioskUi::new(width, height),
                size: (width, height),
                version: 0,
                buttons: 0,
                touching: false,
            })),
        }
    }

    /// A frame source showing this state (wall clock).
    pub fn screen(&self) -> SyntheticScreen {
        SyntheticScreen::with_shared(self.shared.clone())
    }

    /// Absolute pointer state (buttons as in the protocol: 1 left). A left
    /// press taps the UI at that point; returns what the tap did.
    pub fn pointer(&self, x: u16, y: u16, buttons: u8) -> Option<Action> {
        let mut s = lock(&self.shared);
        let pressed = buttons & 1 != 0 && s.buttons & 1 == 0;
        s.buttons = buttons;
        if !pressed {
            return None;
        }
        let action = s.ui.tap(i32::from(x), i32::from(y));
        if action.is_some() {
            s.version += 1;
        }
        action
    }

    /// A touch contact going down (`down = true`) taps the UI; moves and
    /// lifts do nothing.
    pub fn touch(&self, x: u16, y: u16, down: bool) -> Option<Action> {
        let mut s = lock(&self.shared);
        let tap = down && !s.touching;
        s.touching = down;
        if !tap {
            return None;
        }
        let action = s.ui.tap(i32::from(x), i32::from(y));
        if action.is_some() {
            s.version += 1;
        }
        action
    }

    /// A key press or release (Linux evdev code). Returns whether the screen
    /// changed.
    pub fn key(&self, code: u16, down: bool) -> bool {
        let mut s = lock(&self.shared);
        let changed = s.ui.key(code, i32::from(down));
        if changed {
            s.version += 1;
        }
        changed
    }

    /// The counter the button increments.
    pub fn counter(&self) -> u32 {
        lock(&self.shared).ui.counter()
    }

    /// The text typed so far.
    pub fn text(&self) -> String {
        lock(&self.shared).ui.text().to_owned()
    }

    /// The page shown (index into [`shoulder_kiosk_ui::PAGES`]).
    pub fn page(&self) -> usize {
        lock(&self.shared).ui.page()
    }

    /// Where the counter button is (centre, screen pixels): for tests and
    /// demos that click it.
    pub fn counter_button_centre(&self) -> (u16, u16) {
        let s = lock(&self.shared);
        let r = s.ui.layout().counter_button;
        let c = r.center();
        (c.x.max(0) as u16, c.y.max(0) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_click_on_the_counter_changes_the_screen() {
        let mut screen =
            SyntheticScreen::new(640, 480).with_clock(Clock::Fixed(Duration::from_secs(3600)));
        let controls = screen.controls();
        let before = screen.capture().unwrap().to_xrgb8888();
        assert_eq!(
            screen.capture().unwrap().to_xrgb8888(),
            before,
            "frozen clock, no input: same pixels"
        );
        let (x, y) = controls.counter_button_centre();
        assert_eq!(controls.pointer(x, y, 1), Some(Action::Increment));
        assert_eq!(
            controls.pointer(x, y, 1),
            None,
            "holding is not another click"
        );
        assert_eq!(controls.pointer(x, y, 0), None);
        assert_eq!(controls.counter(), 1);
        let after = screen.capture().unwrap().to_xrgb8888();
        assert_ne!(after, before);
        assert!(controls.key(30, true));
        assert!(!controls.key(30, false));
        assert_eq!(controls.text(), "a");
        assert_ne!(screen.capture().unwrap().to_xrgb8888(), after);
        assert_eq!(controls.touch(x, y, true), Some(Action::Increment));
        assert_eq!(controls.counter(), 2);
        // A second screen on the same state (next session) shows the same.
        let mut again = controls
            .screen()
            .with_clock(Clock::Fixed(Duration::from_secs(3600)));
        assert_eq!(
            again.capture().unwrap().to_xrgb8888(),
            screen.capture().unwrap().to_xrgb8888()
        );
    }

    #[test]
    fn the_clock_animates_the_screen() {
        let mut screen =
            SyntheticScreen::new(320, 240).with_clock(Clock::Fixed(Duration::from_secs(10)));
        let a = screen.capture().unwrap().to_xrgb8888();
        screen.set_clock(Clock::Fixed(Duration::from_secs(11)));
        assert_ne!(screen.capture().unwrap().to_xrgb8888(), a);
    }
}
