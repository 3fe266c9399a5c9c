// The heartbeat's datagram and sockets. A datagram, little-endian: magic u32, nonce u64, from u32,
// to u32, step i64, in-call u8, the call's name (UTF-8, NUL-padded to 48 bytes).
import Clock
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension Heartbeat {
    /// At most this many IPv4 addresses of a rank are advertised (loopback excluded).
    static let maxAddresses = 6
    /// 127.0.0.1 in host order.
    static let loopback: UInt32 = 0x7F00_0001
    static let magic: UInt32 = 0x5359_4842  // "SYHB"
    static let callBytes = 48
    /// Bytes of a datagram.
    static let size = 4 + 8 + 4 + 4 + 8 + 1 + callBytes

    static func pack(nonce: UInt64, from: Int, to: Int, step: Int, call: String?) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(size)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put(magic)
        put(nonce)
        put(UInt32(truncatingIfNeeded: from))
        put(UInt32(truncatingIfNeeded: to))
        put(Int64(step))
        put(UInt8(call == nil ? 0 : 1))
        let name = Array((call ?? "").utf8.prefix(callBytes))
        out += name + [UInt8](repeating: 0, count: callBytes - name.count)
        return out
    }

    /// (sender, what it said) of a datagram for rank `to` of this job; nil for anything else.
    static func unpack(_ bytes: [UInt8], nonce: UInt64, to: Int) -> (Int, Peer)? {
        guard bytes.count >= size else { return nil }
        var at = 0
        func get<T: FixedWidthInteger>(_: T.Type) -> T {
            var v = T.zero
            withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: bytes[at..<at + MemoryLayout<T>.size]) }
            at += MemoryLayout<T>.size
            return T(littleEndian: v)
        }
        guard get(UInt32.self) == magic, get(UInt64.self) == nonce else { return nil }
        let from = Int(get(UInt32.self))
        guard Int(get(UInt32.self)) == to else { return nil }
        let step = Int(get(Int64.self))
        let inCall = get(UInt8.self) != 0
        let name = String(decoding: bytes[at..<at + callBytes].prefix { $0 != 0 }, as: UTF8.self)
        return (from, Peer(heard: monotonicSeconds(), step: step, call: inCall ? name : nil))
    }

    /// A UDP socket bound to every interface on a free port; nil when none can be had.
    static func openSocket() -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var any = socketAddress(0, port: 0)
        let bound = withUnsafePointer(to: &any) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// The port `fd` is bound to (0 when it cannot be read).
    static func boundPort(_ fd: Int32) -> UInt16 {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return ok == 0 ? UInt16(bigEndian: address.sin_port) : 0
    }

    /// This machine's IPv4 addresses (host order) on interfaces that are up, loopback excluded.
    static func localIPv4Addresses() -> [UInt32] {
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var out: [UInt32] = []
        var item = list
        while let i = item {
            defer { item = i.pointee.ifa_next }
            guard let a = i.pointee.ifa_addr, a.pointee.sa_family == sa_family_t(AF_INET),
                i.pointee.ifa_flags & UInt32(IFF_UP) != 0
            else { continue }
            let v4 = a.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                UInt32(bigEndian: $0.pointee.sin_addr.s_addr)
            }
            if v4 >> 24 != 127 && !out.contains(v4) { out.append(v4) }
        }
        return out
    }

    /// An IPv4 socket address of `host` (host order) and `port`.
    static func socketAddress(_ host: UInt32, port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr = in_addr(s_addr: host.bigEndian)
        return a
    }
}
