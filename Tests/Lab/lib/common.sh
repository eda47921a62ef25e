# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are used by lab.sh and run-all.sh
# Host-side helpers for the lab harness. Sourced by lab.sh (bash).
#
# Everything the harness builds is cached under $LAB_BUILD (<repo>/.build/lab):
#   initramfs/  L1 and L2 initramfs images, named by a hash of their inputs
#   runs/       one directory per run (env file, disk images), removed after the run
#   logs/       the console log of the latest run of each TOPOLOGY--SCENARIO
# Not /tmp: inside L1 a tmpfs hides the host's /tmp.

LAB_DIR=${LAB_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
LAB_REPO=${LAB_REPO:-$(cd "$LAB_DIR/../.." && pwd)}
LAB_BUILD=${LAB_BUILD:-$LAB_REPO/.build/lab}
LAB_QEMU=${LAB_QEMU:-qemu-system-x86_64}
LAB_BUSYBOX=${LAB_BUSYBOX:-/bin/busybox}
LAB_MARKER=PASSAGE-LAB-MARKER-1

# Bump when the way images are built changes (folded into every cache key).
LAB_BUILDER_VERSION=3

# Modules the L1 initramfs loads (with their dependencies) to mount the host over 9p.
LAB_L1_MODULES="virtio_pci 9pnet_virtio 9p"
# Modules the L2 initramfs loads (with their dependencies) to read an NVMe namespace.
LAB_L2_MODULES="nvme"
# Modules of the second L2 initramfs (vmm-legacy-irq: virtio-rng over INTx, an AHCI disk over MSI;
# vmm-hot-reset: two e1000 NICs over INTx).
LAB_L2IRQ_MODULES="virtio_pci virtio_rng ahci sd_mod e1000"

lab_die() { echo "lab: error: $*" >&2; exit 2; }
# shellcheck source=iommufd-kernel.sh
. "$LAB_DIR/lib/iommufd-kernel.sh"
lab_note() { echo "lab: $*" >&2; }

# The Debian kernel to boot: $LAB_KVER if set, else the newest /boot/vmlinuz-* that has
# a matching /lib/modules directory, other than the base of the iommufd kernel
# ($LAB_IOMMUFD_KVER, which L1 boots only on the topologies that ask for it).
lab_find_kernel() {
    if [[ -n ${LAB_KVER:-} ]]; then
        [[ -f /boot/vmlinuz-$LAB_KVER ]] || lab_die "kernel /boot/vmlinuz-$LAB_KVER not found (LAB_KVER)"
        [[ -d /lib/modules/$LAB_KVER ]] || lab_die "modules /lib/modules/$LAB_KVER not found (LAB_KVER)"
        LAB_KERNEL=/boot/vmlinuz-$LAB_KVER
        return
    fi
    local k v best
    best=$(for k in /boot/vmlinuz-*; do
        v=${k#/boot/vmlinuz-}
        if [[ -f $k && -d /lib/modules/$v/kernel && $v != "$LAB_IOMMUFD_KVER" ]]; then echo "$v"; fi
    done | sort -V | tail -n1)
    [[ -n $best ]] || lab_die "no kernel: need /boot/vmlinuz-VERSION with /lib/modules/VERSION (apt-get install linux-image-amd64)"
    LAB_KVER=$best
    LAB_KERNEL=/boot/vmlinuz-$best
}

# Everything that must be present on the build machine; fails loudly, never skips.
lab_preflight() {
    command -v "$LAB_QEMU" >/dev/null || lab_die "$LAB_QEMU not found (apt-get install qemu-system-x86)"
    [[ -x $LAB_BUSYBOX ]] || lab_die "$LAB_BUSYBOX not found (apt-get install busybox-static)"
    "$LAB_BUSYBOX" --list | grep -x insmod >/dev/null || lab_die "$LAB_BUSYBOX lacks insmod (need busybox-static)"
    command -v cpio >/dev/null || lab_die "cpio not found (apt-get install cpio)"
    command -v modinfo >/dev/null || lab_die "modinfo not found (apt-get install kmod)"
    lab_find_kernel
    [[ -r $LAB_KERNEL ]] || lab_die "$LAB_KERNEL is not readable"
}

# lab_resolve_modules MODULE... -> module files, dependencies first, each once; of the kernel
# $LAB_MOD_KVER (default $LAB_KVER) whose lib/modules is under $LAB_MOD_ROOT (default /).
lab_resolve_modules() {
    local kver=${LAB_MOD_KVER:-$LAB_KVER} root=${LAB_MOD_ROOT:-/}
    local -A _seen=()
    local _out=()
    _lab_visit() {
        local m=$1 key=${1//-/_} deps d fn
        [[ -n ${_seen[$key]:-} ]] && return 0
        _seen[$key]=1
        deps=$(modinfo -b "$root" -k "$kver" -F depends "$m") || lab_die "module $m not found for $kver"
        for d in ${deps//,/ }; do _lab_visit "$d"; done
        fn=$(modinfo -b "$root" -k "$kver" -F filename "$m" | head -n1)
        case $fn in
            /*) _out+=("$fn") ;;
            *) ;;   # (builtin)
        esac
    }
    local m
    for m in "$@"; do _lab_visit "$m"; done
    printf '%s\n' "${_out[@]}"
}

# lab_build_initramfs NAME INIT_SCRIPT MODULES -> path of a cached cpio archive.
# The archive holds busybox (applets linked at boot by the init), the init script and the
# modules in load order (/lib/lab-modules/NN-name.ko, listed in /lib/lab-modules/order;
# compressed modules are stored uncompressed, for busybox's insmod). The kernel is
# $LAB_MOD_KVER/$LAB_MOD_ROOT as for lab_resolve_modules.
lab_build_initramfs() {
    local name=$1 init=$2 mods=$3 kver=${LAB_MOD_KVER:-$LAB_KVER}
    local files key out stage f i=0
    files=$(lab_resolve_modules $mods) || exit 2
    key=$( {
        echo "builder=$LAB_BUILDER_VERSION kver=$kver name=$name"
        sha256sum "$init" "$LAB_BUSYBOX" | cut -d' ' -f1
        for f in $files; do echo "$f $(stat -c '%s %Y' "$f")"; done
    } | sha256sum | cut -c1-16)
    out=$LAB_BUILD/initramfs/$name-$kver-$key.cpio
    if [[ -s $out ]]; then echo "$out"; return 0; fi
    mkdir -p "$LAB_BUILD/initramfs"
    stage=$(mktemp -d "$LAB_BUILD/initramfs/.stage-$name.XXXXXX")
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,host,mnt,lib/lab-modules}
    cp "$LAB_BUSYBOX" "$stage/bin/busybox"
    cp "$init" "$stage/init"
    chmod 755 "$stage/init" "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh"
    for f in $files; do
        i=$((i + 1))
        local base
        base=$(printf '%02d-%s' "$i" "$(basename "$f")")
        case $base in
            *.ko.xz) base=${base%.xz}; xz -dc "$f" >"$stage/lib/lab-modules/$base" ;;
            *.ko.zst) base=${base%.zst}; zstd -qdc "$f" >"$stage/lib/lab-modules/$base" ;;
            *) cp "$f" "$stage/lib/lab-modules/$base" ;;
        esac
        echo "$base" >>"$stage/lib/lab-modules/order"
    done
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp.$$"
    mv -f "$out.tmp.$$" "$out"
    rm -rf "$stage"
    # Drop stale builds of the same image.
    find "$LAB_BUILD/initramfs" -maxdepth 1 -name "$name-$kver-*.cpio" ! -path "$out" -delete 2>/dev/null || true
    lab_note "built $out ($(du -h "$out" | cut -f1))"
    echo "$out"
}

# lab_select_l1 [KIND]: the kernel L1 boots. KIND '' (default) is the L2 kernel, $LAB_KERNEL;
# 'iommufd' is the kernel of iommufd-kernel.sh. Sets LAB_L1_KVER, LAB_L1_KERNEL, LAB_L1_MODROOT.
lab_select_l1() {
    case ${1:-} in
        '') LAB_L1_KVER=$LAB_KVER LAB_L1_KERNEL=$LAB_KERNEL LAB_L1_MODROOT=/ ;;
        iommufd) lab_iommufd_kernel ;;
        *) lab_die "unknown L1 kernel '$1' (have: iommufd)" ;;
    esac
}

# lab_build_all [KIND]: the initramfs images, L1's for the L1 kernel KIND (lab_select_l1).
lab_build_all() {
    lab_select_l1 "${1:-}"
    LAB_L1_INITRD=$(LAB_MOD_KVER=$LAB_L1_KVER LAB_MOD_ROOT=$LAB_L1_MODROOT \
        lab_build_initramfs l1 "$LAB_DIR/guest/l1-init" "$LAB_L1_MODULES") || exit 2
    LAB_L2_INITRD=$(lab_build_initramfs l2 "$LAB_DIR/guest/l2-init" "$LAB_L2_MODULES") || exit 2
    LAB_L2IRQ_INITRD=$(lab_build_initramfs l2irq "$LAB_DIR/guest/l2-init" "$LAB_L2IRQ_MODULES") || exit 2
}

# lab_topology_load NAME: sources topologies/NAME.sh, which defines
#   topology_prepare RUNDIR   create disk images etc. in the run directory
#   topology_args RUNDIR      print QEMU arguments, one per line
# and may set TOPOLOGY_L1_KERNEL (a KIND of lab_select_l1).
lab_topology_load() {
    local t=$LAB_DIR/topologies/$1.sh
    [[ -f $t ]] || lab_die "unknown topology '$1' (have: $(lab_list topologies))"
    unset -f topology_prepare topology_args
    TOPOLOGY_L1_KERNEL=''

    # shellcheck disable=SC1090
    . "$t"
    declare -F topology_args >/dev/null || lab_die "$t defines no topology_args"
}

lab_list() { # topologies|scenarios
    local f out=()
    for f in "$LAB_DIR/$1"/*.sh; do [[ -f $f ]] && out+=("$(basename "$f" .sh)"); done
    echo "${out[*]}"
}

# A header line in a scenario: "# lab-KEY: VALUE"
lab_header() { # FILE KEY
    sed -n "s/^# lab-$2:[[:space:]]*//p" "$1" | head -n1
}
