#!/usr/bin/env bash
# lab-topology: sriov-nvme
# lab-timeout: 240
#
# NVMe secondary-controller provisioning by Passage itself (`passage nvme`, the admin ioctl on
# /dev/nvme0; no nvme-cli): prepare the PF (primary flexible allocation 0 + PF reset), create 4
# VFs with plain sysfs (autoprobe off), provision VFs 0 and 1 (2 VQ, 1 VI), check the secondary
# controller list, dry runs that change nothing, idempotent re-runs, a refused over-allocation,
# and the proof that provisioning is real: L1's own nvme driver binds VF 0 and reads the lab
# marker from the namespace through the VF's controller.
#   LAB-TIMING prepare_seconds=… provision_seconds=… (passage wall time, both VFs)
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"
# scripts/test.sh sets this for `swift test` and lab.sh passes PASSAGE_* through; in L1 the /sys is
# the lab VM's own, and writing it is the point.
unset PASSAGE_FORBID_HOST_SYSFS_WRITES

bin=$PASSAGE_BIN/passage
pf=0000:01:00.0
vf0=0000:01:00.1
vf1=0000:01:00.2
[[ -x $bin ]] || lab_fatal "no passage binary at $bin (build it on the host first: swift build; PASSAGE_BIN=$PASSAGE_BIN)"
command -v jq >/dev/null || lab_fatal "jq is not installed on the host (apt-get install jq)"
mkdir -p "$LAB_OUT"

# One block device per controller: without native multipath the VF's controller gets its own
# nvmeXnY for the shared namespace instead of becoming a hidden path of the PF's nvme0n1.
modprobe nvme_core multipath=N || lab_fatal "modprobe nvme_core failed"
modprobe nvme || lab_fatal "modprobe nvme failed"
lab_check "nvme binds the PF" lab_wait_for 10 lab_driver_is "$pf" nvme
ctrl=$(lab_nvme_ctrl "$pf") || lab_fatal "no nvme controller on $pf"
lab_nvme_live "$ctrl" || lab_fatal "$ctrl is not live"
lab_ok "PF controller $ctrl is live"

# passage_json NAME ARGS...: runs `passage ARGS --json`, stdout to $LAB_OUT/NAME.json, stderr to
# NAME.err; returns passage's exit status.
passage_json() {
    local name=$1; shift
    "$bin" "$@" --json >"$LAB_OUT/$name.json" 2>"$LAB_OUT/$name.err"
}
show() { sed 's/^/#   /' "$LAB_OUT/$1.json" "$LAB_OUT/$1.err" | head -n "${2:-60}"; }
q() { jq -c "$2" "$LAB_OUT/$1.json" 2>&1; }

# ---- before: the secondary controllers as the controller reports them ----
passage_json status0 nvme status "$pf"
lab_eq "nvme status exits 0" 0 $?
show status0 80
lab_eq "controller is $ctrl" "\"$ctrl\"" "$(q status0 .controller)"
lab_eq "4 secondary controllers, VF numbers 1-4, all offline with no resources" \
    '[[1,0,"offline",0,0],[2,1,"offline",0,0],[3,2,"offline",0,0],[4,3,"offline",0,0]]' \
    "$(q status0 '[.secondaryControllers[] | [.vfNumber, .vfIndex, .state, .queues, .interrupts]]')"
lab_eq "flexible totals: VQ 8, VI 4" '[8,4]' "$(q status0 '[.queues.flexibleTotal, .interrupts.flexibleTotal]')"
held=$(q status0 '[.queues.allocatedToPrimary, .interrupts.allocatedToPrimary]')
lab_log "primary holds flexible VQ/VI $held at power-on"

