//! Opening a source from its [`SourceSpec`]: the one place that names every
//! backend, so the backends depend on [`crate::source`] and nothing depends
//! back on them.

use crate::source::{CaptureError, FrameSource, SourceSpec};

/// Opens the source named by `spec`.
///
/// Without the `synthetic` feature (the device build) a `synthetic` spec
/// still parses, so configurations stay valid, but opening it fails.
pub fn open(spec: &SourceSpec) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(match spec {
        SourceSpec::Drm { device, connector } => Box::new(crate::drm::DrmSource::open(
            device.as_deref(),
            connector.as_deref(),
        )?),
        SourceSpec::Fbdev { device } => Box::new(crate::fbdev::FbdevSource::open(device)?),
        SourceSpec::RawFile {
            path,
            geometry,
            pitch,
        } => Box::new(crate::rawfile::RawFileSource::open(
            path, *geometry, *pitch,
        )?),
        #[cfg(feature = "synthetic")]
        SourceSpec::Synthetic { width, height } => {
            Box::new(crate::synthetic::SyntheticScreen::new(*width, *height))
        }
        #[cfg(not(feature = "synthetic"))]
        SourceSpec::Synthetic { .. } => {
            return Err(CaptureError::Unsupported {
                path: std::path::PathBuf::from("synthetic"),
                detail: "this build has no synthetic screen (a demo and test source: \
                         build with the `synthetic` feature)"
                    .into(),
            });
        }
    })
}
