#include "clinux.h"
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

const unsigned long passage_VFIO_GET_API_VERSION = VFIO_GET_API_VERSION;
const unsigned long passage_VFIO_CHECK_EXTENSION = VFIO_CHECK_EXTENSION;
const unsigned long passage_VFIO_SET_IOMMU = VFIO_SET_IOMMU;
const unsigned long passage_VFIO_GROUP_GET_STATUS = VFIO_GROUP_GET_STATUS;
const unsigned long passage_VFIO_GROUP_SET_CONTAINER = VFIO_GROUP_SET_CONTAINER;
const unsigned long passage_VFIO_GROUP_UNSET_CONTAINER = VFIO_GROUP_UNSET_CONTAINER;
const unsigned long passage_VFIO_GROUP_GET_DEVICE_FD = VFIO_GROUP_GET_DEVICE_FD;
const unsigned long passage_VFIO_DEVICE_GET_INFO = VFIO_DEVICE_GET_INFO;
const unsigned long passage_VFIO_DEVICE_GET_REGION_INFO = VFIO_DEVICE_GET_REGION_INFO;
const unsigned long passage_VFIO_DEVICE_GET_IRQ_INFO = VFIO_DEVICE_GET_IRQ_INFO;
const unsigned long passage_VFIO_DEVICE_SET_IRQS = VFIO_DEVICE_SET_IRQS;
const unsigned long passage_VFIO_DEVICE_RESET = VFIO_DEVICE_RESET;
const unsigned long passage_VFIO_IOMMU_MAP_DMA = VFIO_IOMMU_MAP_DMA;
const unsigned long passage_VFIO_IOMMU_UNMAP_DMA = VFIO_IOMMU_UNMAP_DMA;
/* <linux/iommufd.h>: IOMMUFD_TYPE ';', commands from 0x80; <linux/vfio.h>: VFIO_BASE + 18, + 19. */
const unsigned long passage_IOMMU_DESTROY = _IO(';', 0x80);
const unsigned long passage_IOMMU_IOAS_ALLOC = _IO(';', 0x81);
const unsigned long passage_IOMMU_IOAS_MAP = _IO(';', 0x85);
const unsigned long passage_IOMMU_IOAS_UNMAP = _IO(';', 0x86);
const unsigned long passage_VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18);
const unsigned long passage_VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19);

/* The ABI Swift relies on. */
_Static_assert(sizeof(struct vfio_group_status) == 8, "vfio_group_status");
_Static_assert(sizeof(struct vfio_device_info) == 20, "vfio_device_info");
_Static_assert(sizeof(struct vfio_region_info) == 32, "vfio_region_info");
_Static_assert(offsetof(struct vfio_region_info, offset) == 24, "vfio_region_info.offset");
_Static_assert(sizeof(struct vfio_irq_info) == 16, "vfio_irq_info");
_Static_assert(sizeof(struct vfio_irq_set) == 20, "vfio_irq_set");
_Static_assert(sizeof(struct vfio_iommu_type1_dma_map) == 32, "vfio_iommu_type1_dma_map");
_Static_assert(sizeof(struct vfio_iommu_type1_dma_unmap) == 24, "vfio_iommu_type1_dma_unmap");
_Static_assert(sizeof(struct vfio_info_cap_header) == 8, "vfio_info_cap_header");
_Static_assert(sizeof(struct vfio_region_sparse_mmap_area) == 16, "vfio_region_sparse_mmap_area");
_Static_assert(sizeof(struct vfio_region_info_cap_sparse_mmap) == 16, "vfio_region_info_cap_sparse_mmap");
_Static_assert(sizeof(struct vfio_pci_dependent_device) == 8, "vfio_pci_dependent_device");
_Static_assert(sizeof(struct vfio_pci_hot_reset_info) == 12, "vfio_pci_hot_reset_info");
_Static_assert(sizeof(struct vfio_pci_hot_reset) == 12, "vfio_pci_hot_reset");
_Static_assert(sizeof(struct passage_iommu_ioas_alloc) == 12, "iommu_ioas_alloc");
_Static_assert(sizeof(struct passage_iommu_ioas_map) == 40, "iommu_ioas_map");
_Static_assert(offsetof(struct passage_iommu_ioas_map, user_va) == 16, "iommu_ioas_map.user_va");
_Static_assert(sizeof(struct passage_iommu_ioas_unmap) == 24, "iommu_ioas_unmap");
_Static_assert(sizeof(struct passage_vfio_device_bind_iommufd) == 16, "vfio_device_bind_iommufd");
_Static_assert(sizeof(struct passage_vfio_device_attach_iommufd_pt) == 12, "vfio_device_attach_iommufd_pt");


