#!/usr/bin/env bash
# lab-topology: shared-group
# lab-timeout: 600
#
# passaged on the real kernel (issue: the daemon):
# - starts, reconciles, answers /v1/health; `passage status` and curl --unix-socket work;
# - `passage claim 02:01.0` takes the whole shared group (02:01.0 and 02:02.0) onto vfio-pci,
#   /dev/vfio/N appears; a second claim on the group is refused (group-taken); the same
#   idempotency key returns the same claim; `passage release` puts both back on e1000;
# - hot-plug: an unbind, a remove and a bus rescan made behind passaged's back reach it through
#   uevents within seconds (the periodic rescan is 60 s away), with events; a claim whose function
#   is removed becomes lost and can still be released;
# - the CLI's bind/restore go through passaged: it refuses a claimed function, sees changes at once;
# - crash safety: passaged is SIGKILLed at $LAB_ARG_KILLS (default 70) points during claims and
#   releases and restarted; after each restart: ready (the LAB-TIMING line gives how many restarts
#   took more than 1 s, the median and the worst), no group held twice, no device on vfio-pci
#   without an active claim, every active claim's devices on vfio-pci; at the end everything
#   is released and back on e1000.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN
[[ -x $bin/passaged && -x $bin/passage ]] || lab_fatal "no passaged/passage in $bin"
a=0000:02:01.0 b=0000:02:02.0 c=0000:03:00.0
modprobe vfio-pci; modprobe e1000; modprobe e1000e
lab_check "e1000 on both" lab_wait_for 10 sh -c "[ -L $LAB_PCI/$a/driver ] && [ -L $LAB_PCI/$b/driver ]"
sock=/run/passage/passage.sock
state=/tmp/passage-state
export PASSAGE_SOCKET=$sock
pid= t=
# Sets $pid and $t (seconds until healthy). Not to be called in $(…): $pid must reach this shell.
start_daemon() { lab_passaged_start $sock $state --rescan-interval 60 || return 1; pid=$LAB_PASSAGED_PID t=$LAB_PASSAGED_SECONDS; }
drivers() { echo "$(lab_driver $a)/$(lab_driver $b)/$(lab_driver $c)"; }

start_daemon || lab_fatal "passaged did not come up: $(tail -n 20 "$LAB_OUT/passaged.log")"
lab_ok "passaged up and reconciled in ${t}s"
lab_timing "daemon_ready_seconds=$t"
lab_check "passage status" "$bin/passage" status
lab_eq "health over curl" ok "$(curl -s --unix-socket $sock http://localhost/v1/health | jq -r .status)"
lab_eq "devices over the API match sysfs count" "$(ls $LAB_PCI | wc -l)" "$(curl -s --unix-socket $sock http://localhost/v1/devices | jq length)"

out=$("$bin/passage" claim $a --owner vm-1 --idempotency-key k1 --json); rc=$?
lab_eq "claim succeeds" 0 "$rc"
id=$(jq -r .id <<<"$out")
lab_eq "the claim holds the whole group" "$a $b" "$(jq -r '[.members[].address] | join(" ")' <<<"$out")"
lab_eq "both on vfio-pci" "vfio-pci/vfio-pci/e1000e" "$(drivers)"
g=$(lab_iommu_group $a)
lab_check "/dev/vfio/$g exists" test -c /dev/vfio/$g
lab_eq "same idempotency key, same claim" "$id" "$("$bin/passage" claim $a --owner vm-1 --idempotency-key k1 --json | jq -r .id)"
out=$("$bin/passage" claim $b --owner vm-2 2>&1); rc=$?
lab_eq "a second claim on the group is refused" 1 "$rc"
lab_check "the refusal names the holder" grep -q "$id" <<<"$out"
lab_check "release" "$bin/passage" release "$id"
lab_eq "both back on e1000" "e1000/e1000/e1000e" "$(drivers)"

