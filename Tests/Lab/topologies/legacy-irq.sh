# Topology legacy-irq: two functions without MSI-X, each alone in its IOMMU group behind a
# PCIe root port — the interrupt paths other than MSI-X that passthrough must carry:
#
#   00:01.0 pcie-root-port rp1 ── 01:00.0 virtio-rng (vectors=0: no MSI-X, so INTx only;
#                                 iommu_platform=on: its DMA goes through the vIOMMU like a
#                                 real device's — without it QEMU's virtio bypasses the IOMMU and
#                                 would read L2's addresses as L1-physical ones)
#   00:02.0 pcie-root-port rp2 ── 02:00.0 ich9-ahci (MSI, no MSI-X) with a 16 MiB disk whose
#                                 first sector starts with the line $LAB_MARKER

topology_prepare() { # RUNDIR
    local img=$1/sata.img
    rm -f "$img"
    truncate -s 16M "$img"
    printf '%s\n' "$LAB_MARKER" | dd of="$img" conv=notrunc status=none
}

topology_args() { # RUNDIR
    cat <<ARGS
-device
pcie-root-port,id=rp1,chassis=1,slot=1,addr=01.0
-device
virtio-rng-pci,bus=rp1,vectors=0,iommu_platform=on
-device
pcie-root-port,id=rp2,chassis=2,slot=2,addr=02.0
-drive
file=$1/sata.img,if=none,id=sata0,format=raw
-device
ich9-ahci,id=ahci0,bus=rp2
-device
ide-hd,drive=sata0,bus=ahci0.0
ARGS
}
