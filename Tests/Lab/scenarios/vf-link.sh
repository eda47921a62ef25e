#!/usr/bin/env bash
# lab-topology: shared-group
# lab-timeout: 180
#
# Per-VF link settings against the L1 kernel's rtnetlink, through the e1000e at 03:00.0 (a real
# PCI NIC bound to its real driver): `passage vf links` reads RTM_GETLINK with RTEXT_FILTER_VF
# (the kernel sends IFLA_NUM_VF 0 and no IFLA_VFINFO_LIST), `passage vf set` refuses with the
# no-VFs error and exit status 1 before sending anything, and `--dry-run` prints the RTM_SETLINK
# requests it would send. QEMU 7.2 has no SR-IOV NIC (igb's VFs came with QEMU 8.0), so real VF
# options are never set here: the messages themselves are checked by the encoding tests
# (Tests/PassageTests/VFLinkEncodingTests.swift) and the driver's EOPNOTSUPP path by the
# network-namespace tests on the build machine.
set -uo pipefail
. "$LAB_DIR/guest/lib.sh"

bin=$PASSAGE_BIN/passage
[[ -x $bin ]] || lab_fatal "no passage binary at $bin (build it on the host first: swift build)"
command -v jq >/dev/null || lab_fatal "jq is not installed on the host (apt-get install jq)"
"$bin" vf links --help >/dev/null 2>&1 || lab_fatal "$bin has no 'vf links' command (VFSet/VFLinks not registered in the vf command group)"

pf=0000:03:00.0
modprobe e1000e
lab_check "e1000e binds $pf" lab_wait_for 10 lab_driver_is "$pf" e1000e
lab_check "$pf has a network interface" lab_wait_for 10 test -d "/sys/bus/pci/devices/$pf/net"
ifs=(/sys/bus/pci/devices/$pf/net/*)
ifname=${ifs[0]##*/}
[[ -n $ifname && $ifname != '*' ]] || lab_fatal "no interface under /sys/bus/pci/devices/$pf/net"
lab_ok "e1000e interface: $ifname"

# Reading: by PCI address, by interface name, as JSON.
out=$("$bin" vf links "$pf" 2>&1); rc=$?
lab_eq "vf links $pf: exit status" 0 "$rc"
lab_eq "vf links $pf: output" "$ifname (PF $pf): no VFs" "$out"
out=$("$bin" vf links "$ifname" 2>&1); rc=$?
lab_eq "vf links $ifname: same answer by interface name" "0 $ifname (PF $pf): no VFs" "$rc $out"
# numVFs 0 (not null) means the kernel sent IFLA_NUM_VF, which it does only for RTEXT_FILTER_VF.
json=$("$bin" vf links "$pf" --json 2>&1)
lab_eq "vf links --json (IFLA_NUM_VF 0 from the kernel)" "{\"interface\":\"$ifname\",\"pf\":\"$pf\",\"driver\":\"e1000e\",\"numVFs\":0,\"vfs\":[]}" \
    "$(jq -c . <<<"$json" 2>&1)"

# Setting on a PF with no VFs: the clear error, exit status 1, nothing sent.
err=$("$bin" vf set "$pf" --vf 0 --mac 02:00:00:00:00:03 2>&1 >/dev/null); rc=$?
lab_eq "vf set --mac on a PF with no VFs: exit status" 1 "$rc"
lab_eq "vf set --mac on a PF with no VFs: error" \
    "passage: error: interface $ifname (PF $pf) has no VFs; create them with \`passage vf create $pf --count N\`" "$err"
err=$("$bin" vf set "$pf" --vf 0 --trust on --json 2>&1 >/dev/null); rc=$?
lab_eq "vf set --json: exit status and error code" "1 no-vfs" "$rc $(jq -r .error.code <<<"$err" 2>&1)"

# Dry run: the requests it would send, and a note that the real run would fail.
out=$("$bin" vf set "$pf" --vf 0 --mac 02:00:00:00:00:03 --vlan 100 --qos 2 --spoofchk off --link-state enable \
    --max-tx-rate 100 --dry-run 2>"$LAB_OUT/dry.err"); rc=$?
lab_eq "vf set --dry-run: exit status" 0 "$rc"
lab_eq "vf set --dry-run: the netlink requests" "would: netlink $ifname: VF 0: mac 02:00:00:00:00:03
would: netlink $ifname: VF 0: vlan 100 qos 2 802.1Q
would: netlink $ifname: VF 0: min_tx_rate 0 Mbps max_tx_rate 100 Mbps
would: netlink $ifname: VF 0: spoofchk off
would: netlink $ifname: VF 0: link-state enable" "$out"
lab_check "vf set --dry-run: notes the real run would fail" grep -q "without --dry-run this would fail: interface $ifname (PF $pf) has no VFs" "$LAB_OUT/dry.err"
json=$("$bin" vf set "$pf" --vf 0 --mac 02:00:00:00:00:03 --dry-run --json 2>/dev/null)
lab_eq "vf set --dry-run --json" \
    "{\"interface\":\"$ifname\",\"pf\":\"$pf\",\"vf\":0,\"dryRun\":true,\"actions\":[\"netlink $ifname: VF 0: mac 02:00:00:00:00:03\"],\"problem\":\"interface $ifname (PF $pf) has no VFs; create them with \`passage vf create $pf --count N\`\"}" \
    "$(jq -c . <<<"$json" 2>&1)"

# A PCI function without a network interface (the PCIe-to-PCI bridge): a clear error.
err=$("$bin" vf links 0000:01:00.0 2>&1); rc=$?
lab_eq "vf links on a bridge: exit status" 1 "$rc"
lab_check "vf links on a bridge: says it has no network interface ($err)" grep -q "0000:01:00.0 has no network interface" <<<"$err"

# The kernel's own view agrees: iproute2 shows no vf lines for the interface.
lab_eq "ip link show $ifname has no vf lines" 0 "$(ip link show "$ifname" | grep -c '^    vf ')"

lab_done
