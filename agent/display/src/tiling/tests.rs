//! The fast span copies checked against per-pixel reference addresses
//! written straight from the documented geometry (see the module docs), in
//! pixels and tile positions rather than the byte arithmetic of the fast
//! code, so a slip in one is not repeated in the other.

use super::*;

const ALL: [Tiling; 4] = [Tiling::Linear, Tiling::IntelX, Tiling::IntelY, Tiling::Vc4T];

/// Where pixel (`x`, `y`) starts, one pixel at a time.
fn reference_offset(t: Tiling, pitch: usize, bpp: usize, x: usize, y: usize) -> usize {
    match t {
        Tiling::Linear => y * pitch + x * bpp,
        // 4 KiB tiles, 512 bytes × 8 rows, row-major; rows linear inside.
        Tiling::IntelX => {
            let b = x * bpp;
            let tile = (y / 8) * (pitch / 512) + b / 512;
            tile * 4096 + (y % 8) * 512 + b % 512
        }
        // 4 KiB tiles, 128 bytes × 32 rows, row-major; inside, 16-byte
        // (OWORD) columns of 32 rows, column-major.
        Tiling::IntelY => {
            let b = x * bpp;
            let tile = (y / 32) * (pitch / 128) + b / 128;
            tile * 4096 + ((b % 128) / 16) * 512 + (y % 32) * 16 + b % 16
        }
        Tiling::Vc4T => {
            // A micro-tile is 64 bytes: 4×4 pixels at 32 bpp, 8×4 at 16.
            let (uw, uh) = if bpp == 4 { (4, 4) } else { (8, 4) };
            let (ux, uy) = (x / uw, y / uh);
            // A 4 KiB tile is 8×8 micro-tiles; rows of tiles alternate
            // left-to-right (even) and right-to-left (odd).
            let (tx, ty) = (ux / 8, uy / 8);
            let across = pitch / 128;
            let column = if ty % 2 == 0 { tx } else { across - 1 - tx };
            // Subtiles (4×4 micro-tiles) by position, "bottom" being the
            // first rows in memory: even rows BL, TL, TR, BR; odd rows TR,
            // BR, BL, TL.
            #[derive(PartialEq)]
            enum Q {
                Bl,
                Tl,
                Tr,
                Br,
            }
            let q = match ((ux / 4) % 2 == 1, (uy / 4) % 2 == 1) {
                (false, false) => Q::Bl,
                (false, true) => Q::Tl,
                (true, true) => Q::Tr,
                (true, false) => Q::Br,
            };
            let order = if ty % 2 == 0 {
                [Q::Bl, Q::Tl, Q::Tr, Q::Br]
            } else {
                [Q::Tr, Q::Br, Q::Bl, Q::Tl]
            };
            let sub = order.iter().position(|o| *o == q).unwrap();
            let utile = (uy % 4) * 4 + ux % 4;
            let inside = (y % uh) * uw * bpp + (x % uw) * bpp;
            (ty * across + column) * 4096 + sub * 1024 + utile * 64 + inside
        }
    }
}

/// A picture whose every byte differs from its neighbours'.
fn picture(width: usize, height: usize, bpp: usize, seed: u32) -> Vec<u8> {
    (0..width * height * bpp)
        .map(|i| {
            let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            (v >> 13) as u8
        })
        .collect()
}

/// `pic` put into a tiled buffer pixel by pixel with the reference; the
/// bytes no pixel lands on are 0xEE.
fn tile_by_reference(
    t: Tiling,
    pitch: usize,
    bpp: usize,
    w: usize,
    h: usize,
    pic: &[u8],
) -> Vec<u8> {
    let layout = TiledLayout::new(t, pitch, bpp).unwrap();
    let mut buf = vec![0xEE; layout.buffer_len(w, h)];
    for y in 0..h {
        for x in 0..w {
            let at = reference_offset(t, pitch, bpp, x, y);
            let from = (y * w + x) * bpp;
            buf[at..at + bpp].copy_from_slice(&pic[from..from + bpp]);
        }
    }
    buf
}

/// Sizes that are not whole tiles, several tile rows (so VC4's odd rows
/// are there) and columns, and a pitch with spare tiles on the right.
fn cases(t: Tiling, bpp: usize) -> Vec<(usize, usize, usize)> {
    let (tw, _) = t.tile_size();
    let pitch_for = |w: usize, spare: usize| (w * bpp).div_ceil(tw) * tw + spare * tw;
    let mut v = Vec::new();
    for (w, h) in [(37, 45), (301, 70), (1, 1), (200, 33)] {
        v.push((w, h, pitch_for(w, 0)));
        v.push((w, h, pitch_for(w, 1)));
    }
    v
}

