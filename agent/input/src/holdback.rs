//! Local input wins: while the person at the device is using it, the
//! expert's input is held back.
//!
//! Sans-I/O, after the session machines: feed local activity with
//! [`Holdback::local_activity`], ask [`Holdback::admit`] before injecting,
//! call [`Holdback::handle_timeout`] at [`Holdback::poll_timeout`], and drain
//! [`Holdback::poll_output`].
//!
//! ```text
//!  local event ──► active (expert input dropped) ──(window without local events)──► idle
//!                  outputs: ReleaseExpertInput,            outputs: LocalUserActive(false)
//!                           LocalUserActive(true)
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long after the last local event the expert's input stays held back.
/// Long enough to cover the gaps between taps and key presses of someone
/// using the device, short enough that the expert gets the screen back
/// soon after the person lets go.
pub const DEFAULT_HOLDBACK: Duration = Duration::from_millis(750);

/// The longest hold-back a configuration may ask for: beyond this the expert
/// would think control is broken.
pub const MAX_HOLDBACK: Duration = Duration::from_secs(10);

/// What the glue must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldbackOutput {
    /// Release every key, button and touch the expert holds (local activity
    /// started): `InputSink::release_all`.
    ReleaseExpertInput,
    /// Tell the session machine (`DeviceInput::LocalUserActive`), which
    /// tells the expert.
    LocalUserActive(bool),
}

/// Local-activity hold-back of expert input.
#[derive(Debug)]
pub struct Holdback {
    window: Duration,
    last_local: Option<Instant>,
    active: bool,
    held_back: u64,
    out: VecDeque<HoldbackOutput>,
}

impl Holdback {
    /// A hold-back of `window` after each local event (capped at
    /// [`MAX_HOLDBACK`]; zero turns hold-back off).
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.min(MAX_HOLDBACK),
            last_local: None,
            active: false,
            held_back: 0,
            out: VecDeque::with_capacity(4),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The person at the device used a local input device at `now`.
    pub fn local_activity(&mut self, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        self.last_local = Some(self.last_local.map_or(now, |t| t.max(now)));
        if !self.active {
            self.active = true;
            // Release before telling anyone: nothing the expert holds may
            // stay down while the person at the device takes over.
            self.push(HoldbackOutput::ReleaseExpertInput);
            self.push(HoldbackOutput::LocalUserActive(true));
        }
    }

    /// Whether an expert event at `now` may be injected; false means drop it
    /// (it is counted).
    pub fn admit(&mut self, now: Instant) -> bool {
        self.handle_timeout(now);
        if self.active {
            self.held_back += 1;
            false
        } else {
            true
        }
    }

    /// Ends the hold-back when its window has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout()
            && now >= deadline
        {
            self.active = false;
            self.push(HoldbackOutput::LocalUserActive(false));
        }
    }

    /// When [`Holdback::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.active {
            self.last_local.map(|t| t + self.window)
        } else {
            None
        }
    }

    pub fn poll_output(&mut self) -> Option<HoldbackOutput> {
        self.out.pop_front()
    }

    /// Whether the person at the device counts as active now.
    pub fn is_local_active(&self) -> bool {
        self.active
    }

    /// Expert events dropped so far.
    pub fn held_back(&self) -> u64 {
        self.held_back
    }

    fn push(&mut self, o: HoldbackOutput) {
        // At most one start and one end are ever pending, so the queue stays
        // tiny; coalesce anyway in case the glue does not drain it.
        if self.out.len() >= 8 {
            self.out.pop_front();
        }
        self.out.push_back(o);
    }
}

impl Default for Holdback {
    fn default() -> Self {
        Self::new(DEFAULT_HOLDBACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &mut Holdback) -> Vec<HoldbackOutput> {
        std::iter::from_fn(|| h.poll_output()).collect()
    }

    #[test]
    fn expert_input_waits_until_the_person_stops() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = Holdback::default();
        assert!(h.admit(t0));
        assert_eq!(h.poll_timeout(), None);

        h.local_activity(ms(100));
        assert_eq!(
            drain(&mut h),
            vec![
                HoldbackOutput::ReleaseExpertInput,
                HoldbackOutput::LocalUserActive(true)
            ]
        );
        assert!(!h.admit(ms(200)));
        h.local_activity(ms(500));
        assert!(drain(&mut h).is_empty(), "only edges are reported");
        assert_eq!(h.poll_timeout(), Some(ms(1250)));
        assert!(!h.admit(ms(1249)));
        assert!(drain(&mut h).is_empty());

        h.handle_timeout(ms(1250));
        assert_eq!(drain(&mut h), vec![HoldbackOutput::LocalUserActive(false)]);
        assert!(h.admit(ms(1251)));
        assert_eq!(h.held_back(), 2);
        assert_eq!(h.poll_timeout(), None);
    }

    #[test]
    fn admit_ends_an_expired_holdback_by_itself() {
        let t0 = Instant::now();
        let mut h = Holdback::new(Duration::from_millis(300));
        h.local_activity(t0);
        drain(&mut h);
        assert!(h.admit(t0 + Duration::from_millis(300)));
        assert_eq!(drain(&mut h), vec![HoldbackOutput::LocalUserActive(false)]);
    }

    #[test]
    fn zero_window_turns_holdback_off_and_window_is_capped() {
        let t0 = Instant::now();
        let mut h = Holdback::new(Duration::ZERO);
        h.local_activity(t0);
        assert!(h.admit(t0));
        assert!(drain(&mut h).is_empty());
        assert_eq!(
            Holdback::new(Duration::from_secs(3600)).window(),
            MAX_HOLDBACK
        );
    }

    #[test]
    fn a_new_start_after_the_end_releases_again() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = Holdback::default();
        h.local_activity(ms(0));
        h.handle_timeout(ms(750));
        drain(&mut h);
        h.local_activity(ms(2000));
        assert_eq!(
            drain(&mut h),
            vec![
                HoldbackOutput::ReleaseExpertInput,
                HoldbackOutput::LocalUserActive(true)
            ]
        );
    }
}
