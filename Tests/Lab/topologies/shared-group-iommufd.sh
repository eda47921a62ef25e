# Topology shared-group-iommufd: shared-group (two e1000 behind a PCIe-to-PCI bridge, one IOMMU
# group; an e1000e alone) with L1 on the lab's iommufd kernel (lib/iommufd-kernel.sh): the hot
# reset of that bus through iommufd, with no group fds.
# shellcheck source=shared-group.sh
. "$LAB_DIR/topologies/shared-group.sh"
TOPOLOGY_L1_KERNEL=iommufd
