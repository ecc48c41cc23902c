//! Renders the kiosk screen to a binary PPM file, to look at it:
//! `cargo run -p shoulder-kiosk-ui --example render -- 1024 768 out.ppm`.

use std::time::Duration;

use shoulder_kiosk_ui::{KioskUi, Xrgb8888Canvas};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: render WIDTH HEIGHT OUT.ppm";
    let width: u32 = args.next().ok_or(usage)?.parse()?;
    let height: u32 = args.next().ok_or(usage)?.parse()?;
    let out = args.next().ok_or(usage)?;
    let mut ui = KioskUi::new(width, height);
    let c = ui.layout().counter_button.center();
    for _ in 0..42 {
        ui.tap(c.x, c.y);
    }
    for code in [35, 18, 38, 38, 24] {
        ui.key(code, 1);
    }
    let pitch = width as usize * 4;
    let mut buf = vec![0u8; pitch * height as usize];
    let mut canvas = Xrgb8888Canvas::new(&mut buf, width, height, pitch)?;
    ui.draw(&mut canvas, Duration::from_millis(45_296_700))?;
    let mut ppm = format!("P6\n{width} {height}\n255\n").into_bytes();
    for px in buf.chunks_exact(4) {
        ppm.extend_from_slice(&[px[2], px[1], px[0]]);
    }
    std::fs::write(out, ppm)?;
    Ok(())
}
