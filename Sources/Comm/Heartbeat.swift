// Heartbeat: outside MPI, every rank tells every other rank twice a second (UDP) which step it is
// at and whether it waits in a collective. When a collective passes its deadline the watchdog asks
// it whom the rank waits for: a rank not heard from lately (stopped, frozen, or behind a cut link),
// or a rank that is alive but in no collective (still computing, or stuck there).
// Peers on this host are sent to on 127.0.0.1 only, peers elsewhere on the IPv4 addresses they
// advertised at start-up. A datagram carries the job's nonce and both ranks, so a stray one is
// ignored. Nothing here can fail the job: without a socket the watchdog names no rank.
import Clock
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public final class Heartbeat: @unchecked Sendable {
    /// What a peer said in its last datagram, and when it arrived (monotonic seconds).
    struct Peer {
        var heard: Double
        var step: Int
        var call: String?
    }

    /// After this long without a datagram a peer counts as silent (at up to 64 ranks).
    static let silentSeconds = 2.0
    /// Every rank sends to every other, so beyond 64 ranks the watchdog sends only every
    /// `everyTicks` ticks (ceil(world / 64)) and silence is judged over as many times longer.
    let everyTicks: Int
    var silentAfter: Double { Self.silentSeconds * Double(everyTicks) }

    let rank: Int
    let hosts: [String]
    private let socketFD: Int32
    private let nonce: UInt64
    /// Where each peer is sent to (empty: no socket there, or this rank itself).
    private let targets: [[sockaddr_in]]
    private let started = monotonicSeconds()
    private let lock = NSLock()
    private var peers: [Int: Peer] = [:]

    private init(rank: Int, hosts: [String], socketFD: Int32, nonce: UInt64, targets: [[sockaddr_in]]) {
        self.rank = rank
        self.hosts = hosts
        self.socketFD = socketFD
        self.nonce = nonce
        self.targets = targets
        everyTicks = (targets.count + 63) / 64
    }

    /// Opens this rank's socket and learns every rank's (collective: two allgathers). nil when
    /// the world has one rank.
    public static func connect(_ comm: any Communicator, host: String) throws -> Heartbeat? {
        guard comm.size > 1 else { return nil }
        let fd = openSocket()
        let port = fd.map { boundPort($0) } ?? 0
        let addresses = Array(localIPv4Addresses().prefix(maxAddresses))
        let mine =
            [Int64(bitPattern: UInt64.random(in: 1...UInt64.max)), Int64(port), Int64(addresses.count)]
            + (0..<maxAddresses).map { $0 < addresses.count ? Int64(addresses[$0]) : 0 }
        let stride = mine.count
        let all = try comm.allgather(mine)
        let map = try NodeMap.byHost(comm, host: host)
        let hosts = map.nodeOf.map { map.names[$0] }
        let targets = (0..<comm.size).map { r -> [sockaddr_in] in
            let port = UInt16(truncatingIfNeeded: all[r * stride + 1])
            guard r != comm.rank, port != 0, fd != nil else { return [] }
            if hosts[r] == hosts[comm.rank] { return [socketAddress(loopback, port: port)] }
            let count = Int(all[r * stride + 2])
            return (0..<min(count, maxAddresses)).map {
                socketAddress(UInt32(truncatingIfNeeded: all[r * stride + 3 + $0]), port: port)
            }
        }
        guard let fd else { return nil }
        let beat = Heartbeat(
            rank: comm.rank, hosts: hosts, socketFD: fd, nonce: UInt64(bitPattern: all[0]), targets: targets)
        Thread.detachNewThread { [beat] in beat.receive() }
        return beat
    }

    /// Tells every peer this rank's step and current collective (nil: computing). Never blocks.
    func send(step: Int, call: String?) {
        for to in targets.indices where !targets[to].isEmpty {
            let bytes = Self.pack(nonce: nonce, from: rank, to: to, step: step, call: call)
            for var address in targets[to] {
                _ = bytes.withUnsafeBytes { raw in
                    withUnsafePointer(to: &address) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            sendto(
                                socketFD, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0,
                                socklen_t(MemoryLayout<sockaddr_in>.size))
                        }
                    }
                }
            }
        }
    }

    /// The peers this rank waits for, waiting at `step`: the ones that fell silent, else the ones
    /// alive outside any collective or at an earlier step, else the ones never heard from (they
    /// may have stopped before start-up ended, or UDP from their node may be blocked). Each with
    /// what was seen of it.
    func blame(step: Int) -> [(rank: Int, seen: String)] {
        let now = monotonicSeconds()
        lock.lock()
        let known = peers
        lock.unlock()
        var silent: [(Int, String)] = [], behind: [(Int, String)] = [], never: [(Int, String)] = []
        for r in targets.indices where r != rank {
            let on = "rank \(r) on \(hosts[r])"
            guard let p = known[r] else {
                never.append(
                    (
                        r,
                        on + ": no heartbeat in \(Int(now - started)) s since start-up (stopped early, or UDP from "
                            + "its node is blocked)"
                    ))
                continue
            }
            let age = now - p.heard
            if age > silentAfter {
                silent.append(
                    (r, on + String(format: ": no heartbeat for %.1f s (stopped, frozen or unreachable)", age)))
            } else if p.call == nil {
                behind.append((r, on + ": alive at step \(p.step) but in no collective (still computing, or stuck)"))
            } else if p.step < step {
                behind.append((r, on + ": alive, waiting in \(p.call ?? "") at step \(p.step)"))
            }
        }
        let named = !silent.isEmpty ? silent : (!behind.isEmpty ? behind : never)
        return named.map { (rank: $0.0, seen: $0.1) }
    }

    /// Reads datagrams until the process ends.
    private func receive() {
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(socketFD, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno != EINTR { return }
            guard n == Self.size, let (from, peer) = Self.unpack(buffer, nonce: nonce, to: rank) else { continue }
            guard from >= 0, from < targets.count, from != rank else { continue }
            lock.lock()
            peers[from] = peer
            lock.unlock()
        }
    }
}
