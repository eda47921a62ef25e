#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 480
#
# passaged creating VFs on the NVMe PF (issue: the daemon), on the real kernel:
# - `passage vf create PF --count 2 --driver vfio-pci --nvme-queues 2 --nvme-interrupts 1` runs as
#   a daemon operation (progress lines) and leaves 2 provisioned VFs on vfio-pci;
# - crash safety: passaged is SIGKILLed at 8 points during VF creation and restarted; after each
#   restart it is ready, no intent is left pending (the reconcile line says what was undone), and
#   the PF is either back at 0 VFs or has both VFs on vfio-pci: never a VF left without a driver
#   by a creation cut short; and when it is back at 0 VFs, the NVMe controller is as before the
#   creation (`passage nvme status`: what the primary holds, each secondary's state and
#   resources). Each creation starts with the primary holding its flexible resources (given back
#   with nvme-cli and a PF reset), so each one frees them first: the step whose undo needs what the
#   creation recorded in its intent. Then the VFs are removed through the daemon.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN
[[ -x $bin/passaged && -x $bin/passage ]] || lab_fatal "no passaged/passage in $bin"
pf=0000:01:00.0
modprobe nvme
modprobe vfio-pci
lab_check "nvme binds the PF" lab_wait_for 10 lab_driver_is $pf nvme
sock=/run/passage/passage.sock
state=/tmp/passage-state
export PASSAGE_SOCKET=$sock
pid= t=
start_daemon() { lab_passaged_start $sock $state --rescan-interval 60 || return 1; pid=$LAB_PASSAGED_PID t=$LAB_PASSAGED_SECONDS; }
numvfs() { cat $LAB_PCI/$pf/sriov_numvfs; }
vf_drivers() { lab_vf_drivers $pf; }
create=(vf create $pf --count 2 --driver vfio-pci --nvme-queues 2 --nvme-interrupts 1)

start_daemon || lab_fatal "passaged did not come up: $(tail -n 20 "$LAB_OUT/passaged.log")"
lab_ok "passaged up in ${t}s"
out=$("$bin/passage" "${create[@]}" 2>&1); rc=$?
echo "$out"
lab_eq "vf create through passaged succeeds" 0 "$rc"
lab_check "… printing a progress line per VF" test "$(grep -c '^VF [01] .*ready on vfio-pci' <<<"$out")" -eq 2
lab_eq "two VFs on vfio-pci" "vfio-pci vfio-pci" "$(vf_drivers)"
lab_check "vf remove through passaged" "$bin/passage" vf remove $pf
lab_eq "no VFs left" 0 "$(numvfs)"

# The NVMe controller as `passage nvme status` sees it: primary VQ/VI, then each secondary.
nvme_state() {
    "$bin/passage" nvme status $pf --json 2>&1 | jq -c '[.queues.allocatedToPrimary, .interrupts.allocatedToPrimary,
        [.secondaryControllers[] | [.controllerId, .state, .queues, .interrupts]]]' 2>&1
}
nvme_live() { [[ $(cat $LAB_PCI/$pf/nvme/nvme*/state 2>/dev/null) == live ]]; }
# The primary holds all flexible resources again (8 VQ, 4 VI: the topology's), as at boot.
nvme_give_back() {
    local c=/dev/$(ls $LAB_PCI/$pf/nvme | head -n1)
    nvme virt-mgmt $c --cntlid=0 --rt=0 --act=1 --nr=8 >/dev/null && nvme virt-mgmt $c --cntlid=0 --rt=1 --act=1 --nr=4 >/dev/null \
        && echo 1 >$LAB_PCI/$pf/reset && lab_wait_for 20 nvme_live
}

