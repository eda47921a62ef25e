#!/usr/bin/env bash
# Exit round trip on this machine's /dev/kvm: passage-vmm's exit loop (vmm-exit-bench, release
# build) vs a minimal C KVM loop (minimal-kvm-loop.c, built here with cc -O2), the same tiny
# guest doing N port writes. Median of RUNS alternating runs each; prints the ratio (goal ≤ 1.3).
#   Benchmarks/VMMExitBench/run.sh [N [RUNS]]      (default 1000000 3)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
n=${1:-1000000} runs=${2:-3}
scratch=${VMM_BENCH_SCRATCH:-$repo/.build-vmm}
swift build -c release --scratch-path "$scratch" --product vmm-exit-bench >&2
bench=$scratch/release/vmm-exit-bench
cbin=$scratch/minimal-kvm-loop
cc -O2 -Wall -o "$cbin" "$here/minimal-kvm-loop.c"
cs=() ss=()
for ((i = 0; i < runs; i++)); do
    c=$("$cbin" "$n"); echo "$c" >&2; cs+=("$(sed 's/.*ns_per_exit=//' <<<"$c")")
    s=$("$bench" "$n"); echo "$s" >&2; ss+=("$(sed 's/.*ns_per_exit=//' <<<"$s")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
cm=$(median "${cs[@]}") sm=$(median "${ss[@]}")
echo "VMM-EXIT-BENCH exits=$n runs=$runs c_ns_per_exit=$cm swift_ns_per_exit=$sm ratio=$(awk -v a="$sm" -v b="$cm" 'BEGIN { printf "%.3f", a / b }') goal=1.3"
