// The Communicator protocol: what the training step needs from a process group.
// Two implementations: LocalCommunicator (threads as ranks, in this target, for fast
// deterministic tests) and MPICommunicator (CommMPI, for real runs under mpirun).
// Nothing above this target knows which one it has.

/// Element types the collectives move.
public enum CommType: Sendable { case float32, float64, int64 }

/// A scalar a collective can move and reduce.
public protocol CommScalar: Sendable, Comparable, AdditiveArithmetic {
    static var commType: CommType { get }
}
extension Float: CommScalar { public static var commType: CommType { .float32 } }
extension Double: CommScalar { public static var commType: CommType { .float64 } }
extension Int64: CommScalar { public static var commType: CommType { .int64 } }

/// A reduction applied element-wise by `allreduce`.
public enum ReduceOp: Sendable { case sum, max, min }

/// A failure of a collective, with the call and the reason.
public struct CommError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A group of ranks that run collectives together.
///
/// Every rank of the group must call the same collectives in the same order with matching
/// sizes (that is a programming error otherwise). Results are deterministic: the same inputs
/// give bitwise-identical outputs on every run.
public protocol Communicator: AnyObject, Sendable {
    /// This process's rank in the group, 0..<size.
    var rank: Int { get }
    /// The deadline its blocking calls run under (nil: none, as for ranks that are threads).
    var watchdog: CollectiveWatchdog? { get }
    /// Number of ranks in the group.
    var size: Int { get }
    /// Waits until every rank has arrived.
    func barrier() throws
    /// Reduces `buffer` element-wise over all ranks, in place; every rank gets the result.
    func allreduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws
    /// Copies `buffer` of rank `root` into `buffer` of every rank.
    func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws
    /// recv[r * send.count ..< (r+1) * send.count] = send of rank r. recv.count == send.count * size.
    func allgather<T: CommScalar>(_ send: UnsafeBufferPointer<T>, into recv: UnsafeMutableBufferPointer<T>) throws
    /// Personalised exchange: rank r sends send[offset_d ..< offset_d + sendCounts[d]] to each rank d
    /// (offsets are prefix sums of sendCounts), and receives recvCounts[s] elements from each rank s,
    /// stored in rank order. Counts must agree pairwise.
    func alltoallv<T: CommScalar>(
        send: UnsafeBufferPointer<T>, sendCounts: [Int],
        recv: UnsafeMutableBufferPointer<T>, recvCounts: [Int]) throws
    /// Sums `buffer` over all ranks; afterwards rank r's chunk (`counts[r]` elements at the prefix
    /// sum of counts[..<r]) holds the sum (the rest of the buffer is undefined). In place.
    func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws
    /// Rank r's chunk of `buffer` (laid out as in `reduceScatter`) copied into every rank's buffer. In place.
    func allgatherv(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws
    /// Splits into sub-groups of the ranks with equal `color` (>= 0), ranked by (key, rank).
    func split(color: Int, key: Int) throws -> any Communicator
    /// Point-to-point: sends every `sends` buffer to its rank and fills every `receives` buffer
    /// from its rank, returning when all are done. Not collective: only ranks that exchange
    /// messages take part. Messages from one rank to another match in the order they are listed
    /// on both sides and must agree in length; a rank may send to itself.
    func exchange<T: CommScalar>(sends: [PeerBuffer<T>], receives: [PeerMutableBuffer<T>]) throws
    /// Starts summing `buffer` over all ranks in place and may return before the sum is done
    /// (MPI_Iallreduce across nodes); `buffer` is not to be read or written until the returned
    /// request's `wait` returns. Collective: every rank starts it in the same order relative to the
    /// group's other collectives. Gives the bits `allreduce` would where the implementation says so.
    func startAllreduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any PendingCollective
}

/// A collective started by `startAllreduce`.
public protocol PendingCollective: AnyObject {
    /// Lets the operation progress; true once it is complete (then `wait` returns at once).
    func test() throws -> Bool
    /// Returns when the operation is complete (under the communicator's deadline).
    func wait() throws
}

/// A collective that was complete when it was started.
public final class CompletedCollective: PendingCollective {
    public init() {}
    public func test() throws -> Bool { true }
    public func wait() throws {}
}

extension Communicator {
    /// Default: the blocking sum, done before returning (ranks that are threads, and tests).
    public func startAllreduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any PendingCollective {
        try allreduce(buffer, op: .sum)
        return CompletedCollective()
    }
}

/// A message to send to `peer`.
public struct PeerBuffer<T: CommScalar> {
    public var peer: Int
    public var buffer: UnsafeBufferPointer<T>
    public init(peer: Int, buffer: UnsafeBufferPointer<T>) { self.peer = peer; self.buffer = buffer }
}

/// A message to receive from `peer`.
public struct PeerMutableBuffer<T: CommScalar> {
    public var peer: Int
    public var buffer: UnsafeMutableBufferPointer<T>
    public init(peer: Int, buffer: UnsafeMutableBufferPointer<T>) { self.peer = peer; self.buffer = buffer }
}

extension Communicator {
    /// Allreduce over an array.
    public func allreduce<T: CommScalar>(_ values: inout [T], op: ReduceOp = .sum) throws {
        try values.withUnsafeMutableBufferPointer { try allreduce($0, op: op) }
    }

