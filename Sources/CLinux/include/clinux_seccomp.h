#ifndef PASSAGE_CLINUX_SECCOMP_H
#define PASSAGE_CLINUX_SECCOMP_H

#include <stdint.h>
#include <sys/syscall.h>

/* The ioctl requests a thread may make: none, a vCPU's (KVM_RUN, KVM_SET_GSI_ROUTING, KVM_IRQFD,
   KVM_SET_USER_MEMORY_REGION, VFIO_DEVICE_SET_IRQS) or a terminal's (TCGETS, TCSETS, TCSETSW,
   TCSETSF, TIOCGWINSZ — not TIOCSTI). */
enum { PASSAGE_SECCOMP_IOCTLS_NONE = 0, PASSAGE_SECCOMP_IOCTLS_VCPU = 1, PASSAGE_SECCOMP_IOCTLS_TERMINAL = 2 };
int passage_seccomp_ioctl_count(int set);
uint32_t passage_seccomp_ioctl(int set, int index);

/* Sets no_new_privs and installs, on the calling thread only, a seccomp filter that allows the
   `count` system calls in `syscalls` (x86-64 numbers; not ioctl, which `ioctl_set` governs: only
   its requests pass) and kills the process for any other (or, with kill == 0, makes it fail with
   EPERM — for tests). A foreign syscall ABI (i386, x32) always kills. Returns 0 or -errno. */
int passage_seccomp_install(const int32_t *syscalls, int count, int ioctl_set, int kill);

/* Closes every descriptor from 3 up (close_range, or a loop where the kernel lacks it). */
int passage_close_inherited_fds(void);

#endif
