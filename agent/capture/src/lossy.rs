//! Lossy rectangles for slow links (sans-I/O).
//!
//! A photograph or a video frame costs 2 to 4 bytes a pixel however well it
//! is compressed without loss: a whole-screen picture is 3.6 MB, two
//! minutes on a 256 kbit/s plant Wi-Fi link. For an expert that takes
//! [`Encoding::Jpeg`](shoulder_proto::msg::Encoding::Jpeg), the encoder
//! sends photo-like areas (a tile stream of over a byte a pixel) as JPEG at
//! a quality chosen from the link's speed, remembers which tiles the
//! expert has only approximately ([`Approx`]), and sends those tiles exact
//! once they stopped changing for a while, a few at a time so fresh changes
//! are never stuck behind a refinement.
//!
//! [`LinkEstimate`] measures the link from the updates themselves: the
//! expert asks for the next update once it has the previous one, so the
//! time from sending an update to the next request is a round trip plus
//! the update's time on the wire. [`policy`] turns the estimate into the
//! encoder's setting: exact pixels on fast links, JPEG of falling quality
//! on slower ones.

use std::time::{Duration, Instant};

use crate::encoder::TILE;
use crate::scroll::Area;

/// How the encoder treats photo-like areas when lossy rectangles are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lossy {
    /// JPEG quality, 1 (smallest) to 100.
    pub quality: u8,
    /// A tile sent lossy is sent exact once it has not changed (nor been
    /// sent lossy again) for this long.
    pub refine_after: Duration,
    /// At most this many pixels of refinement go with one update (whole
    /// tiles, at least one): the rest follows in later updates, so a
    /// refinement holds up fresh changes for about one update's time.
    pub refine_pixels: usize,
    /// A photo-like area whose exact tile stream is smaller than this goes
    /// exact all the same: the link carries it in a blink (a thumbnail on
    /// a fast link), and it need not be sent twice.
    pub exact_below_bytes: usize,
}

/// How long an area must stay unchanged before its exact pixels are sent:
/// long enough that a video or a slideshow is not sent twice per frame,
/// short enough that a picture that stopped is exact before anyone reads
/// it closely.
pub const REFINE_AFTER: Duration = Duration::from_millis(300);

/// Refinement goes in pieces the link carries in this long: a change made
/// meanwhile waits at most about this for the piece ahead of it, and each
/// piece is large against the round trip that comes with every update.
pub const REFINE_SHARE: Duration = Duration::from_millis(250);

/// An area that the link carries exact within this long is sent exact.
pub const EXACT_WITHIN: Duration = Duration::from_millis(50);

/// The link is fast enough for exact pixels everywhere above this many bits
/// per second: a whole photograph (about 3.6 MB lossless at 1080p) takes
/// under a third of a second.
pub const LOSSLESS_ABOVE_BPS: u64 = 100_000_000;

/// What the encoder does for a link of `bps` bits per second (`None`: not
/// measured yet). `None` in the result: exact pixels only.
///
/// Before the first measurement photo-like areas go lossy at a middle
/// quality: the first screen is the largest update of a session, and on a
/// slow link its exact photographs would take minutes; on a fast link the
/// refinement follows a third of a second later. Once measured, an area
/// goes lossy only when its exact form would take the link more than
/// [`EXACT_WITHIN`].
pub fn policy(bps: Option<u64>) -> Option<Lossy> {
    let quality = match bps {
        Some(b) if b >= LOSSLESS_ABOVE_BPS => return None,
        None => 60,
        Some(b) if b < 1_000_000 => 35,
        Some(b) if b < 4_000_000 => 50,
        Some(b) if b < 16_000_000 => 65,
        Some(_) => 80,
    };
    // Refinement per update: what the link carries in REFINE_SHARE, at the
    // 2 bytes a pixel photographs take exact; at least one tile.
    let per_update_bytes = bps.map_or(usize::MAX, |b| {
        (b as f64 / 8.0 * REFINE_SHARE.as_secs_f64()) as usize
    });
    let exact_below_bytes = bps.map_or(0, |b| {
        (b as f64 / 8.0 * EXACT_WITHIN.as_secs_f64()) as usize
    });
    Some(Lossy {
        quality,
        refine_after: REFINE_AFTER,
        refine_pixels: (per_update_bytes / 2).max(TILE * TILE),
        exact_below_bytes,
    })
}