    /// Broadcast of an array (same count on every rank).
    public func broadcast<T: CommScalar>(_ values: inout [T], root: Int) throws {
        try values.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
    }

    /// Allgather of an array; returns size * values.count elements in rank order.
    public func allgather<T: CommScalar>(_ values: [T]) throws -> [T] {
        var out = [T](repeating: .zero, count: values.count * size)
        try values.withUnsafeBufferPointer { s in
            try out.withUnsafeMutableBufferPointer { try allgather(s, into: $0) }
        }
        return out
    }

    /// Alltoallv over arrays; returns the received elements in source-rank order.
    public func alltoallv<T: CommScalar>(_ send: [T], sendCounts: [Int], recvCounts: [Int]) throws -> [T] {
        var out = [T](repeating: .zero, count: recvCounts.reduce(0, +))
        try send.withUnsafeBufferPointer { s in
            try out.withUnsafeMutableBufferPointer {
                try alltoallv(send: s, sendCounts: sendCounts, recv: $0, recvCounts: recvCounts)
            }
        }
        return out
    }

    /// Checks that every peer of an exchange is a rank of this group.
    public func validateExchange(peers: [Int]) throws {
        if let bad = peers.first(where: { $0 < 0 || $0 >= size }) {
            throw CommError("exchange: peer \(bad) outside 0..<\(size)")
        }
    }

    /// Checks the shared preconditions of alltoallv's arguments.
    public func validateAlltoallv(sendCount: Int, sendCounts: [Int], recvCount: Int, recvCounts: [Int]) throws {
        guard sendCounts.count == size, recvCounts.count == size else {
            throw CommError(
                "alltoallv: sendCounts/recvCounts need \(size) entries, got \(sendCounts.count)/\(recvCounts.count)")
        }
        guard sendCounts.allSatisfy({ $0 >= 0 }), recvCounts.allSatisfy({ $0 >= 0 }) else {
            throw CommError("alltoallv: negative count")
        }
        guard sendCounts.reduce(0, +) <= sendCount, recvCounts.reduce(0, +) <= recvCount else {
            throw CommError("alltoallv: counts exceed the buffers (send \(sendCount), recv \(recvCount))")
        }
    }
}

extension Communicator {
    /// Runs `body` with this communicator's deadlines made longer (see CollectiveWatchdog.patient);
    /// without a watchdog, just runs it.
    public func patiently<R>(_ body: () throws -> R) rethrows -> R {
        guard let w = watchdog else { return try body() }
        return try w.patient(body)
    }
}
