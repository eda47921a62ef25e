#include "clinux_seccomp.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <linux/vfio.h>

_Static_assert(sizeof(struct sock_filter) == 8, "sock_filter");
_Static_assert(offsetof(struct seccomp_data, nr) == 0, "seccomp_data.nr");
_Static_assert(offsetof(struct seccomp_data, arch) == 4, "seccomp_data.arch");
_Static_assert(offsetof(struct seccomp_data, args) == 16, "seccomp_data.args");

/* The ioctl requests each set allows (the request is the second argument; its upper 32 bits must be 0). */
static const uint32_t vcpu_ioctls[] = {
    KVM_RUN,                      /* the vCPU loop */
    KVM_SET_GSI_ROUTING,          /* MSI/MSI-X entry writes move a vector's route */
    KVM_IRQFD,                    /* vector masks attach and detach irqfds; INTx rewiring */
    KVM_SET_USER_MEMORY_REGION,   /* the guest moves a BAR or toggles memory decoding */
    VFIO_DEVICE_SET_IRQS,         /* the guest enables or disables MSI, MSI-X, INTx */
};
static const uint32_t terminal_ioctls[] = { TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ };

int passage_seccomp_ioctl_count(int set) {
    return set == PASSAGE_SECCOMP_IOCTLS_VCPU ? (int)(sizeof vcpu_ioctls / sizeof *vcpu_ioctls)
         : set == PASSAGE_SECCOMP_IOCTLS_TERMINAL ? (int)(sizeof terminal_ioctls / sizeof *terminal_ioctls) : 0;
}

uint32_t passage_seccomp_ioctl(int set, int index) {
    if (index < 0 || index >= passage_seccomp_ioctl_count(set)) return 0;
    return set == PASSAGE_SECCOMP_IOCTLS_VCPU ? vcpu_ioctls[index] : terminal_ioctls[index];
}

int passage_seccomp_install(const int32_t *syscalls, int count, int ioctl_set, int kill) {
    if (count < 0 || count > 100) return -EINVAL;
    for (int k = 0; k < count; k++) if (syscalls[k] == SYS_ioctl) return -EINVAL;   /* ioctl goes by its set */
    int nio = passage_seccomp_ioctl_count(ioctl_set);
    uint32_t deny = kill ? SECCOMP_RET_KILL_PROCESS : (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
    /* arch check (3), load nr (1), the ioctl test (1) and block (2 * nio + 4), one compare-and-allow
       per syscall (2 each), default (1). */
    int block = 2 * nio + 4;
    int n = 4 + 1 + block + 2 * count + 1;
    struct sock_filter *f = calloc((size_t)n, sizeof *f);
    if (!f) return -ENOMEM;
    int i = 0;
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    /* ioctl: only the requests of the set (none when the set is empty); anything else is denied. */
    f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, (unsigned char)block);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]) + 4);
    f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, (unsigned char)(2 * nio + 1));
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]));
    for (int k = 0; k < nio; k++) {
        f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, passage_seccomp_ioctl(ioctl_set, k), 0, 1);
        f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
    /* Every other call: the list (the accumulator still holds nr). */
    for (int k = 0; k < count; k++) {
        f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)syscalls[k], 0, 1);
        f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
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
