/// `POST /v1/claims`: devices by address, or `count` devices matching a selector.
public struct ClaimRequest: Codable, Sendable, Hashable {
    public var owner: String
    public var devices: [String]?
    public var selector: DeviceSelector?
    public var count: Int?
    /// The same key twice returns the same claim instead of a second one.
    public var idempotencyKey: String?

    public init(owner: String, devices: [String]? = nil, selector: DeviceSelector? = nil, count: Int? = nil, idempotencyKey: String? = nil) {
        self.owner = owner
        self.devices = devices
        self.selector = selector
        self.count = count
        self.idempotencyKey = idempotencyKey
    }

    public static let keys: Set<String> = ["owner", "devices", "selector", "count", "idempotencyKey"]
}

/// Which devices a selector claim may take. Every field given must match.
public struct DeviceSelector: Codable, Sendable, Hashable {
    /// A pool defined by policy.
    public var pool: String?
    /// 4 hex digits.
    public var vendorId: String?
    public var deviceId: String?
    /// Class code prefix in hex: `02`, `0108`, `010802`.
    public var classCode: String?
    /// VFs of this PF.
    public var pf: String?
    public var numaNode: Int?
    /// Current driver (`none` for unbound).
    public var driver: String?

    public init(pool: String? = nil, vendorId: String? = nil, deviceId: String? = nil, classCode: String? = nil,
                pf: String? = nil, numaNode: Int? = nil, driver: String? = nil) {
        self.pool = pool
        self.vendorId = vendorId
        self.deviceId = deviceId
        self.classCode = classCode
        self.pf = pf
        self.numaNode = numaNode
        self.driver = driver
    }

    public static let keys: Set<String> = ["pool", "vendorId", "deviceId", "classCode", "pf", "numaNode", "driver"]
}

/// A claim as the API shows it.
public struct ClaimInfo: Codable, Sendable, Hashable {
    public struct Member: Codable, Sendable, Hashable {
        public var address: String
        public var iommuGroup: Int
        /// The driver it had before the claim, restored on release (null: none).
        public var previousDriver: String?
        /// Named or selected by the consumer; false when pulled in because it shares the IOMMU group.
        public var requested: Bool

        public init(address: String, iommuGroup: Int, previousDriver: String?, requested: Bool) {
            self.address = address
            self.iommuGroup = iommuGroup
            self.previousDriver = previousDriver
            self.requested = requested
        }
    }

    public var id: String
    public var owner: String
    /// `binding`, `active`, `releasing`, `released`, `failed`, `lost`.
    public var state: String
    public var idempotencyKey: String?
    /// The devices the consumer asked for (or the selector picked).
    public var devices: [String]
    /// Every function the claim holds: its whole IOMMU groups.
    public var members: [Member]
    public var groups: [Int]
    /// RFC 3339.
    public var createdAt: String
    public var updatedAt: String
    public var error: String?

    public init(id: String, owner: String, state: String, idempotencyKey: String?, devices: [String], members: [Member],
                groups: [Int], createdAt: String, updatedAt: String, error: String?) {
        self.id = id
        self.owner = owner
        self.state = state
        self.idempotencyKey = idempotencyKey
        self.devices = devices
        self.members = members
        self.groups = groups
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.error = error
    }
}

/// `GET /v1/pools`, `GET /v1/pools/NAME`: a named selector and what it matches now.
public struct PoolInfo: Codable, Sendable, Hashable {
    public var name: String
    public var selector: DeviceSelector
    /// `api` (defined over the API) or `policy`.
    public var source: String
    /// Functions the selector matches now (bridges and functions without an IOMMU group never).
    public var members: [String]
    /// Members whose IOMMU group no claim holds.
    public var free: Int
    public var claimed: Int

    public init(name: String, selector: DeviceSelector, source: String, members: [String], free: Int, claimed: Int) {
        self.name = name
        self.selector = selector
        self.source = source
        self.members = members
        self.free = free
        self.claimed = claimed
    }
}

/// `PUT /v1/pools/NAME`.
public struct PoolRequest: Codable, Sendable, Hashable {
    public var selector: DeviceSelector
    public init(selector: DeviceSelector) { self.selector = selector }
    public static let keys: Set<String> = ["selector"]
}

