//! The demo kiosk screen, drawn with embedded-graphics.
