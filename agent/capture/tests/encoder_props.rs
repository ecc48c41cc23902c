//! Random screen changes of every kind (fills, pixel flips, vertical and
//! horizontal moves of regions, size changes) at random sizes and formats:
//! the client's framebuffer always ends up equal to the source.

use proptest::prelude::*;
use shoulder_capture::{Compression, Encoder, Frame, PixelFormat, ScreenGeometry};
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::msg::Message;

#[derive(Debug, Clone)]
enum Change {
    Fill {
        x: u16,
        y: u16,
        w: u16,
        h: u16,
        v: u8,
    },
    Flip {
        x: u16,
        y: u16,
    },
    /// Move rows `y0..y1` of columns `x0..x1` by `dy` (a scroll).
    Scroll {
        x0: u16,
        x1: u16,
        y0: u16,
        y1: u16,
        dy: i16,
    },
    Noise {
        y: u16,
        seed: u8,
    },
    Resize {
        w: u16,
        h: u16,
    },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0u16..300, 0u16..200, 1u16..120, 1u16..90, any::<u8>())
            .prop_map(|(x, y, w, h, v)| Change::Fill { x, y, w, h, v }),
        (0u16..300, 0u16..200).prop_map(|(x, y)| Change::Flip { x, y }),
        (0u16..300, 0u16..300, 0u16..200, 0u16..200, -60i16..60)
            .prop_map(|(x0, x1, y0, y1, dy)| Change::Scroll { x0, x1, y0, y1, dy }),
        (0u16..200, any::<u8>()).prop_map(|(y, seed)| Change::Noise { y, seed }),
        (1u16..300, 1u16..200).prop_map(|(w, h)| Change::Resize { w, h }),
    ]
}

struct Screen {
    w: usize,
    h: usize,
    bpp: usize,
    px: Vec<u8>,
}

impl Screen {
    fn new(w: usize, h: usize, bpp: usize) -> Self {
        let mut px = vec![0u8; w * h * bpp];
        // Structured start: stripes and a gradient, so scrolls find rows.
        for (i, b) in px.iter_mut().enumerate() {
            *b = ((i / bpp / w) * 7 + (i % (w * bpp)) / 5) as u8;
        }
        Self { w, h, bpp, px }
    }

    fn apply(&mut self, c: &Change) {
        let (w, h, bpp) = (self.w, self.h, self.bpp);
        match *c {
            Change::Fill {
                x,
                y,
                w: fw,
                h: fh,
                v,
            } => {
                for yy in usize::from(y).min(h)..(usize::from(y) + usize::from(fh)).min(h) {
                    for xx in usize::from(x).min(w)..(usize::from(x) + usize::from(fw)).min(w) {
                        let i = (yy * w + xx) * bpp;
                        self.px[i..i + bpp].fill(v);
                    }
                }
            }
            Change::Flip { x, y } => {
                if usize::from(x) < w && usize::from(y) < h {
                    self.px[(usize::from(y) * w + usize::from(x)) * bpp] ^= 0xff;
                }
            }
            Change::Scroll { x0, x1, y0, y1, dy } => {
                let (x0, x1) = (
                    usize::from(x0.min(x1)).min(w),
                    usize::from(x0.max(x1)).min(w),
                );
                let (y0, y1) = (
                    usize::from(y0.min(y1)).min(h),
                    usize::from(y0.max(y1)).min(h),
                );
                let old = self.px.clone();
                for y in y0..y1 {
                    let src = y as i64 + i64::from(dy);
                    if src < y0 as i64 || src >= y1 as i64 {
                        continue;
                    }
                    let src = src as usize;
                    let (a, b) = ((y * w + x0) * bpp, (y * w + x1) * bpp);
                    let (sa, sb) = ((src * w + x0) * bpp, (src * w + x1) * bpp);
                    self.px[a..b].copy_from_slice(&old[sa..sb]);
                }
            }
            Change::Noise { y, seed } => {
                if usize::from(y) < h {
                    let row =
                        &mut self.px[usize::from(y) * w * bpp..(usize::from(y) + 1) * w * bpp];
                    let mut s = u32::from(seed) | 1;
                    for b in row {
                        s ^= s << 13;
                        s ^= s >> 17;
                        s ^= s << 5;
                        *b = s as u8;
                    }
                }
            }
            Change::Resize { w, h } => *self = Screen::new(usize::from(w), usize::from(h), bpp),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn client_always_matches_source(
        w in 1usize..300,
        h in 1usize..200,
        format in prop::sample::select(PixelFormat::ALL.to_vec()),
        changes in prop::collection::vec(prop::collection::vec(change(), 1..4), 1..8),
        compression in prop::sample::select(vec![
            Compression::Lz4, Compression::Deflate, Compression::DeflateStream,
        ]),
    ) {
        let (_pair, consent) = shoulder_proto::testing::granted_view();
        let bpp = format.bytes_per_pixel();
        let mut screen = Screen::new(w, h, bpp);
        let mut enc = Encoder::new();
        enc.set_compression(compression);
        let mut fb: Option<Framebuffer> = None;
        for (step, batch) in std::iter::once(Vec::new()).chain(changes).enumerate() {
            for c in &batch {
                screen.apply(c);
            }
            let g = ScreenGeometry { width: screen.w as u32, height: screen.h as u32, format };
            let frame = Frame::new(&screen.px, g, screen.w * bpp).unwrap();
            if let Some(update) = enc.encode(&consent, &frame, false).unwrap() {
                for msg in update.into_messages() {
                    match msg {
                        Message::ScreenInfo(info) => fb = Some(Framebuffer::new(&info).unwrap()),
                        Message::Update(part) => fb.as_mut().unwrap().apply(&part).unwrap(),
                        other => panic!("unexpected {}", other.name()),
                    }
                }
            }
            prop_assert_eq!(
                fb.as_ref().unwrap().normalized(),
                frame.to_xrgb8888(),
                "step {} after {:?}", step, batch
            );
        }
    }
}
