#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 240
#
# Passage's VFIO layer (issue: passthrough, part: the VFIO module) on the real kernel: a VF of the
# NVMe PF is created, provisioned and bound to vfio-pci with `passage vf create`, then
# $PASSAGE_BIN/vfio-inspect opens it through a type1v2 container and its group and reports what it
# sees; it must match sysfs: vendor/device ids from the configuration region, BAR 0's size, the
# MSI-X vector count; BAR 0 mmapped reads the NVMe CAP register (not all ones, not zero); 2 MiB
# are DMA-mapped and unmapped; MSI-X vector 0 is routed to an eventfd; the VF is reset. A
# device not bound to vfio-pci is refused with the fix.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN
[[ -x $bin/vfio-inspect && -x $bin/passage ]] || lab_fatal "no vfio-inspect/passage in $bin (swift build --product vfio-inspect)"
pf=0000:01:00.0 vf=0000:01:00.1
modprobe nvme
modprobe vfio-pci
lab_check "nvme binds the PF" lab_wait_for 10 lab_driver_is $pf nvme
lab_check "passage vf create: 1 VF, provisioned, on vfio-pci" "$bin/passage" vf create $pf --count 1 --driver vfio-pci --nvme-queues 2 --nvme-interrupts 1
out=$("$bin/vfio-inspect" $vf 2>&1); rc=$?
echo "$out" | jq -cM . 2>/dev/null || echo "$out"
lab_eq "vfio-inspect opens the VF through container, group and device" 0 "$rc"
j() { jq -r "$1" <<<"$out"; }
lab_eq "the group is viable and the device is PCI" "true true" "$(j '"\(.viable) \(.pci)"')"
lab_eq "vendor id from the configuration region = sysfs" "$(sed 's/^0x//' $LAB_PCI/$vf/vendor)" "$(j .vendor)"
lab_eq "device id from the configuration region = sysfs" "$(sed 's/^0x//' $LAB_PCI/$vf/device)" "$(j .device)"
res=($(head -n 1 $LAB_PCI/$vf/resource))   # (no process substitution: L1's /dev has no /dev/fd)
bar0=$(printf '0x%x' $((res[1] - res[0] + 1)))
lab_eq "BAR 0's size = sysfs resource" "$bar0" "$(j '.regions[0].size')"
lab_eq "the configuration region is 4 KiB (PCIe)" 0x1000 "$(j '.regions[7].size')"
show=$("$bin/passage" devices show $vf --json)
msix=$(jq -r '.capabilities.msix.tableSize' <<<"$show")
# devices show reads one function (routing-ID arithmetic + one virtfn link for its VF index).
lab_eq "devices show gives the VF's index and PF as sysfs links them" "0 $pf" "$(jq -r '"\(.vfIndex) \(.physfn)"' <<<"$show")"
lab_eq "MSI-X vectors = the capability's table size" "$msix" "$(j '.irqs[2].count')"
cap=$(j .bar0Dword0)
lab_check "BAR 0 mmapped reads the NVMe CAP register ($cap)" test "$cap" != 0x0 -a "$cap" != 0xffffffff -a -n "$cap"
lab_eq "2 MiB DMA-mapped and unmapped" 2097152 "$(j .dmaMappedAndUnmapped)"
lab_eq "MSI-X vector 0 routed to an eventfd" true "$(j .msixEventfdRouted)"
lab_eq "the VF was reset" true "$(j .reset)"
out=$("$bin/vfio-inspect" $pf 2>&1); rc=$?
lab_eq "the PF (on nvme) is refused" 1 "$rc"
lab_check "… with the fix: $out" grep -q "passage bind --group" <<<"$out"
"$bin/passage" vf remove $pf >/dev/null
lab_done
