//! A file of raw pixels as the screen (`rawfile:PATH@WxH:FORMAT`), mapped and
//! re-read on every capture, like x11vnc's `-rawfb map:`. Benchmarks, tests
//! and latency measurements write frames into the file from outside, with
//! `write()` or, as an application draws into its framebuffer, in place
//! through a mapping ([`RawFileScreen`]).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::source::{CaptureError, Frame, FrameSource, ScreenGeometry, check_frame, frame_len};
use shoulder_display::mmap::Mapping;

/// Raw file capture source.
#[derive(Debug)]
pub struct RawFileSource {
    path: PathBuf,
    geometry: ScreenGeometry,
    pitch: usize,
    needed: usize,
    file: File,
    /// (device, inode) of the mapped file: a writer that replaces the file
    /// (write to a temporary, rename over) gives a new inode, which we follow.
    identity: (u64, u64),
    map: Option<Mapping>,
}

impl RawFileSource {
    /// Opens `path` as a `geometry` screen with rows `pitch` bytes apart. The
    /// file may be shorter for now (being created): captures fail with the
    /// transient [`CaptureError::FileTooShort`] until it is long enough.
    pub fn open(path: &Path, geometry: ScreenGeometry, pitch: usize) -> Result<Self, CaptureError> {
        let row = geometry.width as usize * geometry.format.bytes_per_pixel();
        check_frame(usize::MAX, geometry, pitch).map_err(|source| CaptureError::Frame {
            path: path.to_owned(),
            source,
        })?;
        let needed = frame_len(pitch, row, geometry.height).unwrap_or(usize::MAX);
        let (file, identity) = open_file(path)?;
        Ok(Self {
            path: path.to_owned(),
            geometry,
            pitch,
            needed,
            file,
            identity,
            map: None,
        })
    }

    /// Makes sure the mapping covers a whole frame of the current file.
    fn refresh(&mut self) -> Result<(), CaptureError> {
        let io = |what, source| CaptureError::Io {
            what,
            path: self.path.clone(),
            source,
        };
        // Follow a replaced file; keep the old one if the path is gone for a
        // moment (between unlink and rename).
        if let Ok(meta) = std::fs::metadata(&self.path)
            && (meta.dev(), meta.ino()) != self.identity
        {
            let (file, identity) = open_file(&self.path)?;
            self.file = file;
            self.identity = identity;
            self.map = None;
        }
        // Checked every tick: touching mapped pages past the end of a file
        // that shrank would kill the process with SIGBUS.
        let len = self.file.metadata().map_err(|e| io("stat", e))?.len();
        if len < self.needed as u64 {
            self.map = None;
            return Err(CaptureError::FileTooShort {
                path: self.path.clone(),
                len,
                needed: self.needed as u64,
                geometry: self.geometry,
            });
        }
        if self.map.is_none() {
            self.map = Some(
                Mapping::new(self.file.as_fd(), 0, self.needed, false)
                    .map_err(|e| io("mmap", e))?,
            );
        }
        Ok(())
    }
}

/// The application's side of a raw-file screen: the file sized to hold one
/// frame and mapped shared and writable, so a writer draws into it in place
/// (stores into the mapping, row moves with `memmove`) while a
/// [`RawFileSource`] reads it, as an app draws into the one buffer the
/// display scans out. Draws through `write()` go to the same pages.
#[derive(Debug)]
pub struct RawFileScreen {
    path: PathBuf,
    file: File,
    map: Mapping,
}

