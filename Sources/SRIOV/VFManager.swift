import Dispatch
import Foundation
import HostPCI

#if canImport(Glibc)
import Glibc
#endif

/// Creates and removes a PF's virtual functions through `sriov_numvfs`, with the kernel's rules
/// handled: N → M goes through 0, `sriov_drivers_autoprobe` is set first when VFs must not be
/// grabbed by a host driver, writes that can block run off the caller's thread with a timeout,
/// and the new `virtfnN` links are awaited. Errors name the PF and the fix.
public struct VFManager: Sendable {
    public let root: SysfsRoot
    public let writer: any SysfsWriter
    /// Bound on one `sriov_numvfs` write (some drivers hang in it).
    public var writeTimeout: Double = 30
    /// Bound on waiting for the VFs' `virtfnN` links to appear.
    public var linkTimeout: Double = 10

    public init(root: SysfsRoot, writer: any SysfsWriter) {
        self.root = root
        self.writer = writer
    }

    /// A PF's SR-IOV state, or an error saying the function is not an SR-IOV PF.
    public func physicalFunction(_ pf: PCIAddress) throws(SRIOVError) -> (device: PCIDevice, sriov: SRIOVPhysicalFunction) {
        let device: PCIDevice
        do { device = try PCIInventory(root: root, lookUpNames: false).device(pf) } catch {
            throw SRIOVError(code: error.code == .deviceNotFound ? .notFound : .io, message: error.message)
        }
        guard let s = device.sriov else {
            if let parent = device.physfn {
                throw SRIOVError(code: .notSRIOV, message: "\(pf) is a VF of \(parent); create VFs on the PF \(parent)")
            }
            throw SRIOVError(code: .notSRIOV, message: "\(pf) has no SR-IOV capability (no sriov_totalvfs); `passage devices --sriov` lists the PFs")
        }
        return (device, s)
    }

    /// The address VF `index` gets, from the PF's VF offset and stride (the routing-ID arithmetic of the SR-IOV spec).
    public func predictedAddress(pf: PCIAddress, sriov: SRIOVPhysicalFunction, index: Int) -> PCIAddress? {
        guard let offset = sriov.vfOffset, let stride = sriov.vfStride else { return nil }
        let rid = Int(pf.bus) << 8 | Int(pf.device) << 3 | Int(pf.function)
        let vf = rid + offset + index * stride
        guard vf <= 0xffff else { return nil }
        return try? PCIAddress(domain: pf.domain, bus: UInt8(vf >> 8), device: UInt8((vf >> 3) & 0x1f), function: UInt8(vf & 7))
    }

    /// The writes that take the PF from its current VF count to `count`.
    public func plan(pf: PCIAddress, count: Int, autoprobe: Bool?) throws(SRIOVError) -> [HostAction] {
        let (_, s) = try physicalFunction(pf)
        guard count >= 0 else { throw SRIOVError(code: .invalidArgument, message: "VF count \(count) is negative") }
        guard count <= s.totalVFs else {
            throw SRIOVError(code: .tooManyVFs, message: "\(pf) supports at most \(s.totalVFs) VFs (sriov_totalvfs); asked for \(count)")
        }
        var plan: [HostAction] = []
        let dir = root.devicePath(pf)
        if let autoprobe, s.driversAutoprobe != autoprobe {
            plan.append(.write(path: dir + "/sriov_drivers_autoprobe", value: autoprobe ? "1" : "0"))
        }
        if s.numVFs != count {
            if s.numVFs != 0 && count != 0 { plan.append(.write(path: dir + "/sriov_numvfs", value: "0")) }
            plan.append(.write(path: dir + "/sriov_numvfs", value: "\(count)"))
            if count > 0 { plan.append(.wait("\(count) virtfn links under \(pf)")) }
        }
        return plan
    }

