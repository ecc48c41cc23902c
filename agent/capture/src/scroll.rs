//! Finding moved content (scrolls) between the screen the expert has and the
//! new one, for `Copy` rectangles.
//!
//! Real screens rarely scroll edge to edge: a browser or an HMI scrolls its
//! main area between a fixed header and a fixed sidebar whose edges fall
//! anywhere, not on tile boundaries, and a sidebar or a status line may
//! change in the same update. So the search looks at a narrow strip first:
//!
//! 1. per band of changed rows, the tile column that changed in most rows
//!    is the strip; its rows, old and new, are hashed, and rows whose old
//!    content is unique vote for a shift (`new row y shows old row y + dy`);
//! 2. each row whose strip matches at that shift (verified byte for byte)
//!    grows left and right for as long as it still matches; the columns
//!    most changed rows reach are what moved, so the copy stops exactly at
//!    the fixed sidebar's edge, wherever that is, and rows that match in the
//!    strip only by chance are left out; runs of rows that reach that far
//!    become copies;
//! 3. the tile columns the copy fixed are no longer damage; whatever still
//!    differs (a sidebar highlight, the rows that scrolled in) is sent as
//!    pixels. The band is searched again, outside the columns already
//!    copied, for another pane that moved by another amount.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

use crate::encoder::TILE;

/// Bands of changed rows closer than this are one band for scroll detection:
/// a scrolled list has unchanged blank rows between its items.
const SCROLL_BAND_GAP: usize = 32;
/// A band must be at least this tall to look for a scroll in it.
const MIN_SCROLL_BAND: usize = 16;
/// A scroll is believed only when at least this many distinct rows agree on it.
const MIN_SCROLL_VOTES: u32 = 4;
/// A run of shifted rows shorter than this is sent as pixels: a `Copy` costs
/// a rectangle header and splits the damage into more rectangles.
const MIN_COPY_ROWS: usize = 4;
/// A copy narrower than this is not worth its header and the split damage.
const MIN_COPY_WIDTH: usize = 16;
/// Strips tried per band: the columns that changed most, in turn, until
/// this many were tried (whether or not they found a move).
const MAX_STRIPS_PER_BAND: usize = 4;

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Area {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Rows `dst` show what old rows starting at `src_y` showed (same columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyRun {
    pub dst: Area,
    pub src_y: usize,
}

/// The screen before and after this update, in the source's format, rows
/// packed: the new rows are all in `new`; an old row is in `previous` when it
/// changed (at the index `previous_at` gives) and else equals the new one.
pub(crate) struct Screens<'a> {
    pub new: &'a [u8],
    pub previous: &'a [u8],
    pub previous_at: &'a [u32],
    /// `previous_at` of a row that did not change.
    pub unchanged: u32,
    pub width: usize,
    pub bpp: usize,
}

impl Screens<'_> {
    fn row_bytes(&self) -> usize {
        self.width * self.bpp
    }

    fn new_row(&self, y: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.new[y * rb..(y + 1) * rb]
    }

    fn old_row(&self, y: usize) -> &[u8] {
        let rb = self.row_bytes();
        match self.previous_at[y] {
            i if i == self.unchanged => self.new_row(y),
            i => &self.previous[i as usize * rb..(i as usize + 1) * rb],
        }
    }
}

/// Row hashes reused between updates.
#[derive(Debug, Default)]
pub(crate) struct ScrollSearch {
    old_hashes: Vec<u64>,
    new_hashes: Vec<u64>,
}

impl ScrollSearch {
    /// Finds moved content in bands of changed rows; returns copies in the
    /// order they must be applied and clears from `masks` the tile columns
    /// they fix.
    pub fn find(&mut self, s: &Screens<'_>, masks: &mut [u128]) -> Vec<CopyRun> {
        let h = masks.len();
        self.old_hashes.resize(h, 0);
        self.new_hashes.resize(h, 0);
        let mut copies = Vec::new();
        let mut y = 0;
        while y < h {
            if masks[y] == 0 {
                y += 1;
                continue;
            }
            // Extend the band over gaps shorter than SCROLL_BAND_GAP.
            let start = y;
            let mut end = y + 1;
            let mut probe = end;
            while probe < h && probe < end + SCROLL_BAND_GAP {
                if masks[probe] != 0 {
                    end = probe + 1;
                }
                probe += 1;
            }
            y = end;
            if end - start >= MIN_SCROLL_BAND {
                self.band(s, masks, start..end, &mut copies);
            }
        }
        copies
    }

