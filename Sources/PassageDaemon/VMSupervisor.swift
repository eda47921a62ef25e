import Foundation
import PassageAPI

#if canImport(Glibc)
import Glibc
#endif

/// VMs as passaged runs them: one `passage-vmm` child each, its console in
/// `STATE/vms/NAME/console.log`, its own output in `vmm.log`, its state followed and recorded
/// (the record survives a restart of passaged; a VMM that outlives passaged is found again by
/// its pid). A VM's claim stays held after the VM ends, until it is released.
public final class VMSupervisor: @unchecked Sendable {
    public let vmmPath: String
    /// Where passage-vmm keeps the bzImages it unpacked (in the state directory, writable under
    /// the unit's ProtectSystem=strict): the second start of a kernel skips the unpacking.
    let kernelCache: String
    public let directory: String
    private let store: Store
    private let events: EventHub
    private let claims: ClaimService
    /// Names and claims of the starts in progress: a second start of the same VM, or with the same
    /// claim, waits for nobody — it is refused (409) until the first is done, so two requests can
    /// never spawn two VMMs under one name (the second would overwrite the first's record and
    /// leave it untracked) or give one claim's devices to two VMs.
    private let startingLock = NSLock()
    private var starting = Set<String>()

    public init(vmmPath: String, stateDirectory: String, claims: ClaimService) {
        self.vmmPath = vmmPath
        directory = stateDirectory + "/vms"
        kernelCache = stateDirectory + "/kernel-cache"
        store = claims.store
        events = claims.events
        self.claims = claims
    }

    static func validName(_ n: String) -> Bool { ClaimService.validPoolName(n) }

    public func consolePath(_ name: String) -> String { "\(directory)/\(name)/console.log" }

    /// After a restart of passaged: a VM recorded as running whose passage-vmm still runs (found by
    /// its pid, or — when passaged died between recording the start and learning the pid — by
    /// the VM's console path in a passage-vmm's arguments) is watched again; the others are
    /// recorded as ended. No VMM is left running unknown, so its claim stays protected.
    public func adopt() {
        guard let records = try? store.vms() else { return }
        for var r in records where r.state == "running" {
            let console = consolePath(r.name)
            if let pid = r.pid, Self.isVMM(pid, console: console) {
                watchForeign(name: r.name, pid: pid)
            } else if let pid = Self.findVMM(console: console) {
                r.pid = pid
                try? store.putVM(r)
                events.publish("vm-adopted", message: "VM \(r.name): passage-vmm pid \(pid) found running after a restart of passaged during its start")
                watchForeign(name: r.name, pid: pid)
            } else {
                r.state = "stopped"
                r.message = r.pid == nil ? "passaged stopped while starting it, and no passage-vmm of it is running"
                                         : "ended while passaged was not running (exit status unknown)"
                r.endedAt = ClaimService.now()
                try? store.putVM(r)
            }
        }
    }

    /// Whether `pid` is a passage-vmm whose console is `console` (the VM's own file: a pid reused
    /// by another VM's VMM, or by anything else, does not count).
    static func isVMM(_ pid: Int32, console: String) -> Bool {
        guard let argv = procFile(pid, "cmdline")?.split(separator: 0).map({ String(decoding: $0, as: UTF8.self) }),
              argv.first?.hasSuffix("passage-vmm") == true else { return false }
        return zip(argv, argv.dropFirst()).contains { $0 == "--console" && $1 == "file:" + console }
    }

    /// The passage-vmm running with console `console`, if one is. Runs before passaged serves after
    /// a restart, over every process: each is first told by its `comm` (no access to its memory,
    /// unlike `cmdline`), with plain reads.
    static func findVMM(console: String) -> Int32? {
        guard let dir = opendir("/proc") else { return nil }
        defer { closedir(dir) }
        let comm = Array("passage-vmm\n".utf8)
        while let entry = readdir(dir) {
            let pid = withUnsafeBytes(of: entry.pointee.d_name) { raw -> Int32? in
                let name = raw.prefix(while: { $0 != 0 })
                guard !name.isEmpty, name.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
                return Int32(String(decoding: name, as: UTF8.self))
            }
            guard let pid, procFile(pid, "comm", limit: 32) == comm, isVMM(pid, console: console) else { continue }
            return pid
        }
        return nil
    }

