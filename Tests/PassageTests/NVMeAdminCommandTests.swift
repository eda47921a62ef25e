import CLinux
import Glibc
import HostPCI
import SRIOV
import Testing

/// Command encoding (the exact dwords sent to the controller), status decoding, and the C shim.
@Suite struct NVMeAdminCommandTests {
    @Test func identifyEncodesCNSAndControllerID() {
        let c = NVMeAdminCommand.identify(.controller)
        #expect(c.opcode == 0x06)
        #expect(c.cdw10 == 0x0000_0001)
        #expect(c.cdw11 == 0)
        #expect(c.dataLength == 4096)
        #expect(NVMeAdminCommand.identify(.secondaryControllerList).cdw10 == 0x0000_0015)
        #expect(NVMeAdminCommand.identify(.primaryControllerCapabilities, controllerID: 0x41).cdw10 == 0x0041_0014)
        #expect(NVMeAdminCommand.identify(.secondaryControllerList, controllerID: 3).cdw10 == 0x0003_0015)
    }

    @Test(arguments: [
        // action, resource, controller, count, cdw10, cdw11
        (NVMeAdminCommand.VirtualizationAction.secondaryAssign, NVMeAdminCommand.Resource.queue, UInt16(2), UInt16(2), UInt32(0x0002_0008), UInt32(2)),
        (.secondaryAssign, .interrupt, 2, 1, 0x0002_0108, 1),
        (.primaryFlexibleAllocation, .queue, 0, 0, 0x0000_0001, 0),
        (.primaryFlexibleAllocation, .interrupt, 0, 0, 0x0000_0101, 0),
        (.primaryFlexibleAllocation, .interrupt, 0x41, 3, 0x0041_0101, 3),
        (.secondaryOnline, .queue, 3, 0, 0x0003_0009, 0),
        (.secondaryOffline, .queue, 0xffff, 0, 0xffff_0007, 0),
        // online/offline ignore the resource type and count
        (.secondaryOnline, .interrupt, 1, 5, 0x0001_0009, 0),
    ])
    func virtualizationManagementEncoding(action: NVMeAdminCommand.VirtualizationAction, resource: NVMeAdminCommand.Resource,
                                          controller: UInt16, count: UInt16, cdw10: UInt32, cdw11: UInt32) {
        let c = NVMeAdminCommand.virtualizationManagement(action: action, resource: resource, controllerID: controller, count: count)
        #expect(c.opcode == 0x1C)
        #expect(c.cdw10 == cdw10)
        #expect(c.cdw11 == cdw11)
        #expect(c.dataLength == 0)
    }

    @Test func describesItselfForDryRuns() {
        let c = NVMeAdminCommand.virtualizationManagement(action: .secondaryAssign, resource: .queue, controllerID: 2, count: 2)
        #expect(c.description == "Virtualization Management: secondary assign VQ=2 to controller 2 (opcode 0x1c cdw10=0x00020008 cdw11=0x00000002)")
        #expect(c.hostAction(device: "/dev/nvme0") == .ioctl(device: "/dev/nvme0", request: "NVME_IOCTL_ADMIN_CMD", detail: c.description))
        #expect(NVMeAdminCommand.virtualizationManagement(action: .secondaryOnline, controllerID: 4).name
            == "Virtualization Management: secondary online of controller 4")
        #expect(NVMeAdminCommand.virtualizationManagement(action: .primaryFlexibleAllocation, resource: .interrupt, controllerID: 0).name
            == "Virtualization Management: primary flexible allocation VI=0 on controller 0")
    }

    @Test func decodesVirtualizationManagementStatuses() {
        let s = NVMeStatus(raw: 0x4120)
        #expect(s.codeType == 1)
        #expect(s.code == 0x20)
        #expect(s.doNotRetry)
        #expect(!s.isSuccess)
        #expect(s.typeAndCode == NVMeStatus.invalidSecondaryControllerState)
        #expect(s.name == "Invalid Secondary Controller State")
        #expect(s.description == "0x4120 Invalid Secondary Controller State (SCT 1, SC 0x20, do not retry)")
        #expect(s.fix?.contains("offline") == true)

        #expect(NVMeStatus(raw: 0x011F).name == "Invalid Controller Identifier")
        #expect(NVMeStatus(raw: 0x0121).name == "Invalid Number of Controller Resources")
        #expect(NVMeStatus(raw: 0x4122).name == "Invalid Resource Identifier")
        #expect(NVMeStatus(raw: 0x4122).fix?.contains("passage nvme prepare") == true)
        #expect(NVMeStatus(raw: 0x0002).name == "Invalid Field in Command")
        #expect(NVMeStatus(raw: 0x4001).name == "Invalid Command Opcode")
        #expect(NVMeStatus(raw: 0x0000).isSuccess)
        // CRD/More bits do not change the code
        #expect(NVMeStatus(raw: 0x3802).typeAndCode == 0x0002)
        #expect(NVMeStatus(raw: 0x0185).name == "command specific status 0x85")
        #expect(NVMeStatus(raw: 0x0281).name == "media or data integrity error 0x81")
        #expect(NVMeStatus(raw: 0x0185).fix == nil)
    }

    @Test func cShimExportsTheAdminIoctl() {
        // _IOWR('N', 0x41, struct nvme_admin_cmd): read|write, 72 bytes, type 'N', number 0x41.
        #expect(passage_NVME_IOCTL_ADMIN_CMD == 0xC048_4E41)
        #expect(MemoryLayout<nvme_passthru_cmd>.size == 72)
        var cmd = nvme_passthru_cmd()
        cmd.opcode = 0x06
        #expect(passage_nvme_admin(-1, &cmd) == -EBADF)
    }

    @Test func openingAMissingControllerNamesIt() {
        #expect {
            _ = try NVMeController(path: "/nonexistent/passage-test/nvme9")
        } throws: { e in
            let e = e as! SRIOVError
            return e.code == .io && e.message.contains("/nonexistent/passage-test/nvme9") && e.errno == ENOENT
        }
    }
}
