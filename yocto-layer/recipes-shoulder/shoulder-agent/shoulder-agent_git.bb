# nooelint: oelint.var.bbclassextend - a device service: no native or nativesdk variant
SUMMARY = "Shoulder remote assistance agent"
DESCRIPTION = "Shows the device screen to a trusted technician and hands over \
               control only when the person at the device agrees. Runs as a \
               hardened systemd service configured by /etc/shoulder/agent.toml."
SECTION = "net"

inherit cargo cargo-update-recipe-crates systemd features_check ptest-cargo

# After the inherits: it sets cargo's build mode, which the classes assign.
require recipes-shoulder/include/shoulder-source.inc
# Every crates.io package of the workspace Cargo.lock, fetched by bitbake so
# the build runs offline (cargo --frozen). Regenerate with
# yocto-layer/scripts/update-crates-inc or `bitbake -c update_crates shoulder-agent`.
require shoulder-agent-crates.inc
# LICENSE and LIC_FILES_CHKSUM of everything linked into the agent: the
# workspace and each crates.io crate (licence files in the vendored crates).
# (shoulder-source.inc declares no licence: each recipe declares what it
# links.) Regenerate with yocto-layer/scripts/update-licenses.
require shoulder-agent-licenses.inc

SRC_URI += "file://shoulder-agent.service \
            file://shoulder-agent-tmpfiles.conf \
            file://shoulder-agent-modules.conf \
            "

# The service, its sandbox and the state directory setup are systemd's.
REQUIRED_DISTRO_FEATURES = "systemd"

# Only the agent crate of the workspace, only its binary.
SHOULDER_CARGO_PACKAGES = "--package shoulder-agent --bin shoulder-agent"
# ptest (DISTRO_FEATURES ptest, package ${PN}-ptest): the unit and
# integration tests of the device crates, which need no source tree at run
# time (the banner's golden-picture test reads files from it: left out). Run
# on the device with `ptest-runner shoulder-agent`.
SHOULDER_CARGO_PACKAGES:task-compile-ptest-cargo = "--package shoulder-proto --package shoulder-agent \
                                                    --package shoulder-capture --package shoulder-input \
                                                    --package shoulder-display"
CARGO_BUILD_FLAGS += "${SHOULDER_CARGO_PACKAGES}"

# ptest-cargo lists every executable of a target that has tests, and with
# integration tests cargo also builds the programs themselves
# (target/<triple>/<profile>/shoulder-agent): run as a test, the agent would
# print its usage and count as a failure. Keep the test harnesses, which
# cargo writes to deps/ as NAME-HASH.
python shoulder_ptest_harnesses_only() {
    path = d.getVar('CARGO_TEST_BINARIES_FILES')
    with open(path) as f:
        found = [line.strip() for line in f if line.strip()]
    keep = [b for b in found if os.path.basename(os.path.dirname(b)) == 'deps']
    bb.note("ptest: %d test harnesses of %d executables" % (len(keep), len(found)))
    with open(path, 'w') as f:
        f.writelines(b + '\n' for b in keep)
}
shoulder_ptest_harnesses_only[doc] = "Drop the programs from the test binaries ptest-cargo found: keep the harnesses in deps/"
do_compile_ptest_cargo[postfuncs] += "shoulder_ptest_harnesses_only"

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
# `files`: files with consent (`shoulder get`/`put`, [files] in agent.toml),
# each transfer asked on the device. The unit's ProtectSystem=strict keeps
# the file system read-only for the agent: readable directories need
# nothing, a drop directory outside /var/lib/shoulder needs a drop-in with
# ReadWritePaths=. Off by default; its size is in the README.
# `record`: session records the device signs ([record] in agent.toml):
# the screen as sent, input, consent, chat and transfers, hash-chained, for
# `shoulder play` and `shoulder verify`. Records go below
# /var/lib/shoulder by default (writable under the unit's sandbox); another
# `dir` needs ReadWritePaths=. Off by default; its size is in the README.
# Features are named with their crate: the ptest build selects several
# packages, and cargo takes bare feature names for one package only.
PACKAGECONFIG ??= "uinput jpeg"
PACKAGECONFIG[uinput] = ",,,,kernel-module-uinput"
PACKAGECONFIG[jpeg] = ""
PACKAGECONFIG[broker] = ""
PACKAGECONFIG[type-text] = ""
PACKAGECONFIG[call] = ""
PACKAGECONFIG[files] = ""
PACKAGECONFIG[record] = ""
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'jpeg', '', '--no-default-features', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'broker', '--features shoulder-agent/broker', '', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'type-text', '--features shoulder-agent/type-text', '', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'call', '--features shoulder-agent/call', '', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'files', '--features shoulder-agent/files', '', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'record', '--features shoulder-agent/record', '', d)}"

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

    # The device size budget (the repository README, "Device size"), on the
    # binary as it will be shipped (stripped). This build links the C
    # library dynamically, so it is smaller than the static one CI measures:
    # over budget here means the static build is well over too.
    ${STRIP} -o ${B}/shoulder-agent.stripped ${D}${bindir}/shoulder-agent
    size=$(stat -c %s ${B}/shoulder-agent.stripped)
    rm -f ${B}/shoulder-agent.stripped
    if [ "$size" -gt ${SHOULDER_SIZE_BUDGET} ]; then
        bbwarn "shoulder-agent is $size bytes stripped, over its budget of ${SHOULDER_SIZE_BUDGET} bytes for PACKAGECONFIG '${PACKAGECONFIG}'"
    else
        bbnote "shoulder-agent: $size bytes stripped (budget ${SHOULDER_SIZE_BUDGET})"
    fi
}

# 2.5 MiB with the default features, 3 MiB with any optional one (the bound
# for all of them together).
SHOULDER_SIZE_BUDGET = "${@'3145728' if bb.utils.contains_any('PACKAGECONFIG', 'broker type-text call files record', True, False, d) else '2621440'}"

FILES:${PN} += "${nonarch_libdir}/tmpfiles.d/shoulder-agent.conf \
                ${nonarch_libdir}/modules-load.d/shoulder-agent.conf \
                ${localstatedir}/lib/shoulder \
                "

# The agent refuses to start without its policy file. shoulder-agent-conf
# provides it (device builders change it with a bbappend), or a product's own
# package that RPROVIDES virtual-shoulder-agent-conf (README.md, "Device
# policy"); recommended rather than required, so the product's can replace it.
RRECOMMENDS:${PN} += "virtual-shoulder-agent-conf"
