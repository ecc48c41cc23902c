//! When to capture (sans-I/O): the expert asks for updates one at a time, and
//! the agent answers with the newest screen when something changed, so a slow
//! link never builds a backlog. While a request is pending the screen is
//! polled, fast right after a change or input, then slower and slower up to
//! an idle interval, so an unchanged screen costs almost nothing.

use std::time::{Duration, Instant};

/// Polling and rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingConfig {
    /// Poll interval right after a change or input. Short, because this is
    /// most of the latency of a change (an unchanged check costs about one
    /// frame compare, a sixth of it with sparse probing): 2 ms, half a
    /// 4 ms poll's wait for a few % of a core while a screen changes
    /// (BENCHMARKS.md).
    pub fast_interval: Duration,
    /// Poll interval of an idle screen: what a change costs in latency after
    /// a quiet while, and what an idle session costs in CPU.
    pub idle_interval: Duration,
    /// How long polling stays fast after the last change or input; after it,
    /// each unchanged poll doubles the interval up to `idle_interval`.
    pub fast_for: Duration,
    /// Least time between two updates sent (the update rate cap: 60 Hz by
    /// default); changes in between are coalesced into the next update.
    pub min_update_interval: Duration,
    /// Poll interval while the screen is unavailable (display off).
    pub unavailable_interval: Duration,
    /// How often, while polls are slower than this, the pacer asks a source
    /// that can tell which buffer is on screen (DRM: one GETCRTC, no pixels
    /// read): a page flip after a quiet spell is then seen within this
    /// instead of within `idle_interval`. 10 ms: each look is a wakeup of
    /// the capture thread (0.3–0.4 % of a core for the 80 a second this
    /// makes), which with an idle 1080p screen's polls stays under 1 % of a
    /// core; 4 ms would not (BENCHMARKS.md).
    pub flip_interval: Duration,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            fast_interval: Duration::from_millis(2),
            idle_interval: Duration::from_millis(50),
            fast_for: Duration::from_secs(1),
            min_update_interval: Duration::from_micros(16_667),
            unavailable_interval: Duration::from_secs(1),
            flip_interval: Duration::from_millis(10),
        }
    }
}

impl PacingConfig {
    /// The defaults with an update rate cap of `hz` updates per second
    /// (clamped to 1..=1000).
    pub fn with_max_rate(hz: u32) -> Self {
        Self {
            min_update_interval: Duration::from_micros(1_000_000 / u64::from(hz.clamp(1, 1000))),
            ..Self::default()
        }
    }
}

/// Decides when the capture task captures. Call [`Pacer::request`] on every
/// `UpdateRequested`, [`Pacer::input`] on any input, and after each capture
/// [`Pacer::captured`] (or [`Pacer::unavailable`]); sleep until
/// [`Pacer::poll_timeout`].
#[derive(Debug, Clone)]
pub struct Pacer {
    cfg: PacingConfig,
    /// `Some(full)` while the expert waits for an update.
    pending: Option<bool>,
    due: Option<Instant>,
    interval: Duration,
    last_activity: Option<Instant>,
    last_send: Option<Instant>,
    /// The source can tell which buffer is on screen ([`Pacer::watch_flips`]).
    watching: bool,
    /// When the pacer last captured or looked at the buffer on screen.
    looked_at: Option<Instant>,
    /// The capture now due was brought forward by a page flip.
    flip_capture: bool,
    /// The last flip brought no change (an application flipping the same
    /// picture again and again): flips are not looked at until a change is
    /// sent, so such an application costs no more than polling.
    flips_idle: bool,
}

impl Pacer {
    pub fn new(cfg: PacingConfig) -> Self {
        Self {
            cfg,
            pending: None,
            due: None,
            interval: cfg.fast_interval,
            last_activity: None,
            last_send: None,
            watching: false,
            looked_at: None,
            flip_capture: false,
            flips_idle: false,
        }
    }

    /// Whether the source can tell which buffer is on screen without
    /// capturing: [`Pacer::watch_timeout`] then asks between slow polls.
    pub fn watch_flips(&mut self, watching: bool) {
        self.watching = watching;
        self.flips_idle = false;
    }

    /// When to look at which buffer is on screen next, before the next poll;
    /// `None`: no look (no request, polls already fast, a source that cannot
    /// tell, or flips that brought nothing).
    pub fn watch_timeout(&self) -> Option<Instant> {
        if !self.watching
            || self.flips_idle
            || self.pending.is_none()
            || self.interval <= self.cfg.flip_interval
        {
            return None;
        }
        let at = self.looked_at? + self.cfg.flip_interval;
        self.due.filter(|&d| at < d).map(|_| at)
    }

