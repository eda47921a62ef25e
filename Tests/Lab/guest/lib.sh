# shellcheck shell=bash
# Helpers for scenarios, which run inside L1 (bash, as root, in the chroot of the host
# root, cwd = the repo). Source with:  . "$LAB_DIR/guest/lib.sh"
#
# Checks print TAP-like lines ("ok - …" / "not ok - …"); lab_done exits with the number
# of failed checks (capped at 100), so the scenario's exit status tells pass or fail.

LAB_FAILS=0
LAB_CHECKS=0
LAB_T0=$(cut -d' ' -f1 /proc/uptime)

lab_log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }

# lab_check DESCRIPTION COMMAND...: runs the command; ok when it succeeds.
lab_check() {
    local desc=$1; shift
    LAB_CHECKS=$((LAB_CHECKS + 1))
    local out
    if out=$("$@" 2>&1); then
        echo "ok - $desc"
    else
        LAB_FAILS=$((LAB_FAILS + 1))
        echo "not ok - $desc"
        [[ -n $out ]] && printf '%s\n' "$out" | sed 's/^/#   /'
    fi
    return 0
}

# lab_eq DESCRIPTION EXPECTED ACTUAL
lab_eq() {
    LAB_CHECKS=$((LAB_CHECKS + 1))
    if [[ "$2" == "$3" ]]; then
        echo "ok - $1"
    else
        LAB_FAILS=$((LAB_FAILS + 1))
        echo "not ok - $1"
        echo "#   expected: $2"
        echo "#   actual:   $3"
        return 1
    fi
}

lab_fail() { # DESCRIPTION [DETAIL...]: a failed check
    LAB_CHECKS=$((LAB_CHECKS + 1)); LAB_FAILS=$((LAB_FAILS + 1))
    echo "not ok - $1"; shift
    local l; for l in "$@"; do printf '%s\n' "$l" | sed '/^$/d; s/^/#   /'; done
}

lab_ok() { LAB_CHECKS=$((LAB_CHECKS + 1)); echo "ok - $1"; }

# lab_fatal MESSAGE: stop the scenario now, as failed.
lab_fatal() { echo "not ok - FATAL: $*"; exit 100; }

# lab_timing KEY=VALUE...: measurements, one line, picked up by benchmarks.
lab_timing() { echo "LAB-TIMING $*"; }

lab_done() {
    local t1
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "# $LAB_SCENARIO on $LAB_TOPOLOGY: $((LAB_CHECKS - LAB_FAILS))/$LAB_CHECKS checks passed"
    lab_timing "scenario_seconds=$(awk -v a="$LAB_T0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    ((LAB_FAILS > 100)) && exit 100
    exit "$LAB_FAILS"
}

# lab_wait_for SECONDS COMMAND...: polls every 0.1 s until the command succeeds.
lab_wait_for() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" 2>/dev/null; do
        (( $(date +%s) >= deadline )) && return 1
        sleep 0.1
    done
}

# Seconds since an uptime reading, two decimals.
lab_since() { awk -v a="$1" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }'; }

# ---- sysfs readers ----------------------------------------------------------------------
LAB_PCI=/sys/bus/pci/devices

lab_iommu_group() { # ADDRESS -> group number, or empty
    local l=$LAB_PCI/$1/iommu_group
    [[ -L $l ]] && basename "$(readlink "$l")"
}

lab_driver_is() { [[ $LAB_PCI/$1/driver -ef /sys/bus/pci/drivers/$2 ]]; }  # ADDRESS DRIVER, no process started
lab_driver() { # ADDRESS -> driver name, or empty
    local l=$LAB_PCI/$1/driver
    [[ -L $l ]] && basename "$(readlink "$l")"
}

lab_driver_is() { # ADDRESS NAME
    [[ $(lab_driver "$1") == "$2" ]]
}

lab_group_members() { # GROUP -> addresses, sorted, space separated
    ls /sys/kernel/iommu_groups/"$1"/devices | sort | tr '\n' ' ' | sed 's/ $//'
}

# ---- NVMe SR-IOV (the baseline way, with nvme-cli) ---------------------------------------

# lab_nvme_ctrl PF -> /dev/nvmeN of the controller bound to PF (waits up to 20 s)
lab_nvme_ctrl() {
    local pf=$1 d
    lab_wait_for 20 eval "ls $LAB_PCI/$pf/nvme/ 2>/dev/null | grep -q ^nvme" || return 1
    d=$(ls "$LAB_PCI/$pf/nvme/" | head -n1)
    lab_wait_for 20 test -c "/dev/$d" || return 1
    echo "/dev/$d"
}

