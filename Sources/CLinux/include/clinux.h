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

/* KVM -------------------------------------------------------------------------------------- */

#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <malloc.h>
#include <stddef.h>

/* ioctl request numbers. System fd (/dev/kvm): */
extern const unsigned long passage_KVM_GET_API_VERSION;
extern const unsigned long passage_KVM_CREATE_VM;
extern const unsigned long passage_KVM_CHECK_EXTENSION;
extern const unsigned long passage_KVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long passage_KVM_GET_SUPPORTED_CPUID;
extern const unsigned long passage_KVM_GET_MSR_INDEX_LIST;
/* VM fd: */
extern const unsigned long passage_KVM_CREATE_VCPU;
extern const unsigned long passage_KVM_SET_USER_MEMORY_REGION;
extern const unsigned long passage_KVM_SET_TSS_ADDR;
extern const unsigned long passage_KVM_SET_IDENTITY_MAP_ADDR;
extern const unsigned long passage_KVM_CREATE_IRQCHIP;
extern const unsigned long passage_KVM_CREATE_PIT2;
extern const unsigned long passage_KVM_IRQ_LINE;
extern const unsigned long passage_KVM_SET_GSI_ROUTING;
extern const unsigned long passage_KVM_IRQFD;
extern const unsigned long passage_KVM_IOEVENTFD;
extern const unsigned long passage_KVM_SIGNAL_MSI;
extern const unsigned long passage_KVM_CREATE_DEVICE;
extern const unsigned long passage_KVM_SET_DEVICE_ATTR;
extern const unsigned long passage_KVM_ENABLE_CAP;
/* vCPU fd: */
extern const unsigned long passage_KVM_RUN;
extern const unsigned long passage_KVM_GET_REGS;
extern const unsigned long passage_KVM_SET_REGS;
extern const unsigned long passage_KVM_GET_SREGS;
extern const unsigned long passage_KVM_SET_SREGS;
extern const unsigned long passage_KVM_GET_FPU;
extern const unsigned long passage_KVM_SET_FPU;
extern const unsigned long passage_KVM_GET_MSRS;
extern const unsigned long passage_KVM_SET_MSRS;
extern const unsigned long passage_KVM_SET_CPUID2;
extern const unsigned long passage_KVM_GET_CPUID2;
extern const unsigned long passage_KVM_GET_LAPIC;
extern const unsigned long passage_KVM_SET_LAPIC;
extern const unsigned long passage_KVM_GET_MP_STATE;
extern const unsigned long passage_KVM_SET_MP_STATE;

/* ioctl(2) returning -errno on failure (else its result): one implementation for KVM and VFIO. */
long passage_ioctl(int fd, unsigned long request, void *arg);
/// Gives the heap's free memory back to the kernel (glibc keeps what large temporary arrays
/// freed, e.g. a kernel's relocation table, as resident heap otherwise).
static inline void passage_malloc_trim(void) { (void)malloc_trim(0); }
/// Drops this process's mappings of its own code pages (clean, file-backed: what runs again
/// faults back in from the page cache). passage-vmm calls it once set-up is over, so that the
/// set-up code (argument parsing, kernel unpacking, VFIO set-up) stops counting as resident.
int passage_drop_code_pages(void);
/// getrandom(2) without flags (blocks only until the kernel's pool is first seeded): the KASLR slide.
static inline long passage_getrandom(void *buffer, unsigned long count) { return getrandom(buffer, count, 0); }
long passage_ioctl_int(int fd, unsigned long request, unsigned long arg);
static inline long passage_kvm_ioctl(int fd, unsigned long request, void *arg) { return passage_ioctl(fd, request, arg); }
static inline long passage_kvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return passage_ioctl_int(fd, request, arg); }

/* KVM_RUN, the hot path: returns 0, or -errno (-EINTR when kicked by a signal). */
int passage_kvm_run(int fd);

/* The members of kvm_run's anonymous union (Swift does not see into it). */
struct passage_kvm_io { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; };
static inline struct passage_kvm_io *passage_kvm_run_io(struct kvm_run *run) {
    return (struct passage_kvm_io *)(void *)&run->io;
}
static inline __u64 *passage_kvm_run_mmio_phys_addr(struct kvm_run *run) { return &run->mmio.phys_addr; }
static inline __u8 *passage_kvm_run_mmio_data(struct kvm_run *run) { return run->mmio.data; }
static inline __u32 *passage_kvm_run_mmio_len(struct kvm_run *run) { return &run->mmio.len; }
static inline __u8 *passage_kvm_run_mmio_is_write(struct kvm_run *run) { return &run->mmio.is_write; }
static inline __u64 passage_kvm_run_fail_entry_reason(const struct kvm_run *run) { return run->fail_entry.hardware_entry_failure_reason; }
static inline __u32 passage_kvm_run_fail_entry_cpu(const struct kvm_run *run) { return run->fail_entry.cpu; }
static inline __u64 passage_kvm_run_hw_exit_reason(const struct kvm_run *run) { return run->hw.hardware_exit_reason; }
static inline __u32 passage_kvm_run_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }
static inline __u32 passage_kvm_run_internal_ndata(const struct kvm_run *run) { return run->internal.ndata; }
static inline __u64 passage_kvm_run_internal_data(const struct kvm_run *run, __u32 i) { return i < 16 ? run->internal.data[i] : 0; }
static inline __u32 passage_kvm_run_system_event_type(const struct kvm_run *run) { return run->system_event.type; }
static inline __u32 passage_kvm_run_system_event_ndata(const struct kvm_run *run) { return run->system_event.ndata; }
static inline __u64 passage_kvm_run_system_event_data(const struct kvm_run *run, __u32 i) { return i < 16 ? run->system_event.data[i] : 0; }
static inline __u32 passage_kvm_run_exception(const struct kvm_run *run) { return run->ex.exception; }

/* Variable-length structs, allocated zeroed with calloc (free with free()); NULL when out of memory.
   nent / nmsrs / nr are set to the capacity. */
struct kvm_cpuid2 *passage_kvm_cpuid2_alloc(unsigned nent);
struct kvm_cpuid_entry2 *passage_kvm_cpuid2_entries(struct kvm_cpuid2 *c);
struct kvm_msrs *passage_kvm_msrs_alloc(unsigned nmsrs);
struct kvm_msr_entry *passage_kvm_msrs_entries(struct kvm_msrs *m);
struct kvm_msr_list *passage_kvm_msr_list_alloc(unsigned nmsrs);
__u32 *passage_kvm_msr_list_indices(struct kvm_msr_list *l);
struct kvm_irq_routing *passage_kvm_irq_routing_alloc(unsigned nr);
struct kvm_irq_routing_entry *passage_kvm_irq_routing_entries(struct kvm_irq_routing *r);

/* kvm_irq_routing_entry's union: set one entry as an irqchip pin or an MSI route. */
void passage_kvm_irq_routing_set_irqchip(struct kvm_irq_routing_entry *e, __u32 gsi, __u32 irqchip, __u32 pin);
void passage_kvm_irq_routing_set_msi(struct kvm_irq_routing_entry *e, __u32 gsi, __u32 address_lo,
                                     __u32 address_hi, __u32 data);

#include "clinux_vfio.h"
#include "clinux_seccomp.h"

#endif