# Hot-plug: changes behind passaged's back reach it through uevents.
api_driver_is() { [[ $(curl -s --unix-socket $sock "http://localhost/v1/devices/$1" | jq -r '.driver // "none"') == "$2" ]]; }
api_status() { curl -s -o /dev/null -w '%{http_code}' --unix-socket $sock "http://localhost/v1/devices/$1"; }
api_has() { [[ $(api_status "$1") == 200 ]]; }
api_gone() { [[ $(api_status "$1") == 404 ]]; }
claim_state_is() { [[ $("$bin/passage" claims --json | jq -r --arg id "$1" '.[] | select(.id == $id) | .state') == "$2" ]]; }
lab_check "passaged watches PCI uevents" grep -q "watching PCI hot-plug" "$LAB_OUT/passaged.log"
grep -a "watching PCI hot-plug" "$LAB_OUT/passaged.log" | tail -n 1
t0=$(cut -d' ' -f1 /proc/uptime)
echo $c >"$LAB_PCI/$c/driver/unbind"
lab_check "an unbind behind its back reaches passaged" lab_wait_for 3 api_driver_is $c none
lab_timing "hotplug_unbind_seen_seconds=$(lab_since "$t0")"
t0=$(cut -d' ' -f1 /proc/uptime)
echo 1 >"$LAB_PCI/$c/remove"
lab_check "a removed function leaves the API" lab_wait_for 3 api_gone $c
lab_timing "hotplug_remove_seen_seconds=$(lab_since "$t0")"
t0=$(cut -d' ' -f1 /proc/uptime)
echo 1 >/sys/bus/pci/rescan
lab_check "… and comes back after a bus rescan" lab_wait_for 5 api_has $c
lab_timing "hotplug_add_seen_seconds=$(lab_since "$t0")"
lab_check "… on e1000e again" lab_wait_for 5 api_driver_is $c e1000e
events=$(curl -s -m 1 --unix-socket $sock "http://localhost/v1/events?since=0")
for kind in device-changed device-vanished device-appeared; do
    lab_check "event $kind for $c" jq -se --arg a $c --arg k $kind 'any(.[]; .kind == $k and .address == $a)' <<<"$events"
done
id=$("$bin/passage" claim $a --owner hotplug --json | jq -r .id)
echo 1 >"$LAB_PCI/$a/remove"
lab_check "a claim whose function is removed becomes lost" lab_wait_for 3 claim_state_is "$id" lost
lab_check "… with a claim-lost event" sh -c "curl -s -m 1 --unix-socket $sock 'http://localhost/v1/events?since=0' | jq -se --arg id $id 'any(.[]; .kind == \"claim-lost\" and .claimId == \$id)'"
echo 1 >/sys/bus/pci/rescan
lab_wait_for 5 api_has $a
lab_check "a lost claim can be released" "$bin/passage" release "$id"
lab_eq "after the release all three are on their drivers" "e1000/e1000/e1000e" "$(drivers)"

# The CLI goes through passaged (PASSAGE_SOCKET is set): claims are respected, changes seen at once.
lab_check "passage bind through passaged" "$bin/passage" bind $c
lab_check "… seen by passaged at once" api_driver_is $c vfio-pci
lab_check "passage restore through passaged" "$bin/passage" restore $c
lab_check "… seen at once" api_driver_is $c e1000e
id=$("$bin/passage" claim $a --owner cli --json | jq -r .id)
out=$("$bin/passage" restore $b 2>&1); rc=$?
lab_check "restore of a claimed function is refused, naming the claim (rc=$rc)" grep -q "$id" <<<"$out"
lab_eq "… and it stays on vfio-pci" vfio-pci "$(lab_driver $b)"
"$bin/passage" release "$id" >/dev/null
lab_eq "released: all on their drivers" "e1000/e1000/e1000e" "$(drivers)"

