#!/usr/bin/env bash
# lab-topology: shared-group shared-group-iommufd
# lab-timeout: 300
#
# Hot reset (issue 8): the two e1000 functions behind the conventional PCI bridge share a bus and an
# IOMMU group, and neither has a reset of its own (no FLR, no PM reset; a bus reset would hit the
# other one too). `passage vm start --device A --device B` claims the whole group and passage-vmm,
# holding every group on that bus, resets the bus (VFIO_DEVICE_PCI_HOT_RESET) before the guest
# runs. In L2 the stock e1000 driver probes both (MAC addresses read from the NICs' EEPROM through
# their BARs) and, brought up, both take INTx interrupts (conventional PCI: no MSI at all).
# `passage release` gives both back to e1000.
# On shared-group-iommufd (L1 on the lab's iommufd kernel) the NICs go through their VFIO cdevs
# bound to one iommufd, and the hot reset carries no group fds: the kernel checks that the
# iommufd owns every function on the bus.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

a=0000:02:01.0 b=0000:02:02.0
lab_vmm_prepare
[[ -n ${LAB_L2IRQ_INITRD:-} && -r $LAB_L2IRQ_INITRD ]] || lab_fatal "no L2 irq initramfs (LAB_L2IRQ_INITRD)"
modprobe e1000 || lab_fatal "modprobe e1000 failed"
both_on() { lab_driver_is $a "$1" && lab_driver_is $b "$1"; }
lab_check "L1's e1000 drives both NICs" lab_wait_for 10 both_on e1000
lab_eq "they share an IOMMU group" "$(lab_iommu_group $a)" "$(lab_iommu_group $b)"
macs() { cat $LAB_PCI/$a/net/*/address $LAB_PCI/$b/net/*/address 2>/dev/null | tr '\n' ' ' | sed 's/ $//'; }
l1_macs=$(macs)

lab_passaged_for_vms
console=$state/vms/nics/console.log
out=$("$bin/passage" vm start nics --device $a --device $b --kernel "$LAB_KERNEL" --initrd "$LAB_L2IRQ_INITRD" \
    --memory 256M --cmdline "console=ttyS0 panic=-1 quiet lab.nic=1" 2>&1); rc=$?
echo "# $out"
lab_eq "passage vm start nics --device $a --device $b" 0 "$rc"
claim=$(lab_vm_claim nics)
lab_check "both NICs were claimed onto vfio-pci" both_on vfio-pci
lab_check "the guest powers off: VM nics stopped, exit 0" lab_wait_for 240 lab_vm_state_is nics "stopped 0"
tr -d '\r' <"$console" | grep -a '^L2\|e1000\|eth[0-9]' | sed 's/^/L2| /' | head -n 40
sed 's/^/# vmm.log| /' $state/vms/nics/vmm.log

if [[ $LAB_TOPOLOGY == *-iommufd ]]; then
    lab_check "passage-vmm passed both through iommufd" grep -q "passthrough through iommufd (/dev/iommu, IOAS [0-9]*): $a, $b" $state/vms/nics/vmm.log
else
    lab_check "passage-vmm passed both through the type1 container" grep -q "passthrough through the type1 container" $state/vms/nics/vmm.log
fi
lab_check "passage-vmm reset the shared bus (a hot reset: neither NIC has a reset of its own)" \
    grep -q "has no function reset: reset its bus instead ($a, $b)" $state/vms/nics/vmm.log
no_warning() { ! grep -q 'warning' "$1"; }
lab_check "passage-vmm warned about nothing" no_warning $state/vms/nics/vmm.log
l2_macs=$(tr -d '\r' <"$console" | sed -n 's/^L2-NIC eth[0-9] address=\([0-9a-f:]*\).*/\1/p' | sort | tr '\n' ' ' | sed 's/ $//')
lab_eq "L2's e1000 driver probed both and read their MAC addresses from the EEPROM" "$(tr ' ' '\n' <<<"$l1_macs" | sort | tr '\n' ' ' | sed 's/ $//')" "$l2_macs"
irqs=$(tr -d '\r' <"$console" | sed -n 's/^L2-IRQ //p' | grep 'IO-APIC' | grep -c 'eth[0-9]')
counts=$(tr -d '\r' <"$console" | sed -n 's/^L2-IRQ //p' | grep 'eth[0-9]' | awk '{ print $2 }' | tr '\n' ' ')
lab_eq "both NICs' interrupts are INTx on IOAPIC pins (counts: $counts)" 2 "$irqs"
nonzero() { for c in $counts; do [[ $c -gt 0 ]] || return 1; done; [[ -n $counts ]]; }
lab_check "… and both counted" nonzero

lab_check "passage release $claim" "$bin/passage" release "$claim"
lab_check "release gave both back to e1000" lab_wait_for 10 both_on e1000
kill -TERM "$LAB_PASSAGED_PID"; wait "$LAB_PASSAGED_PID" 2>/dev/null
lab_done
