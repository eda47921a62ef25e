#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 300
#
# Automation (issue: policy, udev, systemd) on the real kernel with a real systemd-udevd running
# Passage's rules (from /run/udev/rules.d: L1's root is the read-only host):
# - boot path: passaged starts with a policy for the NVMe PF (2 VFs, 2 queues / 1 interrupt each,
#   vfio-pci, pool nvme-vfs) and makes the host match it; restarted with the policy satisfied it
#   writes nothing (passage_sysfs_writes_total 0); half-satisfied (a VF unbound behind its back
#   while it was down) it completes it;
# - udev: /dev/vfio/N of a VF gets group passage, mode 0660; events reach passaged tagged by the rules;
# - hot-plug: the PF's slot (its root port) is removed through sysfs (a claim on one of its VFs
#   becomes lost) and the bus rescanned: with no command, VFs appear, are provisioned, bound and announced ready in the pool.
#   Benchmark: seconds from the rescan to the pool-ready event (LAB-TIMING policy_pf_ready_seconds).
# - a bad policy reload (SIGHUP) is refused and the old policy stays in force.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN
[[ -x $bin/passaged && -x $bin/passage ]] || lab_fatal "no passaged/passage in $bin"
pf=0000:01:00.0
modprobe nvme
modprobe vfio-pci
lab_check "nvme binds the PF" lab_wait_for 10 lab_driver_is $pf nvme
getent group passage >/dev/null || lab_fatal "no passage group on the host (scripts/setup.sh creates it)"

# systemd-udevd with the project's rules.
mkdir -p /run/udev/rules.d
cp "$LAB_REPO/udev/70-passage.rules" /run/udev/rules.d/
/lib/systemd/systemd-udevd --daemon --resolve-names=late >/dev/null 2>&1 || lab_fatal "systemd-udevd did not start"
lab_check "systemd-udevd runs" lab_wait_for 5 test -S /run/udev/control

sock=/run/passage/passage.sock
state=/tmp/passage-state
policy=/tmp/passage.toml
export PASSAGE_SOCKET=$sock PASSAGE_LOG_LEVEL=debug  # debug: the uevent batches show in passaged.log
cat >$policy <<EOF
[[pf]]
name = "nvme"
match = { address = "$pf" }
vfs = 2
vf_driver = "vfio-pci"
nvme = { queues = 2, interrupts = 1 }

