//! How the picture in the framebuffer is turned on its way to the person.
//!
//! A panel mounted sideways (the usual portrait kiosk) shows the framebuffer
//! turned: the compositor draws its UI rotated into the buffer so that it
//! reads upright on the mounted panel. [`Rotation`] says how far the
//! buffer's picture must be turned **clockwise** to read upright; the
//! expert is sent the upright picture, the banner is laid out upright and
//! drawn turned back, and the expert's pointer maps back to the buffer.
//!
//! ```text
//!  buffer (3×2)      Deg90: turned clockwise      Deg270: counter-clockwise
//!   a b c               d a                           c f
//!   d e f               e b                           b e
//!                       f c                           a d
//! ```

use std::fmt;
use std::str::FromStr;

/// Clockwise turn from the framebuffer's picture to the upright one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rotation {
    #[default]
    Deg0,
    Deg90,
    Deg180,
    Deg270,
}

impl Rotation {
    pub const ALL: [Rotation; 4] = [
        Rotation::Deg0,
        Rotation::Deg90,
        Rotation::Deg180,
        Rotation::Deg270,
    ];

    pub const fn degrees(self) -> u16 {
        match self {
            Rotation::Deg0 => 0,
            Rotation::Deg90 => 90,
            Rotation::Deg180 => 180,
            Rotation::Deg270 => 270,
        }
    }

    pub fn from_degrees(d: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.degrees() == d)
    }

    /// This turn followed by `next`.
    pub const fn then(self, next: Rotation) -> Rotation {
        match (self.degrees() + next.degrees()) % 360 {
            90 => Rotation::Deg90,
            180 => Rotation::Deg180,
            270 => Rotation::Deg270,
            _ => Rotation::Deg0,
        }
    }

    /// Whether width and height trade places.
    pub const fn swaps_axes(self) -> bool {
        matches!(self, Rotation::Deg90 | Rotation::Deg270)
    }

    /// The turn that undoes this one.
    pub const fn inverse(self) -> Self {
        match self {
            Rotation::Deg90 => Rotation::Deg270,
            Rotation::Deg270 => Rotation::Deg90,
            r => r,
        }
    }

    /// The upright size of a `buffer_w`×`buffer_h` buffer.
    pub const fn upright_size(self, buffer_w: u32, buffer_h: u32) -> (u32, u32) {
        if self.swaps_axes() {
            (buffer_h, buffer_w)
        } else {
            (buffer_w, buffer_h)
        }
    }

    /// Where upright pixel (`x`, `y`) is in a `buffer_w`×`buffer_h` buffer.
    /// `x` and `y` must lie in the upright picture.
    #[inline]
    pub const fn to_buffer(self, x: u32, y: u32, buffer_w: u32, buffer_h: u32) -> (u32, u32) {
        match self {
            Rotation::Deg0 => (x, y),
            Rotation::Deg90 => (y, buffer_h - 1 - x),
            Rotation::Deg180 => (buffer_w - 1 - x, buffer_h - 1 - y),
            Rotation::Deg270 => (buffer_w - 1 - y, x),
        }
    }

    /// Where buffer pixel (`x`, `y`) shows in the upright picture.
    #[inline]
    pub const fn to_upright(self, x: u32, y: u32, buffer_w: u32, buffer_h: u32) -> (u32, u32) {
        let (uw, uh) = self.upright_size(buffer_w, buffer_h);
        // The buffer is the upright picture turned back.
        self.inverse().to_buffer(x, y, uw, uh)
    }
}

impl fmt::Display for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.degrees())
    }
}

/// Why a rotation does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rotation {0:?} is not one of 0, 90, 180, 270 (degrees clockwise)")]
pub struct BadRotation(pub String);

impl FromStr for Rotation {
    type Err = BadRotation;
    fn from_str(s: &str) -> Result<Self, BadRotation> {
        s.trim()
            .parse::<u16>()
            .ok()
            .and_then(Self::from_degrees)
            .ok_or_else(|| BadRotation(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 3×2 example of the module docs, turned by hand.
    #[test]
    fn the_documented_example_turns_as_drawn() {
        let buffer = [['a', 'b', 'c'], ['d', 'e', 'f']];
        let upright = |r: Rotation| {
            let (w, h) = r.upright_size(3, 2);
            (0..h)
                .map(|y| {
                    (0..w)
                        .map(|x| {
                            let (bx, by) = r.to_buffer(x, y, 3, 2);
                            buffer[by as usize][bx as usize]
                        })
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(upright(Rotation::Deg0), ["abc", "def"]);
        assert_eq!(upright(Rotation::Deg90), ["da", "eb", "fc"]);
        assert_eq!(upright(Rotation::Deg180), ["fed", "cba"]);
        assert_eq!(upright(Rotation::Deg270), ["cf", "be", "ad"]);
    }

    #[test]
    fn to_upright_undoes_to_buffer_everywhere() {
        for r in Rotation::ALL {
            let (bw, bh) = (5, 3);
            let (uw, uh) = r.upright_size(bw, bh);
            for y in 0..uh {
                for x in 0..uw {
                    let (bx, by) = r.to_buffer(x, y, bw, bh);
                    assert!(bx < bw && by < bh, "{r:?}");
                    assert_eq!(r.to_upright(bx, by, bw, bh), (x, y), "{r:?}");
                }
            }
        }
    }

    #[test]
    fn parses_degrees_and_names_the_choices() {
        assert_eq!("270".parse::<Rotation>(), Ok(Rotation::Deg270));
        assert_eq!(" 90 ".parse::<Rotation>(), Ok(Rotation::Deg90));
        let e = "45".parse::<Rotation>().unwrap_err().to_string();
        assert!(e.contains("0, 90, 180, 270"), "{e}");
    }
}