# QEMU 7.2 starts with the primary holding no flexible resources, so `prepare` would have nothing
# to do. Give the primary 4 VQ / 2 VI first (nvme-cli, only to set up this precondition; a
# reset makes it take effect) so the real prepare path runs: allocation 0 + PF reset.
if [[ $held == "[0,0]" ]] && command -v nvme >/dev/null; then
    if ! { nvme virt-mgmt "$ctrl" --cntlid=0 --rt=0 --act=1 --nr=4 >/dev/null \
        && nvme virt-mgmt "$ctrl" --cntlid=0 --rt=1 --act=1 --nr=2 >/dev/null \
        && echo 1 >"$LAB_PCI/$pf/reset" && lab_nvme_live "$ctrl"; }; then
        lab_fatal "could not set up the precondition (primary holding flexible resources) with nvme-cli"
    fi
    passage_json status0b nvme status "$pf"
    held=$(q status0b '[.queues.allocatedToPrimary, .interrupts.allocatedToPrimary]')
    lab_eq "precondition: the primary holds 4 VQ / 2 VI" '[4,2]' "$held"
fi

# ---- prepare: dry run, real, again ----
passage_json prepare-dry nvme prepare "$pf" --dry-run
lab_eq "prepare --dry-run exits 0" 0 $?
show prepare-dry
if [[ $held != "[0,0]" ]]; then
    lab_eq "prepare --dry-run lists both allocations of 0, the reset and the wait" \
        '["ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: primary flexible allocation VQ=0 on controller 0 (opcode 0x1c cdw10=0x00000001 cdw11=0x00000000)","ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: primary flexible allocation VI=0 on controller 0 (opcode 0x1c cdw10=0x00000101 cdw11=0x00000000)","write \"1\" > /sys/bus/pci/devices/0000:01:00.0/reset","wait for controller nvme0 of 0000:01:00.0 to be live after the reset"]' \
        "$(q prepare-dry .actions)"
    passage_json status-after-dry nvme status "$pf"
    lab_eq "prepare --dry-run changed nothing" "$held" "$(q status-after-dry '[.queues.allocatedToPrimary, .interrupts.allocatedToPrimary]')"
fi

t0=$(date +%s.%N)
passage_json prepare nvme prepare "$pf"
rc=$?
prepare_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
lab_eq "prepare exits 0" 0 "$rc"
show prepare
[[ $held != "[0,0]" ]] && lab_eq "prepare made 4 changes" '[true,4]' "$(q prepare '[.changed, (.actions | length)]')"
lab_check "PF controller live after the reset" lab_nvme_live "$ctrl" 5
passage_json status1 nvme status "$pf"
lab_eq "primary now holds no flexible resources; all 8 VQ / 4 VI free" '[0,0,8,4]' \
    "$(q status1 '[.queues.allocatedToPrimary, .interrupts.allocatedToPrimary, .queues.free, .interrupts.free]')"
passage_json prepare-again nvme prepare "$pf"
lab_eq "prepare again exits 0" 0 $?
lab_eq "prepare again changes nothing" '[false,[]]' "$(q prepare-again '[.changed, .actions]')"

# ---- VFs with plain sysfs, autoprobe off ----
echo 0 >"$LAB_PCI/$pf/sriov_drivers_autoprobe"
lab_check "4 VFs created (sriov_numvfs=4)" sh -c "echo 4 >$LAB_PCI/$pf/sriov_numvfs"
lab_check "VFs have no driver" sh -c "! test -e $LAB_PCI/$vf0/driver && ! test -e $LAB_PCI/$vf1/driver"

# ---- provision: dry run, real, again ----
passage_json prov-dry nvme provision "$pf" --vf 0 --queues 2 --interrupts 1 --dry-run
lab_eq "provision --dry-run exits 0" 0 $?
show prov-dry
lab_eq "provision --dry-run lists assign VQ, assign VI, online for controller 1" \
    '["ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: secondary assign VQ=2 to controller 1 (opcode 0x1c cdw10=0x00010008 cdw11=0x00000002)","ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: secondary assign VI=1 to controller 1 (opcode 0x1c cdw10=0x00010108 cdw11=0x00000001)","ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: secondary online of controller 1 (opcode 0x1c cdw10=0x00010009 cdw11=0x00000000)"]' \
    "$(q prov-dry .actions)"
lab_eq "provision --dry-run changed nothing" '["offline",0,0]' "$(q prov-dry '.secondaryController | [.state, .queues, .interrupts]')"

