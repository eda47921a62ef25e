/// The result of `passage bind` / `passage restore` (and their API twins).
public struct BindResultInfo: Codable, Sendable, Hashable {
    public struct Change: Codable, Sendable, Hashable {
        public var address: String
        public var previousDriver: String?
        public var previousOverride: String?
        /// The driver it is on now (in a dry run: would be on).
        public var driver: String?
        /// False when it was already so and nothing was written.
        public var changed: Bool
        /// The sysfs writes, as `write "VALUE" > PATH`.
        public var actions: [String]

        public init(address: String, previousDriver: String?, previousOverride: String?, driver: String?, changed: Bool, actions: [String]) {
            self.address = address
            self.previousDriver = previousDriver
            self.previousOverride = previousOverride
            self.driver = driver
            self.changed = changed
            self.actions = actions
        }
    }

    public var dryRun: Bool
    public var devices: [Change]

    public init(dryRun: Bool, devices: [Change]) {
        self.dryRun = dryRun
        self.devices = devices
    }
}

/// The result of `passage vf create` / `passage vf remove`.
public struct VFOperationInfo: Codable, Sendable, Hashable {
    public struct VF: Codable, Sendable, Hashable {
        public var index: Int
        public var address: String
        public var driver: String?
        public var iommuGroup: Int?
        public var actions: [String]

        public init(index: Int, address: String, driver: String?, iommuGroup: Int?, actions: [String]) {
            self.index = index
            self.address = address
            self.driver = driver
            self.iommuGroup = iommuGroup
            self.actions = actions
        }
    }

    public var pf: String
    public var dryRun: Bool
    public var numVFs: Int
    public var vfs: [VF]
    /// Every change in order (sysfs writes, ioctls), as `--dry-run` prints them.
    public var actions: [String]

    public init(pf: String, dryRun: Bool, numVFs: Int, vfs: [VF], actions: [String]) {
        self.pf = pf
        self.dryRun = dryRun
        self.numVFs = numVFs
        self.vfs = vfs
        self.actions = actions
    }
}