# lab_nvme_live CTRLDEV: waits until the controller's state is "live".
lab_nvme_live() {
    lab_wait_for "${2:-20}" grep -qx live "/sys/class/nvme/$(basename "$1")/state"
}

# lab_nvme_sriov_enable PF NUMVFS: the sequence of shared/LAB.md, with nvme-cli.
# Leaves NUMVFS VFs with their secondary controllers online (2 VQ, 1 VI each), unbound
# (sriov_drivers_autoprobe off). Prints the steps.
lab_nvme_sriov_enable() {
    local pf=$1 n=$2 ctrl i scid
    command -v nvme >/dev/null || { echo "nvme-cli missing on the host"; return 1; }
    ctrl=$(lab_nvme_ctrl "$pf") || { echo "no nvme controller on $pf"; return 1; }
    lab_nvme_live "$ctrl" || { echo "$ctrl is not live"; return 1; }
    lab_log "primary flexible allocation: VQ/VI 0 on $ctrl"
    nvme virt-mgmt "$ctrl" --cntlid=0 --rt=0 --act=1 --nr=0 || return 1
    nvme virt-mgmt "$ctrl" --cntlid=0 --rt=1 --act=1 --nr=0 || return 1
    lab_log "reset $pf"
    echo 1 >"$LAB_PCI/$pf/reset" || return 1
    lab_nvme_live "$ctrl" || { echo "$ctrl not live after reset"; return 1; }
    echo 0 >"$LAB_PCI/$pf/sriov_drivers_autoprobe"
    lab_log "sriov_numvfs=$n on $pf"
    echo "$n" >"$LAB_PCI/$pf/sriov_numvfs" || return 1
    for ((i = 1; i <= n; i++)); do
        # Secondary controller i backs VF i (QEMU numbers them 1…, in VF order).
        scid=$i
        nvme virt-mgmt "$ctrl" --cntlid="$scid" --rt=0 --act=8 --nr=2 || return 1
        nvme virt-mgmt "$ctrl" --cntlid="$scid" --rt=1 --act=8 --nr=1 || return 1
        nvme virt-mgmt "$ctrl" --cntlid="$scid" --act=9 || return 1
    done
    nvme list-secondary "$ctrl" 2>&1 | head -n 40
}

# lab_vf_drivers PF: the driver of each of PF's VFs in virtfn order, "-" for none, space-separated.
lab_vf_drivers() {
    local l d out=()
    for l in "$LAB_PCI/$1"/virtfn*; do
        [[ -e $l ]] || continue
        d=$(lab_driver "$(basename "$(readlink "$l")")")
        out+=("${d:--}")
    done
    echo "${out[*]}"
}

# lab_vfio_bind ADDRESS: driver_override=vfio-pci and probe. Prints /dev/vfio/GROUP.
lab_vfio_bind() {
    local a=$1 g
    modprobe vfio-pci || return 1
    if [[ -L $LAB_PCI/$a/driver ]]; then echo "$a" >"$LAB_PCI/$a/driver/unbind" || return 1; fi
    echo vfio-pci >"$LAB_PCI/$a/driver_override" || return 1
    echo "$a" >/sys/bus/pci/drivers_probe || return 1
    [[ $(lab_driver "$a") == vfio-pci ]] || { echo "$a not bound to vfio-pci"; return 1; }
    g=$(lab_iommu_group "$a")
    lab_wait_for 5 test -c "/dev/vfio/$g" || { echo "no /dev/vfio/$g"; return 1; }
    echo "/dev/vfio/$g"
}

# ---- `passage devices --json` against sysfs --------------------------------------------
# (needs jq from the host's root)

