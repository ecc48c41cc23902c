# The kernel options the Shoulder agent needs (files/shoulder.cfg), for
# distributions that ask for them: DISTRO_FEATURES:append = " shoulder".
# Gated so that adding the layer changes no kernel by itself.
# nooelint: oelint.vars.noncoreoverride - gated by DISTRO_FEATURES "shoulder" below, not by an override: the kernel is unchanged until a distro asks
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"

# nooelint: oelint.vars.noncoreoverride - as above
SRC_URI:append = " ${@bb.utils.contains('DISTRO_FEATURES', 'shoulder', 'file://shoulder.cfg', '', d)}"
