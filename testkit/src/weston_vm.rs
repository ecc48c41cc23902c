//! The Weston and Xorg variant of the QEMU image (`image/build-weston`):
//! the same kernel and busybox initramfs with the agent, plus a Debian root
//! filesystem on a virtio disk that `image/init` runs Weston (`WESTON=1`:
//! DRM backend, kiosk-shell) or Xorg (`XORG=1`: modesetting) from instead
//! of the demo kiosk app.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent_vm::{AGENT_TOML_PATH, PLANT_CA_PATH, agent_image_or_skip, guest_ok};
use crate::qemu::{Image, Vm, VmConfig, image_dir};

/// The disk `image/build-weston` makes, in the image directory.
pub const WESTON_DISK: &str = "weston.ext4";
/// Where a test's `weston.ini` goes (`image/init` passes it to Weston).
pub const WESTON_INI_PATH: &str = "/etc/shoulder/weston.ini";
/// The Wayland environment of a client in the guest (run chrooted into the
/// Weston root, see [`weston_client`]).
const CLIENT_ENV: &str = "XDG_RUNTIME_DIR=/run/xdg WAYLAND_DISPLAY=wayland-0";

/// The image with the agent and the Weston disk, or `None` after printing
/// why `test` is skipped (a panic with `SHOULDER_REQUIRE_IMAGE=1`).
pub fn weston_image_or_skip(test: &str) -> Option<(Image, PathBuf)> {
    let image = agent_image_or_skip(test)?;
    let disk = image_dir().join(WESTON_DISK);
    if !disk.is_file() {
        let why = format!("no Weston disk {} (run image/build-weston)", disk.display());
        if std::env::var("SHOULDER_REQUIRE_IMAGE").is_ok_and(|v| v == "1") {
            panic!("{test}: {why}");
        }
        eprintln!("skipping {test}: {why}");
        return None;
    }
    Some((image, disk))
}

/// A boot that runs Weston from `disk` with `weston_args` (e.g.
/// `--use-pixman`), the `weston.ini` `ini` if given, the Wayland client
/// command `app` once Weston is up, and the agent with `agent_toml` and
/// the plant CA `ca_pem`. The disk is attached with `snapshot=on`: the
/// guest's writes never reach the file.
pub fn weston_vm_config(
    disk: &Path,
    weston_args: &str,
    ini: Option<&str>,
    app: &str,
    agent_toml: String,
    ca_pem: &[u8],
) -> VmConfig {
    let mut config = root_disk_config(disk, agent_toml, ca_pem)
        .env("WESTON=1")
        .env(&format!("WESTON_ARGS=\"{weston_args}\""))
        .env(&format!("WESTON_APP=\"{app}\""));
    if let Some(ini) = ini {
        config = config.file(WESTON_INI_PATH, ini, 0o644);
    }
    config
}

/// A boot that runs Xorg (modesetting driver, display `:0`) from the same
/// root filesystem `disk`, the X client command `app` once it is up, and
/// the agent as for [`weston_vm_config`].
pub fn xorg_vm_config(disk: &Path, app: &str, agent_toml: String, ca_pem: &[u8]) -> VmConfig {
    root_disk_config(disk, agent_toml, ca_pem)
        .env("XORG=1")
        .env(&format!("XORG_APP=\"{app}\""))
}

/// The root filesystem `disk` attached (`snapshot=on`), the agent's config
/// and the plant CA.
fn root_disk_config(disk: &Path, agent_toml: String, ca_pem: &[u8]) -> VmConfig {
    VmConfig {
        memory_mib: 1024,
        ..VmConfig::default()
    }
    .qemu_args([
        "-drive".to_string(),
        format!(
            "file={},if=none,id=wroot,format=raw,snapshot=on",
            disk.display()
        ),
        "-device".to_string(),
        "virtio-blk-pci,drive=wroot".to_string(),
    ])
    .file(AGENT_TOML_PATH, agent_toml, 0o644)
    .file(PLANT_CA_PATH, ca_pem.to_vec(), 0o644)
}

/// Whether the READY line says Weston is up.
pub fn weston_started(vm: &Vm) -> Result<(), String> {
    started(vm, "weston", "Weston")
}

/// Whether the READY line says Xorg is up.
pub fn xorg_started(vm: &Vm) -> Result<(), String> {
    started(vm, "xorg", "Xorg")
}

fn started(vm: &Vm, state: &str, what: &str) -> Result<(), String> {
    if vm.ready_line().contains(&format!("kiosk={state}")) {
        Ok(())
    } else {
        Err(format!(
            "{what} did not start: {}\n{}",
            vm.ready_line(),
            vm.serial_log()
        ))
    }
}

/// Starts the X client `command` in the background in the guest (in the
/// root filesystem, display `:0`; its output goes to `log`).
pub fn x_client(vm: &mut Vm, command: &str, log: &str, within: Duration) {
    guest_ok(
        vm,
        &format!(
            "chroot /weston /usr/bin/env DISPLAY=:0 sh -c '{command}' >{log} 2>&1 </dev/null &"
        ),
        within,
    );
}

/// Starts the Wayland client `command` in the background in the guest
/// (in the Weston root; its output goes to `log`, a path seen from both
/// roots, e.g. `/tmp/events.log`).
pub fn weston_client(vm: &mut Vm, command: &str, log: &str, within: Duration) {
    guest_ok(
        vm,
        &format!(
            "chroot /weston /usr/bin/env {CLIENT_ENV} sh -c '{command}' >{log} 2>&1 </dev/null &"
        ),
        within,
    );
}
