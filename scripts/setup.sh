#!/usr/bin/env bash
# Installs what Passage needs on a Debian 12 machine, idempotently: the C libraries it links
# (libpci, libudev, libnl-route-3, liblzma, libzstd), pciutils and pci.ids, and the lab's QEMU, Debian kernel image,
# busybox, cpio, nvme-cli and jq; and for the lab's iommufd kernel (Tests/Lab/lib/iommufd-kernel.sh)
# Debian's linux-headers of that 6.12 kernel (which pull in its image) and linux-source-6.12 of the
# same version. Installs nothing when everything is present.
# The Swift 6 toolchain is expected on PATH (or at /opt/swift/usr/bin); it is not an apt package.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../Tests/Lab/lib/iommufd-kernel.sh
. "$root/Tests/Lab/lib/iommufd-kernel.sh"    # LAB_IOMMUFD_KVER
series=$(cut -d. -f1,2 <<<"$LAB_IOMMUFD_KVER")

packages=(
    # build: C libraries and pkg-config files
    pkg-config libpci-dev libudev-dev libnl-3-dev libnl-route-3-dev liblzma-dev libzstd-dev
    # names and the reference tool the tests compare against
    pci.ids pciutils
    # the lab: an emulated IOMMU + SR-IOV NVMe host under QEMU, running Debian's kernel
    qemu-system-x86 linux-image-amd64 busybox-static cpio nvme-cli jq kmod python3
    make gcc-12 xz-utils
    # the peer the binding benchmark compares against
    driverctl
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done

sudo=
[[ $(id -u) -ne 0 ]] && sudo=sudo
export DEBIAN_FRONTEND=noninteractive
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The lab's iommufd kernel (Tests/Lab/lib/iommufd-kernel.sh): Debian's 6.12 headers, which pull in
# that kernel's image, and the kernel source of the same version. Not fatal: without them only the
# lab's -iommufd topologies fail (with this reason).
iommufd_ok=1
if [[ $(dpkg-query -W -f='${Status}' "linux-headers-$LAB_IOMMUFD_KVER" 2>/dev/null) != "install ok installed" ]]; then
    echo "setup: installing linux-headers-$LAB_IOMMUFD_KVER (and its kernel image) for the lab's iommufd kernel"
    $sudo apt-get install -y -qq --no-install-recommends "linux-headers-$LAB_IOMMUFD_KVER" >/dev/null || iommufd_ok=
fi
want=$(dpkg-query -W -f '${Version}' "linux-headers-$LAB_IOMMUFD_KVER" 2>/dev/null || true)
if [[ -n $iommufd_ok && -n $want && $(dpkg-query -W -f '${Version}' "linux-source-$series" 2>/dev/null) != "$want" ]]; then
    echo "setup: installing linux-source-$series=$want"
    $sudo apt-get install -y -qq --no-install-recommends --allow-downgrades "linux-source-$series=$want" >/dev/null || iommufd_ok=
fi
[[ -n $iommufd_ok && -n $want ]] || echo "setup: warning: linux-headers-$LAB_IOMMUFD_KVER or linux-source-$series=$want could not be installed; the lab's -iommufd topologies will fail (set LAB_IOMMUFD_KVER to a 6.12 kernel the archive has)" >&2

# The `passage` group (what install.sh creates): udev rules and the daemon's socket name it, and
# the lab's L1 sees this machine's /etc/group.
if ! getent group passage >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then groupadd --system passage; else sudo groupadd --system passage; fi \
        && echo "setup: created the system group passage" || echo "setup: could not create the group passage (the policy lab test needs it)" >&2
fi

if ! command -v swift >/dev/null 2>&1; then
    if [[ -x /opt/swift/usr/bin/swift ]]; then
        echo "setup: swift is at /opt/swift/usr/bin; add it to PATH" >&2
    else
        echo "setup: no Swift toolchain found: install Swift 6.x (swift.org) and put it on PATH" >&2
        exit 1
    fi
fi
echo "setup: ok ($(swift --version 2>/dev/null | head -1))"
