#!/usr/bin/env bash
# Fuzzes Passage's parsers with libFuzzer (swiftc -sanitize=fuzzer,address): each target is
# compiled from its harness in Fuzz/ plus the few source files it exercises, then run for
# SECONDS (default 60) per target from its corpus in Fuzz/corpus/TARGET (kept between runs, not
# committed) and, where there is one, the committed seed inputs in Fuzz/seeds/TARGET (read only)
# and the libFuzzer dictionary Fuzz/dicts/TARGET.dict.
# Prints per target: executions, crashes; a crash leaves its input as Fuzz/crashes/TARGET-*
# (turn each into a regression test). Exit 1 when any target crashed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#     targets: pci-address toml vm-config-json pci-passthrough boot-image vmlinux-image kernel-relocations api-request
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
seconds=${1:-60}; shift || true
declare -A sources=(
    [pci-address]="Fuzz/FuzzPCIAddress.swift Sources/HostPCI/PCIAddress.swift Sources/HostPCI/HostPCIError.swift Sources/HostPCI/SysfsRoot.swift"
    [toml]="Fuzz/FuzzTOML.swift Sources/PassageDaemon/Policy/TOML.swift"
    [vm-config-json]="Fuzz/FuzzStrictJSON.swift Sources/VMM/StrictJSON.swift"
    [boot-image]="Fuzz/FuzzBootImage.swift Sources/VMM/LinuxBootImage.swift Sources/VMM/VMMError.swift"
    [pci-passthrough]="Fuzz/FuzzPCIPassthrough.swift Sources/VMM/PCI/PassthroughConfigSpace.swift Sources/VMM/PCI/MSIXTable.swift"
    [vmlinux-image]="Fuzz/FuzzVmlinuxImage.swift Sources/VMM/LinuxELFImage.swift Sources/VMM/VMMError.swift Sources/VMM/BootLayout.swift"
    [kernel-relocations]="Fuzz/FuzzKernelRelocations.swift Sources/VMM/KernelRelocations.swift Sources/VMM/VMMError.swift"
    # The daemon's request handling without NIO: target and header handling, routing, strict body decoding.
    [api-request]="Fuzz/FuzzAPIRequest.swift Sources/PassageDaemon/HTTP/HTTPRequest.swift Sources/PassageDaemon/HTTP/HTTPRequestTarget.swift
        Sources/PassageDaemon/APICall.swift Sources/PassageDaemon/DeviceQuery.swift Sources/PassageDaemon/APIError.swift
        Sources/PassageAPI/Claims.swift Sources/PassageAPI/DeviceInfo.swift Sources/PassageAPI/Operations.swift
        Sources/PassageAPI/StreamingJSONEncoder.swift
        Sources/HostPCI/PCIAddress.swift Sources/HostPCI/HostPCIError.swift Sources/HostPCI/SysfsRoot.swift"
)
targets=("$@"); ((${#targets[@]})) || targets=(pci-address toml vm-config-json pci-passthrough boot-image vmlinux-image kernel-relocations api-request)
out=.build/fuzz
mkdir -p "$out" Fuzz/crashes
status=0
for t in "${targets[@]}"; do
    [[ -n ${sources[$t]:-} ]] || { echo "fuzz: unknown target $t (${!sources[*]})" >&2; exit 64; }
    echo "== $t: building"
    # shellcheck disable=SC2086
    swiftc -parse-as-library -sanitize=fuzzer,address -O -g ${sources[$t]} -o "$out/$t" 2>&1 | grep -E "error" && { status=1; continue; }
    mkdir -p "Fuzz/corpus/$t"
    log=$out/$t.log
    seeds=(); [[ -d Fuzz/seeds/$t ]] && seeds=("Fuzz/seeds/$t")
    dict=(); [[ -f Fuzz/dicts/$t.dict ]] && dict=("-dict=Fuzz/dicts/$t.dict")
    "$out/$t" "Fuzz/corpus/$t" "${seeds[@]}" "${dict[@]}" -max_total_time="$seconds" -artifact_prefix="Fuzz/crashes/$t-" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    crashes=$(ls Fuzz/crashes/ 2>/dev/null | grep -c "^$t-" || true)
    echo "$t: ${execs:-?} executions in ${seconds} s, ${crashes} crash input(s), exit $rc"
    if ((rc != 0)); then status=1; grep -E "ERROR|panic|Fatal|precondition" "$log" | head -n 5; fi
done
exit $status
