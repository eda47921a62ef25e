import HostPCI
import PassageDaemon
import SRIOV

func nvmeResources(root: SysfsRoot, writer: any SysfsWriter, queues: Int, interrupts: Int) throws -> any VFResourceProvisioner {
    NVMeVFResources(provisioner: NVMeVFProvisioner(root: root, writer: writer), queues: queues, interrupts: interrupts)
}
