#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 420
#
# Benchmark (issue: device operations), measured in one L1 run, 3 rounds each, medians:
#   A. create 4 VFs, provision their NVMe secondary controllers (2 VQ, 1 VI), bind all to vfio-pci:
#      `passage vf create … --driver vfio-pci`  vs  the shell baseline of LAB.md (sysfs echo + nvme-cli);
#   B. binding 4 existing VFs to vfio-pci: `passage bind` (one call per VF, and one call for all four)
#      vs `driverctl --nosave set-override` (one call per VF; it takes one device) vs sysfs echo.
# Prints LAB-TIMING lines and the ratios (goal: Passage no slower than the shell baseline).
# Note: in L1 (TCG, binaries over 9p) starting any host program costs ~0.3-0.7 s, so tools that
# start many processes (nvme-cli once per admin command) pay for it; that is part of what is measured.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN/passage
[[ -x $bin ]] || lab_fatal "no passage binary at $bin"
command -v nvme >/dev/null || lab_fatal "nvme-cli missing on the host"
command -v driverctl >/dev/null || lab_fatal "driverctl missing on the host (apt-get install driverctl)"
pf=0000:01:00.0
modprobe nvme
modprobe vfio-pci
lab_check "nvme binds the PF" lab_wait_for 10 lab_driver_is $pf nvme
ctrl=$(lab_nvme_ctrl $pf) || lab_fatal "no controller on $pf"
vfs="0000:01:00.1 0000:01:00.2 0000:01:00.3 0000:01:00.4"
now() { cut -d' ' -f1 /proc/uptime; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

teardown() { # unbind every VF, remove them
    for vf in $vfs; do
        [[ -e $LAB_PCI/$vf ]] || continue
        [[ -L $LAB_PCI/$vf/driver ]] && echo "$vf" >"$LAB_PCI/$vf/driver/unbind"
        echo >"$LAB_PCI/$vf/driver_override"
    done
    echo 0 >$LAB_PCI/$pf/sriov_numvfs
    lab_nvme_live "$ctrl" >/dev/null
}

shell_baseline() { # the LAB.md sequence, as an operator's script does it
    nvme virt-mgmt "$ctrl" --cntlid=0 --rt=0 --act=1 --nr=0 >/dev/null || return 1
    nvme virt-mgmt "$ctrl" --cntlid=0 --rt=1 --act=1 --nr=0 >/dev/null || return 1
    echo 1 >$LAB_PCI/$pf/reset || return 1
    lab_nvme_live "$ctrl" || return 1
    echo 0 >$LAB_PCI/$pf/sriov_drivers_autoprobe
    echo 4 >$LAB_PCI/$pf/sriov_numvfs || return 1
    for i in 1 2 3 4; do
        nvme virt-mgmt "$ctrl" --cntlid=$i --rt=0 --act=8 --nr=2 >/dev/null || return 1
        nvme virt-mgmt "$ctrl" --cntlid=$i --rt=1 --act=8 --nr=1 >/dev/null || return 1
        nvme virt-mgmt "$ctrl" --cntlid=$i --act=9 >/dev/null || return 1
    done
    for vf in $vfs; do
        echo vfio-pci >"$LAB_PCI/$vf/driver_override" || return 1
        echo "$vf" >/sys/bus/pci/drivers_probe || return 1
    done
    for vf in $vfs; do [[ $(lab_driver $vf) == vfio-pci ]] || return 1; done
}

all_on_vfio() { for vf in $vfs; do [[ $(lab_driver $vf) == vfio-pci ]] || return 1; done; }

tp="" ts=""
for round in 1 2 3; do
    t0=$(now); "$bin" vf create $pf --count 4 --nvme-queues 2 --nvme-interrupts 1 --driver vfio-pci >/dev/null 2>"$LAB_OUT/p.err"; rc=$?; t=$(lab_since "$t0")
    lab_eq "round $round: passage vf create succeeds" 0 "$rc"
    lab_check "round $round: passage left 4 VFs on vfio-pci" all_on_vfio
    tp+=" $t"; teardown
    t0=$(now); shell_baseline >"$LAB_OUT/s.out" 2>&1; rc=$?; t=$(lab_since "$t0")
    lab_eq "round $round: shell baseline succeeds" 0 "$rc"
    ts+=" $t"; teardown
done
mp=$(median <<<"$tp") ms=$(median <<<"$ts")
lab_timing "create_provision_bind passage_seconds=$mp shell_seconds=$ms ratio=$(ratio "$mp" "$ms") runs_passage=[${tp# }] runs_shell=[${ts# }]"
lab_check "passage is no slower than the shell baseline ($mp s vs $ms s)" awk -v a="$mp" -v b="$ms" 'BEGIN { exit !(a <= b) }'

# B: binding alone, on 4 provisioned VFs left unbound.
"$bin" vf create $pf --count 4 --nvme-queues 2 --nvme-interrupts 1 >/dev/null 2>&1 || lab_fatal "cannot create the VFs for part B"
unbind_all() { for vf in $vfs; do [[ -L $LAB_PCI/$vf/driver ]] && echo "$vf" >"$LAB_PCI/$vf/driver/unbind"; echo >"$LAB_PCI/$vf/driver_override"; done; }
bp="" bm="" bd="" be=""
for round in 1 2 3; do
    t0=$(now); for vf in $vfs; do "$bin" bind $vf >/dev/null || break; done; t=$(lab_since "$t0")
    lab_check "round $round: passage bind (one call per VF) put 4 VFs on vfio-pci" all_on_vfio; bp+=" $t"; unbind_all
    # shellcheck disable=SC2086
    t0=$(now); "$bin" bind $vfs >/dev/null; t=$(lab_since "$t0")
    lab_check "round $round: passage bind (one call) put 4 VFs on vfio-pci" all_on_vfio; bm+=" $t"; unbind_all
    t0=$(now); for vf in $vfs; do driverctl --nosave set-override $vf vfio-pci >/dev/null 2>&1 || break; done; t=$(lab_since "$t0")
    lab_check "round $round: driverctl put 4 VFs on vfio-pci" all_on_vfio; bd+=" $t"
    for vf in $vfs; do driverctl --nosave unset-override $vf >/dev/null 2>&1; done; unbind_all
    t0=$(now); for vf in $vfs; do echo vfio-pci >"$LAB_PCI/$vf/driver_override"; echo "$vf" >/sys/bus/pci/drivers_probe; done; t=$(lab_since "$t0")
    lab_check "round $round: sysfs echo put 4 VFs on vfio-pci" all_on_vfio; be+=" $t"; unbind_all
done
mbp=$(median <<<"$bp") mbm=$(median <<<"$bm") mbd=$(median <<<"$bd") mbe=$(median <<<"$be")
lab_timing "bind4 passage_per_vf_seconds=$mbp passage_one_call_seconds=$mbm driverctl_seconds=$mbd shell_echo_seconds=$mbe ratio_per_vf_vs_driverctl=$(ratio "$mbp" "$mbd") ratio_one_call_vs_driverctl=$(ratio "$mbm" "$mbd") ratio_one_call_vs_echo=$(ratio "$mbm" "$mbe")"
teardown
lab_done
