# nooelint: oelint.var.suggestedvar.SECTION - packagegroups have no package section (as in openembedded-core)
SUMMARY = "Shoulder remote assistance"
DESCRIPTION = "The Shoulder agent and its configuration: add this to an \
               image to make the device reachable for remote assistance \
               (off until enabled in /etc/shoulder/agent.toml)."

require recipes-shoulder/include/shoulder-common.inc

inherit packagegroup

RDEPENDS:${PN} = "shoulder-agent \
                  shoulder-agent-conf \
                  "
