import HostPCI
import SRIOV

/// `vf create --nvme-queues Q --nvme-interrupts I`: each VF's NVMe secondary controller gets Q queues
/// and I interrupt vectors and is brought online (see NVMeVFProvisioner).
struct NVMeResources: VFResourceProvisioner {
    let provisioner: NVMeVFProvisioner
    let queues: Int
    let interrupts: Int

    func prepare(pf: PCIAddress, dryRun: Bool) throws -> [HostAction] {
        try provisioner.prepareForVFs(pf: pf, dryRun: dryRun)
    }

    func provision(pf: PCIAddress, vfIndex: Int, dryRun: Bool) throws -> [HostAction] {
        let exists = (try? VFManager(root: provisioner.root, writer: provisioner.writer).physicalFunction(pf).sriov.numVFs)
            .map { $0 > vfIndex } ?? false
        if dryRun && !exists {
            // A dry run ahead of the VF's creation: its secondary controller cannot be looked up yet,
            // so describe the three commands provisioning will send for it.
            let controller = (try? provisioner.controllerPath(pf: pf)) ?? "the controller of \(pf)"
            let who = "the secondary controller of VF \(vfIndex) (VF number \(vfIndex + 1))"
            return [
                .ioctl(device: controller, request: "NVME_IOCTL_ADMIN_CMD", detail: "Virtualization Management: secondary assign \(queues) VQ to \(who)"),
                .ioctl(device: controller, request: "NVME_IOCTL_ADMIN_CMD", detail: "Virtualization Management: secondary assign \(interrupts) VI to \(who)"),
                .ioctl(device: controller, request: "NVME_IOCTL_ADMIN_CMD", detail: "Virtualization Management: secondary online \(who)"),
            ]
        }
        return try provisioner.provision(pf: pf, vfIndex: vfIndex, queues: queues, interrupts: interrupts, dryRun: dryRun)
    }
}

func nvmeResources(root: SysfsRoot, writer: any SysfsWriter, queues: Int, interrupts: Int) throws -> any VFResourceProvisioner {
    NVMeResources(provisioner: NVMeVFProvisioner(root: root, writer: writer), queues: queues, interrupts: interrupts)
}
