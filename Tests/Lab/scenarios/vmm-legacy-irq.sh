#!/usr/bin/env bash
# lab-topology: legacy-irq
# lab-timeout: 420
#
# Passthrough of functions without MSI-X (issue 8): `passage vm start --device RNG --device AHCI`
# claims both and boots L2 with them.
# - The virtio-rng function (vectors=0) has no MSI or MSI-X: its interrupts can only be INTx, which
#   passage-vmm carries through a resampling irqfd on the slot's IOAPIC pin (the guest finds the
#   pin through the DSDT's _PRT). L2 reads 2 KiB from /dev/hwrng: 32 requests, each completed by an
#   interrupt; as INTx is level-triggered, more than one interrupt means the guest's EOI unmasked
#   the line again through KVM's resample eventfd and VFIO's unmask eventfd.
# - The AHCI function has MSI but no MSI-X: L2's ahci driver starts on INTx, then enables MSI, so
#   the VMM switches the device from INTx to MSI under it; L2 reads the marker from the disk.
# After the VM, `passage release` puts virtio-rng back on virtio-pci and leaves AHCI unbound, as
# they were.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

rng=0000:01:00.0 ahci=0000:02:00.0
lab_vmm_prepare
[[ -n ${LAB_L2IRQ_INITRD:-} && -r $LAB_L2IRQ_INITRD ]] || lab_fatal "no L2 irq initramfs (LAB_L2IRQ_INITRD)"

lab_eq "01:00.0 is virtio-rng (1af4:1044)" "0x1af4 0x1044" "$(cat $LAB_PCI/$rng/vendor $LAB_PCI/$rng/device | tr '\n' ' ' | sed 's/ $//')"
lab_eq "02:00.0 is ICH9 AHCI (8086:2922)" "0x8086 0x2922" "$(cat $LAB_PCI/$ahci/vendor $LAB_PCI/$ahci/device | tr '\n' ' ' | sed 's/ $//')"
# Capability IDs of a function (standard list, from its config space as L1 reads it).
caps() { od -An -v -tu1 -w256 -N256 "$LAB_PCI/$1/config" | awk '{ p = $53; n = 0; while (p >= 64 && n < 48) { printf "%02x ", $(p + 1); p = $(p + 2); n++ } }'; }
has() { [[ " $1" == *" $2 "* ]]; }     # WORDS WORD
lacks() { ! has "$@"; }
both() { "$1" "$2" "$3" && "$4" "$5" "$6"; }
rng_caps=$(caps $rng) ahci_caps=$(caps $ahci)
lab_check "virtio-rng has neither MSI (05) nor MSI-X (11): $rng_caps" both lacks "$rng_caps" 05 lacks "$rng_caps" 11
lab_check "AHCI has MSI (05) and no MSI-X (11): $ahci_caps" both has "$ahci_caps" 05 lacks "$ahci_caps" 11
lab_check "L1's virtio-pci drives virtio-rng" lab_wait_for 10 lab_driver_is $rng virtio-pci
lab_eq "AHCI has no driver in L1" "" "$(lab_driver $ahci)"

lab_passaged_for_vms

console=$state/vms/irq/console.log
out=$("$bin/passage" vm start irq --device $rng --device $ahci --kernel "$LAB_KERNEL" --initrd "$LAB_L2IRQ_INITRD" \
    --memory 256M --cmdline "console=ttyS0 panic=-1 quiet lab.irq=1 lab.marker=$LAB_MARKER" 2>&1); rc=$?
echo "# $out"
lab_eq "passage vm start irq --device $rng --device $ahci" 0 "$rc"
claim=$(lab_vm_claim irq)
lab_eq "both functions were claimed onto vfio-pci" "vfio-pci vfio-pci" "$(lab_driver $rng) $(lab_driver $ahci)"
# L1's view of the functions' host interrupts while the VM runs (VFIO's handlers), for diagnosis.
( while sleep 1; do grep -E 'vfio' /proc/interrupts >"$LAB_OUT/l1-irq.now" && cp "$LAB_OUT/l1-irq.now" "$LAB_OUT/l1-irq.last"; done ) &
sampler=$!
lab_check "the guest powers off: VM irq stopped, exit 0" lab_wait_for 240 lab_vm_state_is irq "stopped 0"
kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
sed 's/^/# L1 interrupts during the VM| /' "$LAB_OUT/l1-irq.last" 2>/dev/null
tr -d '\r' <"$console" | grep -a '^L2\|virtio\|ahci\|ata[0-9]\|PCI\|pci 0000\|hwrng' | sed 's/^/L2| /' | head -n 60
sed 's/^/# vmm.log| /' $state/vms/irq/vmm.log