# lab_sysfs_devices_json: what sysfs says about every PCI function, in the shape of the
# `passage devices --json` contract (the keys that sysfs alone decides). Reads sysfs with
# bash builtins and runs jq once: processes are slow in L1 (TCG, binaries over 9p).
lab_sysfs_devices_json() {
    local -A group=() driver=() physfn=() vfindex=()
    local g d a l n t vfs f v lines=()
    for d in /sys/kernel/iommu_groups/*/devices/*; do
        [[ -e $d ]] || continue
        g=${d%/devices/*}; group[${d##*/}]=${g##*/}
    done
    for d in /sys/bus/pci/drivers/*/????:??:??.?; do
        [[ -e $d ]] || continue
        n=${d%/*}; driver[${d##*/}]=${n##*/}
    done
    for d in "$LAB_PCI"/*; do
        a=${d##*/}
        vfs=
        if [[ -f $d/sriov_totalvfs ]]; then
            for ((n = 0; ; n++)); do
                [[ -e $d/virtfn$n ]] || break
                t=$(cd -P "$d/virtfn$n" && pwd); t=${t##*/}
                physfn[$t]=$a; vfindex[$t]=$n
                vfs+=${vfs:+,}$t
            done
        fi
        local fields=("$a")
        for f in vendor device subsystem_vendor subsystem_device class revision; do
            v=; read -r v <"$d/$f" 2>/dev/null; fields+=("${v#0x}")
        done
        v=; read -r v <"$d/driver_override" 2>/dev/null; [[ $v == "(null)" ]] && v=
        fields+=("${driver[$a]:-}" "$v" "${group[$a]:-}")
        v=; read -r v <"$d/numa_node" 2>/dev/null; fields+=("$v")
        if [[ -f $d/sriov_totalvfs ]]; then
            local tv nv ap
            read -r tv <"$d/sriov_totalvfs"; read -r nv <"$d/sriov_numvfs"
            read -r ap <"$d/sriov_drivers_autoprobe"
            fields+=(1 "$tv" "$nv" "$ap" "$vfs")
        else
            fields+=(0 "" "" "" "")
        fi
        local IFS=$'\t'
        lines+=("${fields[*]}")
        unset IFS
    done
    # physfn/vfIndex are known only after all PFs were read.
    for l in "${lines[@]}"; do
        a=${l%%$'\t'*}
        printf '%s\t%s\t%s\n' "$l" "${physfn[$a]:-}" "${vfindex[$a]:-}"
    done | jq -R -s -c '
        def nul: if . == "" then null else . end;
        def num: if . == "" then null else tonumber end;
        [ split("\n")[] | select(length > 0) | split("\t") | {
            address: .[0], vendorId: .[1], deviceId: .[2], subsystemVendorId: .[3],
            subsystemDeviceId: .[4], classCode: .[5], revision: .[6],
            driver: (.[7] | nul), driverOverride: (.[8] | nul), iommuGroup: (.[9] | num),
            numaNode: (if .[10] == "-1" then null else .[10] | num end),
            physfn: (.[16] | nul), vfIndex: (.[17] | num),
            sriov: (if .[11] == "1" then
                {totalVFs: (.[12] | tonumber), numVFs: (.[13] | tonumber),
                 driversAutoprobe: (.[14] == "1"),
                 vfs: (if .[15] == "" then [] else .[15] | split(",") end)}
              else null end) } ]'
}

# lab_compare_devices_json ACTUAL.json EXPECTED.json: prints one line per difference
# (nothing when they agree). Checks the contract's types as well.
lab_compare_devices_json() {
    jq -r --slurpfile exp "$2" '
      def hex($n): type == "string" and test("^[0-9a-f]{\($n)}$");
      (if type != "array" then "the output is not a JSON array" else empty end),
      ( (map({key: .address, value: .}) | from_entries) as $act
        | ($exp[0] | map(.address)) as $want
        | (map(.address) - $want)[] | "\(.): reported but not in sysfs" ),
      ( (map({key: .address, value: .}) | from_entries) as $act
        | $exp[0][] as $e
        | $act[$e.address] as $a
        | if $a == null then "\($e.address): in sysfs but not reported"
          else
            ( ["vendorId", "deviceId", "subsystemVendorId", "subsystemDeviceId", "classCode", "revision",
               "driver", "driverOverride", "iommuGroup", "physfn", "vfIndex"][] as $k
              | select($a[$k] != $e[$k])
              | "\($e.address): \($k) is \($a[$k] | tojson), sysfs says \($e[$k] | tojson)" ),
            ( select(($a.vendorId | hex(4)) and ($a.deviceId | hex(4)) and ($a.classCode | hex(6)) | not)
              | "\($e.address): vendorId/deviceId/classCode are not lowercase hex strings of 4/4/6 digits" ),
            ( ["vendorName", "deviceName", "numaNode", "driver", "iommuGroup", "physfn", "vfIndex", "sriov"][] as $k
              | select($a | has($k) | not) | "\($e.address): key \($k) missing" ),
            ( select($a.numaNode != $e.numaNode and ($e.numaNode != null or $a.numaNode != -1))
              | "\($e.address): numaNode is \($a.numaNode | tojson), sysfs says \($e.numaNode | tojson)" ),
            ( if $e.sriov == null then
                (select($a.sriov != null) | "\($e.address): has sriov \($a.sriov | tojson), sysfs has no SR-IOV")
              elif $a.sriov == null then "\($e.address): sriov is null, sysfs says \($e.sriov | tojson)"
              else
                ( ["totalVFs", "numVFs", "driversAutoprobe", "vfs"][] as $k
                  | select($a.sriov[$k] != $e.sriov[$k])
                  | "\($e.address): sriov.\($k) is \($a.sriov[$k] | tojson), sysfs says \($e.sriov[$k] | tojson)" )
              end )
          end )
    ' "$1"
}

