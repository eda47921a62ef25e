#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, builds, runs the
# unit and integration tests (fixture sysfs trees, this machine's real /sys read-only, the real CLI),
# then the lab's end-to-end scenarios on a real kernel under QEMU (Tests/Lab/run-all.sh).
# Exits non-zero if anything failed; the lab never passes by skipping.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh

bash scripts/setup.sh || exit 1

status=0
start=$(date +%s)
echo "== build"
swift build 2>&1 | grep -v '^\[' ; rc=${PIPESTATUS[0]}
if [[ $rc -ne 0 ]]; then echo "swift build failed ($rc)"; exit 1; fi

echo "== unit and integration tests (swift test)"
# Tests never write to this machine's own /sys: the real sysfs writer refuses it under this variable.
# (Only for swift test: inside the lab VM, writing sysfs is the point.)
PASSAGE_FORBID_HOST_SYSFS_WRITES=1 swift test 2>&1 | tee .build/swift-test.log | grep -v -E '^(◇|↳|􀟈|\[)|^Test (Case|Suite) ' ; rc=${PIPESTATUS[0]}
if [[ $rc -ne 0 ]]; then
    echo "swift test failed ($rc); failing expectations (full log: .build/swift-test.log):"
    grep -E '✘|error:|Fatal error' .build/swift-test.log | head -n 100
    status=1
fi

echo "== crash torture: passaged SIGKILLed 120 times inside claims, releases, VF operations and VM starts/stops"
swift build --product crash-torture 2>&1 | grep -v '^\[' | grep -v '^Build' ; .build/debug/crash-torture --kills 120 > .build/crash-torture.log 2>&1; rc=$?
grep -E 'VIOLATED' .build/crash-torture.log | head -n 20
tail -n 1 .build/crash-torture.log
if [[ $rc -ne 0 ]]; then echo "crash torture failed ($rc); full log: .build/crash-torture.log"; status=1; fi

echo "== build: release passage-vmm (the binary the lab benchmarks)"
swift build -c release --product passage-vmm 2>&1 | grep -v -E '^\[|warning: Using .dlopen. in statically linked' ; rc=${PIPESTATUS[0]}
if [[ $rc -ne 0 ]]; then echo "swift build -c release --product passage-vmm failed ($rc)"; exit 1; fi
vmm="$(swift build -c release --show-bin-path)/passage-vmm"

echo "== build: release passaged, passage and vfio-inspect with the Swift runtime linked in (what the lab runs)"
# --static-swift-stdlib: no Swift .so to load at each start, which in the lab's L1 (TCG) cost more
# than passaged's own start-up (issue 9: ready within 1 s of a restart). Its own scratch path, so
# that it does not rebuild .build/release (scripts/run.sh's dynamic build) back and forth.
for p in passaged passage vfio-inspect; do
    swift build -c release --static-swift-stdlib --scratch-path .build/static --product "$p" 2>&1 | grep -v -E '^\[|^Build|warning: Using .dlopen. in statically linked' ; rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 ]]; then echo "swift build -c release --static-swift-stdlib --product $p failed ($rc)"; exit 1; fi
done
labbin="$PWD/.build/static/release"

echo "== lab: end-to-end scenarios on a real kernel"
# One benchmark sample per VMM in the test run (the full benchmark: Tests/Lab/lab.sh run minimal vmm-boot).
LAB_ARG_VMM_BENCH_RUNS=1 PASSAGE_BIN="$labbin" PASSAGE_VMM="$vmm" bash Tests/Lab/run-all.sh || status=1

echo "== done in $(($(date +%s) - start)) s, status $status"
exit $status