l2() { tr -d '\r' <"$console" | sed -n "s/^$1 *//p"; }
lab_eq "L2 read 2048 bytes from /dev/hwrng (virtio-rng)" "bytes=2048" "$(l2 L2-HWRNG | head -n1)"
lab_eq "after the guest set and cleared INTx Disable, virtio-rng still interrupts (256 more bytes)" "bytes=256" "$(l2 L2-INTX-TOGGLED | sed 's/.* bytes=/bytes=/' | head -n1)"
intx=$(l2 L2-IRQ | grep 'virtio' | head -n1)
intx_count=$(awk '{ print $2 }' <<<"$intx")
contains() { [[ $1 == *"$2"* ]]; }
lab_check "virtio-rng's interrupts came as INTx on an IOAPIC pin, level-triggered: $intx" \
    both contains "$intx" IO-APIC contains "$intx" fasteoi
lab_check "… and kept coming after the first (the EOI re-armed the line: resample → unmask): ${intx_count:-none}" test "${intx_count:-0}" -gt 1
msi=$(l2 L2-IRQ | grep 'ahci' | head -n1)
msi_count=$(awk '{ print $2 }' <<<"$msi")
lab_check "AHCI's interrupts came as MSI: $msi" contains "$msi" PCI-MSI
lab_check "… and counted (${msi_count:-none})" test "${msi_count:-0}" -gt 0
lab_check "L2 read the marker through AHCI (L2-RESULT rc=0)" grep -aq 'L2-RESULT rc=0' "$console"
no_failure() { ! grep -qi 'failed' "$1"; }
lab_check "passage-vmm reported no interrupt set-up failure" no_failure $state/vms/irq/vmm.log

lab_check "passage release $claim" "$bin/passage" release "$claim"
lab_eq "release put virtio-rng back on virtio-pci and left AHCI unbound" "virtio-pci " "$(lab_driver $rng) $(lab_driver $ahci)"
kill -TERM "$LAB_PASSAGED_PID"; wait "$LAB_PASSAGED_PID" 2>/dev/null

# The same guest without ACPI (acpi=off): it learns the slots' INTA pins from the MP table, not the
# DSDT's _PRT, and resets at the end (reboot=k) since it cannot power off.
for f in $rng $ahci; do out=$(lab_vfio_bind $f) || lab_fatal "could not bind $f to vfio-pci: $out"; done
noacpi=$LAB_OUT/noacpi.log
timeout -k 5 180 "$vmm" --kernel "$LAB_KERNEL" --initrd "$LAB_L2IRQ_INITRD" --memory 256M --vfio $rng --vfio $ahci \
    --kernel-cache "$state/kernel-cache" --cmdline "console=ttyS0 panic=-1 quiet acpi=off reboot=k lab.end=reboot lab.irq=1 lab.marker=$LAB_MARKER" \
    </dev/null >"$noacpi" 2>"$LAB_OUT/noacpi.err"; rc=$?
tr -d '\r' <"$noacpi" | grep -a '^L2\|virtio\|ahci\|ACPI\|MP-table\|IOAPIC\[' | sed 's/^/L2 acpi=off| /' | head -n 30
sed 's/^/# acpi=off stderr| /' "$LAB_OUT/noacpi.err"
lab_eq "passage-vmm with an acpi=off guest exits 0 (the guest reset the machine)" 0 "$rc"
na() { tr -d '\r' <"$noacpi" | sed -n "s/^$1 *//p"; }
lab_eq "acpi=off: L2 read 2048 bytes from /dev/hwrng" "bytes=2048" "$(na L2-HWRNG | head -n1)"
intx=$(na L2-IRQ | grep 'virtio' | head -n1)
lab_check "acpi=off: virtio-rng's INTx came on an IOAPIC pin, level-triggered (from the MP table): $intx" \
    both contains "$intx" IO-APIC contains "$intx" fasteoi
lab_check "… and kept coming: $(awk '{ print $2 }' <<<"$intx")" test "$(awk '{ print $2 }' <<<"$intx")" -gt 1
lab_check "acpi=off: L2 read the marker through AHCI (MSI)" grep -aq 'L2-RESULT rc=0' "$noacpi"
lab_done
