#!/usr/bin/env bash
# Passage's main job, from a fresh Debian machine: installs what is missing (packages, the lab's
# kernel), builds passage, passaged and passage-vmm (release), shows this machine's PCI devices,
# IOMMU groups and SR-IOV topology (read-only: nothing on this host is changed), then — since a
# build machine has no SR-IOV hardware to lend — the whole flow in the lab VM: passaged creates a
# VF on an emulated SR-IOV NVMe controller, claims it, and passage-vmm boots a guest whose nvme
# driver uses it; each step is announced and the guest's console is shown.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh

bash scripts/setup.sh
echo "== building (release): passage, passaged, passage-vmm"
for p in passage passaged passage-vmm; do
    swift build -c release --product "$p" 2>&1 | grep -v -E '^\[|warning: Using .dlopen. in statically linked' | tail -n 2
done
bin=$(swift build -c release --show-bin-path)

echo
echo "== this machine: passage devices"
"$bin/passage" devices
echo
echo "== this machine: passage groups"
"$bin/passage" groups
echo
echo "(passage devices --json for scripts, --tree for the topology; passage devices show ADDRESS; docs/cli.md)"

echo
echo "== the lab: passaged creates a VF, claims it and boots a guest that uses it (Tests/Lab, docs/lab.md)"
LAB_ARG_DEMO=1 PASSAGE_BIN="$bin" PASSAGE_VMM="$bin/passage-vmm" bash Tests/Lab/lab.sh run sriov-nvme vmm-passthrough -v
