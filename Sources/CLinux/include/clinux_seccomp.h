#ifndef PASSAGE_CLINUX_SECCOMP_H
#define PASSAGE_CLINUX_SECCOMP_H

#include <stdint.h>
#include <sys/syscall.h>

/* Sets no_new_privs and installs, on the calling thread only, a seccomp filter that allows the
   `count` system calls in `syscalls` (x86-64 numbers) and kills the process for any other (or,
   with kill == 0, makes it fail with EPERM — for tests). A foreign syscall ABI (i386, x32) always
   kills. Returns 0 or -errno. */
int passage_seccomp_install(const int32_t *syscalls, int count, int kill);

/* Closes every descriptor from 3 up (close_range, or a loop where the kernel lacks it). */
int passage_close_inherited_fds(void);

#endif