invariants() {
    local n d
    n=$(numvfs)
    case $n in
    0) ;;
    2) for d in $(vf_drivers); do [[ $d == vfio-pci ]] || { echo "a VF is on '$d' after a cut-short creation"; return 1; }; done ;;
    *) echo "the PF has $n VFs"; return 1 ;;
    esac
    curl -sf --unix-socket $sock http://localhost/v1/health >/dev/null || { echo "not healthy"; return 1; }
}
worst=0 undone=0 kills=${LAB_ARG_KILLS:-16} readies=() recs=()
mkfifo /tmp/daemon-vf.nap; exec {napfd}<>/tmp/daemon-vf.nap   # naps without a process start
vfs_appeared() { [[ $(<$LAB_PCI/$pf/sriov_numvfs) != 0 ]]; }
prepared=0
for i in $(seq 1 "$kills"); do
    nvme_give_back || lab_fatal "could not give the NVMe primary its resources back before kill $i: $(nvme_state)"
    nvme_before=$(nvme_state)
    if (( i % 2 )); then
        # The CLI takes ~0.2-0.5 s to start in L1 and the creation (freeing the NVMe primary's
        # resources with a PF reset, VFs, provisioning, binding) ~0.3-1 s: these delays sweep across it.
        delay=$(awk -v i="$i" 'BEGIN { printf "%.2f", 0.1 + ((i - 1) % 8 + 1) * 0.12 }')
        ( "$bin/passage" "${create[@]}" >/dev/null 2>&1 & sleep "$delay"; kill -9 $pid )
    else
        # Inside the creation for sure: once the VFs exist (provisioning and binding still to come),
        # 0–0.15 s later. (Fixed delays alone could all miss a fast creation.)
        delay="VFs+$(awk -v i="$i" 'BEGIN { printf "%.2f", ((i / 2 - 1) % 4) * 0.05 }')"
        ( "$bin/passage" "${create[@]}" >/dev/null 2>&1 &
          t0=$EPOCHREALTIME
          until vfs_appeared || (( ${EPOCHREALTIME/./} - ${t0/./} > 10000000 )); do read -r -t 0.005 -u $napfd _; done
          read -r -t "${delay#VFs+}" -u $napfd _
          kill -9 $pid )
    fi
    wait $pid 2>/dev/null
    start_daemon || lab_fatal "passaged did not restart after kill $i: $(tail -n 20 "$LAB_OUT/passaged.log")"
    worst=$(awk -v a="$worst" -v b="$t" 'BEGIN { print (b > a) ? b : a }'); readies+=("$t") recs+=("$LAB_PASSAGED_RECONCILED_SECONDS")
    why=$(invariants)
    lab_eq "kill $i (after ${delay}s): PF at $(numvfs) VFs [$(vf_drivers)], ready in ${t}s" "" "$why"
    report=$LAB_PASSAGED_RECONCILED
    echo "# kill $i: ${report#* : }"
    if [[ $(numvfs) == 0 ]]; then
        lab_eq "kill $i: the NVMe controller is as before the creation [primary VQ, VI, secondaries]" "$nvme_before" "$(nvme_state)"
    fi
    [[ $report == *"NVMe primary given back"* ]] && prepared=$((prepared + 1))
    [[ $report == *'rolledBack=["intent'* ]] && undone=$((undone + 1))
    [[ $(numvfs) == 0 ]] || "$bin/passage" vf remove $pf >/dev/null || lab_fatal "vf remove failed after kill $i"
done
lab_check "at least one kill cut a creation short and start-up undid it: $undone" test "$undone" -gt 0
lab_check "… and at least one of those gave the NVMe primary back the resources the creation had freed: $prepared" test "$prepared" -gt 0
lab_timing "vf_crash_restarts=$kills undone=$undone $(lab_ready_summary "${readies[@]}") reconciled_worst_seconds=$(printf '%s\n' "${recs[@]}" | sort -n | tail -n 1)"
out=$("$bin/passage" "${create[@]}" 2>&1); rc=$?
lab_eq "after the torture, vf create still works" 0 "$rc"
lab_eq "… two VFs on vfio-pci" "vfio-pci vfio-pci" "$(vf_drivers)"
"$bin/passage" vf remove $pf >/dev/null
kill -TERM $pid; wait $pid
lab_eq "SIGTERM stops passaged cleanly" 0 "$?"
lab_done