impl RawFileScreen {
    /// Creates `path` (or opens it, keeping its content) sized for a
    /// `geometry` frame with rows `pitch` bytes apart (`pitch * height`
    /// bytes), and maps that frame.
    pub fn create(
        path: &Path,
        geometry: ScreenGeometry,
        pitch: usize,
    ) -> Result<Self, CaptureError> {
        check_frame(usize::MAX, geometry, pitch).map_err(|source| CaptureError::Frame {
            path: path.to_owned(),
            source,
        })?;
        // Whole rows, the last one's padding too: drawing code takes a
        // buffer of `pitch * height` bytes.
        let len = pitch.saturating_mul(geometry.height as usize);
        let io = |what, source| CaptureError::Io {
            what,
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| CaptureError::Open {
                path: path.to_owned(),
                source,
            })?;
        if file.metadata().map_err(|e| io("stat", e))?.len() < len as u64 {
            file.set_len(len as u64).map_err(|e| io("resize", e))?;
        }
        let map = Mapping::new(file.as_fd(), 0, len, true).map_err(|e| io("mmap", e))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            map,
        })
    }

    /// The frame as it is now (what a reader of the file sees).
    pub fn pixels(&self) -> &[u8] {
        self.map.bytes()
    }

    /// The frame, to draw into in place.
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        // A writable mapping always hands out its bytes.
        self.map.bytes_mut().unwrap_or_default()
    }

    /// Writes `bytes` at `offset` of the file with `pwrite`, as a writer that
    /// does not map the file draws.
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), CaptureError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|source| CaptureError::Io {
                what: "pwrite",
                path: self.path.clone(),
                source,
            })
    }
}

fn open_file(path: &Path) -> Result<(File, (u64, u64)), CaptureError> {
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_owned(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| CaptureError::Io {
        what: "stat",
        path: path.to_owned(),
        source,
    })?;
    Ok((file, (meta.dev(), meta.ino())))
}

impl FrameSource for RawFileSource {
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        Ok(self.geometry)
    }

    fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
        self.refresh()?;
        let map = self.map.as_ref().map(Mapping::bytes).unwrap_or_default();
        Frame::new(map, self.geometry, self.pitch).map_err(|source| CaptureError::Frame {
            path: self.path.clone(),
            source,
        })
    }

    fn describe(&self) -> String {
        format!(
            "rawfile {} ({}, pitch {})",
            self.path.display(),
            self.geometry,
            self.pitch
        )
    }
}