/// The link's speed, from how long updates take to be asked for again.
#[derive(Debug, Clone, Default)]
pub struct LinkEstimate {
    /// The update in flight: when it was sent and its bytes.
    in_flight: Option<(Instant, usize)>,
    /// Shortest turnaround of a small update: a round trip, near enough.
    min_turnaround: Option<Duration>,
    /// From updates large enough to measure the bandwidth.
    bps: Option<f64>,
    /// The most any update showed the link carries (bytes over the whole
    /// turnaround): a floor until a large update measures it.
    floor_bps: Option<f64>,
}

/// Updates smaller than this measure the round trip, not the bandwidth.
const MIN_SAMPLE_BYTES: usize = 16 * 1024;

impl LinkEstimate {
    pub fn new() -> Self {
        Self::default()
    }

    /// An update of `bytes` (as framed on the wire) was handed to the
    /// connection at `now`.
    pub fn sent(&mut self, now: Instant, bytes: usize) {
        self.in_flight = Some((now, bytes));
    }

    /// The expert asked for the next update at `now`.
    pub fn requested(&mut self, now: Instant) {
        let Some((at, bytes)) = self.in_flight.take() else {
            return;
        };
        let turnaround = now.saturating_duration_since(at);
        let floor = bytes as f64 * 8.0 / turnaround.as_secs_f64().max(1e-6);
        self.floor_bps = Some(self.floor_bps.map_or(floor, |f| f.max(floor)));
        if bytes < MIN_SAMPLE_BYTES {
            // Small updates measure the round trip.
            let rtt = self
                .min_turnaround
                .map_or(turnaround, |m| m.min(turnaround));
            self.min_turnaround = Some(rtt);
            return;
        }
        // The wire time is the turnaround less a round trip (none known
        // yet: the whole turnaround, an underestimate of the speed); never
        // counted as less than a quarter of the turnaround, so a round trip
        // measured low cannot make a slow link look infinitely fast.
        let rtt = self.min_turnaround.unwrap_or_default();
        let wire = turnaround.saturating_sub(rtt).max(turnaround / 4);
        let secs = wire.as_secs_f64().max(1e-6);
        let sample = bytes as f64 * 8.0 / secs;
        self.bps = Some(match self.bps {
            // Quick to learn the link got slower, slower to believe it got
            // faster: a slow update costs seconds, an exact one a few bytes.
            Some(old) if sample < old => old * 0.3 + sample * 0.7,
            Some(old) => old * 0.7 + sample * 0.3,
            None => sample,
        });
    }

    /// Bits per second, once an update large enough to tell was measured;
    /// until then, at least what the small ones showed (`None` before the
    /// first update came back).
    pub fn bits_per_second(&self) -> Option<u64> {
        self.bps.or(self.floor_bps).map(|b| b as u64)
    }

    /// The shortest turnaround of a small update (about a round trip).
    pub fn round_trip(&self) -> Option<Duration> {
        self.min_turnaround
    }
}

/// Which tiles the expert has only approximately, per tile row: a bit per
/// [`TILE`]-pixel column, and when the last approximation in the row went
/// out.
#[derive(Debug, Default, Clone)]
pub(crate) struct Approx {
    rows: Vec<u128>,
    sent_at: Vec<Option<Instant>>,
    width: usize,
    height: usize,
}

/// Tile columns `x0..x1` (pixels) touch, as a mask.
fn columns(x0: usize, x1: usize) -> u128 {
    if x1 <= x0 {
        return 0;
    }
    let (c0, c1) = (x0 / TILE, x1.div_ceil(TILE));
    let run = c1 - c0;
    if run >= 128 {
        u128::MAX << c0
    } else {
        ((1u128 << run) - 1) << c0
    }
}

/// The tiles (first, end) that `start..start + len` covers whole along an
/// edge of `edge` pixels; the last tile, cut by the edge, is whole when the
/// span reaches the edge.
fn whole_tiles(start: usize, len: usize, edge: usize) -> (usize, usize) {
    let end = start + len;
    let last = if end >= edge {
        edge.div_ceil(TILE)
    } else {
        end / TILE
    };
    (start.div_ceil(TILE), last)
}