# lab_check_passage_devices LABEL: runs `passage devices --json`, compares it with sysfs,
# one check per device and one for the whole. Leaves the files in $LAB_OUT.
lab_check_passage_devices() {
    local label=$1 act=$LAB_OUT/devices-$1.json exp=$LAB_OUT/sysfs-$1.json diffs rc
    mkdir -p "$LAB_OUT"
    "$PASSAGE_BIN/passage" devices --json >"$act" 2>"$act.err"
    rc=$?
    lab_eq "[$label] passage devices --json exits 0" 0 "$rc"
    if ((rc != 0)); then sed 's/^/#   stderr: /' "$act.err" | head -n 20; return; fi
    if ! jq -e . "$act" >/dev/null 2>&1; then
        lab_fail "[$label] passage devices --json prints JSON" "$(head -c 400 "$act")"
        return
    fi
    lab_sysfs_devices_json >"$exp"
    diffs=$(lab_compare_devices_json "$act" "$exp" 2>&1)
    if [[ -z $diffs ]]; then
        lab_ok "[$label] passage devices --json agrees with sysfs on all $(jq length "$exp") devices"
    else
        lab_fail "[$label] passage devices --json agrees with sysfs" $'\n'"$diffs"
    fi
}

# ---- passaged ----------------------------------------------------------------------------
# lab_passaged_start SOCKET STATE_DIR [ARGS...]: starts $PASSAGE_BIN/passaged in the background
# (log appended to $LAB_OUT/passaged.log) and waits until it is ready; sets LAB_PASSAGED_PID,
# LAB_PASSAGED_SECONDS (exec to ready), LAB_PASSAGED_RECONCILED_SECONDS (exec to the end of
# start-up reconciliation) and LAB_PASSAGED_RECONCILED (its "reconciled" log line). Ready is the
# moment passaged has logged both "HTTP server listening" and "] serving" (/v1/health answers
# 200 from then on, "reconciled": false while start-up reconciliation still finishes or undoes
# what a stop cut short); the function returns once "] reconciled" is logged too, so that the
# caller's checks see the end state. Watched without forking (each process start costs L1, TCG,
# far more than the daemon's own work: polling with curl measured curl). /v1/health is then
# checked to answer 200 (not timed). Not to be called in $(…): the variables must reach the
# caller's shell.
lab_passaged_start() {
    local sock=$1 state=$2 log=$LAB_OUT/passaged.log t0 fd line part='' listening='' serving='' reconciled='' nap=/tmp/lab-passaged.nap
    shift 2
    mkdir -p "$LAB_OUT"; touch "$log"
    [[ -p $nap ]] || mkfifo "$nap"
    exec {LAB_NAP_FD}<>"$nap"
    # The log from its current end on: only the lines this start appends are looked at, and
    # only once each (re-reading a log that grows over a hundred restarts would cost more
    # every time, and be timed).
    exec {fd}<"$log"
    while IFS= read -r -u "$fd" line; do :; done
    t0=$EPOCHREALTIME
    "$PASSAGE_BIN/passaged" --socket "$sock" --state-dir "$state" "$@" >>"$log" 2>&1 &
    LAB_PASSAGED_PID=$!
    # Ready (timed): listening and serving. Then, not timed, until reconciliation has finished the
    # undo work it may still be doing (what the scenarios' invariant checks are about).
    local t1=''
    while (( ${EPOCHREALTIME/./} - ${t0/./} < 20000000 )); do
        while IFS= read -r -u "$fd" line; do
            line=$part$line part=
            [[ $line == *"HTTP server listening"* ]] && listening=1
            [[ $line == *"] serving"* ]] && serving=1
            [[ $line == *"] reconciled"* ]] && reconciled=1 LAB_PASSAGED_RECONCILED=$line
        done
        part+=$line                      # a line still being written
        [[ -z $t1 && -n $listening && -n $serving ]] && t1=$EPOCHREALTIME
        [[ -n $t1 && -n $reconciled ]] && break
        kill -0 "$LAB_PASSAGED_PID" 2>/dev/null || break
        read -r -t 0.01 -u "$LAB_NAP_FD" _
    done
    LAB_PASSAGED_SECONDS=$(awk -v a="$t0" -v b="${t1:-$EPOCHREALTIME}" 'BEGIN { printf "%.2f", b - a }')
    LAB_PASSAGED_RECONCILED_SECONDS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    exec {LAB_NAP_FD}>&- {fd}<&-
    [[ -n $t1 && -n $reconciled ]] || return 1
    lab_wait_for 20 sh -c "kill -0 $LAB_PASSAGED_PID && curl -sf --unix-socket $sock http://localhost/v1/health >/dev/null" || return 1
}