[[pool]]
name = "nvme-vfs"
pf = "$pf"
EOF
lab_check "passage policy check accepts the file" "$bin/passage" policy check $policy
pid=
start_daemon() { lab_passaged_start $sock $state --policy $policy --rescan-interval 60 || return 1; pid=$LAB_PASSAGED_PID t=$LAB_PASSAGED_SECONDS; }
stop_daemon() { kill -TERM $pid; wait $pid; }
writes() { curl -s --unix-socket $sock http://localhost/metrics | awk '/^passage_sysfs_writes_total/ { print $2 }'; }
vf_drivers() { lab_vf_drivers $pf; }
policy_ok() { curl -s --unix-socket $sock http://localhost/v1/policy | jq -e '.steps | length > 0 and all(.action == "ok")' >/dev/null; }

# ---- boot path --------------------------------------------------------------------------------
start_daemon || lab_fatal "passaged did not come up: $(tail -n 20 "$LAB_OUT/passaged.log")"
lab_check "passaged listens to udev with the rules' tag" grep -q "udev uevent source (events tagged passage" "$LAB_OUT/passaged.log"
lab_check "at start the policy is applied: 2 VFs on vfio-pci" lab_wait_for 20 sh -c "[ \"\$(cat $LAB_PCI/$pf/sriov_numvfs)\" = 2 ] && [ -L $LAB_PCI/0000:01:00.2/driver ] && [ \"\$(basename \$(readlink $LAB_PCI/0000:01:00.2/driver))\" = vfio-pci ]"
lab_eq "both VFs on vfio-pci" "vfio-pci vfio-pci" "$(vf_drivers)"
lab_check "the policy reports every step ok" lab_wait_for 5 policy_ok
"$bin/passage" nvme status $pf --json >"$LAB_OUT/status.json"
lab_eq "the VFs' secondary controllers are online with 2 VQ and 1 VI" "online/2/1 online/2/1" \
    "$(jq -r '[.secondaryControllers | sort_by(.vfNumber)[] | select(.state == "online") | "\(.state)/\(.queues)/\(.interrupts)"] | join(" ")' "$LAB_OUT/status.json")"
g=$(lab_iommu_group 0000:01:00.1)
lab_eq "udev gave /dev/vfio/$g group passage, mode 0660" "passage 660" "$(stat -c '%G %a' /dev/vfio/$g 2>/dev/null)"
lab_eq "pool nvme-vfs has both VFs, free" "2 2 policy" "$(curl -s --unix-socket $sock http://localhost/v1/pools/nvme-vfs | jq -r '"\(.members | length) \(.free) \(.source)"')"

stop_daemon
start_daemon || lab_fatal "passaged did not restart"
lab_check "restart with the policy satisfied: ready" lab_wait_for 5 policy_ok
lab_eq "… and not one sysfs write" 0 "$(writes)"

stop_daemon
echo 0000:01:00.2 >$LAB_PCI/0000:01:00.2/driver/unbind
lab_eq "a VF unbound while passaged was down" "vfio-pci -" "$(vf_drivers)"
start_daemon || lab_fatal "passaged did not restart"
lab_check "restart with the policy half-satisfied completes it" lab_wait_for 10 sh -c "[ -L $LAB_PCI/0000:01:00.2/driver ]"
lab_eq "both VFs on vfio-pci again" "vfio-pci vfio-pci" "$(vf_drivers)"
lab_check "… with a few sysfs writes ($(writes))" test "$(writes)" -gt 0

# ---- hot-plug: the PF goes and comes back ------------------------------------------------------
id=$("$bin/passage" claim 0000:01:00.1 --owner vm-hot --json | jq -r .id)
lab_check "a VF of the PF is claimed" test -n "$id"
# The slot goes away: its root port is removed, which takes the VFs and then the PF (removing
# only the PF would leave its VFs behind as orphans, and re-enabling SR-IOV on the rescanned PF
# then trips a kernel BUG in pci_iov_add_virtfn: not what unplugging hardware does).
port=$(basename "$(dirname "$(readlink -f $LAB_PCI/$pf)")")
claim_lost() { curl -s --unix-socket $sock "http://localhost/v1/claims/$id" | jq -e '.state == "lost"' >/dev/null; }
t0=$(cut -d' ' -f1 /proc/uptime)
echo 1 >$LAB_PCI/$port/remove
lab_check "the PF ($pf behind $port) and its VFs are gone" lab_wait_for 10 sh -c "[ ! -e $LAB_PCI/$pf ] && [ ! -e $LAB_PCI/0000:01:00.1 ]"
# (curl, not the CLI: starting a Swift binary in L1 takes most of a second per try.)
if lab_wait_for 10 claim_lost; then
    lab_ok "the claim on its VF becomes lost"
    lab_timing "policy_claim_lost_seconds=$(lab_since "$t0")"
else
    lab_fail "the claim on its VF becomes lost" "$(grep -a -E "uevent|hot-plug|refreshing|policy" "$LAB_OUT/passaged.log" | tail -n 15)"
fi
lab_check "passaged is still healthy" curl -sf --unix-socket $sock http://localhost/v1/health
last=$(curl -s -m 1 --unix-socket $sock "http://localhost/v1/events?since=0" | tail -n 1 | jq -r .seq)
curl -sN --unix-socket $sock "http://localhost/v1/events?since=$last" >/tmp/events.ndjson 2>/dev/null &
follower=$!
t0=$(cut -d' ' -f1 /proc/uptime)
echo 1 >/sys/bus/pci/rescan
ready=
if lab_wait_for 60 grep -q '"kind":"pool-ready"' /tmp/events.ndjson; then ready=$(lab_since "$t0"); fi
kill $follower 2>/dev/null
lab_check "after the rescan, with no command, the pool is announced ready (${ready:-never} s)" test -n "$ready"
lab_timing "policy_pf_ready_seconds=${ready:-?}"
lab_eq "2 VFs on vfio-pci again" "vfio-pci vfio-pci" "$(vf_drivers)"
lab_check "events told the story" jq -se 'any(.[]; .kind == "device-appeared") and any(.[]; .kind == "policy-step") and any(.[]; .kind == "pool-ready")' /tmp/events.ndjson
grep -a '"kind":"\(policy-step\|pool-ready\)"' /tmp/events.ndjson | jq -r .message | sed 's/^/# /'
lab_check "the lost claim can be released" "$bin/passage" release "$id"

# ---- a bad reload keeps the old policy -----------------------------------------------------------
cp $policy $policy.good
echo 'vfs = "many"' >>$policy
kill -HUP $pid
lab_check "a bad file on SIGHUP is refused with file and line" lab_wait_for 5 sh -c "curl -s --unix-socket $sock http://localhost/v1/policy | jq -e '.rejected | test(\"$policy:[0-9]+:\")' >/dev/null"
lab_eq "… and the old policy stays in force" 1 "$(curl -s --unix-socket $sock http://localhost/v1/policy | jq '.pfRules')"
out=$("$bin/passage" policy check $policy 2>&1); rc=$?
lab_eq "passage policy check says invalid (exit 65)" 65 "$rc"
echo "# $out"
cp $policy.good $policy
stop_daemon
lab_eq "SIGTERM stops passaged cleanly" 0 "$?"
lab_done
