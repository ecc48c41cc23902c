# nooelint: oelint.var.bbclassextend - a device service: no native or nativesdk variant
SUMMARY = "Shoulder remote assistance agent"
DESCRIPTION = "Shows the device screen to a trusted technician and hands over \
               control only when the person at the device agrees. Runs as a \
               hardened systemd service configured by /etc/shoulder/agent.toml."
SECTION = "net"

inherit cargo cargo-update-recipe-crates systemd features_check

# After the inherits: it sets cargo's build mode, which the classes assign.
require recipes-shoulder/include/shoulder-source.inc
# Every crates.io package of the workspace Cargo.lock, fetched by bitbake so
# the build runs offline (cargo --frozen). Regenerate with
# yocto-layer/scripts/update-crates-inc or `bitbake -c update_crates shoulder-agent`.
require shoulder-agent-crates.inc

SRC_URI += "file://shoulder-agent.service \
            file://shoulder-agent-tmpfiles.conf \
            file://shoulder-agent-modules.conf \
            "

# The service, its sandbox and the state directory setup are systemd's.
REQUIRED_DISTRO_FEATURES = "systemd"

# Only the agent crate of the workspace, only its binary.
CARGO_BUILD_FLAGS += "--package shoulder-agent --bin shoulder-agent"

# uinput: remote control (the expert's keyboard and pointer). Without it the
# device can still be viewed; set PACKAGECONFIG:remove = "uinput" for
# view-only products whose kernel lacks uinput.
# jpeg: photographs and video go as JPEG first on slow links and are made
# exact once still (about 29 KB). PACKAGECONFIG:remove = "jpeg" for
# products where the technician must only ever see exact pixels.
# `broker`: sessions through the plant's MQTT broker ([broker] in
# agent.toml; docs/fleet.md), about 300 KiB. Off by default.
# `type-text`: text the technician has typed for the person (`shoulder
# type`), pressed as keys of the device's keyboard layout
# (input.keyboard_layout; 21 XKB layouts), about 37 KiB. Off by default.
# `call`: the device calls a technician's `shoulder listen` (`ctl call`,
# help_desk in agent.toml) where nobody can reach it and there is no
# broker. Off by default.
PACKAGECONFIG ??= "uinput jpeg"
PACKAGECONFIG[uinput] = ",,,,kernel-module-uinput"
PACKAGECONFIG[jpeg] = ""
PACKAGECONFIG[broker] = ""
PACKAGECONFIG[type-text] = ""
PACKAGECONFIG[call] = ""
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'jpeg', '', '--no-default-features', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'broker', '--features broker', '', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'type-text', '--features type-text', '', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'call', '--features call', '', d)}"

SYSTEMD_SERVICE:${PN} = "shoulder-agent.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/shoulder-agent ${D}${bindir}/shoulder-agent

    install -d ${D}${systemd_system_unitdir}
    sed -e 's,@BINDIR@,${bindir},g' -e 's,@SYSCONFDIR@,${sysconfdir},g' \
        ${SHOULDER_UNPACKDIR}/shoulder-agent.service > ${D}${systemd_system_unitdir}/shoulder-agent.service
    chmod 0644 ${D}${systemd_system_unitdir}/shoulder-agent.service

    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${SHOULDER_UNPACKDIR}/shoulder-agent-tmpfiles.conf ${D}${nonarch_libdir}/tmpfiles.d/shoulder-agent.conf

    if ${@bb.utils.contains('PACKAGECONFIG', 'uinput', 'true', 'false', d)}; then
        install -d ${D}${nonarch_libdir}/modules-load.d
        install -m 0644 ${SHOULDER_UNPACKDIR}/shoulder-agent-modules.conf ${D}${nonarch_libdir}/modules-load.d/shoulder-agent.conf
    fi

    # Mount point for the persistent state partition on read-only root
    # file systems; the service's StateDirectory= otherwise creates it.
    install -d -m 0700 ${D}${localstatedir}/lib/shoulder
}

FILES:${PN} += "${nonarch_libdir}/tmpfiles.d/shoulder-agent.conf \
                ${nonarch_libdir}/modules-load.d/shoulder-agent.conf \
                ${localstatedir}/lib/shoulder \
                "

# The agent refuses to start without its policy file; device builders
# replace its contents with a bbappend to shoulder-agent-conf.
RDEPENDS:${PN} += "shoulder-agent-conf"
