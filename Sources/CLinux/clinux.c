#include "clinux.h"

#include <errno.h>
#include <sys/ioctl.h>

/* NVMe ------------------------------------------------------------------------------------- */

_Static_assert(sizeof(struct nvme_admin_cmd) == 72, "struct nvme_admin_cmd must be 72 bytes");
_Static_assert(sizeof(struct nvme_passthru_cmd) == 72, "struct nvme_passthru_cmd must be 72 bytes");

const unsigned long passage_NVME_IOCTL_ADMIN_CMD = NVME_IOCTL_ADMIN_CMD;

int passage_nvme_admin(int fd, struct nvme_admin_cmd *cmd) {
    /* No retry on EINTR: the kernel waits for admin commands uninterruptibly, and a command
       that changes the controller must never be sent twice by accident. */
    int r = ioctl(fd, NVME_IOCTL_ADMIN_CMD, cmd);
    if (r < 0) return -errno;
    return r;
}
