#include "clinux_seccomp.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(sizeof(struct sock_filter) == 8, "sock_filter");
_Static_assert(offsetof(struct seccomp_data, nr) == 0, "seccomp_data.nr");
_Static_assert(offsetof(struct seccomp_data, arch) == 4, "seccomp_data.arch");

int passage_seccomp_install(const int32_t *syscalls, int count, int kill) {
    if (count < 0 || count > 1000) return -EINVAL;
    /* arch check (2), load nr (1), one compare-and-allow per syscall (2 each), default (1), kill for a foreign arch (1). */
    int n = 4 + 2 * count + 1;
    struct sock_filter *f = calloc((size_t)n, sizeof *f);
    if (!f) return -ENOMEM;
    int i = 0;
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (int k = 0; k < count; k++) {
        f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)syscalls[k], 0, 1);
        f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, kill ? SECCOMP_RET_KILL_PROCESS : (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)));
    struct sock_fprog prog = { .len = (unsigned short)i, .filter = f };
    int r = 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) r = -errno;
    /* This thread only (no SECCOMP_FILTER_FLAG_TSYNC): each kind of thread gets its own list. */
    else if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) r = -errno;
    free(f);
    return r;
}

int passage_close_inherited_fds(void) {
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return 0;
    for (int fd = 3; fd < 4096; fd++) close(fd);
    return 0;
}
