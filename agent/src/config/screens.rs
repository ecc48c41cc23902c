//! `[[screens]]`: where each of several screens sits in the desktop the
//! device's compositor makes of them (weston.ini `[output]` positions,
//! `xrandr --pos`), so the expert's input lands on the screen they look at.

use serde::Deserialize;

/// One `[[screens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenPosition {
    /// The connector as the kernel names it (`HDMI-A-1`), or
    /// `cardN/CONNECTOR` when the device has several cards.
    pub connector: String,
    /// Its top-left corner in the desktop, in pixels.
    pub x: u16,
    pub y: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::parse(text, std::path::Path::new("agent.toml"))
    }

    #[test]
    fn screens_are_placed_by_connector_and_nothing_else() {
        let c = parse(
            "[[screens]]\nconnector = \"DSI-1\"\nx = 0\ny = 0\n\
             [[screens]]\nconnector = \"HDMI-A-1\"\nx = 0\ny = 480\n",
        )
        .unwrap();
        assert_eq!(
            c.screens[1],
            ScreenPosition {
                connector: "HDMI-A-1".into(),
                x: 0,
                y: 480
            }
        );
        let e = parse("[[screens]]\nconnector = \"A\"\nx = -1\ny = 0\n").unwrap_err();
        assert!(e.to_string().contains("agent.toml:3:5"), "{e}");
        assert!(parse("[[screens]]\nconnector = \"A\"\nx = 0\ny = 0\nz = 1\n").is_err());
    }
}
