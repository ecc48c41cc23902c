# nooelint: oelint.var.suggestedvar.SECTION - packagegroups have no package section (as in openembedded-core)
SUMMARY = "Shoulder remote assistance"
DESCRIPTION = "The Shoulder agent and its configuration: add this to an \
               image to make the device reachable for remote assistance \
               (off until enabled in /etc/shoulder/agent.toml)."

require recipes-shoulder/include/shoulder-common.inc

inherit packagegroup

# A configuration: the layer's shoulder-agent-conf, or a product's package
# that RPROVIDES the same name (then set PREFERRED_RPROVIDER_virtual-shoulder-agent-conf).
RDEPENDS:${PN} = "shoulder-agent \
                  virtual-shoulder-agent-conf \
                  "
