#!/usr/bin/env bash
# lab-topology: minimal
# lab-timeout: 900
#
# passage-vmm boots the Debian kernel with a busybox initramfs (guest/vmm-init) on L1's nested
# KVM, with 1 and 2 vCPUs: the guest must print its marker, see the CPUs and the memory asked
# for, and end the VMM cleanly (reboot=k → i8042 reset → exit 0); poweroff -f powers off through
# ACPI (exit 0, "the guest powered off"); the vmlinux of the same kernel boots too. Then the benchmarks of
# issue 7, with the same kernel, initramfs and command line:
#   LAB-TIMING vmm_boot_… passage-vmm vs QEMU -M microvm and -M q35 -kernel: host seconds from
#              start to the marker line, median of $VMM_BENCH_RUNS runs, and the ratio to the
#              faster QEMU (goal ≤ 0.5)
#   LAB-TIMING vmm_memory_overhead_kib   passage-vmm RSS minus guest memory touched, 256 MiB,
#              1 vCPU (goal ≤ 5120)
#   LAB-TIMING vmm_boot_vmlinux_…  the same, all three booting the uncompressed vmlinux of the same
#              kernel (extracted here; QEMU through its PVH entry), which skips the bzImage's
#              decompressor, seconds of the boot in this lab
# The binary: $PASSAGE_VMM if set (scripts/test.sh passes the release build, which is what the
# benchmarks are about), else $PASSAGE_BIN/passage-vmm.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

runs=${LAB_ARG_VMM_BENCH_RUNS:-${PASSAGE_VMM_BENCH_RUNS:-3}}
vmm=${PASSAGE_VMM:-$PASSAGE_BIN/passage-vmm}
work=/tmp/vmm-lab
mkdir -p "$work" "$LAB_OUT"

grep -qw svm /proc/cpuinfo || lab_fatal "the L1 CPU has no SVM (need -cpu max under TCG)"
lab_kvm_load
lab_check "/dev/kvm exists in L1" test -c /dev/kvm
[[ -x $vmm ]] || lab_fatal "$vmm not built (swift build -c release --product passage-vmm, then PASSAGE_VMM=.build/release/passage-vmm)"
lab_log "passage-vmm: $vmm ($(du -k "$vmm" | cut -f1) KiB, $(file -b "$vmm" 2>/dev/null | cut -d, -f1-4 || echo '?'))"

# The guest's initramfs: busybox and guest/vmm-init, built here (tmpfs), no modules.
initrd=$work/vmm-initramfs.cpio
lab_vmm_initramfs "$initrd" || lab_fatal "building the initramfs failed"
lab_log "initramfs $(du -k "$initrd" | cut -f1) KiB, kernel $LAB_KERNEL"

# pci=noearly: TCG's -cpu max says AMD family 15, which has a GART, so Linux's early GART
# probe scans all 256 PCI buses through 0xCF8/0xCFC — two nested exits per device, seconds in
# this lab, for every VMM alike. The same command line is used for QEMU.
cmdline=${LAB_ARG_VMM_CMDLINE:-"console=ttyS0 reboot=k panic=-1 quiet pci=noearly"}

# LAB_ARG_VMM_DEBUG=1: one verbose boot with the whole console, nothing else.
if [[ -n ${LAB_ARG_VMM_DEBUG:-} ]]; then
    timeout -k 5 120 "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus "${LAB_ARG_VMM_DEBUG_VCPUS:-1}" \
        --cmdline "${LAB_ARG_VMM_CMDLINE:-console=ttyS0 reboot=k panic=-1 pci=noearly}" --stats </dev/null 2>&1 | sed 's/^/L2| /'
    lab_done
fi

