#!/usr/bin/env bash
# lab-topology: sriov-nvme shared-group
# lab-timeout: 180
#
# `passage devices --json` (the binary built on the host, $PASSAGE_BIN/passage) reports
# what sysfs says, for every PCI function of L1: ids, class, driver, IOMMU group, and the
# SR-IOV facts (sriov.totalVFs/numVFs/driversAutoprobe/vfs, physfn/vfIndex). On
# sriov-nvme it does so again after two VFs are created with plain sysfs (autoprobe off).
# A missing binary fails the scenario.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN/passage
[[ -x $bin ]] || lab_fatal "no passage binary at $bin (build it on the host first: swift build; PASSAGE_BIN=$PASSAGE_BIN)"
command -v jq >/dev/null || lab_fatal "jq is not installed on the host (apt-get install jq)"
lab_ok "passage binary present: $bin"

case $LAB_TOPOLOGY in
    sriov-nvme) modprobe nvme; lab_wait_for 10 lab_driver_is 0000:01:00.0 nvme ;;
    shared-group) modprobe e1000; modprobe e1000e ;;
esac

lab_check_passage_devices initial
echo "# passage devices:"
"$bin" devices 2>&1 | head -n 40 | sed 's/^/#   /'

if [[ $LAB_TOPOLOGY == sriov-nvme ]]; then
    pf=0000:01:00.0
    echo 0 >"$LAB_PCI/$pf/sriov_drivers_autoprobe"
    lab_check "2 VFs created with sysfs" sh -c "echo 2 >$LAB_PCI/$pf/sriov_numvfs"
    lab_check_passage_devices two-vfs
    act=$LAB_OUT/devices-two-vfs.json
    lab_eq "PF sriov as reported" '{"totalVFs":4,"numVFs":2,"driversAutoprobe":false,"vfs":["0000:01:00.1","0000:01:00.2"]}' \
        "$(jq -c --arg a "$pf" '.[] | select(.address == $a) | .sriov | {totalVFs, numVFs, driversAutoprobe, vfs}' "$act")"
    lab_eq "VFs' physfn and vfIndex as reported" '[{"address":"0000:01:00.1","physfn":"0000:01:00.0","vfIndex":0,"driver":null},{"address":"0000:01:00.2","physfn":"0000:01:00.0","vfIndex":1,"driver":null}]' \
        "$(jq -c '[.[] | select(.physfn != null) | {address, physfn, vfIndex, driver}] | sort_by(.address)' "$act")"
    g1=$(lab_iommu_group 0000:01:00.1) g2=$(lab_iommu_group 0000:01:00.2)
    lab_check "each VF has its own IOMMU group ($g1, $g2)" test -n "$g1" -a -n "$g2" -a "$g1" != "$g2"
    echo 0 >"$LAB_PCI/$pf/sriov_numvfs"
fi

lab_done
