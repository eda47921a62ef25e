#!/usr/bin/env bash
# Passage's main job on this machine, from a fresh Debian machine: installs what is missing,
# builds a release build, and shows the host's PCI devices, their IOMMU groups and the SR-IOV
# topology. Read-only: nothing on the host is changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh

bash scripts/setup.sh
echo "== building (release)"
swift build -c release --product passage 2>&1 | tail -n 3
bin=.build/release/passage

echo
echo "== passage devices"
"$bin" devices
echo
echo "== passage groups"
"$bin" groups
echo
echo "== passage devices --tree"
"$bin" devices --tree
echo
echo "(passage devices --json for scripts; passage devices show ADDRESS for one device; docs/cli.md)"
