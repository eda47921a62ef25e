#!/usr/bin/env bash
# lab-topology: shared-group
# lab-timeout: 180
#
# Binding with IOMMU-group safety on the real kernel (issue: device operations):
# - 02:01.0 and 02:02.0 sit behind a conventional PCI bridge and share a group: binding one
#   alone to vfio-pci is refused, naming the other and its driver; nothing changes;
# - --dry-run prints the writes and changes nothing;
# - --group binds both (the bridge stays), /dev/vfio/GROUP appears; binding again is a no-op;
# - restore gives each back to e1000 and clears driver_override;
# - a failure injected at the 5th sysfs write (the second device) puts the first back too;
# - the e1000e in its own group binds alone.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN/passage
[[ -x $bin ]] || lab_fatal "no passage binary at $bin"
a=0000:02:01.0 b=0000:02:02.0 br=0000:01:00.0 c=0000:03:00.0
modprobe vfio-pci
modprobe e1000
modprobe e1000e
lab_check "e1000 on both" lab_wait_for 10 sh -c "[ \"\$(basename \$(readlink $LAB_PCI/$a/driver))\" = e1000 ] && [ \"\$(basename \$(readlink $LAB_PCI/$b/driver))\" = e1000 ]"
state() { for d in $a $b $br $c; do printf '%s=%s/%s ' "$d" "$(lab_driver $d)" "$(cat $LAB_PCI/$d/driver_override)"; done; }
before=$(state)
g=$(lab_iommu_group $a)

out=$("$bin" bind $a 2>&1); rc=$?
lab_eq "binding $a alone is refused" 1 "$rc"
lab_check "the refusal names $b and its driver" grep -q "$b (on e1000)" <<<"$out"
lab_check "the refusal points at --group" grep -q -- "--group" <<<"$out"
lab_eq "nothing changed after the refusal" "$before" "$(state)"

out=$("$bin" bind $a --group --dry-run 2>&1); rc=$?
lab_eq "dry run succeeds" 0 "$rc"
lab_check "dry run prints the driver_override write" grep -q "write \"vfio-pci\" > /sys/bus/pci/devices/$b/driver_override" <<<"$out"
lab_eq "nothing changed after the dry run" "$before" "$(state)"

t0=$(cut -d' ' -f1 /proc/uptime)
lab_check "bind --group succeeds" "$bin" bind $a --group --json
lab_timing "group_bind_seconds=$(lab_since "$t0")"
lab_eq "$a on vfio-pci" vfio-pci "$(lab_driver $a)"
lab_eq "$b on vfio-pci" vfio-pci "$(lab_driver $b)"
lab_eq "the bridge keeps its driver" "$(echo "$before" | tr ' ' '\n' | grep "^$br=")" "$br=$(lab_driver $br)/$(cat $LAB_PCI/$br/driver_override)"
lab_check "/dev/vfio/$g exists" test -c /dev/vfio/$g
out=$("$bin" bind $a --group --json)
lab_eq "binding again changes nothing" "false false" "$(jq -r '[.devices[].changed] | map(tostring) | join(" ")' <<<"$out")"
lab_eq "groups --json calls the group viable" true "$("$bin" groups --json | jq -r --argjson g "$g" '.[] | select(.group == $g) | .viable')"

lab_check "restore $a" "$bin" restore $a
lab_check "restore $b" "$bin" restore $b
lab_eq "both back on e1000, overrides cleared" "$before" "$(state)"

PASSAGE_INJECT_WRITE_FAILURE=5 "$bin" bind $a --group >"$LAB_OUT/inject.txt" 2>&1; rc=$?
sed 's/^/# /' "$LAB_OUT/inject.txt"
lab_eq "a failure at the 5th write fails the bind" 1 "$rc"
lab_check "the error says the first device was put back" grep -q "was put back too" "$LAB_OUT/inject.txt"
lab_eq "every device as it was after the injected failure" "$before" "$(state)"

out=$("$bin" bind $a --group --driver no-such-driver 2>&1); rc=$?
lab_eq "an unknown driver is refused" 1 "$rc"
lab_check "the error says how to load it" grep -q "modprobe no-such-driver" <<<"$out"
lab_eq "nothing changed after the unknown driver" "$before" "$(state)"

lab_check "the e1000e in its own group binds alone" "$bin" bind $c
lab_eq "$c on vfio-pci" vfio-pci "$(lab_driver $c)"
lab_check "/dev/vfio/$(lab_iommu_group $c) exists" test -c /dev/vfio/$(lab_iommu_group $c)
lab_check "restore $c" "$bin" restore $c
lab_eq "$c back on e1000e" e1000e "$(lab_driver $c)"

lab_done
