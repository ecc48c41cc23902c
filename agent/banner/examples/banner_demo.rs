//! Shows the consent banner on the real display for a while, then takes it
//! down: a manual and image-test check of the scanout presenters against a
//! running kiosk app.
//!
//! ```text
//! banner_demo [--seconds N] [--view prompt|strip] [--drm DEVICE | --fbdev DEVICE | --kms DEVICE]
//! ```
//!
//! Prints `banner-demo: shown WxH` once the banner is up and
//! `banner-demo: hidden` when it was taken down; exits 1 with a readable
//! line on errors.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoulder_banner::present::{
    BannerPresenter, CaptureScanout, FbdevTarget, KmsPresenter, ScanoutPresenter, ScanoutTarget,
    ScanoutThread,
};
use shoulder_banner::{
    PixelFormat, PromptView, Renderer, ScreenSpec, StripMode, StripView, Style, View,
};
use shoulder_display::drm::{DrmDisplay, DrmOptions};
use shoulder_proto::msg::ConsentKind;

/// Longest run accepted: the demo is for tests and a quick look.
const MAX_SECONDS: u64 = 600;
/// Time left after hiding for buffers still showing the banner to come on
/// screen and be restored.
const LINGER: Duration = Duration::from_millis(1500);

struct Args {
    seconds: u64,
    prompt: bool,
    drm: Option<PathBuf>,
    fbdev: Option<PathBuf>,
    kms: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seconds: 10,
        prompt: true,
        drm: None,
        fbdev: None,
        kms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                a.seconds = value()?
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_SECONDS).contains(s))
                    .ok_or(format!("--seconds takes 1..={MAX_SECONDS}"))?
            }
            "--view" => {
                a.prompt = match value()?.as_str() {
                    "prompt" => true,
                    "strip" => false,
                    other => return Err(format!("--view takes prompt or strip, not {other}")),
                }
            }
            "--drm" => a.drm = Some(value()?.into()),
            "--fbdev" => a.fbdev = Some(value()?.into()),
            "--kms" => a.kms = Some(value()?.into()),
            other => {
                return Err(format!(
                    "unknown argument {other}; see the source for usage"
                ));
            }
        }
    }
    Ok(a)
}

fn view(prompt: bool, left: u32, elapsed: Duration) -> View {
    if prompt {
        View {
            prompt: Some(PromptView {
                kind: ConsentKind::View,
                expert: "Jane Expert".into(),
                how: "plant certificate".into(),
                says: None,
                seconds_left: left,
                arming: false,
                help: None,
                file: None,
            }),
            ..View::default()
        }
    } else {
        View {
            strip: Some(StripView {
                mode: StripMode::Controlling,
                expert: "Jane Expert".into(),
                elapsed,
                stop_hotkey: "Ctrl+Alt+Pause".into(),
                file: None,
            }),
            chat: Some("Checking the printer settings.".into()),
            ..View::default()
        }
    }
}

/// The KMS presenter needs no loop: its plane is its own.
fn run_kms(path: &std::path::Path, args: &Args) -> Result<(), String> {
    let mut kms = KmsPresenter::open(path).map_err(|e| e.to_string())?;
    let (width, height) = kms.screen_size();
    let screen = ScreenSpec {
        width,
        height,
        format: PixelFormat::Xrgb8888,
    };
    let renderer = Renderer::new(screen, Style::default()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let mut announced = false;
    while start.elapsed() < total {
        let left = (total - start.elapsed()).as_secs() as u32 + 1;
        let b = renderer
            .render(&view(args.prompt, left, start.elapsed()))
            .map_err(|e| e.to_string())?;
        kms.show(Arc::new(b)).map_err(|e| e.to_string())?;
        if !announced {
            let how = if kms.uses_overlay() {
                "overlay plane"
            } else {
                "primary plane"
            };
            eprintln!("banner-demo: shown {width}x{height} ({how})");
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    kms.hide().map_err(|e| e.to_string())?;
    eprintln!("banner-demo: hidden");
    drop(kms);
    std::thread::sleep(LINGER);
    eprintln!("banner-demo: 0 ticks/s (KMS plane)");
    Ok(())
}

fn run_with<T: ScanoutTarget + Send + 'static>(
    target: T,
    screen: ScreenSpec,
    args: &Args,
) -> Result<(), String> {
    let renderer = Renderer::new(screen, Style::default()).map_err(|e| e.to_string())?;
    let mut banner = ScanoutThread::spawn(ScanoutPresenter::new(target))
        .map_err(|e| format!("starting the banner thread: {e}"))?;
    let start = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let mut announced = false;
    while start.elapsed() < total {
        let left = (total - start.elapsed()).as_secs() as u32 + 1;
        let b = renderer
            .render(&view(args.prompt, left, start.elapsed()))
            .map_err(|e| e.to_string())?;
        banner.show(Arc::new(b)).map_err(|e| e.to_string())?;
        if let Some(e) = banner.take_errors().into_iter().next() {
            return Err(e.to_string());
        }
        if !announced {
            eprintln!("banner-demo: shown {}x{}", screen.width, screen.height);
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    banner.hide().map_err(|e| e.to_string())?;
    eprintln!("banner-demo: hidden");
    std::thread::sleep(LINGER);
    if let Some(e) = banner.take_errors().into_iter().next() {
        return Err(e.to_string());
    }
    let st = banner.stop();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "banner-demo: {:.0} ticks/s, drawn {}, repaired {}, restored {}, longest tick {} us",
        st.ticks as f64 / secs,
        st.drawn,
        st.repaired,
        st.restored,
        st.max_tick_us
    );
    Ok(())
}

fn main() {
    let result = parse().and_then(|args| {
        if let Some(path) = &args.kms {
            run_kms(path, &args)
        } else if let Some(path) = &args.fbdev {
            let target = FbdevTarget::open(path).map_err(|e| e.to_string())?;
            let (w, h, format) = target.screen();
            run_with(
                target,
                ScreenSpec {
                    width: w,
                    height: h,
                    format,
                },
                &args,
            )
        } else {
            let mut source = DrmDisplay::open_with(DrmOptions {
                device: args.drm.clone(),
                connector: None,
                writable: true,
            })
            .map_err(|e| e.to_string())?;
            let g = source.geometry().map_err(|e| e.to_string())?;
            let screen = ScreenSpec {
                width: g.width,
                height: g.height,
                format: g.format,
            };
            run_with(CaptureScanout::new(source), screen, &args)
        }
    });
    if let Err(e) = result {
        eprintln!("banner-demo: {e}");
        std::process::exit(1);
    }
}
