import ArgumentParser
import PassageDaemon

@main
struct Passaged: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passaged",
        abstract: "The Passage daemon: owns the host's assignable PCI devices and serves the API on a Unix socket.",
        version: "0.1.0"
    )

    @Option(name: .long, help: ArgumentHelp("Unix socket to serve the API on.", valueName: "PATH"))
    var socket: String = "/run/passage/passage.sock"

    @Option(name: .long, help: ArgumentHelp("Directory of the durable state (SQLite).", valueName: "DIR"))
    var stateDir: String = "/var/lib/passage"

    @Option(name: .long, help: ArgumentHelp("Root of the sysfs tree to manage (fixture trees in tests).", valueName: "DIR"))
    var sysfsRoot: String = "/sys"

    func run() async throws {
        _ = try Store(directory: stateDir)
        print("passaged: state at \(stateDir), socket \(socket), sysfs \(sysfsRoot): the API server is not wired yet")
    }
}