/// The `*.xrgb` files of `dir` in name order, each checked to be one frame of
/// `w`×`h` XRGB8888 (as `scripts/real-content/render` writes them): what
/// `capture-probe play dir:`, the real-content benchmark and `slow_links`
/// read.
pub fn frame_files(dir: &Path, (w, h): (u32, u32)) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list the frame directory {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list the frame directory {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|x| x == "xrgb") {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(format!(
            "the frame directory {} has no *.xrgb files (raw {w}x{h} XRGB8888 frames)",
            dir.display()
        ));
    }
    files.sort();
    let want = u64::from(w) * u64::from(h) * 4;
    for path in &files {
        let len = std::fs::metadata(path)
            .map_err(|e| format!("cannot read frame {}: {e}", path.display()))?
            .len();
        if len != want {
            return Err(format!(
                "frame {} has {len} bytes, not {want} ({w}x{h} XRGB8888): \
                 render the frames at that size or pass the right --size",
                path.display()
            ));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{PixelFormat, SourceSpec, SpecError};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoulder-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn reads_rewrites_and_survives_shrinking() {
        let path = temp("screen.raw");
        let g = ScreenGeometry {
            width: 4,
            height: 3,
            format: PixelFormat::Rgb565,
        };
        std::fs::write(&path, [1u8; 24]).unwrap();
        let mut src = RawFileSource::open(&path, g, 8).unwrap();
        assert!(src.capture().unwrap().row_eq(2, &[1u8; 8]));
        // Rewritten in place: seen on the next capture.
        std::fs::write(&path, [2u8; 24]).unwrap();
        assert!(src.capture().unwrap().row_eq(0, &[2u8; 8]));
        // Shrunk: a transient error naming the sizes, not SIGBUS.
        std::fs::write(&path, [3u8; 10]).unwrap();
        let err = src.capture().unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("has 10 bytes"), "{err}");
        // Replaced by rename: followed.
        let tmp = temp("screen.raw.new");
        std::fs::write(&tmp, [4u8; 30]).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(src.capture().unwrap().row_eq(1, &[4u8; 8]));
        let spec: SourceSpec = format!("rawfile:{}@4x3:RGB565", path.display())
            .parse()
            .unwrap();
        assert!(crate::open::open(&spec).is_ok());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_mapped_writer_draws_in_place_and_through_write() {
        let path = temp("mapped.raw");
        let _ = std::fs::remove_file(&path);
        let g = ScreenGeometry {
            width: 3,
            height: 2,
            format: PixelFormat::Xrgb8888,
        };
        let mut screen = RawFileScreen::create(&path, g, 16).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32);
        let mut src = RawFileSource::open(&path, g, 16).unwrap();
        assert!(src.capture().unwrap().row_eq(1, &[0u8; 12]));
        screen.pixels_mut()[16..28].fill(7);
        assert!(src.capture().unwrap().row_eq(1, &[7u8; 12]));
        screen.pixels_mut().copy_within(16..28, 0);
        assert!(src.capture().unwrap().row_eq(0, &[7u8; 12]));
        screen.write_at(&[9u8; 12], 16).unwrap();
        assert!(src.capture().unwrap().row_eq(1, &[9u8; 12]));
        assert_eq!(screen.pixels()[16..28], [9u8; 12]);
        // Opening again keeps what is there.
        let again = RawFileScreen::create(&path, g, 16).unwrap();
        assert_eq!(again.pixels()[..12], [7u8; 12]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = RawFileSource::open(
            Path::new("/nonexistent/screen.raw"),
            ScreenGeometry {
                width: 2,
                height: 2,
                format: PixelFormat::Xrgb8888,
            },
            8,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/screen.raw"), "{err}");
    }

    #[test]
    fn spec_parsing_names_the_problem() {
        let ok: SourceSpec = "rawfile:/tmp/a@b.raw@1920x1080:XRGB8888".parse().unwrap();
        assert_eq!(
            ok,
            SourceSpec::RawFile {
                path: "/tmp/a@b.raw".into(),
                geometry: ScreenGeometry {
                    width: 1920,
                    height: 1080,
                    format: PixelFormat::Xrgb8888
                },
                pitch: 1920 * 4,
            }
        );
        assert_eq!(ok.to_string().parse::<SourceSpec>().unwrap(), ok);
        let padded: SourceSpec = "rawfile:/x@10x10:rgb565:64".parse().unwrap();
        assert!(matches!(padded, SourceSpec::RawFile { pitch: 64, .. }));
        assert_eq!(padded.to_string(), "rawfile:/x@10x10:RGB565:64");
        let cases: [(&str, SpecError); 8] = [
            ("rawfile:/x", SpecError::MissingSize("rawfile:/x".into())),
            (
                "rawfile:/x@10x10",
                SpecError::MissingFormat("rawfile:/x@10x10".into()),
            ),
            ("rawfile:@10x10:XRGB8888", SpecError::EmptyPath),
            (
                "rawfile:/x@10by10:XRGB8888",
                SpecError::BadSize("10by10".into()),
            ),
            (
                "rawfile:/x@0x10:XRGB8888",
                SpecError::BadSize("0x10".into()),
            ),
            (
                "rawfile:/x@10x10:YUYV",
                SpecError::UnknownFormat("YUYV".into()),
            ),
            (
                "rawfile:/x@10x10:XRGB8888:12",
                SpecError::BadPitch("12".into()),
            ),
            ("vnc:host", SpecError::UnknownKind("vnc".into())),
        ];
        for (text, want) in cases {
            let err = text.parse::<SourceSpec>().unwrap_err();
            assert_eq!(err, want, "{text}");
            assert!(!err.to_string().is_empty());
        }
        assert!(
            SpecError::MissingFormat("x".into())
                .to_string()
                .contains("XRGB8888")
        );
        assert_eq!(
            "drm:/dev/dri/card1@HDMI-A-1".parse::<SourceSpec>().unwrap(),
            SourceSpec::Drm {
                device: Some("/dev/dri/card1".into()),
                connector: Some("HDMI-A-1".into())
            }
        );
        assert_eq!(
            "drm".parse::<SourceSpec>().unwrap(),
            SourceSpec::Drm {
                device: None,
                connector: None
            }
        );
        assert_eq!(
            "fbdev".parse::<SourceSpec>().unwrap(),
            SourceSpec::Fbdev {
                device: "/dev/fb0".into()
            }
        );
        assert_eq!(
            "synthetic:800x600".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic {
                width: 800,
                height: 600
            }
        );
    }
}