    /// Searches one band: strips in the columns that changed most, outside
    /// the columns already copied.
    fn band(
        &mut self,
        s: &Screens<'_>,
        masks: &mut [u128],
        rows: std::ops::Range<usize>,
        copies: &mut Vec<CopyRun>,
    ) {
        let mut tried = 0u128;
        // Column ranges (pixels) copied in this band: later copies keep out
        // of them, so no copy reads pixels another one already wrote.
        let mut taken: Vec<(usize, usize)> = Vec::new();
        for _ in 0..MAX_STRIPS_PER_BAND {
            let Some(col) = busiest_column(&masks[rows.clone()], tried) else {
                return;
            };
            tried |= 1 << col;
            // The strip: the tile column, minus what is already taken.
            let (mut x0, mut x1) = (col * TILE, ((col + 1) * TILE).min(s.width));
            for &(a, b) in &taken {
                if a <= x0 && x0 < b {
                    x0 = b;
                }
                if a < x1 && x1 <= b {
                    x1 = a;
                }
            }
            if x1 <= x0 || taken.iter().any(|&(a, b)| a < x1 && x0 < b) {
                continue;
            }
            let (b0, b1) = (x0 * s.bpp, x1 * s.bpp);
            for row in rows.clone() {
                self.old_hashes[row] = xxh3_64(&s.old_row(row)[b0..b1]);
                self.new_hashes[row] = xxh3_64(&s.new_row(row)[b0..b1]);
            }
            let Some(dy) = self.vote_shift(masks, rows.clone(), col) else {
                continue;
            };
            // Where the strip may grow: up to the nearest taken columns.
            let lo = taken.iter().filter(|t| t.1 <= x0).map(|t| t.1).max();
            let hi = taken.iter().filter(|t| t.0 >= x1).map(|t| t.0).min();
            let (lo, hi) = (lo.unwrap_or(0), hi.unwrap_or(s.width));
            let extents = self.extents(s, rows.clone(), dy, (x0, x1), (lo, hi));
            let changed: Vec<(usize, usize)> = extents
                .iter()
                .enumerate()
                .filter(|&(i, _)| masks[rows.start + i] != 0)
                .filter_map(|(_, e)| *e)
                .collect();
            let Some((xa, xb)) = moved_columns(&changed) else {
                continue;
            };
            if xb - xa < MIN_COPY_WIDTH {
                continue;
            }
            let mut found = Vec::new();
            let covers = |i: usize| extents[i].is_some_and(|(a, b)| a <= xa && xb <= b);
            for (r0, r1) in runs(rows.clone(), masks, covers) {
                let run = CopyRun {
                    dst: Area {
                        x: xa,
                        y: r0,
                        w: xb - xa,
                        h: r1 - r0,
                    },
                    src_y: (r0 as isize + dy) as usize,
                };
                clear_fixed(s, masks, &run);
                found.push(run);
            }
            if !found.is_empty() {
                taken.push((xa, xb));
            }
            // Rows moving up are copied top first, rows moving down bottom
            // first, so no run reads rows another one already wrote.
            if dy < 0 {
                found.reverse();
            }
            copies.append(&mut found);
        }
    }

