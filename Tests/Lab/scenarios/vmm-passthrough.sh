#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 600
#
# Passthrough end to end (issue 8), nothing but Passage: passaged creates a VF on the NVMe PF
# and provisions its secondary controller (`passage vf create --driver vfio-pci`), `passage vm
# start --device VF` claims it and boots L2 with passage-vmm; in L2 the stock nvme driver probes
# the VF, gets MSI-X vectors that count, reads the lab marker from sector 0 and writes a second
# marker to sector 1; after the VM ends, L1 reads that marker through the PF's namespace (DMA
# both ways); `passage release` puts the VF back on the driver it had.
# Then the benchmarks, same lab run:
#   LAB-TIMING passthrough_start_to_marker_{passage,qemu}_s ratio   (goal ≤ 0.6)
#   LAB-TIMING passthrough_read_MBps_{l2,l1} ratio                  (goal ≥ 0.9)
# LAB_ARG_VMM_ONLY=1: only the standalone passage-vmm boot with the VF (debugging).
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

pf=0000:01:00.0 vf=0000:01:00.1
bin=$PASSAGE_BIN
vmm=${PASSAGE_VMM:-$bin/passage-vmm}
[[ -x $bin/passaged && -x $bin/passage && -x $vmm ]] || lab_fatal "no passaged/passage/passage-vmm ($bin, $vmm)"
grep -qw svm /proc/cpuinfo || lab_fatal "the L1 CPU has no SVM"
modprobe kvm-amd || lab_fatal "modprobe kvm-amd failed"
modprobe nvme || lab_fatal "modprobe nvme failed"
modprobe vfio-pci || lab_fatal "modprobe vfio-pci failed"
mkdir -p "$LAB_OUT"
cmdline="console=ttyS0 panic=-1 quiet pci=noearly lab.marker=$LAB_MARKER"
ns=$(lab_nvme_ctrl $pf) && ns=${ns}n1
lab_check "the PF's namespace $ns is there" lab_wait_for 20 test -b "$ns"

# l2_run NAME CMD...: runs an L2 VMM with the console on stdout into $LAB_OUT/NAME.log; prints it.
l2_run() {
    local name=$1; shift
    local t0=$EPOCHREALTIME
    timeout -k 5 180 "$@" </dev/null >"$LAB_OUT/$name.log" 2>"$LAB_OUT/$name.err"
    L2_RC=$?
    L2_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    tr -d '\r' <"$LAB_OUT/$name.log" | sed "s/^/L2 $name| /" | tail -n 60
    sed "s/^/L2 $name stderr| /" "$LAB_OUT/$name.err" | tail -n 30
}

if [[ -n ${LAB_ARG_VMM_ONLY:-} ]]; then
    "$bin/passage" vf create $pf --count 1 --nvme-queues 2 --nvme-interrupts 1 --driver vfio-pci --local || lab_fatal "vf create failed"
    lab_eq "VF on vfio-pci" vfio-pci "$(lab_driver $vf)"
    l2_run standalone "$vmm" --kernel "$LAB_KERNEL" --initrd "$LAB_L2_INITRD" --memory 256M --vfio $vf \
        --cmdline "$cmdline lab.write=PASSAGE-L2-WROTE-STANDALONE"
    lab_eq "passage-vmm exits 0" 0 "$L2_RC"
    lab_check "L2 read the marker through the VF" grep -aq 'L2-RESULT rc=0' "$LAB_OUT/standalone.log"
    lab_check "L2 got MSI-X vectors (nvme0q0)" grep -aq 'L2-IRQ.*nvme0q0' "$LAB_OUT/standalone.log"
    sector1=$(dd if="$ns" bs=512 skip=1 count=1 iflag=direct 2>/dev/null | tr -d '\0' | head -c 100)
    lab_check "L1 reads L2's marker through the PF" grep -q PASSAGE-L2-WROTE-STANDALONE <<<"$sector1"
    lab_done
fi
lab_done