static int set_irq_eventfds(int device, uint32_t action, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds) {
    size_t size = sizeof(struct vfio_irq_set) + (size_t)count * sizeof(int32_t);
    struct vfio_irq_set *set = calloc(1, size);
    if (!set) return -ENOMEM;
    set->argsz = (uint32_t)size;
    set->flags = VFIO_IRQ_SET_DATA_EVENTFD | action;
    set->index = index;
    set->start = start;
    set->count = count;
    if (count) memcpy(set->data, fds, (size_t)count * sizeof(int32_t));
    int r = ioctl(device, VFIO_DEVICE_SET_IRQS, set) < 0 ? -errno : 0;
    free(set);
    return r;
}

int passage_vfio_set_irq_eventfds(int device, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds) {
    return set_irq_eventfds(device, VFIO_IRQ_SET_ACTION_TRIGGER, index, start, count, fds);
}

int passage_vfio_set_irq_unmask_eventfds(int device, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds) {
    return set_irq_eventfds(device, VFIO_IRQ_SET_ACTION_UNMASK, index, start, count, fds);
}

int passage_vfio_disable_irqs(int device, uint32_t index) {
    struct vfio_irq_set set = { .argsz = sizeof(set), .flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                                .index = index, .start = 0, .count = 0 };
    return ioctl(device, VFIO_DEVICE_SET_IRQS, &set) < 0 ? -errno : 0;
}

int passage_vfio_mask_irq(int device, uint32_t index, uint32_t vector, int mask) {
    struct vfio_irq_set set = { .argsz = sizeof(set),
                                .flags = VFIO_IRQ_SET_DATA_NONE | (mask ? VFIO_IRQ_SET_ACTION_MASK : VFIO_IRQ_SET_ACTION_UNMASK),
                                .index = index, .start = vector, .count = 1 };
    return ioctl(device, VFIO_DEVICE_SET_IRQS, &set) < 0 ? -errno : 0;
}

int passage_vfio_hot_reset_info(int device, uint32_t *groups, uint32_t *addresses, uint32_t max, uint32_t *flags) {
    size_t size = sizeof(struct vfio_pci_hot_reset_info) + (size_t)max * sizeof(struct vfio_pci_dependent_device);
    struct vfio_pci_hot_reset_info *info = calloc(1, size);
    if (!info) return -ENOMEM;
    info->argsz = (uint32_t)size;
    int r = ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, info) < 0 ? -errno : 0;
    if (r == 0 || r == -ENOSPC) {
        uint32_t n = info->count < max ? info->count : max;
        for (uint32_t i = 0; r == 0 && i < n; i++) {
            groups[i] = info->devices[i].group_id;
            addresses[i] = (uint32_t)info->devices[i].segment << 16 | (uint32_t)info->devices[i].bus << 8 | info->devices[i].devfn;
        }
        r = (int)info->count;
        *flags = info->flags;
    }
    free(info);
    return r;
}

int passage_vfio_hot_reset(int device, const int32_t *group_fds, uint32_t count) {
    size_t size = sizeof(struct vfio_pci_hot_reset) + (size_t)count * sizeof(int32_t);
    struct vfio_pci_hot_reset *reset = calloc(1, size);
    if (!reset) return -ENOMEM;
    reset->argsz = (uint32_t)size;
    reset->count = count;
    if (count) memcpy(reset->group_fds, group_fds, (size_t)count * sizeof(int32_t));
    int r = ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, reset) < 0 ? -errno : 0;
    free(reset);
    return r;
}
