# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are used by lab.sh
# The second L1 kernel of the lab: one with iommufd and the VFIO device cdev (/dev/iommu,
# /dev/vfio/devices/vfioN), which passage-vmm uses instead of the type1 container when the
# kernel has them. Sourced by common.sh.
#
# Debian enables neither CONFIG_IOMMUFD nor CONFIG_VFIO_DEVICE_CDEV in any kernel of its archive
# (bookworm's 6.1 and 6.12, trixie-backports' 6.18 and 7.3, sid's 7.2 were checked). So the lab
# takes Debian's 6.12 kernel image as it is and builds, from Debian's own linux-source-6.12 and
# against its linux-headers, the five modules that differ with those options on: iommufd, vfio
# (with device_cdev and iommufd), vfio_iommu_type1, vfio-pci-core and vfio-pci. They go to
# lib/modules/VERSION/updates of an unpacked copy of the image under $LAB_BUILD/kernels, where
# depmod prefers them over the stock ones, so `modprobe vfio-pci` in L1 loads them (and iommufd).
# The build machine's /lib/modules is not changed: the tree L1 mounts is a copy.
#
# Needs (scripts/setup.sh installs them): linux-headers-$LAB_IOMMUFD_KVER (which pulls in the
# kernel image linux-image-$LAB_IOMMUFD_KVER, into /boot and /lib/modules: lab_find_kernel never
# picks it as the default lab kernel) and linux-source-6.12 of the same version, gcc-12, make,
# xz-utils, kmod. First build about 30 s; then cached.

LAB_IOMMUFD_KVER=${LAB_IOMMUFD_KVER:-6.12.117+deb12-amd64}
# Bump when the way the kernel tree is put together changes.
LAB_IOMMUFD_BUILDER_VERSION=1

# The Debian package version of a kernel release: 6.12.117+deb12-amd64 -> 6.12.117-1~deb12u1 is
# what apt knows; read it from the installed headers package rather than guessing.
lab_iommufd_pkgver() {
    dpkg-query -W -f '${Version}' "linux-headers-$LAB_IOMMUFD_KVER" 2>/dev/null
}

# What must be installed for lab_iommufd_kernel; fails loudly with the apt-get line.
lab_iommufd_preflight() {
    local v series want have
    v=$(lab_iommufd_pkgver) || true
    [[ -n $v ]] || lab_die "linux-headers-$LAB_IOMMUFD_KVER is not installed (scripts/setup.sh, or apt-get install linux-headers-$LAB_IOMMUFD_KVER)"
    series=${LAB_IOMMUFD_KVER%%.*}.$(cut -d. -f2 <<<"$LAB_IOMMUFD_KVER")
    have=$(dpkg-query -W -f '${Version}' "linux-source-$series" 2>/dev/null || true)
    [[ $have == "$v" ]] || lab_die "linux-source-$series $v is needed for the iommufd lab kernel (have: ${have:-none}); apt-get install linux-source-$series=$v"
    [[ -r /usr/src/linux-source-$series.tar.xz ]] || lab_die "/usr/src/linux-source-$series.tar.xz is missing (reinstall linux-source-$series)"
    command -v make >/dev/null || lab_die "make not found (apt-get install make)"
    command -v depmod >/dev/null || lab_die "depmod not found (apt-get install kmod)"
    want=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\).*/\1/p' "/usr/src/linux-headers-$LAB_IOMMUFD_KVER/.config")
    command -v "$want" >/dev/null || lab_die "$want (the compiler the kernel was built with) not found (apt-get install gcc-12)"
}

