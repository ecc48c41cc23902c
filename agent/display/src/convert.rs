//! Conversion of every supported pixel format to the wire format, XRGB8888
//! little-endian (bytes B, G, R, X). The X byte is left as the source has it
//! for 32-bit formats (the wire ignores it) and zero otherwise.

use embedded_graphics::pixelcolor::RgbColor;

use crate::format::PixelFormat;

/// Converts one row: `src` holds `n` pixels of `format`, `dst` is `n * 4` bytes.
pub fn row_to_xrgb8888(format: PixelFormat, src: &[u8], dst: &mut [u8]) {
    match format {
        PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => dst.copy_from_slice(src),
        PixelFormat::Xbgr8888 | PixelFormat::Abgr8888 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                d.copy_from_slice(&[s[2], s[1], s[0], s[3]]);
            }
        }
        PixelFormat::Rgb565 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(2)) {
                let [b, g, r, x] = rgb565_to_xrgb(u16::from_le_bytes([s[0], s[1]])).to_le_bytes();
                d.copy_from_slice(&[b, g, r, x]);
            }
        }
    }
}

/// One RGB565 pixel as 0x00RRGGBB, widening each channel so that full
/// intensity stays full (0x1f → 0xff), as [`PixelFormat::decode`] does.
#[inline]
pub fn rgb565_to_xrgb(p: u16) -> u32 {
    pixel_to_xrgb(PixelFormat::Rgb565, &p.to_le_bytes())
}

/// One pixel (`format.bytes_per_pixel()` bytes) as 0x00RRGGBB: the colour
/// [`PixelFormat::decode`] reads, packed.
#[inline]
pub fn pixel_to_xrgb(format: PixelFormat, px: &[u8]) -> u32 {
    let c = format.decode(px);
    (u32::from(c.r()) << 16) | (u32::from(c.g()) << 8) | u32::from(c.b())
}

/// Sets the X byte of every XRGB8888 pixel to zero (the hashed form).
pub fn zero_x(xrgb: &mut [u8]) {
    for px in xrgb.chunks_exact_mut(4) {
        px[3] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few colours, each as (B, G, R) and what each format stores.
    const COLOURS: [(u8, u8, u8); 5] = [
        (0, 0, 0),
        (0xff, 0xff, 0xff),
        (0x12, 0x34, 0x56),
        (0xff, 0, 0),
        (0, 0x80, 0xff),
    ];

    fn encode(format: PixelFormat, (b, g, r): (u8, u8, u8)) -> Vec<u8> {
        match format {
            PixelFormat::Xrgb8888 => vec![b, g, r, 0x77],
            PixelFormat::Argb8888 => vec![b, g, r, 0x10],
            PixelFormat::Xbgr8888 => vec![r, g, b, 0x99],
            PixelFormat::Abgr8888 => vec![r, g, b, 0xff],
            PixelFormat::Rgb565 => {
                let v = (u16::from(r) >> 3) << 11 | (u16::from(g) >> 2) << 5 | u16::from(b) >> 3;
                v.to_le_bytes().to_vec()
            }
        }
    }

    fn expected(format: PixelFormat, (b, g, r): (u8, u8, u8)) -> [u8; 3] {
        if format == PixelFormat::Rgb565 {
            let (r, g, b) = (r >> 3, g >> 2, b >> 3);
            [
                (b << 3) | (b >> 2),
                (g << 2) | (g >> 4),
                (r << 3) | (r >> 2),
            ]
        } else {
            [b, g, r]
        }
    }

    #[test]
    fn every_format_converts_rows_and_pixels() {
        for format in PixelFormat::ALL {
            let src: Vec<u8> = COLOURS.iter().flat_map(|c| encode(format, *c)).collect();
            let mut dst = vec![0u8; COLOURS.len() * 4];
            row_to_xrgb8888(format, &src, &mut dst);
            for (i, c) in COLOURS.iter().enumerate() {
                let want = expected(format, *c);
                assert_eq!(&dst[i * 4..i * 4 + 3], &want, "{format} colour {c:?}");
                let bpp = format.bytes_per_pixel();
                let px = pixel_to_xrgb(format, &src[i * bpp..(i + 1) * bpp]);
                assert_eq!(
                    px,
                    u32::from_le_bytes([want[0], want[1], want[2], 0]),
                    "{format}"
                );
            }
        }
    }

    #[test]
    fn rgb565_extremes_widen_to_full_range() {
        assert_eq!(rgb565_to_xrgb(0xffff), 0x00ff_ffff);
        assert_eq!(rgb565_to_xrgb(0xf800), 0x00ff_0000);
        assert_eq!(rgb565_to_xrgb(0x07e0), 0x0000_ff00);
        assert_eq!(rgb565_to_xrgb(0x001f), 0x0000_00ff);
        assert_eq!(rgb565_to_xrgb(0), 0);
    }

    #[test]
    fn fourcc_round_trips() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
        }
        assert_eq!(PixelFormat::Xrgb8888.fourcc(), 0x3432_5258);
    }
}