# Crash torture: kill -9 at points inside claims and releases, restart, check the invariants.
# (Few process starts per kill: each costs 0.3-1 s in L1 under TCG. One passage, one jq; drivers by
# the builtin -ef.)
invariants() {
    local claims held unique intents active d
    claims=$("$bin/passage" claims --json) || { echo "claims unreadable"; return 1; }
    read -r held unique intents active <<<"$(jq -r '[.[] | select(.state == "active" or .state == "binding" or .state == "releasing")] as $h
        | "\([$h[].groups[]] | length) \([$h[].groups[]] | unique | length) \([.[] | select(.state == "binding" or .state == "releasing")] | length) ,\([.[] | select(.state == "active") | .members[].address] | join(",")),"' <<<"$claims")"
    [[ $held == "$unique" ]] || { echo "a group is held twice"; return 1; }
    [[ $intents == 0 ]] || { echo "an intent survived reconciliation"; return 1; }
    for d in $a $b $c; do
        if lab_driver_is $d vfio-pci; then [[ $active == *",$d,"* ]] || { echo "$d on vfio-pci without an owner"; return 1; }
        else [[ $active != *",$d,"* ]] || { echo "$d is claimed but on $(lab_driver $d)"; return 1; }; fi
    done
}
# Every sysfs write of passaged waits 80 ms during the torture (PASSAGE_INJECT_WRITE_DELAY_MS), so
# that a claim (6 writes) or release takes half a second and the kills land inside them.
kill -TERM $pid; wait $pid
export PASSAGE_INJECT_WRITE_DELAY_MS=80
start_daemon || lab_fatal "passaged did not restart with the write delay"
cut_short=0 kills=${LAB_ARG_KILLS:-70} readies=() recs=()
[[ -p /tmp/daemon.nap ]] || mkfifo /tmp/daemon.nap; exec {napfd}<>/tmp/daemon.nap   # naps without a process start
for i in $(seq 1 "$kills"); do
    # Starting a host binary in L1 takes ~0.5-1 s: the delays sweep from before the request reaches
    # passaged to after it is done, so some kills land inside the sysfs work (12 steps, repeated).
    ms=$((450 + ((i - 1) % 12 + 1) * 130)); printf -v delay '%d.%03d' $((ms / 1000)) $((ms % 1000))
    if (( i % 2 )); then
        ( "$bin/passage" claim $a --owner crash-$i >/dev/null 2>&1 & read -r -t "$delay" -u $napfd _; kill -9 $pid )
    else
        cid=$("$bin/passage" claims --json --state active | jq -r '.[0].id // empty')
        [[ -n $cid ]] || cid=$("$bin/passage" claim $c --owner crash-$i --json 2>/dev/null | jq -r .id)
        ( "$bin/passage" release "$cid" >/dev/null 2>&1 & read -r -t "$delay" -u $napfd _; kill -9 $pid )
    fi
    wait $pid 2>/dev/null
    kill -0 $pid 2>/dev/null && lab_fatal "passaged $pid survived kill -9"
    start_daemon || lab_fatal "passaged did not restart after kill $i: $(tail -n 20 "$LAB_OUT/passaged.log")"
    readies+=("$t") recs+=("$LAB_PASSAGED_RECONCILED_SECONDS")
    why=$(invariants); lab_eq "kill $i (after ${delay}s): invariants hold after restart (ready in ${t}s)" "" "$why"
    report=$LAB_PASSAGED_RECONCILED
    echo "# kill $i: ${report#* : }"
    [[ $report == *"rolledBack=[\"c-"* || $report == *"finished=[\"c-"* ]] && cut_short=$((cut_short + 1))
done
lab_check "at least one kill cut a claim or release short (and reconciliation repaired it): $cut_short" test "$cut_short" -gt 0
lab_timing "crash_restarts=$kills $(lab_ready_summary "${readies[@]}") reconciled_worst_seconds=$(printf '%s\n' "${recs[@]}" | sort -n | tail -n 1)"
kill -TERM $pid; wait $pid
unset PASSAGE_INJECT_WRITE_DELAY_MS
start_daemon || lab_fatal "passaged did not restart without the write delay"
for cid in $("$bin/passage" claims --json --state active | jq -r '.[].id'); do "$bin/passage" release "$cid" >/dev/null; done
lab_eq "everything released and back on its driver" "e1000/e1000/e1000e" "$(drivers)"
kill -TERM $pid; wait $pid
lab_eq "SIGTERM stops passaged cleanly" 0 "$?"
lab_done