    /// The buffer on screen was looked at: `Some(true)`, another one than
    /// last captured (a page flip, so capture as soon as allowed);
    /// `Some(false)`, the same; `None`, the source cannot tell (no more
    /// looks until [`Pacer::watch_flips`]).
    pub fn watched(&mut self, now: Instant, flipped: Option<bool>) {
        self.looked_at = Some(now);
        match flipped {
            None => self.watching = false,
            Some(false) => {}
            Some(true) => {
                if self.pending.is_some() {
                    self.flip_capture = true;
                    let at = self.earliest_send(now);
                    self.due = Some(self.due.map_or(at, |d| d.min(at)));
                }
            }
        }
    }

    pub fn config(&self) -> &PacingConfig {
        &self.cfg
    }

    fn earliest_send(&self, now: Instant) -> Instant {
        match self.last_send {
            Some(t) => (t + self.cfg.min_update_interval).max(now),
            None => now,
        }
    }

    /// The expert asked for an update (`incremental = false`: the whole
    /// screen, now).
    pub fn request(&mut self, now: Instant, incremental: bool) {
        let full = !incremental || self.pending == Some(true);
        self.pending = Some(full);
        let at = if full { now } else { self.earliest_send(now) };
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Input happened (the expert's or the person's): the screen is about to
    /// change, so poll fast again.
    pub fn input(&mut self, now: Instant) {
        self.last_activity = Some(now);
        self.interval = self.cfg.fast_interval;
        if self.pending.is_some() {
            let at = self.earliest_send(now + self.cfg.fast_interval);
            self.due = Some(self.due.map_or(at, |d| d.min(at)));
        }
    }

    /// Whether to capture (and encode) now.
    pub fn should_capture(&self, now: Instant) -> bool {
        self.pending.is_some() && self.due.is_some_and(|d| now >= d)
    }

    /// Whether the pending request wants the whole screen.
    pub fn full_requested(&self) -> bool {
        self.pending == Some(true)
    }

    /// A capture was made; `sent`: an update went out (the request is
    /// answered), otherwise nothing had changed.
    pub fn captured(&mut self, now: Instant, sent: bool) {
        self.looked_at = Some(now);
        if std::mem::take(&mut self.flip_capture) && !sent {
            self.flips_idle = true;
        }
        if sent {
            self.flips_idle = false;
            self.pending = None;
            self.due = None;
            self.last_send = Some(now);
            self.last_activity = Some(now);
            self.interval = self.cfg.fast_interval;
            return;
        }
        let quiet = self
            .last_activity
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.fast_for);
        if quiet {
            self.interval = (self.interval * 2).min(self.cfg.idle_interval);
        } else {
            self.interval = self.cfg.fast_interval;
        }
        self.due = self.pending.map(|_| now + self.interval);
    }

    /// The screen could not be captured for now (display off, file being
    /// rewritten): retry slowly, keeping the request.
    pub fn unavailable(&mut self, now: Instant) {
        self.interval = self.cfg.idle_interval;
        self.flip_capture = false;
        self.due = self.pending.map(|_| now + self.cfg.unavailable_interval);
    }

