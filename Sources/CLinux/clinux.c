#include "clinux.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
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

/* KVM -------------------------------------------------------------------------------------- */

#include <stdlib.h>
#include <string.h>

/* The structs Swift reads and writes field by field (x86-64 layouts of linux/kvm.h). */
_Static_assert(sizeof(struct kvm_userspace_memory_region) == 32, "kvm_userspace_memory_region");
_Static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs");
_Static_assert(sizeof(struct kvm_create_device) == 12, "kvm_create_device");
_Static_assert(sizeof(struct kvm_device_attr) == 24, "kvm_device_attr");
_Static_assert(sizeof(struct kvm_segment) == 24, "kvm_segment");
_Static_assert(sizeof(struct kvm_dtable) == 16, "kvm_dtable");
_Static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs");
_Static_assert(sizeof(struct kvm_fpu) == 416, "kvm_fpu");
_Static_assert(sizeof(struct kvm_msr_entry) == 16, "kvm_msr_entry");
_Static_assert(sizeof(struct kvm_msrs) == 8, "kvm_msrs (header)");
_Static_assert(sizeof(struct kvm_msr_list) == 4, "kvm_msr_list (header)");
_Static_assert(sizeof(struct kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2");
_Static_assert(sizeof(struct kvm_cpuid2) == 8, "kvm_cpuid2 (header)");
_Static_assert(sizeof(struct kvm_lapic_state) == 1024, "kvm_lapic_state");
_Static_assert(sizeof(struct kvm_irq_routing_entry) == 48, "kvm_irq_routing_entry");
_Static_assert(sizeof(struct kvm_irq_routing) == 8, "kvm_irq_routing (header)");
_Static_assert(sizeof(struct kvm_irqfd) == 32, "kvm_irqfd");
_Static_assert(sizeof(struct kvm_ioeventfd) == 64, "kvm_ioeventfd");
_Static_assert(sizeof(struct kvm_msi) == 32, "kvm_msi");
_Static_assert(sizeof(struct kvm_irq_level) == 8, "kvm_irq_level");
_Static_assert(sizeof(struct kvm_pit_config) == 64, "kvm_pit_config");
_Static_assert(sizeof(struct kvm_enable_cap) == 104, "kvm_enable_cap");
_Static_assert(sizeof(struct kvm_mp_state) == 4, "kvm_mp_state");
_Static_assert(sizeof(struct passage_kvm_io) == 16, "passage_kvm_io mirrors kvm_run.io");
_Static_assert(offsetof(struct kvm_run, io) == 32, "kvm_run's union starts at 32");
_Static_assert(offsetof(struct kvm_run, io.data_offset) == 40, "kvm_run.io.data_offset");
_Static_assert(offsetof(struct kvm_run, mmio.phys_addr) == 32, "kvm_run.mmio.phys_addr");

const unsigned long passage_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long passage_KVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long passage_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long passage_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long passage_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long passage_KVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
const unsigned long passage_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long passage_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long passage_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long passage_KVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
const unsigned long passage_KVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
const unsigned long passage_KVM_CREATE_PIT2 = KVM_CREATE_PIT2;
const unsigned long passage_KVM_IRQ_LINE = KVM_IRQ_LINE;
const unsigned long passage_KVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
const unsigned long passage_KVM_IRQFD = KVM_IRQFD;
const unsigned long passage_KVM_IOEVENTFD = KVM_IOEVENTFD;
const unsigned long passage_KVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
const unsigned long passage_KVM_CREATE_DEVICE = KVM_CREATE_DEVICE;
const unsigned long passage_KVM_SET_DEVICE_ATTR = KVM_SET_DEVICE_ATTR;
const unsigned long passage_KVM_ENABLE_CAP = KVM_ENABLE_CAP;
const unsigned long passage_KVM_RUN = KVM_RUN;
const unsigned long passage_KVM_GET_REGS = KVM_GET_REGS;
const unsigned long passage_KVM_SET_REGS = KVM_SET_REGS;
const unsigned long passage_KVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long passage_KVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long passage_KVM_GET_FPU = KVM_GET_FPU;
const unsigned long passage_KVM_SET_FPU = KVM_SET_FPU;
const unsigned long passage_KVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long passage_KVM_SET_MSRS = KVM_SET_MSRS;
const unsigned long passage_KVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long passage_KVM_GET_CPUID2 = KVM_GET_CPUID2;
const unsigned long passage_KVM_GET_LAPIC = KVM_GET_LAPIC;
const unsigned long passage_KVM_SET_LAPIC = KVM_SET_LAPIC;
const unsigned long passage_KVM_GET_MP_STATE = KVM_GET_MP_STATE;
const unsigned long passage_KVM_SET_MP_STATE = KVM_SET_MP_STATE;

long passage_ioctl(int fd, unsigned long request, void *arg) {
    long r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

long passage_ioctl_int(int fd, unsigned long request, unsigned long arg) {
    long r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

int passage_kvm_run(int fd) {
    int r = ioctl(fd, KVM_RUN, 0);
    return r < 0 ? -errno : r;
}

struct kvm_cpuid2 *passage_kvm_cpuid2_alloc(unsigned nent) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)nent * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = nent;
    return c;
}
struct kvm_cpuid_entry2 *passage_kvm_cpuid2_entries(struct kvm_cpuid2 *c) { return c->entries; }

struct kvm_msrs *passage_kvm_msrs_alloc(unsigned nmsrs) {
    struct kvm_msrs *m = calloc(1, sizeof(*m) + (size_t)nmsrs * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = nmsrs;
    return m;
}
struct kvm_msr_entry *passage_kvm_msrs_entries(struct kvm_msrs *m) { return m->entries; }

struct kvm_msr_list *passage_kvm_msr_list_alloc(unsigned nmsrs) {
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + (size_t)nmsrs * sizeof(__u32));
    if (l) l->nmsrs = nmsrs;
    return l;
}
__u32 *passage_kvm_msr_list_indices(struct kvm_msr_list *l) { return l->indices; }

struct kvm_irq_routing *passage_kvm_irq_routing_alloc(unsigned nr) {
    struct kvm_irq_routing *r = calloc(1, sizeof(*r) + (size_t)nr * sizeof(struct kvm_irq_routing_entry));
    if (r) r->nr = nr;
    return r;
}
struct kvm_irq_routing_entry *passage_kvm_irq_routing_entries(struct kvm_irq_routing *r) { return r->entries; }

void passage_kvm_irq_routing_set_irqchip(struct kvm_irq_routing_entry *e, __u32 gsi, __u32 irqchip, __u32 pin) {
    memset(e, 0, sizeof(*e));
    e->gsi = gsi;
    e->type = KVM_IRQ_ROUTING_IRQCHIP;
    e->u.irqchip.irqchip = irqchip;
    e->u.irqchip.pin = pin;
}

void passage_kvm_irq_routing_set_msi(struct kvm_irq_routing_entry *e, __u32 gsi, __u32 address_lo,
                                     __u32 address_hi, __u32 data) {
    memset(e, 0, sizeof(*e));
    e->gsi = gsi;
    e->type = KVM_IRQ_ROUTING_MSI;
    e->u.msi.address_lo = address_lo;
    e->u.msi.address_hi = address_hi;
    e->u.msi.data = data;
}

/* The executable's code, from its first byte to the end of .text (both from the linker). */
extern char __executable_start[];
extern char etext[];

int passage_drop_code_pages(void) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)__executable_start + page - 1) & ~(page - 1);
    uintptr_t end = (uintptr_t)etext & ~(page - 1);
    if (end <= start) return 0;
    return madvise((void *)start, end - start, MADV_DONTNEED) == 0 ? 0 : -errno;
}