# boot_run LOG CMD...: runs CMD (console on stdout), copies its output to LOG, sets
# BOOT_MARKER_S (seconds from start to the VMM-MARKER line, or empty), BOOT_TOTAL_S and BOOT_RC.
boot_run() {
    local log=$1; shift
    local t0=$EPOCHREALTIME line tm='' rcfile=$work/rc.$$
    {
        timeout -k 5 "${BOOT_TIMEOUT:-120}" "$@" </dev/null 2>"$log.err"
        echo $? >"$rcfile"
    } | while IFS= read -r line; do
        if [[ -z $tm && $line == *VMM-MARKER* ]]; then tm=$EPOCHREALTIME; echo "$tm" >"$log.marker"; fi
        printf '%s\n' "$line"
    done >"$log"
    BOOT_TOTAL_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    BOOT_MARKER_S=
    [[ -s $log.marker ]] && BOOT_MARKER_S=$(awk -v a="$t0" -v b="$(cat "$log.marker")" 'BEGIN { printf "%.3f", b - a }')
    rm -f "$log.marker"
    BOOT_RC=$(cat "$rcfile" 2>/dev/null || echo '?')
}

field() { tr -d '\r' <"$1" | sed -n "s/^$2 //p" | tail -n1; }

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# passage-vmm unpacks the bzImage itself (the default, --kernel-unpack host) and keeps the result
# here (L1's / is read-only): the first boot below unpacks, the later ones read the cache.
kcache=$work/kernel-cache
rm -rf "$kcache"
texts=()

# ---- correctness: 1 and 2 vCPUs -------------------------------------------------------------
for n in 1 2; do
    log=$LAB_OUT/vmm-boot-$n.log
    boot_run "$log" "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus "$n" --cmdline "$cmdline" \
        --kernel-cache "$kcache" --stats
    tr -d '\r' <"$log" | sed "s/^/L2[$n]| /" | tail -n 40
    sed "s/^/L2[$n] stderr| /" "$log.err"
    texts+=("$(field "$log" VMM-TEXT)")
    if [[ $n == 1 ]]; then
        lab_check "[1 vCPU] passage-vmm unpacked the bzImage itself (kernel=unpacked, KASLR on)" grep -q 'kernel=unpacked unpack_ms=[0-9]* kaslr=on' "$log.err"
        lab_timing "vmm_boot_cold_unpack marker_seconds=${BOOT_MARKER_S:-?} $(grep -o 'unpack_ms=[0-9]*' "$log.err")"
    else
        lab_check "[2 vCPU] the second boot took the unpacked kernel from the cache (kernel=cached)" grep -q 'kernel=cached unpack_ms=[0-9]* kaslr=on' "$log.err"
    fi
    lab_eq "[$n vCPU] passage-vmm exits 0 (guest reset through the i8042)" 0 "$BOOT_RC"
    lab_check "[$n vCPU] the guest printed its marker" grep -aq VMM-MARKER "$log"
    lab_check "[$n vCPU] passage-vmm says the guest reset the machine" grep -q 'the guest reset the machine' "$log.err"
    lab_eq "[$n vCPU] the guest sees $n CPUs" "$n" "$(field "$log" VMM-CPUS)"
    lab_eq "[$n vCPU] all of them online" "$([[ $n == 1 ]] && echo 0 || echo "0-$((n - 1))")" "$(field "$log" VMM-ONLINE)"
    lab_eq "[$n vCPU] RAM ends at 256 MiB (/proc/iomem)" 0fffffff "$(field "$log" VMM-RAMTOP)"
    memtotal=$(field "$log" VMM-MEMTOTAL)
    lab_check "[$n vCPU] MemTotal ${memtotal:-?} kB is within 256 MiB and above 200 MiB" \
        test "${memtotal:-0}" -le 262144 -a "${memtotal:-0}" -ge 204800
    lab_timing "vmm_boot_check_vcpus=$n marker_seconds=${BOOT_MARKER_S:-?} total_seconds=$BOOT_TOTAL_S guest_uptime=$(field "$log" VMM-MARKER)"
done

