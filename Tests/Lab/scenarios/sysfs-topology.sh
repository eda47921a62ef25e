#!/usr/bin/env bash
# lab-topology: sriov-nvme shared-group
# lab-timeout: 120
#
# The lab itself is what the other scenarios assume: the emulated IOMMU gives every PCI
# device a group; sriov-nvme has an SR-IOV NVMe PF with 4 VFs to give, alone in its group;
# shared-group has two devices behind a conventional PCI bridge in one group (with the
# bridge) and a PCIe device alone in another. Drivers from the Debian kernel bind to them.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

lab_log "kernel $(uname -r), cmdline: $(cat /proc/cmdline)"
lab_check "intel_iommu is on" grep -qw intel_iommu=on /proc/cmdline
ngroups=$(ls /sys/kernel/iommu_groups | wc -l)
lab_check "IOMMU groups exist ($ngroups)" test "$ngroups" -gt 0

missing=
for d in "$LAB_PCI"/*; do
    a=$(basename "$d")
    [[ -n $(lab_iommu_group "$a") ]] || missing+=" $a"
done
lab_eq "every PCI device has an IOMMU group" "" "${missing# }"

lspci -nn -D 2>/dev/null | sed 's/^/# lspci: /'
for g in $(ls /sys/kernel/iommu_groups | sort -n); do echo "# group $g: $(lab_group_members "$g")"; done

case $LAB_TOPOLOGY in
sriov-nvme)
    pf=0000:01:00.0
    lab_check "PF $pf exists" test -d "$LAB_PCI/$pf"
    lab_eq "PF class is NVMe" 0x010802 "$(cat "$LAB_PCI/$pf/class")"
    lab_eq "PF sriov_totalvfs" 4 "$(cat "$LAB_PCI/$pf/sriov_totalvfs")"
    lab_eq "PF sriov_numvfs" 0 "$(cat "$LAB_PCI/$pf/sriov_numvfs")"
    lab_eq "PF sriov_drivers_autoprobe" 1 "$(cat "$LAB_PCI/$pf/sriov_drivers_autoprobe")"
    lab_eq "PF VF offset/stride" "1/1" "$(cat "$LAB_PCI/$pf/sriov_offset")/$(cat "$LAB_PCI/$pf/sriov_stride")"
    g=$(lab_iommu_group "$pf")
    lab_eq "PF is alone in its group" "$pf" "$(lab_group_members "$g")"
    modprobe nvme
    lab_check "nvme binds the PF" lab_wait_for 10 lab_driver_is "$pf" nvme
    lab_check "nvme0n1 appears" lab_wait_for 10 test -b /dev/nvme0n1
    sector=$(dd if=/dev/nvme0n1 bs=512 count=1 2>/dev/null | head -c 64 | tr -dc '[:print:]')
    lab_eq "namespace 1 starts with the marker" "$LAB_MARKER" "${sector:0:${#LAB_MARKER}}"
    ;;
shared-group)
    br=0000:01:00.0 a=0000:02:01.0 b=0000:02:02.0 c=0000:03:00.0
    lab_eq "$br is a PCI bridge" 0x060400 "$(cat "$LAB_PCI/$br/class")"
    lab_eq "$a and $b are e1000" "0x8086:0x100e 0x8086:0x100e" \
        "$(cat "$LAB_PCI/$a/vendor"):$(cat "$LAB_PCI/$a/device") $(cat "$LAB_PCI/$b/vendor"):$(cat "$LAB_PCI/$b/device")"
    lab_eq "$c is e1000e" "0x8086:0x10d3" "$(cat "$LAB_PCI/$c/vendor"):$(cat "$LAB_PCI/$c/device")"
    ga=$(lab_iommu_group "$a") gb=$(lab_iommu_group "$b") gbr=$(lab_iommu_group "$br") gc=$(lab_iommu_group "$c")
    lab_eq "both devices behind the bridge share one group" "$ga" "$gb"
    lab_eq "the bridge is in that group too" "$ga" "$gbr"
    lab_eq "the shared group holds the bridge and both devices" "$br $a $b" "$(lab_group_members "$ga")"
    lab_eq "the e1000e is alone in its group" "$c" "$(lab_group_members "$gc")"
    modprobe e1000
    modprobe e1000e
    lab_check "e1000 binds $a" lab_wait_for 10 lab_driver_is "$a" e1000
    lab_check "e1000 binds $b" lab_wait_for 10 lab_driver_is "$b" e1000
    lab_check "e1000e binds $c" lab_wait_for 10 lab_driver_is "$c" e1000e
    ;;
*)
    lab_fail "unknown topology $LAB_TOPOLOGY"
    ;;
esac

lab_done
