# Topology sriov-nvme-iommufd: sriov-nvme (an NVMe PF with 4 VFs behind a root port) with L1 on
# the lab's iommufd kernel (lib/iommufd-kernel.sh): /dev/iommu and /dev/vfio/devices/vfioN exist,
# so passage-vmm takes the iommufd path.
# shellcheck source=sriov-nvme.sh
. "$LAB_DIR/topologies/sriov-nvme.sh"
TOPOLOGY_L1_KERNEL=iommufd
