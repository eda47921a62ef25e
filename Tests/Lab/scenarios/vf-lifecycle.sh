#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 240
#
# The VF lifecycle on the real kernel and the emulated SR-IOV NVMe controller, with nothing but
# Passage (issue: device operations):
# - `vf create --dry-run` prints the sysfs writes and NVMe ioctls and changes nothing;
# - `vf create PF --count 4 --nvme-queues 2 --nvme-interrupts 1` makes 4 VFs with autoprobe off
#   and every secondary controller online with 2 VQ / 1 VI; doing it again changes nothing;
# - provisioning is real: the L1 kernel's own nvme driver then binds VF 0 and reads the marker;
# - two VFs bound to vfio-pci give /dev/vfio/N; restore puts them back on no driver;
# - a create that fails midway (a driver that does not exist) leaves the PF as it was;
# - `vf remove` takes every VF away.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN/passage
[[ -x $bin ]] || lab_fatal "no passage binary at $bin"
pf=0000:01:00.0
# Without native multipath each controller has its own block device, so a read of the VF's
# nvmeXn1 goes through the VF's own controller (with it, the PF and VF paths share one head).
modprobe nvme_core multipath=N
modprobe nvme
modprobe vfio-pci
lab_check "nvme binds the PF" lab_wait_for 10 lab_driver_is $pf nvme
lab_check "/dev/nvme0 appears" lab_wait_for 10 test -c /dev/nvme0
numvfs() { cat $LAB_PCI/$pf/sriov_numvfs; }
autoprobe() { cat $LAB_PCI/$pf/sriov_drivers_autoprobe; }

out=$("$bin" vf create $pf --count 4 --nvme-queues 2 --nvme-interrupts 1 --dry-run 2>&1); rc=$?
echo "$out" | sed 's/^/# dry run: /'
lab_eq "dry run succeeds" 0 "$rc"
lab_check "dry run shows the sriov_numvfs write" grep -q "write \"4\" > /sys/bus/pci/devices/$pf/sriov_numvfs" <<<"$out"
lab_check "dry run shows the Virtualization Management ioctls" grep -q "NVME_IOCTL_ADMIN_CMD" <<<"$out"
lab_eq "dry run changed nothing" "0 1" "$(numvfs) $(autoprobe)"

t0=$(cut -d' ' -f1 /proc/uptime)
"$bin" vf create $pf --count 4 --nvme-queues 2 --nvme-interrupts 1 --json >"$LAB_OUT/create.json" 2>"$LAB_OUT/create.err"; rc=$?
lab_timing "vf_create_provision_seconds=$(lab_since "$t0")"
sed 's/^/# /' "$LAB_OUT/create.err"
lab_eq "vf create succeeds" 0 "$rc"
lab_eq "4 VFs exist" 4 "$(numvfs)"
lab_eq "autoprobe is off" 0 "$(autoprobe)"
lab_eq "vf create reports 4 VFs" "0000:01:00.1 0000:01:00.2 0000:01:00.3 0000:01:00.4" "$(jq -r '[.vfs[].address] | join(" ")' "$LAB_OUT/create.json")"
lab_eq "no host driver took a VF" ",,," "$(echo $(for i in 1 2 3 4; do lab_driver 0000:01:00.$i; echo -n ,; done) | sed 's/,$//')"
"$bin" nvme status $pf --json >"$LAB_OUT/status.json"
lab_eq "every secondary controller is online with 2 VQ and 1 VI" "online/2/1 online/2/1 online/2/1 online/2/1" \
    "$(jq -r '[.secondaryControllers | sort_by(.vfNumber)[] | "\(.state)/\(.queues)/\(.interrupts)"] | join(" ")' "$LAB_OUT/status.json")"
again=$("$bin" vf create $pf --count 4 --nvme-queues 2 --nvme-interrupts 1 --json)
lab_eq "creating again changes nothing" 0 "$(jq '.actions | length' <<<"$again")"

vf0=0000:01:00.1
lab_check "bind VF 0 to the host's nvme driver" "$bin" bind $vf0 --driver nvme
ctrl=$(ls $LAB_PCI/$vf0/nvme 2>/dev/null | head -n1)
lab_check "VF 0 has an NVMe controller ($ctrl)" test -n "$ctrl"
ns=${ctrl}n1
lab_check "VF 0's own block device appears (/dev/$ns)" lab_wait_for 15 test -b "/dev/$ns"
sector=$(dd if=/dev/$ns bs=512 count=1 2>/dev/null | head -c 64 | tr -dc '[:print:]')
lab_eq "VF 0 reads the marker through its own controller" "$LAB_MARKER" "${sector:0:${#LAB_MARKER}}"
lab_check "restore VF 0 to no driver" "$bin" restore $vf0 --driver none
lab_eq "VF 0 unbound, override cleared" "/(null)" "$(lab_driver $vf0)/$(cat $LAB_PCI/$vf0/driver_override)"

for vf in 0000:01:00.2 0000:01:00.3; do
    lab_check "bind $vf to vfio-pci" "$bin" bind $vf
    g=$(lab_iommu_group $vf)
    lab_check "/dev/vfio/$g for $vf" test -c /dev/vfio/$g
done
for vf in 0000:01:00.2 0000:01:00.3; do
    lab_check "restore $vf" "$bin" restore $vf --driver none
    lab_eq "$vf unbound, override cleared" "/(null)" "$(lab_driver $vf)/$(cat $LAB_PCI/$vf/driver_override)"
done

lab_check "vf remove" "$bin" vf remove $pf
lab_eq "no VFs left" 0 "$(numvfs)"

echo 1 >$LAB_PCI/$pf/sriov_drivers_autoprobe
out=$("$bin" vf create $pf --count 2 --driver no-such-driver 2>&1); rc=$?
echo "$out" | sed 's/^/# /'
lab_eq "a create that fails midway fails" 1 "$rc"
lab_check "the error names the missing driver" grep -q "modprobe no-such-driver" <<<"$out"
lab_check "the error says the count was put back" grep -q "put back to 0" <<<"$out"
lab_eq "the PF is as it was (no VFs, autoprobe on)" "0 1" "$(numvfs) $(autoprobe)"

out=$("$bin" vf create $pf --count 5 2>&1); rc=$?
lab_eq "more VFs than sriov_totalvfs is refused" 1 "$rc"
lab_check "the error says the limit" grep -q "at most 4" <<<"$out"

lab_done