/// `GET /v1/health`.
public struct HealthInfo: Codable, Sendable, Hashable {
    /// `ok` once start-up reconciliation is done, `reconciling` before.
    public var status: String
    public var reconciled: Bool
    public var version: String
    public var devices: Int
    public var activeClaims: Int
    public var uptimeSeconds: Double
    /// The sysfs tree this daemon manages (the CLI sends changes through a daemon only when it is the CLI's too).
    public var sysfsRoot: String?

    public init(status: String, reconciled: Bool, version: String, devices: Int, activeClaims: Int, uptimeSeconds: Double, sysfsRoot: String? = nil) {
        self.sysfsRoot = sysfsRoot
        self.status = status
        self.reconciled = reconciled
        self.version = version
        self.devices = devices
        self.activeClaims = activeClaims
        self.uptimeSeconds = uptimeSeconds
    }
}

/// One line of `GET /v1/events` (newline-delimited JSON).
public struct EventInfo: Codable, Sendable, Hashable {
    public var seq: Int
    /// RFC 3339.
    public var time: String
    /// `device-appeared`, `device-vanished`, `device-changed`, `claim-created`, `claim-released`, `claim-failed`,
    /// `claim-lost`, `operation-progress`, `operation-finished`, `reconciled`.
    public var kind: String
    public var address: String?
    public var claimId: String?
    public var operationId: String?
    public var message: String

    public init(seq: Int, time: String, kind: String, address: String? = nil, claimId: String? = nil,
                operationId: String? = nil, message: String) {
        self.seq = seq
        self.time = time
        self.kind = kind
        self.address = address
        self.claimId = claimId
        self.operationId = operationId
        self.message = message
    }
}

/// A long operation (`POST /v1/pfs/ADDR/vfs`): poll `GET /v1/operations/ID` or follow the event stream.
public struct OperationInfo: Codable, Sendable, Hashable {
    public var id: String
    public var kind: String
    /// `running`, `succeeded`, `failed`.
    public var state: String
    public var target: String
    /// One line per step done, in order.
    public var progress: [String]
    public var error: ErrorInfo?
    public var result: VFOperationInfo?

    public init(id: String, kind: String, state: String, target: String, progress: [String], error: ErrorInfo?, result: VFOperationInfo?) {
        self.id = id
        self.kind = kind
        self.state = state
        self.target = target
        self.progress = progress
        self.error = error
        self.result = result
    }
}

/// `POST /v1/pfs/ADDR/vfs`.
public struct VFCreateRequest: Codable, Sendable, Hashable {
    public var count: Int
    public var driver: String?
    public var autoprobe: Bool?
    public var nvmeQueues: Int?
    public var nvmeInterrupts: Int?
    /// Bind even if the host uses a VF.
    public var force: Bool?

    public init(count: Int, driver: String? = nil, autoprobe: Bool? = nil, nvmeQueues: Int? = nil, nvmeInterrupts: Int? = nil, force: Bool? = nil) {
        self.force = force
        self.count = count
        self.driver = driver
        self.autoprobe = autoprobe
        self.nvmeQueues = nvmeQueues
        self.nvmeInterrupts = nvmeInterrupts
    }

    public static let keys: Set<String> = ["count", "driver", "autoprobe", "nvmeQueues", "nvmeInterrupts", "force"]
}

/// `POST /v1/devices/ADDR/bind`.
public struct BindRequest: Codable, Sendable, Hashable {
    public var driver: String?
    public var group: Bool?
    public var force: Bool?
    public init(driver: String? = nil, group: Bool? = nil, force: Bool? = nil) {
        self.driver = driver
        self.group = group
        self.force = force
    }
    public static let keys: Set<String> = ["driver", "group", "force"]
}

/// `POST /v1/devices/ADDR/restore`.
public struct RestoreRequest: Codable, Sendable, Hashable {
    /// A driver, `none`, or null for the kernel's choice.
    public var driver: String?
    public init(driver: String? = nil) { self.driver = driver }
    public static let keys: Set<String> = ["driver"]
}

