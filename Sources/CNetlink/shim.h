#ifndef PASSAGE_CNETLINK_SHIM_H
#define PASSAGE_CNETLINK_SHIM_H

#include <netlink/netlink.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/sriov.h>
#include <linux/if_link.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>

/* The kernel's VF attribute payloads, as Swift reads and writes them (SRIOV/VFLinkMessage.swift). */
_Static_assert(sizeof(struct ifinfomsg) == 16, "ifinfomsg");
_Static_assert(sizeof(struct ifla_vf_mac) == 36, "ifla_vf_mac: u32 vf, u8 mac[32]");
_Static_assert(sizeof(struct ifla_vf_vlan) == 12, "ifla_vf_vlan: vf, vlan, qos");
_Static_assert(sizeof(struct ifla_vf_vlan_info) == 16, "ifla_vf_vlan_info: vf, vlan, qos, be16 proto");
_Static_assert(sizeof(struct ifla_vf_tx_rate) == 8, "ifla_vf_tx_rate");
_Static_assert(sizeof(struct ifla_vf_rate) == 12, "ifla_vf_rate: vf, min, max");
_Static_assert(sizeof(struct ifla_vf_spoofchk) == 8, "ifla_vf_spoofchk");
_Static_assert(sizeof(struct ifla_vf_trust) == 8, "ifla_vf_trust");
_Static_assert(sizeof(struct ifla_vf_link_state) == 8, "ifla_vf_link_state");
_Static_assert(sizeof(struct nlmsgerr) == 20, "nlmsgerr");

/* Enum arithmetic (`IFLA_MAX` is `__IFLA_MAX - 1`) and a few function-like macros are not imported
   by Swift; these names are. */
enum {
    PASSAGE_IFLA_MAX = IFLA_MAX,
    PASSAGE_IFLA_VF_MAX = IFLA_VF_MAX,
    PASSAGE_IFLA_VF_VLAN_INFO_MAX = IFLA_VF_VLAN_INFO_MAX,
    PASSAGE_IFLA_INFO_MAX = IFLA_INFO_MAX,
    PASSAGE_RTEXT_FILTER_VF = RTEXT_FILTER_VF,
    PASSAGE_RTEXT_FILTER_SKIP_STATS = RTEXT_FILTER_SKIP_STATS,
    PASSAGE_ETH_P_8021Q = ETH_P_8021Q,
    PASSAGE_ETH_P_8021AD = ETH_P_8021AD,
    PASSAGE_NLMSG_ERROR = NLMSG_ERROR,
    PASSAGE_NLMSG_DONE = NLMSG_DONE,
};

/* Asks the kernel for extended acks: a text reason with an error (`NETLINK_EXT_ACK`). Returns 0 or -errno. */
static inline int passage_nl_enable_ext_ack(struct nl_sock *sk) {
    int one = 1;
    if (setsockopt(nl_socket_get_fd(sk), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one) < 0) return -errno;
    return 0;
}

/* The errno of an NLMSG_ERROR message: 0 for an ack, a negative errno for an error; 1 if `nlh` is
   too short to be one. */
static inline int passage_nlmsgerr_error(const struct nlmsghdr *nlh) {
    if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return 1;
    const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(nlh);
    return e->error;
}

/* The kernel's text reason attached to an NLMSG_ERROR (NLMSGERR_ATTR_MSG), or NULL. The pointer is
   into `nlh`. */
static inline const char *passage_nlmsgerr_text(const struct nlmsghdr *nlh) {
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return NULL;
    if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return NULL;
    const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(nlh);
    size_t offset = NLMSG_HDRLEN + sizeof(struct nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) {
        if (e->msg.nlmsg_len < NLMSG_HDRLEN) return NULL;
        offset += e->msg.nlmsg_len - NLMSG_HDRLEN;
    }
    offset = NLMSG_ALIGN(offset);
    if (offset >= nlh->nlmsg_len) return NULL;
    const struct nlattr *a = (const struct nlattr *)((const char *)nlh + offset);
    int remaining = (int)(nlh->nlmsg_len - offset);
    for (; nla_ok(a, remaining); a = nla_next(a, &remaining)) {
        if (nla_type(a) == NLMSGERR_ATTR_MSG && nla_len(a) > 0) {
            const char *s = (const char *)nla_data(a);
            if (s[nla_len(a) - 1] == '\0') return s;
        }
    }
    return NULL;
}

/* Moves the calling thread (only) into the network namespace open at `fd` (`setns(fd, CLONE_NEWNET)`;
   glibc declares setns only under _GNU_SOURCE, which Swift's Glibc module does not see). Netlink
   sockets opened afterwards on that thread talk to that namespace. Returns 0 or -errno. */
static inline int passage_netns_enter(int fd) {
    return syscall(SYS_setns, fd, 0x40000000 /* CLONE_NEWNET */) == 0 ? 0 : -errno;
}

#endif