    /// The shift `dy` (new row `y` shows old row `y + dy`) most rows of the
    /// band agree on in the strip of tile column `col`, counting only rows
    /// whose old strip is unique.
    fn vote_shift(
        &self,
        masks: &[u128],
        rows: std::ops::Range<usize>,
        col: usize,
    ) -> Option<isize> {
        let mut old_rows: HashMap<u64, Option<usize>> = HashMap::with_capacity(rows.len());
        for row in rows.clone() {
            old_rows
                .entry(self.old_hashes[row])
                .and_modify(|v| *v = None)
                .or_insert(Some(row));
        }
        let mut votes: HashMap<isize, u32> = HashMap::new();
        for row in rows {
            if masks[row] & (1 << col) == 0 || self.new_hashes[row] == self.old_hashes[row] {
                continue;
            }
            if let Some(Some(src)) = old_rows.get(&self.new_hashes[row]) {
                *votes.entry(*src as isize - row as isize).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .filter(|&(dy, n)| n >= MIN_SCROLL_VOTES && dy != 0)
            // Ties: prefer the smaller shift, then the upward one (stable).
            .max_by_key(|&(dy, n)| (n, std::cmp::Reverse(dy.unsigned_abs()), dy > 0))
            .map(|(dy, _)| dy)
    }

    /// Per row of `rows`: when its new strip `x0..x1` equals the old row
    /// `dy` away (hash, then byte for byte), the columns around the strip,
    /// within `lo..hi`, where the two rows still agree.
    fn extents(
        &self,
        s: &Screens<'_>,
        rows: std::ops::Range<usize>,
        dy: isize,
        (x0, x1): (usize, usize),
        (lo, hi): (usize, usize),
    ) -> Vec<Option<(usize, usize)>> {
        let bpp = s.bpp;
        rows.clone()
            .map(|row| {
                let src = row as isize + dy;
                if src < rows.start as isize || src >= rows.end as isize {
                    return None;
                }
                let (new, old) = (s.new_row(row), s.old_row(src as usize));
                let strip = x0 * bpp..x1 * bpp;
                if self.new_hashes[row] != self.old_hashes[src as usize]
                    || new[strip.clone()] != old[strip]
                {
                    return None;
                }
                let left = last_diff(&new[lo * bpp..x0 * bpp], &old[lo * bpp..x0 * bpp])
                    .map_or(lo, |i| lo + i / bpp + 1);
                let right = first_diff(&new[x1 * bpp..hi * bpp], &old[x1 * bpp..hi * bpp])
                    .map_or(hi, |i| x1 + i / bpp);
                Some((left, right))
            })
            .collect()
    }
}

/// The columns that moved, from how far each changed row matches: the
/// span that covers the most pixels of those rows (rows that reach less far
/// than it go as pixels). Rows whose strip matched only by chance (blank
/// there, not elsewhere) reach less far; rows whose neighbours happen to
/// match too (a blank sidebar row) reach further; neither moves the edges.
/// Spans tried: every tenth of the sorted left and right ends.
fn moved_columns(extents: &[(usize, usize)]) -> Option<(usize, usize)> {
    let mut lefts: Vec<usize> = extents.iter().map(|e| e.0).collect();
    let mut rights: Vec<usize> = extents.iter().map(|e| e.1).collect();
    lefts.sort_unstable();
    rights.sort_unstable_by(|a, b| b.cmp(a));
    let n = extents.len();
    let mut best: Option<((usize, usize), usize)> = None;
    for i in 0..=10 {
        for j in 0..=10 {
            let (l, r) = (
                *lefts.get(i * n.saturating_sub(1) / 10)?,
                rights[j * (n - 1) / 10],
            );
            if r < l + MIN_COPY_WIDTH {
                continue;
            }
            let rows = extents.iter().filter(|e| e.0 <= l && r <= e.1).count();
            let score = rows * (r - l);
            if best.is_none_or(|(_, b)| score > b) {
                best = Some(((l, r), score));
            }
        }
    }
    best.map(|(span, _)| span)
}

/// Runs of rows in `rows` where `covers` (by index from `rows.start`) holds,
/// at least [`MIN_COPY_ROWS`] long and containing a changed row. Ascending.
fn runs(
    rows: std::ops::Range<usize>,
    masks: &[u128],
    covers: impl Fn(usize) -> bool,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut run: Option<(usize, bool)> = None;
    for row in rows.start..=rows.end {
        let matches = row < rows.end && covers(row - rows.start);
        let changed = matches && masks.get(row).is_some_and(|m| *m != 0);
        match (matches, run) {
            (true, None) => run = Some((row, changed)),
            (true, Some((r0, c))) => run = Some((r0, c || changed)),
            (false, Some((r0, c))) => {
                if c && row - r0 >= MIN_COPY_ROWS {
                    out.push((r0, row));
                }
                run = None;
            }
            (false, None) => {}
        }
    }
    out
}

/// The tile column that changed in most rows of `masks`, leaving out those
/// in `tried`.
fn busiest_column(masks: &[u128], tried: u128) -> Option<usize> {
    let mut counts = [0u32; 128];
    for &m in masks {
        let mut bits = m & !tried;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            counts[b] += 1;
            bits &= bits - 1;
        }
    }
    let (col, &n) = counts
        .iter()
        .enumerate()
        .max_by_key(|&(i, n)| (*n, std::cmp::Reverse(i)))?;
    (n > 0).then_some(col)
}

/// Recomputes the masks of the rows `c` writes: a tile column stays damage
/// only where new and old still differ outside the copied columns.
fn clear_fixed(s: &Screens<'_>, masks: &mut [u128], c: &CopyRun) {
    let bpp = s.bpp;
    let (xa, xb) = (c.dst.x, c.dst.x + c.dst.w);
    for (row, mask) in masks.iter_mut().enumerate().skip(c.dst.y).take(c.dst.h) {
        let (new, old) = (s.new_row(row), s.old_row(row));
        let mut bits = *mask;
        while bits != 0 {
            let t = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let (t0, t1) = (t * TILE, ((t + 1) * TILE).min(s.width));
            let differs =
                |a: usize, b: usize| a < b && new[a * bpp..b * bpp] != old[a * bpp..b * bpp];
            if !differs(t0, t1.min(xa)) && !differs(t0.max(xb), t1) {
                *mask &= !(1 << t);
            }
        }
    }
}

/// Bytes compared per step when looking for the first or last difference:
/// slice equality over a block is a fast `memcmp`.
const DIFF_BLOCK: usize = 64;

/// Index of the first byte where `a` and `b` (same length) differ.
pub(crate) fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    let mut base = 0;
    for (x, y) in a.chunks(DIFF_BLOCK).zip(b.chunks(DIFF_BLOCK)) {
        if x != y {
            return x.iter().zip(y).position(|(p, q)| p != q).map(|i| base + i);
        }
        base += x.len();
    }
    None
}

/// Index of the last byte where `a` and `b` (same length) differ.
pub(crate) fn last_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    let mut end = a.len();
    for (x, y) in a.rchunks(DIFF_BLOCK).zip(b.rchunks(DIFF_BLOCK)) {
        let start = end - x.len();
        if x != y {
            return x
                .iter()
                .zip(y)
                .rposition(|(p, q)| p != q)
                .map(|i| start + i);
        }
        end = start;
    }
    None
}
