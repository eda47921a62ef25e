#ifndef PASSAGE_CLINUX_VFIO_H
#define PASSAGE_CLINUX_VFIO_H

/* VFIO (type1v2 container/group/device API, <linux/vfio.h>): ioctl request numbers as constants
   (Swift cannot expand _IO()), and helpers for the variable-length structs. Sizes pinned in vfio.c. */

#include <linux/vfio.h>
#include <stdint.h>

extern const unsigned long passage_VFIO_GET_API_VERSION;
extern const unsigned long passage_VFIO_CHECK_EXTENSION;
extern const unsigned long passage_VFIO_SET_IOMMU;
extern const unsigned long passage_VFIO_GROUP_GET_STATUS;
extern const unsigned long passage_VFIO_GROUP_SET_CONTAINER;
extern const unsigned long passage_VFIO_GROUP_UNSET_CONTAINER;
extern const unsigned long passage_VFIO_GROUP_GET_DEVICE_FD;
extern const unsigned long passage_VFIO_DEVICE_GET_INFO;
extern const unsigned long passage_VFIO_DEVICE_GET_REGION_INFO;
extern const unsigned long passage_VFIO_DEVICE_GET_IRQ_INFO;
extern const unsigned long passage_VFIO_DEVICE_SET_IRQS;
extern const unsigned long passage_VFIO_DEVICE_RESET;
extern const unsigned long passage_VFIO_IOMMU_MAP_DMA;
extern const unsigned long passage_VFIO_IOMMU_UNMAP_DMA;

/* ioctl(2) returning -errno on failure (else its result): passage_ioctl of clinux.h. */
static inline long passage_vfio_ioctl(int fd, unsigned long request, void *arg) { return passage_ioctl(fd, request, arg); }
static inline long passage_vfio_ioctl_int(int fd, unsigned long request, unsigned long arg) { return passage_ioctl_int(fd, request, arg); }

/* VFIO_DEVICE_SET_IRQS with `count` eventfds (-1 detaches one) for `index` from `start`, action
   trigger; count 0 with DATA_NONE disables the index. Returns 0 or -errno. */
int passage_vfio_set_irq_eventfds(int device, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds);
/* The same with action unmask: signalling an eventfd unmasks the vector (INTx's resample). */
int passage_vfio_set_irq_unmask_eventfds(int device, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds);
int passage_vfio_disable_irqs(int device, uint32_t index);
/* VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: the functions a bus/slot reset of `device` would also reset,
   up to `max` of them: their group numbers (for a device opened through its cdev: the device id
   in the caller's iommufd, 0 if owned but not bound there, 0xFFFFFFFF if not owned) and addresses
   (segment << 16 | bus << 8 | devfn); `*flags` gets the reply's flags (PASSAGE_VFIO_HOT_RESET_FLAG_*).
   Returns how many there are (may exceed `max`: call again with more room) or -errno
   (-ENODEV: the device cannot be reset that way). */
int passage_vfio_hot_reset_info(int device, uint32_t *groups, uint32_t *addresses, uint32_t max, uint32_t *flags);
/* The entries are device ids, not group numbers (the device was opened through its cdev). */
#define PASSAGE_VFIO_HOT_RESET_FLAG_DEV_ID 1u
/* Every affected device is owned by the caller's iommufd: a hot reset with no group fds works. */
#define PASSAGE_VFIO_HOT_RESET_FLAG_DEV_ID_OWNED 2u
/* VFIO_DEVICE_PCI_HOT_RESET with the fds of every group the reset affects (none for a device
   opened through its cdev: the kernel checks the iommufd instead). Returns 0 or -errno. */
int passage_vfio_hot_reset(int device, const int32_t *group_fds, uint32_t count);
/* Mask (1) or unmask (0) one vector of `index` (DATA_NONE). Returns 0 or -errno. */
int passage_vfio_mask_irq(int device, uint32_t index, uint32_t vector, int mask);

/* iommufd (/dev/iommu, <linux/iommufd.h>, Linux 6.2+) and the VFIO device cdev
   (/dev/vfio/devices/vfioN, Linux 6.6+). The build machine's uapi headers may predate both, so
   the structs are declared here, with the kernel's layout (pinned in vfio.c). */
struct passage_iommu_ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct passage_iommu_ioas_map {
    uint32_t size, flags, ioas_id, reserved;
    uint64_t user_va, length, iova;
};
struct passage_iommu_ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };
struct passage_iommu_destroy { uint32_t size, id; };
struct passage_vfio_device_bind_iommufd { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
struct passage_vfio_device_attach_iommufd_pt { uint32_t argsz, flags, pt_id; };
#define PASSAGE_IOMMU_IOAS_MAP_FIXED_IOVA 1u
#define PASSAGE_IOMMU_IOAS_MAP_WRITEABLE 2u
#define PASSAGE_IOMMU_IOAS_MAP_READABLE 4u
extern const unsigned long passage_IOMMU_DESTROY;
extern const unsigned long passage_IOMMU_IOAS_ALLOC;
extern const unsigned long passage_IOMMU_IOAS_MAP;
extern const unsigned long passage_IOMMU_IOAS_UNMAP;
extern const unsigned long passage_VFIO_DEVICE_BIND_IOMMUFD;
extern const unsigned long passage_VFIO_DEVICE_ATTACH_IOMMUFD_PT;

#endif
