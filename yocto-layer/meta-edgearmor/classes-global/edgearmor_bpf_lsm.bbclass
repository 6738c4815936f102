# Inherited globally by meta-edgearmor's layer.conf. Configuration files are parsed
# before DISTRO_FEATURES is final, a global class after it: this is where the settings
# of the edgearmor-bpf-lsm distro feature are pulled in, and only when DISTRO_FEATURES
# contains it. Without the feature nothing is included and no variable changes, so
# adding the layer changes no other recipe's signature.

require ${@bb.utils.contains('DISTRO_FEATURES', 'edgearmor-bpf-lsm', 'conf/distro/include/edgearmor-bpf-lsm.inc', '', d)}