# lab_iommufd_kernel: sets LAB_L1_KVER, LAB_L1_KERNEL and LAB_L1_MODROOT (the root of the
# unpacked image, whose lib/modules/VERSION L1 mounts over the host's) for the iommufd kernel.
lab_iommufd_kernel() {
    local kver=$LAB_IOMMUFD_KVER v series dir key stage deb src b m
    lab_iommufd_preflight
    [[ -r /boot/vmlinuz-$kver && -d /lib/modules/$kver/kernel ]] \
        || lab_die "the kernel $kver is not installed (/boot/vmlinuz-$kver, /lib/modules/$kver): apt-get install linux-image-$kver"
    v=$(lab_iommufd_pkgver)
    series=${kver%%.*}.$(cut -d. -f2 <<<"$kver")
    dir=$LAB_BUILD/kernels/$kver
    key=$( {
        echo "builder=$LAB_IOMMUFD_BUILDER_VERSION kver=$kver pkg=$v"
        sed -n '/^lab_iommufd_kernel()/,/^}/p' "${BASH_SOURCE[0]}" | sha256sum
    } | sha256sum | cut -c1-16)
    LAB_L1_KVER=$kver
    LAB_L1_KERNEL=$dir/root/boot/vmlinuz-$kver
    LAB_L1_MODROOT=$dir/root
    if [[ -s $dir/ready && $(cat "$dir/ready") == "$key" && -r $LAB_L1_KERNEL ]]; then return 0; fi

    lab_note "building the iommufd L1 kernel $kver (Debian's image + iommufd/VFIO cdev modules from linux-source-$series $v)"
    mkdir -p "$LAB_BUILD/kernels"
    rm -rf "$dir"
    stage=$dir/stage
    mkdir -p "$stage" "$dir/root/boot" "$dir/root/lib/modules/$kver"
    # A copy of the installed kernel's modules, to add ours and run depmod on, not the host's.
    cp "/boot/vmlinuz-$kver" "$dir/root/boot/" || lab_die "cannot read /boot/vmlinuz-$kver"
    cp -a --reflink=auto "/lib/modules/$kver"/{kernel,modules.builtin,modules.builtin.modinfo,modules.order} \
        "$dir/root/lib/modules/$kver/" || lab_die "cannot copy /lib/modules/$kver"

    # The sources of the five modules, from Debian's tarball.
    tar -xJf "/usr/src/linux-source-$series.tar.xz" -C "$stage" --strip-components=1 --wildcards --no-wildcards-match-slash \
        "linux-source-$series/drivers/iommu/*.h" "linux-source-$series/drivers/iommu/iommufd/*" \
        "linux-source-$series/drivers/vfio/*.[ch]" "linux-source-$series/drivers/vfio/pci/*.[ch]" \
        "linux-source-$series/lib/interval_tree.c" || lab_die "cannot unpack the iommufd/VFIO sources"
    src=$stage/drivers
    # iommufd's interval-tree span iterator is built into the kernel only with IOMMUFD on:
    # compile that part of lib/interval_tree.c into iommufd.ko (not exported from it).
    {
        sed -n '1,/^#include <linux\/export.h>/p' "$stage/lib/interval_tree.c"
        sed -n '/^#ifdef CONFIG_INTERVAL_TREE_SPAN_ITER/,/^#endif/p' "$stage/lib/interval_tree.c" \
            | grep -v -e '^#ifdef' -e '^#endif' -e 'EXPORT_SYMBOL'
    } >"$src/iommu/iommufd/span_iter.c"
    local flags='-DCONFIG_IOMMUFD_MODULE=1 -DCONFIG_VFIO_DEVICE_CDEV=1'
    echo 'obj-m += iommu/iommufd/ vfio/' >"$src/Kbuild"
    cat >"$src/iommu/iommufd/Kbuild" <<EOF
ccflags-y += $flags
iommufd-y := device.o fault.o hw_pagetable.o io_pagetable.o ioas.o main.o pages.o vfio_compat.o span_iter.o
obj-m += iommufd.o
EOF
    cat >"$src/vfio/Kbuild" <<EOF
ccflags-y += $flags
vfio-y := vfio_main.o group.o container.o virqfd.o iommufd.o device_cdev.o
obj-m += vfio.o vfio_iommu_type1.o pci/
EOF
    cat >"$src/vfio/pci/Kbuild" <<EOF
ccflags-y += $flags -I\$(src)
vfio-pci-core-y := vfio_pci_core.o vfio_pci_intrs.o vfio_pci_rdwr.o vfio_pci_config.o
vfio-pci-y := vfio_pci.o vfio_pci_igd.o
obj-m += vfio-pci-core.o vfio-pci.o
EOF
    b=$LAB_BUILD/kernels/modules-build.log
    make -C "/usr/src/linux-headers-$kver" M="$src" -j"$(nproc)" modules >"$b" 2>&1 \
        || lab_die "building the iommufd/VFIO modules failed; the end of $b:
$(tail -n 30 "$b")"
    if grep -q 'undefined!' "$b"; then lab_die "the iommufd/VFIO modules have undefined symbols (see $b): $(grep 'undefined!' "$b" | head -n5)"; fi
    m=$dir/root/lib/modules/$kver/updates/passage-iommufd
    mkdir -p "$m"
    cp "$src/iommu/iommufd/iommufd.ko" "$src/vfio/vfio.ko" "$src/vfio/vfio_iommu_type1.ko" \
        "$src/vfio/pci/vfio-pci-core.ko" "$src/vfio/pci/vfio-pci.ko" "$m/"
    depmod -b "$dir/root" "$kver" || lab_die "depmod on $dir/root failed"
    [[ $(modinfo -b "$dir/root" -k "$kver" -F filename vfio) == */updates/* ]] \
        || lab_die "depmod does not prefer the rebuilt vfio.ko in $dir/root"
    rm -rf "$stage"
    echo "$key" >"$dir/ready"
    lab_note "built the iommufd L1 kernel in $dir ($(du -sh "$dir" | cut -f1))"
}
