//! The desktop app.
pub fn run(_start: crate::cli::GuiStart) -> Result<(), String> {
    Err("todo".into())
}
