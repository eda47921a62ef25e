# Topology shared-group: a conventional PCI bridge with two devices behind it, which
# therefore share one IOMMU group with the bridge (a group that is not viable unless both
# are given away), plus a plain PCIe device alone in its own group.
#
#   00:01.0 pcie-root-port rp1 ── 01:00.0 pcie-pci-bridge br1 ─┬─ 02:01.0 e1000
#                                                             └─ 02:02.0 e1000
#   00:02.0 pcie-root-port rp2 ── 03:00.0 e1000e
#
# The NICs have no network backend; drivers e1000 and e1000e bind to them all the same.

topology_prepare() { :; }

topology_args() { # RUNDIR
    cat <<ARGS
-device
pcie-root-port,id=rp1,chassis=1,slot=1,addr=01.0
-device
pcie-pci-bridge,id=br1,bus=rp1
-device
e1000,bus=br1,addr=01.0,mac=52:54:00:1a:b0:01
-device
e1000,bus=br1,addr=02.0,mac=52:54:00:1a:b0:02
-device
pcie-root-port,id=rp2,chassis=2,slot=2,addr=02.0
-device
e1000e,bus=rp2,mac=52:54:00:1a:b0:03
ARGS
}
