//! uinput injection and evdev local input.
