import HostPCI
import SRIOV

/// `vf create --nvme-queues Q --nvme-interrupts I`: each VF's NVMe secondary controller gets Q queues
/// and I interrupt vectors and is brought online (see NVMeVFProvisioner; its dry run also describes
/// VFs that do not exist yet).
struct NVMeResources: VFResourceProvisioner {
    let provisioner: NVMeVFProvisioner
    let queues: Int
    let interrupts: Int

    func prepare(pf: PCIAddress, dryRun: Bool) throws -> [HostAction] {
        try provisioner.prepareForVFs(pf: pf, dryRun: dryRun)
    }

    func provision(pf: PCIAddress, vfIndex: Int, dryRun: Bool) throws -> [HostAction] {
        try provisioner.provision(pf: pf, vfIndex: vfIndex, queues: queues, interrupts: interrupts, dryRun: dryRun)
    }
}

func nvmeResources(root: SysfsRoot, writer: any SysfsWriter, queues: Int, interrupts: Int) throws -> any VFResourceProvisioner {
    NVMeResources(provisioner: NVMeVFProvisioner(root: root, writer: writer), queues: queues, interrupts: interrupts)
}