# lab_ready_summary SECONDS...: "restarts_over_1s=N ready_median_seconds=M worst_ready_seconds=W"
# for the ready times of a crash loop (issue 9's promise: ready within 1 s of every restart).
lab_ready_summary() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1; if ($1 > 1.0) over++ }
        END { printf "restarts_over_1s=%d ready_median_seconds=%s worst_ready_seconds=%s", over, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }'
}

# lab_kvm_load: kvm-amd, and one KVM VM held open (no vCPU) until L1 powers off. The first VM
# created and the last destroyed toggle the kernel's preempt-notifier static key, which patches
# __schedule with int3 (text_poke_bp) while the other vCPU runs it; under multi-threaded TCG that
# has oopsed L1 ("Oops: int3" at __schedule) and may be what froze it before. With one VM always
# there the key stays on and __schedule is patched once.
lab_kvm_load() {
    modprobe kvm-amd || lab_fatal "modprobe kvm-amd failed"
    [[ -n ${LAB_KVM_HOLDER:-} ]] && return 0
    python3 -c 'import fcntl, os, signal
kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
fcntl.ioctl(kvm, 0xAE01, 0)   # KVM_CREATE_VM
print("lab: holding a KVM VM", flush=True)
signal.pause()' &
    LAB_KVM_HOLDER=$!
}

# lab_vmm_prepare: what a scenario running VMs needs in L1 — passaged, passage and passage-vmm
# (sets bin and vmm), SVM for nested KVM, kvm-amd and vfio-pci loaded, $LAB_OUT.
lab_vmm_prepare() {
    bin=$PASSAGE_BIN
    vmm=${PASSAGE_VMM:-$bin/passage-vmm}
    [[ -x $bin/passaged && -x $bin/passage && -x $vmm ]] || lab_fatal "no passaged/passage/passage-vmm ($bin, $vmm)"
    grep -qw svm /proc/cpuinfo || lab_fatal "the L1 CPU has no SVM"
    lab_kvm_load
    modprobe vfio-pci || lab_fatal "modprobe vfio-pci failed"
    mkdir -p "$LAB_OUT"
}

# lab_passaged_for_vms: passaged at the usual socket and state directory, running $vmm (after
# lab_vmm_prepare); sets sock, state and PASSAGE_SOCKET. Fatal when it does not come up.
lab_passaged_for_vms() {
    sock=/run/passage/passage.sock state=/tmp/passage-state
    export PASSAGE_SOCKET=$sock
    lab_passaged_start $sock $state --vmm "$vmm" --rescan-interval 60 || lab_fatal "passaged did not come up: $(tail -n 20 "$LAB_OUT/passaged.log")"
}

# lab_vm_claim NAME: the claim VM NAME holds, as `passage vm list` says.
lab_vm_claim() { "$bin/passage" vm list --json | jq -r --arg n "$1" '.[] | select(.name == $n) | .claim'; }

# lab_vm_state_is NAME "STATE EXIT": VM NAME's state and exit status, as `passage vm list` says.
lab_vm_state_is() {
    [[ $("$bin/passage" vm list --json | jq -r --arg n "$1" '.[] | select(.name == $n) | "\(.state) \(.exitStatus)"') == "$2" ]]
}

# lab_vmm_initramfs FILE: the busybox initramfs passage-vmm guests boot (guest/vmm-init as /init,
# no modules), written to FILE.
lab_vmm_initramfs() {
    local out=$1 stage
    stage=$(mktemp -d /tmp/vmm-initramfs.XXXXXX)
    mkdir -p "$stage"/{bin,proc,sys,dev}
    cp /bin/busybox "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh"
    cp "$LAB_DIR/guest/vmm-init" "$stage/init"
    chmod 755 "$stage/init"
    (cd "$stage" && find . | cpio -o -H newc -R 0:0 --quiet) >"$out" || return 1
    rm -rf "$stage"
}