impl Approx {
    /// Forgets everything: a new screen of `width`×`height`.
    pub fn reset(&mut self, width: usize, height: usize) {
        let rows = height.div_ceil(TILE);
        self.rows = vec![0; rows];
        self.sent_at = vec![None; rows];
        self.width = width;
        self.height = height;
    }

    pub fn is_empty(&self) -> bool {
        self.rows.iter().all(|&m| m == 0)
    }

    /// `a` went out lossy at `now`: every tile it touches is approximate.
    pub fn mark(&mut self, a: Area, now: Instant) {
        if a.w == 0 || a.h == 0 {
            return;
        }
        let cols = columns(a.x, a.x + a.w);
        for tr in a.y / TILE..(a.y + a.h).div_ceil(TILE).min(self.rows.len()) {
            self.rows[tr] |= cols;
            self.sent_at[tr] = Some(now);
        }
    }

    /// `a` went out exact: the tiles it covers whole are exact now (a tile
    /// cut by the screen's edge is whole when `a` reaches the edge).
    pub fn exact(&mut self, a: Area) {
        if a.w == 0 || a.h == 0 || self.is_empty() {
            return;
        }
        let (c0, c1) = whole_tiles(a.x, a.w, self.width);
        let (r0, r1) = whole_tiles(a.y, a.h, self.height);
        if c1 <= c0 {
            return;
        }
        let cols = columns(c0 * TILE, c1 * TILE);
        for tr in r0..r1.min(self.rows.len()) {
            self.rows[tr] &= !cols;
        }
    }

    /// A copy moves what the expert has in `src_y..` to `dst`: where any of
    /// the source was approximate, the destination is now.
    pub fn copied(&mut self, dst: Area, src_y: usize, now: Instant) {
        if self.is_empty() {
            return;
        }
        let cols = columns(dst.x, dst.x + dst.w);
        let src = src_y / TILE..(src_y + dst.h).div_ceil(TILE).min(self.rows.len());
        if self.rows[src].iter().any(|&m| m & cols != 0) {
            self.mark(dst, now);
        }
    }

    /// Whether every tile of pixel rows `rows` is exact.
    pub fn rows_exact(&self, rows: std::ops::Range<usize>) -> bool {
        if rows.is_empty() {
            return true;
        }
        let trs = rows.start / TILE..rows.end.div_ceil(TILE).min(self.rows.len());
        self.rows[trs].iter().all(|&m| m == 0)
    }

    /// Whether some approximation is old enough to be refined at `now`.
    pub fn any_due(&self, now: Instant, after: Duration) -> bool {
        self.rows
            .iter()
            .zip(&self.sent_at)
            .any(|(&m, t)| m != 0 && t.is_some_and(|t| now.saturating_duration_since(t) >= after))
    }