    /// Sets the VF count (0 removes every VF). Returns what was done; nothing when already so.
    /// On failure the previous count and autoprobe setting are put back where possible.
    @discardableResult
    public func setCount(pf: PCIAddress, count: Int, autoprobe: Bool? = nil, dryRun: Bool = false) throws(SRIOVError) -> [HostAction] {
        let (_, before) = try physicalFunction(pf)
        let plan = try plan(pf: pf, count: count, autoprobe: autoprobe)
        if dryRun || plan.isEmpty { return plan }
        do throws(SRIOVError) {
            for step in plan {
                switch step {
                case let .write(path, value):
                    if path.hasSuffix("/sriov_numvfs") {
                        try writeNumVFs(pf: pf, path: path, value: value, total: before.totalVFs)
                    } else {
                        do { try writer.write(value, to: path) } catch { throw SRIOVError(code: .io, message: error.message, errno: error.errno) }
                    }
                case .wait:
                    try waitForLinks(pf: pf, count: count)
                default: break
                }
            }
        } catch {
            // Best effort back to where we were: autoprobe first (the kernel consults it when it
            // creates VFs, so the old VFs come back on the drivers they had), then the VF count (through 0).
            let dir = root.devicePath(pf)
            let now = (try? physicalFunction(pf))?.sriov
            if let was = before.driversAutoprobe, now?.driversAutoprobe != was {
                try? writer.write(was ? "1" : "0", to: dir + "/sriov_drivers_autoprobe")
            }
            if let now, now.numVFs != before.numVFs {
                if now.numVFs != 0 { try? writer.write("0", to: dir + "/sriov_numvfs") }
                if before.numVFs != 0 { try? writer.write("\(before.numVFs)", to: dir + "/sriov_numvfs") }
            }
            throw error
        }
        return plan
    }

    /// Writes `sriov_numvfs` on another thread so that a hung driver cannot hang the caller,
    /// and maps the kernel's errno to the fix.
    func writeNumVFs(pf: PCIAddress, path: String, value: String, total: Int) throws(SRIOVError) {
        final class Outcome: @unchecked Sendable { var error: HostPCIError? }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let writer = self.writer
        Thread.detachNewThread {
            do { try writer.write(value, to: path) } catch let e as HostPCIError { outcome.error = e } catch {
                outcome.error = HostPCIError(code: .io, message: "\(error)")
            }
            done.signal()
        }
        if done.wait(timeout: .now() + writeTimeout) == .timedOut {
            throw SRIOVError(code: .timeout,
                             message: "writing \(value) to sriov_numvfs of \(pf) did not finish in \(Int(writeTimeout)) s; the PF's driver is stuck (see `dmesg`); the write may still complete later")
        }
        guard let e = outcome.error else { return }
        let why: (SRIOVError.Code, String) = switch e.errno {
        case ENOMEM: (.noResources, "the kernel could not place the VFs' BARs (ENOMEM): boot with pci=realloc, or enable SR-IOV and above-4G decoding in the firmware")
        case ERANGE, EINVAL: (.tooManyVFs, "the PF refused \(value) VFs (\(e.errno == ERANGE ? "ERANGE" : "EINVAL")): at most \(total) (sriov_totalvfs), and the driver may allow fewer")
        case EBUSY: (.vfsInUse, "the PF's VFs are in use (EBUSY): release them (`passage vf remove \(pf)` after freeing their consumers) and try again")
        case ENOENT, ENOSYS, EPERM: (.notSRIOV, "the PF's driver does not support SR-IOV configuration (\(String(cString: strerror(e.errno ?? 0)))); bind the PF to its vendor driver")
        default: (.io, e.message)
        }
        throw SRIOVError(code: why.0, message: "setting \(value) VFs on \(pf) failed: " + why.1, errno: e.errno)
    }

    /// Waits until the PF lists `count` `virtfnN` links.
    func waitForLinks(pf: PCIAddress, count: Int) throws(SRIOVError) {
        let deadline = monotonicSeconds() + linkTimeout
        while true {
            if let s = try? physicalFunction(pf).sriov, s.vfs.count >= count, s.vfs.prefix(count).map(\.index) == Array(0..<count) { return }
            if monotonicSeconds() > deadline {
                throw SRIOVError(code: .timeout, message: "\(pf) did not show \(count) virtfn links within \(Int(linkTimeout)) s after setting sriov_numvfs")
            }
            usleep(5_000)
        }
    }
}
