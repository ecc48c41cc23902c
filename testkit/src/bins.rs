//! The workspace's programs (`shoulder-agent`, `shoulder`) for tests that run
//! them as child processes.
//!
//! Cargo names a binary to a test (`CARGO_BIN_EXE_<name>`) only within its
//! own package, and these tests live in `shoulder-tests`; so they take the
//! binary cargo built in the same profile, next to the test executable
//! (`target/<profile>/<name>`). A workspace test run (`cargo test
//! --workspace`, `cargo nextest run --workspace`, `scripts/test`) builds
//! both, with the synthetic screen in the agent; a run of `-p shoulder-tests`
//! alone does not: build them first (the panic below says how).

use std::path::{Path, PathBuf};

/// The `shoulder-agent` binary of this build.
pub fn agent() -> PathBuf {
    built(
        "shoulder-agent",
        "cargo build -p shoulder-agent --features synthetic",
    )
}

/// The `shoulder` client binary of this build.
pub fn client() -> PathBuf {
    built("shoulder", "cargo build -p shoulder")
}

/// `target/<profile>/<name>`, from the test executable's own path
/// (`target/<profile>/deps/<test>`).
///
/// # Panics
/// When the binary is not there: the test cannot run without it.
fn built(name: &str, build: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{}: not built; run the workspace's tests, or `{build}` (same profile) first",
        path.display()
    );
    path
}