# ---- ACPI: poweroff -f in the guest powers the machine off (S5 through the FADT's sleep register)
log=$LAB_OUT/vmm-boot-poweroff.log
boot_run "$log" "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline vmm.end=poweroff" \
    --kernel-cache "$kcache"
tr -d '\r' <"$log" | sed "s/^/L2[poweroff]| /" | tail -n 12
texts+=("$(field "$log" VMM-TEXT)")
sed "s/^/L2[poweroff] stderr| /" "$log.err"
lab_eq "[poweroff] passage-vmm exits 0 when the guest runs poweroff -f" 0 "$BOOT_RC"
lab_check "[poweroff] passage-vmm says the guest powered off" grep -q 'the guest powered off' "$log.err"
lab_check "[poweroff] the guest found the RSDP (no 'valid RSDP was not found')" bash -c "! grep -aq 'RSDP was not found' '$log'"

# ---- KASLR: passage-vmm moved the kernel's virtual base, as the decompressor would have -------
# Three boots above, each with its own draw among ~470 slots: not all at one address, and none
# at the link address unless the draw was slot 0.
lab_log "_text of the three boots: ${texts[*]}"
lab_check "KASLR: the three boots put _text at more than one address (${texts[*]})" \
    test "$(printf '%s\n' "${texts[@]}" | grep -c .)" = 3 -a "$(printf '%s\n' "${texts[@]}" | sort -u | wc -l)" -gt 1
log=$LAB_OUT/vmm-boot-nokaslr.log
boot_run "$log" "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline nokaslr" --kernel-cache "$kcache" --stats
lab_eq "KASLR: nokaslr on the command line leaves _text at the link address" ffffffff81000000 "$(field "$log" VMM-TEXT)"
lab_check "KASLR: … and passage-vmm says so (kaslr=off)" grep -q 'kernel=cached unpack_ms=[0-9]* kaslr=off' "$log.err"

# ---- a zstd bzImage: Debian's 6.12 (the lab's iommufd kernel), unpacked by libzstd -----------
zkernel=/boot/vmlinuz-$LAB_IOMMUFD_KVER
if [[ -r $zkernel ]]; then
    log=$LAB_OUT/vmm-boot-zstd.log
    boot_run "$log" "$vmm" --kernel "$zkernel" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline" --kernel-cache "$kcache" --stats
    tr -d '\r' <"$log" | sed "s/^/L2[zstd]| /" | tail -n 6
    sed "s/^/L2[zstd] stderr| /" "$log.err"
    lab_eq "[zstd] passage-vmm boots $zkernel (a zstd payload) to the marker, exit 0" 0 "$BOOT_RC"
    lab_check "[zstd] the guest printed its marker" grep -aq VMM-MARKER "$log"
    lab_check "[zstd] passage-vmm unpacked it itself (kernel=unpacked, KASLR on)" grep -q 'kernel=unpacked unpack_ms=[0-9]* kaslr=on' "$log.err"
    lab_timing "vmm_boot_zstd_kernel marker_seconds=${BOOT_MARKER_S:-?} unpack_ms=$(sed -n 's/.*unpack_ms=\([0-9]*\).*/\1/p' "$log.err" | head -n1)"
else
    lab_fatal "no $zkernel: scripts/setup.sh installs it (linux-headers-$LAB_IOMMUFD_KVER)"
fi

# ---- the guest's own decompressor still boots (--kernel-unpack guest, as QEMU boots a bzImage) --
log=$LAB_OUT/vmm-boot-guest-unpack.log
boot_run "$log" "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline" --kernel-unpack guest --stats
tr -d '\r' <"$log" | sed "s/^/L2[guest-unpack]| /" | tail -n 8
lab_eq "[guest unpack] the bzImage's own decompressor boots it (exit 0)" 0 "$BOOT_RC"
lab_check "[guest unpack] the guest printed its marker" grep -aq VMM-MARKER "$log"
lab_check "[guest unpack] passage-vmm loaded the bzImage as it is (kernel=bzimage)" grep -q 'kernel=bzimage' "$log.err"
lab_check "[guest unpack] the decompressor randomized the base too (_text $(field "$log" VMM-TEXT))" test -n "$(field "$log" VMM-TEXT)"
lab_timing "vmm_boot_check_guest_unpack marker_seconds=${BOOT_MARKER_S:-?} guest_uptime=$(field "$log" VMM-MARKER)"

