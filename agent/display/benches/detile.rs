//! Detiling benchmark: one 1920×1080 XRGB8888 frame per tiling.
//!
//! `cargo bench -p shoulder-display` prints, per tiling, the time to copy a
//! tiled frame into a linear one (`TiledLayout::detile_into`, what every
//! capture of a tiled scanout buffer costs) and to tile a banner strip back
//! (`retile_rect`, what a banner draw costs), next to one plain copy of the
//! frame. Extra arguments filter tilings by name (`-- vc4`). Run as a test
//! (`cargo test --benches`), it does one small frame per tiling as a smoke
//! test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shoulder_display::tiling::{Rect, TiledLayout, Tiling};

/// Repetitions per measurement (median taken): enough for a stable median
/// on a loaded machine, a few seconds in all.
const REPEATS: usize = 41;
/// Bytes per pixel of XRGB8888.
const BPP: usize = 4;
/// Rows of the banner strip retiled per draw (a 1080p strip is about 48).
const STRIP_ROWS: usize = 48;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn time(mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    median(&mut v)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let (w, h) = if bench { (1920, 1080) } else { (320, 180) };

    let frame: Vec<u8> = (0..w * h * BPP).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut copy = vec![0u8; frame.len()];
    let memcpy = time(|| {
        copy.copy_from_slice(black_box(&frame));
        black_box(&copy);
    });

    println!("\nshoulder-display detiling, {w}×{h} XRGB8888, one core (median of {REPEATS})");
    println!("copy of one linear frame: {} ms\n", ms(memcpy));
    println!("| tiling | detile frame ms | detile / copy | retile {w}×{STRIP_ROWS} strip ms |");
    println!("|---|---:|---:|---:|");
    for t in [Tiling::Linear, Tiling::IntelX, Tiling::IntelY, Tiling::Vc4T] {
        if !filters.is_empty()
            && !filters
                .iter()
                .any(|f| t.name().to_lowercase().contains(&f.to_lowercase()))
        {
            continue;
        }
        let (tile_w, _) = t.tile_size();
        let pitch = (w * BPP).div_ceil(tile_w) * tile_w;
        let layout = TiledLayout::new(t, pitch, BPP).expect("a whole number of tiles");
        // Any bytes do: the copy's cost does not depend on them.
        let mut tiled: Vec<u8> = (0..layout.buffer_len(w, h))
            .map(|i| (i * 13) as u8)
            .collect();
        let mut staging = Vec::new();
        let detile = time(|| {
            layout
                .detile_into(black_box(&tiled), (0, 0), (w, h), &mut staging)
                .expect("the buffer fits");
            black_box(&staging);
        });
        let strip = Rect {
            x: 0,
            y: 0,
            width: w,
            height: STRIP_ROWS.min(h),
        };
        let retile = time(|| {
            layout
                .retile_rect(black_box(&staging), w * BPP, (0, 0), strip, &mut tiled)
                .expect("the strip fits");
            black_box(&tiled);
        });
        println!(
            "| {t} | {} | {:.2} | {} |",
            ms(detile),
            detile.as_secs_f64() / memcpy.as_secs_f64().max(1e-9),
            ms(retile)
        );
    }
}