    /// `/proc/PID/NAME` with one open and one read (at most `limit` bytes); nil when it cannot be read.
    static func procFile(_ pid: Int32, _ name: String, limit: Int = 8192) -> [UInt8]? {
        let fd = open("/proc/\(pid)/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: limit)
        let n = read(fd, &buffer, limit)
        guard n >= 0 else { return nil }
        return Array(buffer[..<n])
    }

    private func watchForeign(name: String, pid: Int32) {
        Thread.detachNewThread { [self] in
            let console = self.consolePath(name)
            while kill(pid, 0) == 0 && Self.isVMM(pid, console: console) { usleep(500_000) }
            self.ended(name: name, status: nil, message: "ended (passaged had restarted; exit status unknown)")
        }
    }

    public func start(_ r: VMStartRequest) async throws -> VMInfo {
        guard Self.validName(r.name) else { throw APIError.badRequest("VM name \(r.name): 1 to 63 of a-z, 0-9, '-', '_', '.'") }
        guard FileManager.default.isReadableFile(atPath: r.kernel) else {
            throw APIError(400, "kernel-not-found", "no readable kernel image at \(r.kernel) (passaged opens it as root, on the host)")
        }
        if let i = r.initramfs, !FileManager.default.isReadableFile(atPath: i) {
            throw APIError(400, "initramfs-not-found", "no readable initramfs at \(i)")
        }
        if let v = r.vcpus, !(1...32).contains(v) { throw APIError.badRequest("vcpus \(v): 1 to 32") }
        if r.claim != nil && r.devices != nil {
            throw APIError.badRequest("give either claim (an existing claim's id) or devices (claimed for the VM), not both")
        }
        if let d = r.devices, d.isEmpty { throw APIError.badRequest("devices is empty: list the PCI addresses to pass through, or leave it out") }
        guard FileManager.default.isExecutableFile(atPath: vmmPath) else {
            throw APIError(500, "vmm-missing", "passage-vmm not found at \(vmmPath); install it next to passaged or give passaged --vmm PATH")
        }
        let keys = ["vm " + r.name] + (r.claim.map { ["claim " + $0] } ?? [])
        try reserve(keys, name: r.name)
        defer { release(keys) }
        let existing = try store.vms().first { $0.name == r.name }
        if let e = existing, e.state == "running" {
            throw APIError(409, "vm-running", "VM \(r.name) is running (pid \(e.pid.map(String.init) ?? "?")); stop it first (passage vm stop \(r.name))")
        }
        // The devices: an active claim no running VM uses, or a claim made here for this VM
        // (released again if the VM cannot start, so a failed start leaves nothing behind).
        var request = r
        var madeClaim: String?
        var passthrough: [String] = []
        if let id = r.claim {
            guard let c = try store.claim(id: id) else { throw APIError.notFound("no claim \(id); GET /v1/claims lists them") }
            guard c.state == .active else { throw APIError(409, "claim-not-active", "claim \(id) is \(c.state.rawValue); a VM needs an active claim") }
            if let user = try runningVM(using: id) {
                throw APIError(409, "claim-in-use", "claim \(id) is in use by VM \(user.name) (pid \(user.pid.map(String.init) ?? "?")); stop it first or claim other devices")
            }
            passthrough = c.devices.map(\.address)
        } else if let devices = r.devices {
            let (c, _) = try await claims.create(ClaimRequest(owner: "vm:\(r.name)", devices: devices))
            madeClaim = c.id
            request.claim = c.id
            passthrough = c.devices.map(\.address)
        }
        do {
            return try spawn(request, passthrough: passthrough)
        } catch {
            if let id = madeClaim { _ = try? await claims.release(id: id) }
            throw error
        }
    }

    private func reserve(_ keys: [String], name: String) throws {
        startingLock.lock()
        defer { startingLock.unlock() }
        if let busy = keys.first(where: starting.contains) {
            let what = busy.hasPrefix("vm ") ? "VM \(name) is being started by another request"
                                             : "claim \(busy.dropFirst(6)) is being given to a VM by another request"
            throw APIError(409, "vm-starting", "\(what); wait for it to finish (passage vm list), then try again")
        }
        starting.formUnion(keys)
    }

    private func release(_ keys: [String]) {
        startingLock.lock()
        starting.subtract(keys)
        startingLock.unlock()
    }

    /// The running VM that holds claim `id`, if any.
    public func runningVM(using id: String) throws -> Store.VMRecord? {
        try store.vms().first { $0.claimID == id && $0.state == "running" }
    }

    private func spawn(_ r: VMStartRequest, passthrough: [String]) throws -> VMInfo {
        let dir = "\(directory)/\(r.name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        let console = consolePath(r.name)
        _ = FileManager.default.createFile(atPath: console, contents: nil)
        _ = FileManager.default.createFile(atPath: dir + "/vmm.log", contents: nil)
        var args = ["--kernel", r.kernel, "--console", "file:" + console, "--kernel-cache", kernelCache]
        if let i = r.initramfs { args += ["--initrd", i] }
        if let c = r.cmdline { args += ["--cmdline", c] }
        if let m = r.memory { args += ["--memory", m] }
        if let v = r.vcpus { args += ["--vcpus", String(v)] }
        for a in passthrough { args += ["--vfio", a] }
        let name = r.name
        // posix_spawn and a thread blocked in waitpid for this one pid: the exit is seen whatever
        // else in the process handles SIGCHLD.
        let logFD = open(dir + "/vmm.log", O_WRONLY | O_APPEND | O_CLOEXEC)
        let nullFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(logFD); close(nullFD) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, nullFD, 0)
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, logFD, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A clean signal mask and default handlers in the child (the daemon blocks or traps some).
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([vmmPath] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // Recorded before the VMM exists: if passaged dies between the spawn and learning the pid,
        // the restart finds the VMM by its console path (adopt) instead of losing track of it.
        let config = String(decoding: try StreamingJSONEncoder(pretty: false).encode(r), as: UTF8.self)
        var record = Store.VMRecord(name: name, config: config, claimID: r.claim, state: "running", pid: nil,
                                    exitStatus: nil, message: nil, startedAt: ClaimService.now(), endedAt: nil)
        try store.putVM(record)
        var child: pid_t = 0
        let rc = posix_spawn(&child, vmmPath, &actions, &attributes, argv, environ)
        guard rc == 0 else {
            record.state = "failed"
            record.message = "starting \(vmmPath) failed: \(String(cString: strerror(rc)))"
            record.endedAt = ClaimService.now()
            try? store.putVM(record)
            throw APIError(500, "vmm-start-failed", record.message!)
        }
        let pid = child
        record.pid = pid
        let recorded = Result { try store.putVM(record) }
        // Watched from here on: the record holds the pid, so an early exit finds it to update.
        Thread.detachNewThread { [weak self] in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            let signaled = (status & 0x7f) != 0 && (status & 0x7f) != 0x7f
            if signaled {
                self?.ended(name: name, status: 128 + (status & 0x7f), message: "passage-vmm was killed by signal \(status & 0x7f)")
            } else {
                self?.ended(name: name, status: (status >> 8) & 0xff, message: nil)
            }
        }
        if case .failure(let e) = recorded {
            // The VMM runs (with the claim's devices): no error, which would release them under
            // it. The record without the pid stays; a restart of passaged finds the VMM.
            events.publish("vm-record-failed", message: "VM \(name): passage-vmm pid \(pid) started but its pid was not recorded: \(e)")
        }
        events.publish("vm-started", message: "VM \(name): passage-vmm pid \(pid), kernel \(r.kernel)"
                           + (passthrough.isEmpty ? "" : ", devices \(passthrough.joined(separator: ", ")) (claim \(r.claim ?? "?"))"))
        return info(record)
    }

    /// The VMM ended (`status` nil when it was not our child).
    private func ended(name: String, status: Int32?, message: String?) {
        guard var r = (try? store.vms())?.first(where: { $0.name == name }), r.state == "running" else { return }
        r.exitStatus = status
        r.endedAt = ClaimService.now()
        let last = Self.lastLine(directory + "/\(name)/vmm.log")
        switch status {
        case 0?: r.state = "stopped"; r.message = message ?? last ?? "the guest powered off or reset"
        case 130?: r.state = "stopped"; r.message = message ?? "stopped"
        case let s? where s > 128 && message != nil: r.state = "stopped"; r.message = message
        case 3?: r.state = "crashed"; r.message = last ?? "the guest crashed"
        case nil: r.state = "stopped"; r.message = message
        default: r.state = "failed"; r.message = last ?? "passage-vmm exited with status \(status!)"
        }
        try? store.putVM(r)
        events.publish(r.state == "stopped" ? "vm-stopped" : "vm-\(r.state)",
                       message: "VM \(name) \(r.state)" + (status.map { " (exit status \($0))" } ?? "") + (r.message.map { ": \($0)" } ?? "")
                           + (r.claimID.map { "; claim \($0) stays until released" } ?? ""))
    }

    static func lastLine(_ path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").last.map(String.init)
    }

    /// SIGTERM to the VMM (it stops the vCPUs and exits 130), SIGKILL after `grace` seconds.
    public func stop(_ name: String, grace: Double = 10) async throws -> VMInfo {
        guard let r = try store.vms().first(where: { $0.name == name }) else { throw APIError.notFound("no VM \(name); GET /v1/vms lists them") }
        guard r.state == "running", let pid = r.pid else { return info(r) }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline {
            if let now = try store.vms().first(where: { $0.name == name }), now.state != "running" { return info(now) }
            try await Task.sleep(for: .milliseconds(50))
        }
        kill(pid, SIGKILL)
        let killDeadline = Date().addingTimeInterval(5)
        while Date() < killDeadline {
            if let now = try store.vms().first(where: { $0.name == name }), now.state != "running" { return info(now) }
            try await Task.sleep(for: .milliseconds(50))
        }
        return info(try store.vms().first { $0.name == name } ?? r)
    }

    public func list() throws -> [VMInfo] { try store.vms().map(info) }

    public func get(_ name: String) throws -> VMInfo {
        guard let r = try store.vms().first(where: { $0.name == name }) else { throw APIError.notFound("no VM \(name); GET /v1/vms lists them") }
        return info(r)
    }

    /// The console's last `limit` bytes.
    public func console(_ name: String, limit: Int = 64 << 10) throws -> [UInt8] {
        _ = try get(name)
        guard let h = FileHandle(forReadingAtPath: consolePath(name)) else { return [] }
        defer { try? h.close() }
        let end = (try? h.seekToEnd()) ?? 0
        try? h.seek(toOffset: end > UInt64(limit) ? end - UInt64(limit) : 0)
        return Array((try? h.readToEnd()) ?? Data())
    }

    func info(_ r: Store.VMRecord) -> VMInfo {
        func time(_ ms: Int64) -> String { rfc3339(Date(timeIntervalSince1970: Double(ms) / 1000)) }
        let config = (try? JSONDecoder().decode(VMStartRequest.self, from: Data(r.config.utf8))) ?? VMStartRequest(name: r.name, kernel: "?")
        return VMInfo(name: r.name, state: r.state, pid: r.pid, exitStatus: r.exitStatus, message: r.message, claim: r.claimID, config: config,
                      startedAt: time(r.startedAt), endedAt: r.endedAt.map(time), console: consolePath(r.name))
    }
}
