#!/usr/bin/env bash
# Installs what Passage needs on a Debian 12 machine, idempotently: the C libraries it links
# (libpci, libudev, libnl-route-3, liblzma), pciutils and pci.ids, and the lab's QEMU, Debian kernel image,
# busybox, cpio, nvme-cli and jq. Installs nothing when everything is present.
# The Swift 6 toolchain is expected on PATH (or at /opt/swift/usr/bin); it is not an apt package.
set -euo pipefail

packages=(
    # build: C libraries and pkg-config files
    pkg-config libpci-dev libudev-dev libnl-3-dev libnl-route-3-dev liblzma-dev
    # names and the reference tool the tests compare against
    pci.ids pciutils
    # the lab: an emulated IOMMU + SR-IOV NVMe host under QEMU, running Debian's kernel
    qemu-system-x86 linux-image-amd64 busybox-static cpio nvme-cli jq kmod
    # the peer the binding benchmark compares against
    driverctl
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        sudo=sudo
    else
        sudo=
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

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
