# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT - policy files for the target device: no native variant, not an upstream product
SUMMARY = "Shoulder agent policy and plant CA"
DESCRIPTION = "/etc/shoulder/agent.toml and the plant CA certificates the \
               Shoulder agent trusts. Device builders set the SHOULDER_* \
               variables below or replace agent.toml and add their CA in a \
               bbappend (see the layer README)."
SECTION = "net"

require recipes-shoulder/include/shoulder-common.inc

LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile - the recipe's only sources are this layer's own files, licensed as the layer (MIT)
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://agent.toml"

# Policy switches written into agent.toml. Remote assistance stays off until
# SHOULDER_ENABLED is "true", as on a fresh desktop install.
SHOULDER_ENABLED ??= "false"
SHOULDER_ALLOW_OFFERS ??= "true"
SHOULDER_ALLOW_INVITATIONS ??= "true"
SHOULDER_ALLOW_CONTROL ??= "true"
# The agent's `capture` key: "drm" (or "drm:/dev/dri/cardN"), "fbdev" or
# "synthetic".
SHOULDER_CAPTURE ??= "drm"
# Group allowed on the control socket besides root; empty: root only. The
# package creates it (a system group) when it does not exist.
SHOULDER_CONTROL_GROUP ??= ""
# Plant CA certificate files (PEM), by file name; a bbappend adds each to
# SRC_URI. They are installed to /etc/shoulder/plant-ca/ and listed in
# plant_ca. Empty: offers are refused ("unknown CA").
SHOULDER_PLANT_CA ??= ""
# Space-separated allow-list entries ("ca:CA-SHA256-HEX/cn:NAME" or "sha256:HEX").
SHOULDER_ALLOWED_EXPERTS ??= ""

# The control group exists on the device: the agent refuses to start with a
# control_group it cannot find ("unknown group").
inherit_defer ${@'useradd' if d.getVar('SHOULDER_CONTROL_GROUP') else ''}
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system ${SHOULDER_CONTROL_GROUP}"

SHOULDER_PLANT_CA_DIR = "${sysconfdir}/shoulder/plant-ca"
SHOULDER_UNPACKDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
# Nothing to unpack into a source tree: S is where file:// entries land.
S = "${SHOULDER_UNPACKDIR}"

# Machine-specific: SHOULDER_CAPTURE (and a product's bbappend) differ per
# machine, so the package is built per machine, not as allarch (which would
# drift between the machines of one build).
PACKAGE_ARCH = "${MACHINE_ARCH}"

# The agent recommends "a configuration", not this one: a product may ship
# its own package instead (RPROVIDES the same name; README.md, "Device
# policy").
RPROVIDES:${PN} += "virtual-shoulder-agent-conf"

def shoulder_toml_bool(d, var):
    value = (d.getVar(var) or "").strip().lower()
    if value not in ("true", "false"):
        bb.fatal('%s must be "true" or "false", not "%s"' % (var, d.getVar(var)))
    return value

def shoulder_toml_string(d, value, var):
    # Names, paths and fingerprints only: no quoting or escapes needed, and
    # anything that would need them is a mistake worth stopping the build for.
    import re
    if not re.match(r'^[A-Za-z0-9_.:/@+=-]*$', value):
        bb.fatal('%s: "%s" has characters that are not allowed here (letters, digits and _.:/@+=- only)' % (var, value))
    return '"%s"' % value

def shoulder_toml_list(d, values, var):
    return "[" + ", ".join(shoulder_toml_string(d, v, var) for v in values) + "]"

def shoulder_conf_sed(d):
    cadir = d.getVar('SHOULDER_PLANT_CA_DIR')
    cas = [cadir + "/" + os.path.basename(f) for f in (d.getVar('SHOULDER_PLANT_CA') or "").split()]
    subst = {
        "ENABLED": shoulder_toml_bool(d, 'SHOULDER_ENABLED'),
        "ALLOW_OFFERS": shoulder_toml_bool(d, 'SHOULDER_ALLOW_OFFERS'),
        "ALLOW_INVITATIONS": shoulder_toml_bool(d, 'SHOULDER_ALLOW_INVITATIONS'),
        "ALLOW_CONTROL": shoulder_toml_bool(d, 'SHOULDER_ALLOW_CONTROL'),
        "CAPTURE": shoulder_toml_string(d, d.getVar('SHOULDER_CAPTURE') or "", 'SHOULDER_CAPTURE'),
        "CONTROL_GROUP": shoulder_toml_string(d, d.getVar('SHOULDER_CONTROL_GROUP') or "", 'SHOULDER_CONTROL_GROUP'),
        "PLANT_CA": shoulder_toml_list(d, cas, 'SHOULDER_PLANT_CA'),
        "ALLOWED_EXPERTS": shoulder_toml_list(d, (d.getVar('SHOULDER_ALLOWED_EXPERTS') or "").split(), 'SHOULDER_ALLOWED_EXPERTS'),
    }
    return " ".join("-e 's|@%s@|%s|g'" % (k, v) for k, v in sorted(subst.items()))

# The helpers above read these through arguments, which bitbake's dependency
# scan cannot follow: name them, so a changed policy rebuilds the package.
do_install[vardeps] += "SHOULDER_ENABLED SHOULDER_ALLOW_OFFERS SHOULDER_ALLOW_INVITATIONS \
                        SHOULDER_ALLOW_CONTROL SHOULDER_CAPTURE SHOULDER_CONTROL_GROUP \
                        SHOULDER_PLANT_CA SHOULDER_ALLOWED_EXPERTS"

do_install() {
    install -d ${D}${sysconfdir}/shoulder
    sed ${@shoulder_conf_sed(d)} ${S}/agent.toml > ${D}${sysconfdir}/shoulder/agent.toml
    chmod 0644 ${D}${sysconfdir}/shoulder/agent.toml
    if grep -n '^[^#]*@[A-Z_]*@' ${D}${sysconfdir}/shoulder/agent.toml; then
        bbfatal "agent.toml has placeholders this recipe does not know (listed above)"
    fi

    install -d ${D}${SHOULDER_PLANT_CA_DIR}
    for ca in ${SHOULDER_PLANT_CA}; do
        if [ ! -f "${S}/$ca" ]; then
            bbfatal "SHOULDER_PLANT_CA names $ca, but it is not in SRC_URI (add file://$ca in your bbappend)"
        fi
        install -m 0644 "${S}/$ca" ${D}${SHOULDER_PLANT_CA_DIR}/$(basename "$ca")
    done
}
# Keep local edits on package upgrades.
CONFFILES:${PN} = "${sysconfdir}/shoulder/agent.toml"
