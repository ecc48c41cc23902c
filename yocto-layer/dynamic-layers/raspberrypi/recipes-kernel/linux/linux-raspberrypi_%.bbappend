# The same kernel options for meta-raspberrypi's kernel (read only when that
# layer is in the build: BBFILES_DYNAMIC in conf/layer.conf).
# nooelint: oelint.vars.noncoreoverride - gated by DISTRO_FEATURES "shoulder" below, not by an override: the kernel is unchanged until a distro asks
FILESEXTRAPATHS:prepend := "${SHOULDER_LAYERDIR}/recipes-kernel/linux/files:"

# nooelint: oelint.vars.noncoreoverride - as above
SRC_URI:append = " ${@bb.utils.contains('DISTRO_FEATURES', 'shoulder', 'file://shoulder.cfg', '', d)}"