# The vmlinux inside the bzImage: the xz payload at payload_offset (0x248) past the setup sectors.
vmlinux=$work/vmlinux
hdr() { od -An -t u"$2" -j "$1" -N "$2" "$LAB_KERNEL" | tr -d ' '; }
setup_sects=$(hdr $((0x1F1)) 1); [[ $setup_sects == 0 ]] && setup_sects=4
payload_at=$(( (setup_sects + 1) * 512 + $(hdr $((0x248)) 4) ))
# (tail dies of SIGPIPE when head has its bytes, so only xz's status counts, and the ELF magic.)
tail -c +$((payload_at + 1)) "$LAB_KERNEL" | head -c "$(hdr $((0x24C)) 4)" | xz -dc --single-stream >"$vmlinux" 2>"$work/xz.err"
xz_rc=${PIPESTATUS[2]}
if [[ $xz_rc != 0 || $(head -c 4 "$vmlinux" | od -An -tx1 | tr -d ' ') != 7f454c46 ]]; then
    lab_log "extracting vmlinux failed (xz rc=$xz_rc): $(head -c 300 "$work/xz.err")"; rm -f "$vmlinux"
fi
if [[ -s $vmlinux ]]; then
    log=$LAB_OUT/vmm-boot-vmlinux.log
    boot_run "$log" "$vmm" --kernel "$vmlinux" --initrd "$initrd" --memory 256M --vcpus 2 --cmdline "$cmdline"
    tr -d '\r' <"$log" | sed "s/^/L2[vmlinux]| /" | tail -n 20
    sed "s/^/L2[vmlinux] stderr| /" "$log.err"
    lab_eq "[vmlinux] passage-vmm boots the uncompressed kernel and exits 0" 0 "$BOOT_RC"
    lab_check "[vmlinux] the guest printed its marker" grep -aq VMM-MARKER "$log"
    lab_eq "[vmlinux] the guest sees 2 CPUs" 2 "$(field "$log" VMM-CPUS)"
    lab_eq "[vmlinux] RAM ends at 256 MiB (/proc/iomem)" 0fffffff "$(field "$log" VMM-RAMTOP)"
    lab_timing "vmm_boot_check_vmlinux marker_seconds=${BOOT_MARKER_S:-?} total_seconds=$BOOT_TOTAL_S guest_uptime=$(field "$log" VMM-MARKER)"
else
    lab_check "the vmlinux was extracted from $LAB_KERNEL" false
fi

