# nooelint: oelint.var.bbclassextend - a device application: no native or nativesdk variant
SUMMARY = "Shoulder demo kiosk application"
DESCRIPTION = "A full-screen demo kiosk (DRM master, page flips, touch and \
               keyboard input) to try Shoulder on a device; started at boot \
               by shoulder-kiosk.service."
SECTION = "graphics"

inherit cargo systemd features_check

# After the inherits: it sets cargo's build mode, which the classes assign.
require recipes-shoulder/include/shoulder-source.inc
# The same workspace and Cargo.lock as shoulder-agent, so the same crates.
require recipes-shoulder/shoulder-agent/shoulder-agent-crates.inc
# LICENSE and LIC_FILES_CHKSUM of everything linked into shoulder-kiosk: the
# workspace, each crates.io crate (licence files in the vendored crates) and
# the embedded-graphics font it draws text in. Regenerate with
# yocto-layer/scripts/update-licenses.
require shoulder-kiosk-demo-licenses.inc

SRC_URI += "file://shoulder-kiosk.service"

REQUIRED_DISTRO_FEATURES = "systemd"

# The same workspace as shoulder-agent, built for its kiosk crate only.
# The crates include is shared, so this recipe has no do_update_crates of its
# own: refresh the include from shoulder-agent.
CARGO_BUILD_FLAGS += "--package shoulder-kiosk --bin shoulder-kiosk"

# Extra command line arguments for shoulder-kiosk, e.g. "--card /dev/dri/card1"
# on boards whose display is not the first DRM device.
SHOULDER_KIOSK_ARGS ??= ""

SYSTEMD_SERVICE:${PN} = "shoulder-kiosk.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/shoulder-kiosk ${D}${bindir}/shoulder-kiosk

    install -d ${D}${systemd_system_unitdir}
    sed -e 's,@BINDIR@,${bindir},g' -e 's|@KIOSK_ARGS@|${SHOULDER_KIOSK_ARGS}|g' \
        ${SHOULDER_UNPACKDIR}/shoulder-kiosk.service > ${D}${systemd_system_unitdir}/shoulder-kiosk.service
    chmod 0644 ${D}${systemd_system_unitdir}/shoulder-kiosk.service
}