#[test]
fn the_reference_is_a_bijection_into_the_buffer() {
    for t in ALL {
        for bpp in [2, 4] {
            for (w, h, pitch) in cases(t, bpp) {
                let len = TiledLayout::new(t, pitch, bpp).unwrap().buffer_len(w, h);
                let mut seen = vec![false; len];
                for y in 0..h {
                    for x in 0..w {
                        let at = reference_offset(t, pitch, bpp, x, y);
                        for (b, seen) in seen[at..at + bpp].iter_mut().enumerate() {
                            assert!(!*seen, "{t} {w}x{h}: byte {} twice", at + b);
                            *seen = true;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn offsets_match_the_reference() {
    for t in ALL {
        for bpp in [2, 4] {
            for (w, h, pitch) in cases(t, bpp) {
                let layout = TiledLayout::new(t, pitch, bpp).unwrap();
                for y in 0..h {
                    for x in 0..w {
                        assert_eq!(
                            layout.offset(x, y),
                            reference_offset(t, pitch, bpp, x, y),
                            "{t} bpp {bpp} pitch {pitch} at ({x}, {y})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn hand_worked_vc4_addresses() {
    // 32 bpp, two tiles across (pitch 256).
    let l = TiledLayout::new(Tiling::Vc4T, 256, 4).unwrap();
    // Row 0 of tile 0: bottom-left subtile first.
    assert_eq!(l.offset(0, 0), 0);
    assert_eq!(l.offset(4, 0), 64); // the next micro-tile
    assert_eq!(l.offset(0, 1), 16); // the next row of the micro-tile
    assert_eq!(l.offset(0, 16), 1024); // top-left subtile second
    assert_eq!(l.offset(16, 16), 2048); // top-right third
    assert_eq!(l.offset(16, 0), 3072); // bottom-right last
    // Tile row 1 goes right to left: its right tile comes first, top-right
    // subtile first.
    assert_eq!(l.offset(48, 48), 8192);
    assert_eq!(l.offset(16, 48), 4096 * 3);
    assert_eq!(l.offset(32, 32), 8192 + 2048); // bottom-left of the right tile
}

#[test]
fn detile_gives_back_the_picture() {
    for t in ALL {
        for bpp in [2, 4] {
            for (w, h, pitch) in cases(t, bpp) {
                let pic = picture(w, h, bpp, 7);
                let tiled = tile_by_reference(t, pitch, bpp, w, h, &pic);
                let layout = TiledLayout::new(t, pitch, bpp).unwrap();
                let mut out = vec![0; w * h * bpp];
                layout
                    .detile_rows(&tiled, 0, w, 0..h, &mut out, w * bpp)
                    .unwrap();
                assert!(out == pic, "{t} bpp {bpp} {w}x{h} pitch {pitch}");
                // A window, as a CRTC offset shows it.
                if w > 3 && h > 2 {
                    let (x0, y0, ww, wh) = (3, 2, w - 3, h - 2);
                    let mut staging = Vec::new();
                    layout
                        .detile_into(&tiled, (x0, y0), (ww, wh), &mut staging)
                        .unwrap();
                    for y in 0..wh {
                        let want = &pic[((y0 + y) * w + x0) * bpp..((y0 + y) * w + w) * bpp];
                        assert_eq!(
                            &staging[y * ww * bpp..(y + 1) * ww * bpp],
                            want,
                            "{t} window row {y}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn retile_changes_only_the_rectangle_and_round_trips() {
    for t in ALL {
        for bpp in [2, 4] {
            for (w, h, pitch) in cases(t, bpp) {
                if w < 5 || h < 5 {
                    continue;
                }
                let before = picture(w, h, bpp, 1);
                let drawn = picture(w, h, bpp, 99);
                let mut tiled = tile_by_reference(t, pitch, bpp, w, h, &before);
                let layout = TiledLayout::new(t, pitch, bpp).unwrap();
                let rect = Rect {
                    x: 3,
                    y: 1,
                    width: w - 5,
                    height: h - 3,
                };
                // The banner draws on a linear staging copy of a window
                // starting at (2, 1): hand it the matching part of `drawn`.
                let origin = (2, 1);
                let sw = w - origin.0;
                let mut staging = Vec::new();
                for y in origin.1..h {
                    staging.extend_from_slice(&drawn[(y * w + origin.0) * bpp..(y * w + w) * bpp]);
                }
                layout
                    .retile_rect(&staging, sw * bpp, origin, rect, &mut tiled)
                    .unwrap();
                // Expected: `before` with the rectangle from `drawn`.
                let mut mixed = before.clone();
                for y in rect.y..rect.y + rect.height {
                    let r = (y * w + rect.x) * bpp..(y * w + rect.x + rect.width) * bpp;
                    mixed[r.clone()].copy_from_slice(&drawn[r]);
                }
                let want = tile_by_reference(t, pitch, bpp, w, h, &mixed);
                assert!(
                    tiled == want,
                    "{t} bpp {bpp} {w}x{h} pitch {pitch}: bytes outside the rectangle changed, or inside it are wrong"
                );
                let mut back = vec![0; w * h * bpp];
                layout
                    .detile_rows(&tiled, 0, w, 0..h, &mut back, w * bpp)
                    .unwrap();
                assert!(back == mixed, "{t} round trip");
            }
        }
    }
}

#[test]
fn short_buffers_and_bad_pitches_are_errors_not_panics() {
    let l = TiledLayout::new(Tiling::Vc4T, 256, 4).unwrap();
    let mut out = vec![0; 64 * 4 * 40];
    assert!(matches!(
        l.detile_rows(&[0; 4096], 0, 64, 0..40, &mut out, 256),
        Err(LayoutError::TooShort { .. })
    ));
    let src = vec![0; l.buffer_len(64, 40)];
    assert!(matches!(
        l.detile_rows(&src, 1, 64, 0..40, &mut out, 260),
        Err(LayoutError::WiderThanPitch { .. })
    ));
    assert!(matches!(
        TiledLayout::new(Tiling::IntelX, 7680 + 128, 4),
        Err(LayoutError::Pitch { .. })
    ));
    assert!(matches!(
        TiledLayout::new(Tiling::IntelY, 7680, 3),
        Err(LayoutError::PixelSize { .. })
    ));
    let mut dst = src.clone();
    let rect = Rect {
        x: 0,
        y: 0,
        width: 8,
        height: 8,
    };
    assert!(matches!(
        l.retile_rect(&[0; 16], 32, (0, 0), rect, &mut dst),
        Err(LayoutError::OutsidePicture { .. })
    ));
}

#[test]
fn modifiers_the_cpu_can_read_are_accepted() {
    assert_eq!(Tiling::from_modifier(0), Ok(Tiling::Linear));
    assert_eq!(Tiling::from_modifier(MOD_INVALID), Ok(Tiling::Linear));
    assert_eq!(
        Tiling::from_modifier(0x0100_0000_0000_0001),
        Ok(Tiling::IntelX)
    );
    assert_eq!(
        Tiling::from_modifier(0x0100_0000_0000_0002),
        Ok(Tiling::IntelY)
    );
    assert_eq!(
        Tiling::from_modifier(0x0700_0000_0000_0001),
        Ok(Tiling::Vc4T)
    );
}

#[test]
fn compressed_and_unknown_modifiers_are_refused_by_name() {
    for (modifier, named) in [
        (
            0x0100_0000_0000_0004_u64,
            "Intel Y/Yf-tiled with render compression (CCS)",
        ),
        (
            0x0100_0000_0000_0006,
            "Intel gen12 Y-tiled with render compression (CCS)",
        ),
        (0x0100_0000_0000_0003, "Intel Yf-tiled"),
        (0x0800_0000_0000_0001, "ARM AFBC"),
        (0x0200_0000_0000_1234, "AMD"),
        (0x0700_0000_0000_0006, "Broadcom UIF"),
        (0x0700_0000_0000_2004, "Broadcom SAND"),
        (0x0300_0000_0060_6015, "NVIDIA"),
        (0x2a00_0000_0000_0001, "unknown vendor"),
    ] {
        let e = Tiling::from_modifier(modifier).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&format!("0x{modifier:016x}")), "{text}");
        assert!(text.contains(named), "{text}");
        assert!(text.contains("--use-pixman"), "{text}");
        assert!(text.contains("WLR_DRM_NO_MODIFIERS=1"), "{text}");
        assert!(text.contains("AccelMethod"), "{text}");
    }
}
