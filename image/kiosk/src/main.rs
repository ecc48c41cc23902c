//! Demo kiosk app: DRM master, page flips, evdev input.

fn main() {}
