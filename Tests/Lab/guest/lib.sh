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
    fi
}

lab_fail() { # DESCRIPTION [DETAIL...]: a failed check
    LAB_CHECKS=$((LAB_CHECKS + 1)); LAB_FAILS=$((LAB_FAILS + 1))
    echo "not ok - $1"; shift
    local l; for l in "$@"; do echo "#   $l"; done
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
    local pf=$1 n=$2 ctrl i vf scid
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
