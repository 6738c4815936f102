# BPF-LSM kernel options for edgearmor, only when DISTRO_FEATURES contains
# edgearmor-bpf-lsm (which adds the override of the same name, see
# conf/distro/include/edgearmor-bpf-lsm.inc) and only in kernel recipes (this file also
# matches linux-firmware, linux-libc-headers and the like, which it leaves alone).
#
# - the config fragment files/edgearmor-bpf-lsm.cfg, applied by kernel-yocto based
#   recipes (linux-yocto, linux-raspberrypi, meta-rockchip's kernels, ...);
# - pahole-native, so that Kconfig offers CONFIG_DEBUG_INFO_BTF and the build generates
#   BTF. linux-yocto.inc passes PAHOLE=false and only makes pahole-native available to
#   do_kernel_configme when KERNEL_DEBUG is "True", hence KERNEL_DEBUG.
# The lsm= boot argument belongs to the bootloader configuration, not to the kernel
# recipe: conf/distro/include/edgearmor-bpf-lsm.inc adds it under the same feature.

FILESEXTRAPATHS:prepend:edgearmor-bpf-lsm := "${THISDIR}/files:"

DEPENDS:append:edgearmor-bpf-lsm = " ${@'pahole-native' if bb.data.inherits_class('kernel', d) else ''}"
SRC_URI:append:edgearmor-bpf-lsm = " ${@'file://edgearmor-bpf-lsm.cfg' if bb.data.inherits_class('kernel', d) else ''}"
KERNEL_DEBUG:edgearmor-bpf-lsm = "True"
