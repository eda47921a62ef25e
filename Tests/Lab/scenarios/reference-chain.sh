#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 300
#
# The reference chain of shared/LAB.md, done the baseline way (nvme-cli, sysfs, QEMU):
# enable one VF on the NVMe PF, put its secondary controller online, bind it to vfio-pci,
# and boot an L2 Linux under QEMU/KVM in L1 with the VF passed through. L2 reads the
# namespace's first sector and must find the lab marker. This is the bar passage-vmm has
# to beat, so it prints its timings:
#   LAB-TIMING setup_seconds=… l2_seconds=… l2_guest_seconds=… total_seconds=…
# (l2_seconds: QEMU's wall time for the whole L2 run, firmware included; total_seconds:
# L1 uptime at the end, i.e. L1 boot + setup + L2.)
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

pf=0000:01:00.0
vf=0000:01:00.1

grep -qw svm /proc/cpuinfo || lab_fatal "the L1 CPU has no SVM (need -cpu max under TCG)"
lab_ok "L1 CPU exposes SVM"
lab_kvm_load
lab_check "/dev/kvm exists in L1" test -c /dev/kvm
lab_log "kvm_amd nested=$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null) npt=$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null)"
modprobe nvme || lab_fatal "modprobe nvme failed"
modprobe vfio-pci || lab_fatal "modprobe vfio-pci failed"

t_setup=$(cut -d' ' -f1 /proc/uptime)
if ! lab_nvme_sriov_enable "$pf" 1; then
    lab_fatal "could not enable and provision a VF on $pf"
fi
lab_check "VF $vf exists" test -d "$LAB_PCI/$vf"
lab_eq "VF's physfn is the PF" "$pf" "$(basename "$(readlink "$LAB_PCI/$vf/physfn")")"
vfio_dev=$(lab_vfio_bind "$vf") || lab_fatal "could not bind $vf to vfio-pci: $vfio_dev"
lab_ok "VF bound to vfio-pci ($vfio_dev)"
setup_s=$(lab_since "$t_setup")

mkdir -p "$LAB_OUT"
l2log=$LAB_OUT/l2-console.log
lab_log "booting L2 with $vf passed through"
t_l2=$(date +%s.%N)
timeout -k 5 150 qemu-system-x86_64 -enable-kvm -cpu host -M q35 -m 256M -smp 1 \
    -nodefaults -no-user-config -display none -no-reboot -serial stdio \
    -kernel "$LAB_KERNEL" -initrd "$LAB_L2_INITRD" \
    -append "console=ttyS0 quiet panic=-1 lab.marker=$LAB_MARKER" \
    -device vfio-pci,host="$vf" </dev/null >"$l2log" 2>&1
qemu_rc=$?
l2_s=$(awk -v a="$t_l2" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
tr -d '\r' <"$l2log" | sed 's/^/L2| /'

lab_eq "L2 QEMU exited cleanly" 0 "$qemu_rc"
lab_check "L2 read the marker from the VF's namespace" grep -aq 'L2-RESULT rc=0' "$l2log"
lab_check "L2 got MSI-X vectors for the VF (nvme0q0)" grep -aq 'L2-IRQ.*nvme0q0' "$l2log"
l2_guest=$(tr -d '\r' <"$l2log" | sed -n 's/^L2-DONE uptime=//p' | tail -n1)

lab_timing "setup_seconds=$setup_s l2_seconds=$l2_s l2_guest_seconds=${l2_guest:-?} total_seconds=$(cut -d' ' -f1 /proc/uptime)"
lab_done