# ---- errors the user sees ---------------------------------------------------------------------
out=$("$vmm" --kernel "$initrd" --initrd "$initrd" 2>&1); rc=$?
lab_eq "an initramfs given as the kernel is refused (exit 1)" 1 "$rc"
lab_check "… with a message naming the problem" grep -q 'not a Linux bzImage' <<<"$out"
out=$("$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 48M 2>&1); rc=$?
lab_check "too little memory is refused with a clear message" grep -q 'give the guest' <<<"$out"

# ---- benchmark: boot to marker ------------------------------------------------------------------
# Only the time to the marker counts; QEMU may not end by itself after it (microvm has no i8042
# for reboot=k), so benchmark runs are cut off after 45 s.
BOOT_TIMEOUT=45
declare -A samples=()
med=()
bench() { # NAME CMD...
    local name=$1 i; shift
    for ((i = 1; i <= runs; i++)); do
        boot_run "$work/bench-$name.log" "$@"
        [[ $name == passage* ]] && grep -h 'passage-vmm: timing' "$work/bench-$name.log.err" | sed "s/^/run $i: /"
        lab_log "$name run $i: marker ${BOOT_MARKER_S:-?} s, guest $(field "$work/bench-$name.log" VMM-MARKER)"
        if [[ -n $BOOT_MARKER_S ]]; then samples[$name]+="$BOOT_MARKER_S "; else
            lab_log "$name run $i: no marker (rc=$BOOT_RC)"; tail -n 5 "$work/bench-$name.log"; cat "$work/bench-$name.log.err" | head -5
        fi
    done
}
bench passage "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline" --stats --kernel-cache "$kcache"
bench passage_guest_unpack "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline" --stats --kernel-unpack guest
qemu_common() { # KERNEL
    qemu_common=(-enable-kvm -cpu host -m 256M -smp 1 -nodefaults -no-user-config -display none -no-reboot
        -serial stdio -kernel "$1" -initrd "$initrd" -append "$cmdline")
}
qemu_common "$LAB_KERNEL"
bench qemu_microvm qemu-system-x86_64 -M microvm "${qemu_common[@]}"
bench qemu_q35 qemu-system-x86_64 -M q35 "${qemu_common[@]}"
if [[ -s $vmlinux ]]; then
    bench passage_vmlinux "$vmm" --kernel "$vmlinux" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline" --stats
    qemu_common "$vmlinux"
    bench qemu_microvm_vmlinux qemu-system-x86_64 -M microvm "${qemu_common[@]}"
    bench qemu_q35_vmlinux qemu-system-x86_64 -M q35 "${qemu_common[@]}"
fi
# report KIND PASSAGE MICROVM Q35: medians, and the ratio of passage-vmm to the faster QEMU.
report() {
    local kind=$1 name p mv q35 faster ratio
    med=()
    for name in "$2" "$3" "$4"; do
        med[${#med[@]}]=$(tr ' ' '\n' <<<"${samples[$name]:-}" | sed '/^$/d' | median)
        lab_log "$name samples: ${samples[$name]:-none}"
    done
    p=${med[0]} mv=${med[1]} q35=${med[2]}
    faster=$(awk -v a="${mv:-0}" -v b="${q35:-0}" 'BEGIN { if (a == 0) print b; else if (b == 0 || a < b) print a; else print b }')
    ratio=$(awk -v p="${p:-0}" -v f="${faster:-0}" 'BEGIN { if (f > 0 && p > 0) printf "%.3f", p / f; else print "?" }')
    lab_timing "vmm_boot${kind}_marker_median_seconds passage=${p:-?} qemu_microvm=${mv:-?} qemu_q35=${q35:-?} runs=$runs ratio_to_faster_qemu=$ratio goal=0.5"
}
report "" passage qemu_microvm qemu_q35
report _guest_unpack passage_guest_unpack qemu_microvm qemu_q35
lab_check "passage-vmm reached the marker in every run" test "$(wc -w <<<"${samples[passage]:-}")" -eq "$runs"
if [[ -s $vmlinux ]]; then
    report _vmlinux passage_vmlinux qemu_microvm_vmlinux qemu_q35_vmlinux
    lab_check "passage-vmm reached the marker in every vmlinux run" test "$(wc -w <<<"${samples[passage_vmlinux]:-}")" -eq "$runs"
fi

# ---- benchmark: memory overhead -------------------------------------------------------------------
log=$work/mem.log
boot_run "$log" "$vmm" --kernel "$LAB_KERNEL" --initrd "$initrd" --memory 256M --vcpus 1 --cmdline "$cmdline" --stats --kernel-cache "$kcache"
stats=$(grep 'stats' "$log.err")
overhead=$(sed -n 's/.*overhead_kib=\([0-9-]*\).*/\1/p' <<<"$stats")
lab_timing "vmm_memory_overhead_kib=${overhead:-?} $(sed 's/.*stats //' <<<"$stats") goal_kib=5120"

lab_done
