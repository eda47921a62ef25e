#ifndef PASSAGE_CNETLINK_SHIM_H
#define PASSAGE_CNETLINK_SHIM_H

#include <netlink/netlink.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/sriov.h>
#include <linux/if_link.h>

#endif
