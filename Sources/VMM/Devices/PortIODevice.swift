/// A device on the x86 I/O port bus. Calls arrive with the bus lock held, one at a time.
public protocol PortIODevice: AnyObject {
    /// A guest `in` at `offset` from the device's base port: fill `data`.
    func read(offset: UInt16, data: UnsafeMutableRawBufferPointer)
    /// A guest `out` at `offset` from the device's base port.
    func write(offset: UInt16, data: UnsafeRawBufferPointer)
}
