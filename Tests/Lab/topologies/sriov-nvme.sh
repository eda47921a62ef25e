# Topology sriov-nvme: an NVMe controller with SR-IOV (4 VFs) behind a PCIe root port,
# as in shared/LAB.md. Its namespace 1 is a 64 MiB raw image whose first sector starts
# with the line PASSAGE-LAB-MARKER-1 ($LAB_MARKER).
#
#   00:01.0 pcie-root-port rp1 ── 01:00.0 nvme PF (VFs 01:00.1 … 01:00.4 once enabled)
#
# QEMU insists on max_ioqpairs - sriov_vq_flexible >= 2.

topology_prepare() { # RUNDIR
    local img=$1/nvme.img
    rm -f "$img"
    truncate -s 64M "$img"
    printf '%s\n' "$LAB_MARKER" | dd of="$img" conv=notrunc status=none
}

topology_args() { # RUNDIR
    cat <<ARGS
-device
pcie-root-port,id=rp1,chassis=1,slot=1,addr=01.0
-drive
file=$1/nvme.img,if=none,id=nvm,format=raw
-device
nvme-subsys,id=subsys0
-device
nvme,serial=deadbeef,subsys=subsys0,bus=rp1,sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=10
-device
nvme-ns,drive=nvm,nsid=1,shared=true
ARGS
}
