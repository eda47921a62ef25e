#ifndef PASSAGE_CLINUX_H
#define PASSAGE_CLINUX_H

/* The C side of Passage: ioctl request numbers (function-like macros Swift cannot see) exported
   as constants, and small wrappers that return -errno. Every struct Swift relies on has its size
   pinned with _Static_assert in clinux.c. */

#include <stdint.h>

/* NVMe ------------------------------------------------------------------------------------- */

#include <linux/nvme_ioctl.h>

/* NVME_IOCTL_ADMIN_CMD: an admin command through the controller's character device /dev/nvmeN. */
extern const unsigned long passage_NVME_IOCTL_ADMIN_CMD;

/* Sends one admin command (struct nvme_admin_cmd is a #define of struct nvme_passthru_cmd, which
   is the name Swift sees; 72 bytes).
   Returns -errno when the ioctl fails, otherwise the NVMe status field of the completion
   (0 on success; SCT in bits 10:8, SC in bits 7:0, DNR in bit 14), with cmd->result filled. */
int passage_nvme_admin(int fd, struct nvme_admin_cmd *cmd);

#endif
