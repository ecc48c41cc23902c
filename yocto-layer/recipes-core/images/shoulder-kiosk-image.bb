# nooelint: oelint.var.suggestedvar.CVE_PRODUCT,oelint.var.suggestedvar.SECTION - an image is not an upstream product and has no package section
SUMMARY = "Example kiosk image with Shoulder remote assistance"
DESCRIPTION = "core-image-minimal plus the demo kiosk app and the Shoulder \
               agent, both started at boot by systemd. A starting point for \
               device images."
LICENSE = "MIT"

# nooelint: oelint.file.requirenotfound - core-image-minimal.bb is in openembedded-core, which the linter does not see
require recipes-core/images/core-image-minimal.bb
require recipes-shoulder/include/shoulder-common.inc

inherit features_check

# Both services are systemd units.
REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_INSTALL += "packagegroup-shoulder \
                  shoulder-kiosk-demo \
                  "