t0=$(date +%s.%N)
passage_json prov0 nvme provision "$pf" --vf 0 --queues 2 --interrupts 1; rc0=$?
passage_json prov1 nvme provision "$pf" --vf 1 --queues 2 --interrupts 1; rc1=$?
provision_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
lab_eq "provision VF 0 and VF 1 exit 0" "0 0" "$rc0 $rc1"
show prov0
show prov1 20

passage_json status2 nvme status "$pf"
lab_eq "nvme status exits 0" 0 $?
"$bin" nvme status "$pf" 2>&1 | sed 's/^/#   /'
lab_eq "VFs 0,1 online with VQ 2 / VI 1 at 01:00.1/.2; VFs 2,3 offline" \
    '[[0,"0000:01:00.1","online",2,1],[1,"0000:01:00.2","online",2,1],[2,"0000:01:00.3","offline",0,0],[3,"0000:01:00.4","offline",0,0]]' \
    "$(q status2 '[.secondaryControllers[] | [.vfIndex, .vfAddress, .state, .queues, .interrupts]]')"
lab_eq "primary's accounting: VQ 4 assigned, 4 free; VI 2 assigned, 2 free" '[4,4,2,2]' \
    "$(q status2 '[.queues.assignedToSecondaries, .queues.free, .interrupts.assignedToSecondaries, .interrupts.free]')"

passage_json prov0-again nvme provision "$pf" --vf 0 --queues 2 --interrupts 1
lab_eq "provision VF 0 again exits 0" 0 $?
lab_eq "provision VF 0 again changes nothing" '[false,[],"online"]' "$(q prov0-again '[.changed, .actions, .secondaryController.state]')"

passage_json prov-too-many nvme provision "$pf" --vf 2 --queues 8 --interrupts 1
rc=$?
lab_eq "provision VF 2 with 8 VQ (at most 2 per secondary) is refused with exit 1" 1 "$rc"
lab_eq "  … as no-resources, naming the limit" '["no-resources",true]' \
    "$(jq -c '[.error.code, (.error.message | test("at most 2 per secondary controller"))]' "$LAB_OUT/prov-too-many.err" 2>&1)"
sed 's/^/#   /' "$LAB_OUT/prov-too-many.err"
passage_json status3 nvme status "$pf"
lab_eq "  … and VF 2 is untouched" '["offline",0,0]' "$(q status3 '.secondaryControllers[2] | [.state, .queues, .interrupts]')"

# ---- the proof: L1's nvme driver binds VF 0 and reads the marker through its controller ----
echo nvme >"$LAB_PCI/$vf0/driver_override"
echo "$vf0" >/sys/bus/pci/drivers_probe
lab_check "nvme binds VF 0 ($vf0)" lab_wait_for 10 lab_driver_is "$vf0" nvme
# first_name GLOB…: the name of the first existing path among the (already expanded) arguments.
first_name() { local f; for f in "$@"; do [[ -e $f ]] && { echo "${f##*/}"; return 0; }; done; return 1; }
vf_ctrl() { first_name "$LAB_PCI/$vf0"/nvme/nvme*; }
lab_wait_for 20 vf_ctrl >/dev/null
vctrl=$(vf_ctrl)
lab_check "VF 0 has an nvme controller ($vctrl)" test -n "$vctrl"
if [[ -n $vctrl ]]; then
    lab_check "VF 0's controller $vctrl is live" lab_nvme_live "/dev/$vctrl" 20
    vf_ns() { first_name "$LAB_PCI/$vf0/nvme/$vctrl"/nvme*n[0-9]*; }
    lab_wait_for 20 vf_ns >/dev/null
    blk=$(vf_ns)
    lab_log "VF 0: controller $vctrl, namespace $blk"
    lab_check "VF 0's namespace has a block device (/dev/$blk)" lab_wait_for 10 test -b "/dev/$blk"
    marker=$(dd if="/dev/$blk" bs=512 count=1 iflag=direct status=none 2>&1 | head -n1 | tr -d '\0')
    lab_eq "VF 0 reads the marker sector through its own controller" "$LAB_MARKER" "$marker"
fi
dmesg | grep -a -i nvme | tail -n 12 | sed 's/^/#   dmesg: /'

lab_timing "prepare_seconds=$prepare_s provision_seconds=$provision_s"
lab_done