    /// When to capture next; `None` when no update is wanted (sleep until a
    /// request or input arrives).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.and(self.due)
    }

    /// The session stopped viewing: forget the pending request.
    pub fn stop(&mut self) {
        self.pending = None;
        self.due = None;
        self.flip_capture = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_screen_backs_off_and_change_answers_at_once() {
        let cfg = PacingConfig::default();
        let mut p = Pacer::new(cfg);
        let t0 = Instant::now();
        assert_eq!(p.poll_timeout(), None, "nothing requested, nothing to do");
        p.request(t0, false);
        assert!(p.should_capture(t0));
        p.captured(t0, true);
        assert_eq!(p.poll_timeout(), None);
        // Next request right away: the rate cap delays the capture.
        p.request(t0 + Duration::from_millis(2), false);
        assert!(
            p.should_capture(t0 + Duration::from_millis(2)),
            "full requests are not delayed"
        );
        p.captured(t0 + Duration::from_millis(2), true);
        let t1 = t0 + Duration::from_millis(3);
        p.request(t1, false);
        p.captured(t1, true);
        p.request(t1, true);
        assert_eq!(p.poll_timeout(), Some(t1 + cfg.min_update_interval));
        // Unchanged for a long time: the interval grows to the idle one.
        let mut now = t1 + cfg.min_update_interval;
        let mut polls = 0;
        while now < t1 + Duration::from_secs(10) {
            assert!(p.should_capture(now));
            p.captured(now, false);
            polls += 1;
            now = p.poll_timeout().unwrap();
        }
        let last = p.poll_timeout().unwrap() - now;
        assert_eq!(last, Duration::ZERO);
        p.captured(now, false);
        assert_eq!(p.poll_timeout().unwrap() - now, cfg.idle_interval);
        // Fast for 1 s (≈500 polls), then ≈180 idle polls in the other 9 s.
        assert!(polls < 750, "{polls} polls in 10 s of idle screen");
        // Input: fast again.
        p.input(now);
        assert_eq!(p.poll_timeout().unwrap(), now + cfg.fast_interval);
    }

    /// Polls `p` (nothing changes) until it has backed off to the idle
    /// interval; returns the time of the last poll.
    fn go_idle(p: &mut Pacer, mut now: Instant) -> Instant {
        let idle = p.config().idle_interval;
        loop {
            assert!(p.should_capture(now));
            p.captured(now, false);
            let next = p.poll_timeout().unwrap();
            if next - now == idle {
                return now;
            }
            now = next;
        }
    }

    /// A pacer on a source that names its buffers, with a request pending
    /// and polls backed off to the idle interval; and its last poll.
    fn idle_watching(cfg: PacingConfig) -> (Pacer, Instant) {
        let mut p = Pacer::new(cfg);
        p.watch_flips(true);
        let t0 = Instant::now();
        p.request(t0, false);
        let now = go_idle(&mut p, t0);
        (p, now)
    }

    #[test]
    fn an_idle_session_sees_a_page_flip_long_before_its_next_poll() {
        let cfg = PacingConfig::default();
        let (mut p, now) = idle_watching(cfg);
        let poll = p.poll_timeout().unwrap();
        assert_eq!(poll, now + cfg.idle_interval);
        // Looks every flip_interval between the polls; the same buffer
        // changes nothing.
        let look = p.watch_timeout().unwrap();
        assert_eq!(look, now + cfg.flip_interval);
        p.watched(look, Some(false));
        assert!(!p.should_capture(look));
        let look = p.watch_timeout().unwrap();
        assert_eq!(look, now + 2 * cfg.flip_interval);
        // A flip: capture at once, not at the poll 30 ms later.
        p.watched(look, Some(true));
        assert!(p.should_capture(look));
        p.captured(look, true);
        assert_eq!(p.watch_timeout(), None, "answered: nothing pending");
        // Right after a change polls are fast: no looks in between.
        p.request(look, false);
        assert_eq!(p.watch_timeout(), None);
    }

    #[test]
    fn flips_of_the_same_picture_are_not_looked_at_until_a_change() {
        let cfg = PacingConfig::default();
        let (mut p, now) = idle_watching(cfg);
        let look = p.watch_timeout().unwrap();
        assert_eq!(look, now + cfg.flip_interval);
        p.watched(look, Some(true));
        assert!(p.should_capture(look));
        // The flip showed the same picture (an app redrawing at a steady
        // rate): from now on only the polls look.
        p.captured(look, false);
        assert_eq!(p.watch_timeout(), None);
        assert_eq!(p.poll_timeout(), Some(look + cfg.idle_interval));
        // A change found by a poll turns looking on again.
        let poll = look + cfg.idle_interval;
        p.captured(poll, true);
        p.request(poll, false);
        let now = go_idle(&mut p, poll + cfg.min_update_interval);
        assert_eq!(p.watch_timeout(), Some(now + cfg.flip_interval));
        // A source that cannot tell is not asked again.
        p.watched(now + cfg.flip_interval, None);
        assert_eq!(p.watch_timeout(), None);
    }

    #[test]
    fn sources_that_cannot_tell_cost_no_extra_wakeups() {
        let cfg = PacingConfig::default();
        let mut p = Pacer::new(cfg);
        let t0 = Instant::now();
        p.request(t0, false);
        go_idle(&mut p, t0);
        assert_eq!(p.watch_timeout(), None);
    }

    #[test]
    fn display_off_retries_slowly_and_stop_forgets() {
        let cfg = PacingConfig::with_max_rate(30);
        assert_eq!(cfg.min_update_interval, Duration::from_micros(33_333));
        let mut p = Pacer::new(cfg);
        let t0 = Instant::now();
        p.request(t0, false);
        assert!(p.full_requested());
        p.unavailable(t0);
        assert_eq!(p.poll_timeout(), Some(t0 + cfg.unavailable_interval));
        assert!(p.full_requested(), "the request is kept");
        p.stop();
        assert_eq!(p.poll_timeout(), None);
        assert!(!p.should_capture(t0 + Duration::from_secs(5)));
    }
}