    /// Tile-aligned areas to send exact at `now`: approximate tiles last sent
    /// at least `after` ago that `changed(tile row)` (a mask of the tile
    /// columns changing in this update) leaves alone, in screen order, up to
    /// `budget` pixels (at least one tile when any is due).
    pub fn due(
        &self,
        now: Instant,
        after: Duration,
        budget: usize,
        changed: impl Fn(usize) -> u128,
    ) -> Vec<Area> {
        let mut out = Vec::new();
        let mut spent = 0usize;
        for (tr, (&m, t)) in self.rows.iter().zip(&self.sent_at).enumerate() {
            if m == 0 || !t.is_some_and(|t| now.saturating_duration_since(t) >= after) {
                continue;
            }
            let y = tr * TILE;
            let h = TILE.min(self.height - y);
            let mut bits = m & !changed(tr);
            while bits != 0 {
                let c = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let x = c * TILE;
                if x >= self.width {
                    break;
                }
                let w = TILE.min(self.width - x);
                if spent > 0 && spent + w * h > budget {
                    return out;
                }
                spent += w * h;
                match out.last_mut() {
                    // Neighbours in a row go as one rectangle.
                    Some(a @ Area { .. }) if a.y == y && a.x + a.w == x => a.w += w,
                    _ => out.push(Area { x, y, w, h }),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(x: usize, y: usize, w: usize, h: usize) -> Area {
        Area { x, y, w, h }
    }

    #[test]
    fn approximations_are_refined_once_still_a_budget_at_a_time() {
        let t0 = Instant::now();
        let after = Duration::from_millis(300);
        let mut a = Approx::default();
        a.reset(200, 130);
        a.mark(area(10, 10, 100, 60), t0);
        // Columns 0..=1, tile rows 0..=1.
        assert!(!a.rows_exact(0..1) && !a.rows_exact(64..65) && a.rows_exact(128..130));
        assert!(!a.any_due(t0 + Duration::from_millis(299), after));
        let later = t0 + after;
        assert!(a.any_due(later, after));
        // Everything due in one go with room for it: one rectangle per row.
        let all = a.due(later, after, usize::MAX, |_| 0);
        assert_eq!(all, vec![area(0, 0, 128, 64), area(0, 64, 128, 64)]);
        // A budget of one tile: one tile, then the next.
        assert_eq!(a.due(later, after, 1, |_| 0), vec![area(0, 0, 64, 64)]);
        // Tiles changing in this update wait.
        assert_eq!(
            a.due(later, after, usize::MAX, |tr| if tr == 0 { 1 } else { 0 }),
            vec![area(64, 0, 64, 64), area(0, 64, 128, 64)]
        );
        // Sent exact: only whole tiles count.
        a.exact(area(0, 0, 127, 64));
        assert_eq!(
            a.due(later, after, usize::MAX, |_| 0)[0],
            area(64, 0, 64, 64)
        );
        for r in all {
            a.exact(r);
        }
        assert!(a.is_empty() && !a.any_due(later, after));
    }

    #[test]
    fn edge_tiles_and_copies() {
        let t0 = Instant::now();
        let mut a = Approx::default();
        a.reset(100, 100);
        // The last column and row are cut by the edge: an area reaching the
        // edge covers them.
        a.mark(area(70, 70, 30, 30), t0);
        assert_eq!(
            a.due(t0, Duration::ZERO, usize::MAX, |_| 0),
            vec![area(64, 64, 36, 36)]
        );
        a.exact(area(64, 64, 36, 36));
        assert!(a.is_empty());
        // A copy from exact rows leaves the destination exact; from
        // approximate ones, makes it approximate.
        a.mark(area(0, 0, 10, 10), t0);
        a.copied(area(0, 70, 100, 20), 64, t0);
        assert!(a.rows_exact(64..100));
        a.copied(area(0, 70, 100, 20), 0, t0);
        assert!(!a.rows_exact(64..100));
    }

    #[test]
    fn the_estimate_follows_the_link_and_the_policy_follows_the_estimate() {
        let t0 = Instant::now();
        let mut e = LinkEstimate::new();
        assert_eq!(e.bits_per_second(), None);
        assert!(policy(None).is_some(), "unmeasured: lossy, to be safe");
        // A small update: 50 ms round trip, a floor of 80 kbit/s.
        e.sent(t0, 500);
        e.requested(t0 + Duration::from_millis(50));
        assert_eq!(e.bits_per_second(), Some(80_000));
        // 100 kB in 50 ms + 3.2 s: 256 kbit/s.
        let t1 = t0 + Duration::from_secs(1);
        e.sent(t1, 100_000);
        e.requested(t1 + Duration::from_millis(3_175));
        let bps = e.bits_per_second().unwrap();
        assert!((240_000..270_000).contains(&bps), "{bps}");
        let slow = policy(Some(bps)).unwrap();
        assert_eq!(slow.quality, 35);
        assert_eq!(slow.refine_pixels, TILE * TILE, "one tile at a time");
        // A request with nothing in flight is no sample.
        e.requested(t1 + Duration::from_secs(10));
        assert_eq!(e.bits_per_second(), Some(bps));
        // Loopback: a megabyte in 5 ms, a few times: exact pixels.
        let mut t = t1 + Duration::from_secs(20);
        for _ in 0..8 {
            e.sent(t, 1_000_000);
            t += Duration::from_millis(5);
            e.requested(t);
        }
        assert!(e.bits_per_second().unwrap() >= LOSSLESS_ABOVE_BPS);
        assert_eq!(policy(e.bits_per_second()), None);
        let mid = policy(Some(20_000_000)).unwrap();
        assert_eq!(mid.quality, 80);
        assert_eq!(mid.refine_pixels, 312_500);
        // What 20 Mbit/s carries in 50 ms goes exact.
        assert_eq!(mid.exact_below_bytes, 125_000);
        assert_eq!(policy(None).unwrap().exact_below_bytes, 0);
    }
}