/// One PF's step towards the policy (`passage policy check/apply`, `GET /v1/policy`).
public struct PolicyStepInfo: Codable, Sendable, Hashable {
    /// The PF's address, or null when no PF matches the rule.
    public var pf: String?
    /// The rule's name, or `pf rule at line N`.
    public var rule: String
    /// `ok` (nothing to do), `create-vfs`, `remove-vfs`, `bind-vfs`, `restore-vfs`, `set-links`,
    /// `absent` (no PF matches yet), `skipped` (the reason is in `detail`).
    public var action: String
    public var detail: String
    /// The functions the step changes.
    public var devices: [String]
    /// After an apply: `done`, `failed`, or null in a plan.
    public var outcome: String?
    public var error: String?

    public init(pf: String?, rule: String, action: String, detail: String, devices: [String] = [], outcome: String? = nil, error: String? = nil) {
        self.pf = pf
        self.rule = rule
        self.action = action
        self.detail = detail
        self.devices = devices
        self.outcome = outcome
        self.error = error
    }
}

/// `GET /v1/policy`, `POST /v1/policy/reload`, `POST /v1/policy/apply`.
public struct PolicyInfo: Codable, Sendable, Hashable {
    public var file: String
    /// Whether the file exists (a missing file is an empty policy: nothing is wanted, nothing touched).
    public var present: Bool
    public var pfRules: Int
    public var pools: [String]
    /// The plan (GET, dry run) or what was done (reload, apply), one entry per rule and PF.
    public var steps: [PolicyStepInfo]
    /// When the last reload was refused: why (the policy in force is the previous one).
    public var rejected: String?

    public init(file: String, present: Bool, pfRules: Int, pools: [String], steps: [PolicyStepInfo], rejected: String? = nil) {
        self.file = file
        self.present = present
        self.pfRules = pfRules
        self.pools = pools
        self.steps = steps
        self.rejected = rejected
    }
}

/// `POST /v1/policy/apply`.
public struct PolicyApplyRequest: Codable, Sendable, Hashable {
    public var dryRun: Bool?
    public init(dryRun: Bool? = nil) { self.dryRun = dryRun }
    public static let keys: Set<String> = ["dryRun"]
}

/// `POST /v1/vms`: a VM for passage-vmm (docs/vmm.md).
public struct VMStartRequest: Codable, Sendable, Hashable {
    public var name: String
    public var kernel: String
    public var initramfs: String?
    public var cmdline: String?
    /// `512M`, `2G`.
    public var memory: String?
    public var vcpus: Int?
    /// A claim whose devices the VM gets (passthrough).
    public var claim: String?
    /// Devices to claim for the VM first (owner `vm:NAME`), instead of `claim`.
    public var devices: [String]?

    public init(name: String, kernel: String, initramfs: String? = nil, cmdline: String? = nil, memory: String? = nil, vcpus: Int? = nil,
                claim: String? = nil, devices: [String]? = nil) {
        self.name = name
        self.kernel = kernel
        self.initramfs = initramfs
        self.cmdline = cmdline
        self.memory = memory
        self.vcpus = vcpus
        self.claim = claim
        self.devices = devices
    }

    public static let keys: Set<String> = ["name", "kernel", "initramfs", "cmdline", "memory", "vcpus", "claim", "devices"]
}

/// A VM started by passaged.
public struct VMInfo: Codable, Sendable, Hashable {
    public var name: String
    /// `running`, `stopped`, `crashed`, `failed`.
    public var state: String
    public var pid: Int32?
    /// passage-vmm's exit status: 0 powered off or reset, 3 crashed, 130 stopped, 1 could not start.
    public var exitStatus: Int32?
    public var message: String?
    public var claim: String?
    public var config: VMStartRequest
    public var startedAt: String
    public var endedAt: String?
    /// Where the guest's serial console is written.
    public var console: String

    public init(name: String, state: String, pid: Int32?, exitStatus: Int32?, message: String?, claim: String?, config: VMStartRequest,
                startedAt: String, endedAt: String?, console: String) {
        self.name = name
        self.state = state
        self.pid = pid
        self.exitStatus = exitStatus
        self.message = message
        self.claim = claim
        self.config = config
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.console = console
    }
}
