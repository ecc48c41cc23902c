//! The agent in the QEMU image: its config for one boot (plant CA, DRM
//! capture, a listening port QEMU forwards) and booting the image with it.

use crate::qemu::{GUEST_AGENT_PORT, Image, Vm, VmConfig, image_or_skip};

/// Where the image's init looks for the agent's config.
pub const AGENT_TOML_PATH: &str = "/etc/shoulder/agent.toml";
/// Where the config names the plant CA.
pub const PLANT_CA_PATH: &str = "/etc/shoulder/plant-ca.crt";

/// The agent's config for the image: enabled, offers from the plant CA at
/// [`PLANT_CA_PATH`] allowed, listening on [`GUEST_AGENT_PORT`], capturing
/// the DRM scanout, prompts open for 60 s; `device_name`, then the lines of
/// `settings` (keys not set above, e.g. `allow_control = true`).
pub fn agent_toml(device_name: &str, settings: &str) -> String {
    format!(
        r#"enabled = true
allow_offers = true
device_name = "{device_name}"
listen = ["0.0.0.0:{GUEST_AGENT_PORT}"]
plant_ca = ["{PLANT_CA_PATH}"]
capture = "drm"
consent_timeout = "60s"
{settings}
"#
    )
}

/// A boot with the kiosk app at `screen` (`--mode WxH`, then `kiosk_args`),
/// the agent config `agent_toml` and the plant CA `ca_pem`.
pub fn agent_vm_config(
    screen: (u32, u32),
    kiosk_args: &str,
    agent_toml: String,
    ca_pem: &[u8],
) -> VmConfig {
    VmConfig::default()
        .kiosk_args(&format!("--mode {}x{} {kiosk_args}", screen.0, screen.1))
        .file(AGENT_TOML_PATH, agent_toml, 0o644)
        .file(PLANT_CA_PATH, ca_pem.to_vec(), 0o644)
}

/// The image, if it has the agent; else `None` after printing why `test` is
/// skipped (a panic with `SHOULDER_REQUIRE_IMAGE=1`, as
/// [`image_or_skip`]).
pub fn agent_image_or_skip(test: &str) -> Option<Image> {
    let image = image_or_skip(test)?;
    if !image.has_agent() {
        if std::env::var("SHOULDER_REQUIRE_IMAGE").is_ok_and(|v| v == "1") {
            panic!("{test}: the image has no shoulder-agent (image/build left it out)");
        }
        eprintln!("skipping {test}: the image has no shoulder-agent");
        return None;
    }
    Some(image)
}

/// Whether the READY line says the agent is up; the error quotes it and
/// the serial log.
pub fn agent_started(vm: &Vm) -> Result<(), String> {
    if vm.ready_line().contains("agent=yes") {
        Ok(())
    } else {
        Err(format!(
            "the agent did not start: {}\n{}",
            vm.ready_line(),
            vm.serial_log()
        ))
    }
}

/// Boots the image with `config` (see [`agent_vm_config`]) for `test`, or
/// `None` when it is skipped (see [`agent_image_or_skip`]).
///
/// # Panics
/// When the VM does not boot or the agent does not start.
pub fn boot_agent_or_skip(test: &str, config: VmConfig) -> Option<Vm> {
    let image = agent_image_or_skip(test)?;
    let vm = Vm::boot(&image, config).expect("boot");
    if let Err(why) = agent_started(&vm) {
        panic!("{why}");
    }
    Some(vm)
}

/// Waits up to `within` until `expert`'s state satisfies `pred`; panics
/// with the guest's serial log otherwise.
pub fn expect_state(
    vm: &Vm,
    expert: &crate::expert::ClientExpert,
    within: std::time::Duration,
    what: &str,
    pred: impl Fn(shoulder_proto::session::expert::ExpertState) -> bool,
) {
    if let Err(e) = expert.wait_state(within, what, pred) {
        panic!("{e}\nserial log:\n{}", vm.serial_log());
    }
}

/// Runs `command` in the guest (up to `within`) and returns its output;
/// panics unless it exits 0, with the guest's serial log.
pub fn guest_ok(vm: &mut Vm, command: &str, within: std::time::Duration) -> String {
    let out = vm
        .exec(command, within)
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert_eq!(
        out.status,
        0,
        "{command} failed: {}\nserial log:\n{}",
        out.output,
        vm.serial_log()
    );
    out.output
}

/// The expert asks for control and the device grants it through the
/// control socket (`shoulder-agent ctl accept` in the guest).
pub fn control_granted_by_ctl(
    vm: &mut Vm,
    expert: &crate::expert::ClientExpert,
    within: std::time::Duration,
) {
    use shoulder_proto::session::expert::{ControlState, ExpertState, UserAction};
    expert.send(UserAction::RequestControl);
    expect_state(vm, expert, within, "the control prompt", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::Requested { .. }
            }
        )
    });
    guest_ok(vm, "shoulder-agent ctl accept", within);
    expect_state(
        vm,
        expert,
        within,
        "control",
        crate::expert::control_granted,
    );
}
