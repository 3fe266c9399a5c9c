// MPICommunicator: the Communicator over Open MPI. Every MPI call goes through `check`,
// which names the call and turns a non-success code into a thrown CommError (communicators
// use MPI_ERRORS_RETURN). The executable turns an error on one rank into MPI_Abort, so a
// failure never leaves the other ranks waiting.
import CMPI
import Comm

#if canImport(Glibc)
    import Glibc
#endif

/// A rank of an MPI communicator.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    // MPI_Comm is an OpaquePointer (not Sendable); this class is the wrapper that owns it.
    let comm: MPI_Comm
    public let rank: Int
    public let size: Int
    /// The shared-memory window for large sums: not yet asked (nil), none (ranks on several nodes,
    /// or turned off), or made. Touched by the main thread only (MPI_THREAD_FUNNELED).
    var shared: SharedSum?? = nil
    /// Every blocking call runs under this world's collective deadline (shared with the
    /// communicators split from it).
    public let watch: CollectiveWatchdog
    public var watchdog: CollectiveWatchdog? { watch }

    init(comm: MPI_Comm, watchdog: CollectiveWatchdog) throws {
        self.comm = comm
        self.watch = watchdog
        var r: Int32 = 0, s: Int32 = 0
        try check(MPI_Comm_set_errhandler(comm, CMPI_ERRORS_RETURN()), "MPI_Comm_set_errhandler")
        try check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank")
        try check(MPI_Comm_size(comm, &s), "MPI_Comm_size")
        rank = Int(r)
        size = Int(s)
    }

    /// Initialises MPI (MPI_THREAD_FUNNELED: only the main thread calls MPI) and returns
    /// MPI_COMM_WORLD. Works without mpirun too (a singleton world of size 1).
    public static func initWorld() throws -> MPICommunicator {
        var provided: Int32 = 0
        let level = MPIProgress.requested ? CMPI_THREAD_MULTIPLE() : CMPI_THREAD_FUNNELED()
        try check(MPI_Init_thread(nil, nil, level, &provided), "MPI_Init_thread")
        if MPIProgress.requested && provided >= CMPI_THREAD_MULTIPLE() { MPIProgress.shared = MPIProgress() }
        return try MPICommunicator(comm: CMPI_COMM_WORLD(), watchdog: CollectiveWatchdog())
    }

    /// MPI_Finalize; call once at a clean exit.
    public static func finalize() { _ = MPI_Finalize() }

    /// Whether MPI_Init has run (so an error path knows whether it may MPI_Abort).
    public static var isInitialized: Bool {
        var flag: Int32 = 0
        _ = MPI_Initialized(&flag)
        var fin: Int32 = 0
        _ = MPI_Finalized(&fin)
        return flag != 0 && fin == 0
    }

    /// Aborts every rank of MPI_COMM_WORLD with `code`.
    public static func abortWorld(code: Int32) -> Never {
        _ = MPI_Abort(CMPI_COMM_WORLD(), code)
        fatalError("MPI_Abort returned")
    }

    public func barrier() throws { try watch.watched("MPI_Barrier") { try check(MPI_Barrier(comm), "MPI_Barrier") } }

    public func allreduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        guard buffer.count > 0 else { return }
        if T.self == Float.self, op == .sum, buffer.count >= SharedSum.threshold, let shared = try sharedSum() {
            let floats = UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: Float.self)
            try shared.sum(floats, count: buffer.count) {
                try watch.watched("MPI_Barrier (shared-memory allreduce)") {
                    try check(MPI_Barrier(comm), "MPI_Barrier (shared-memory allreduce)")
                }
            }
            return
        }
        let n = try count32(buffer.count, "MPI_Allreduce")
        try watch.watched("MPI_Allreduce") {
            try check(
                MPI_Allreduce(CMPI_IN_PLACE(), buffer.baseAddress, n, datatype(T.self), mpiOp(op), comm),
                "MPI_Allreduce")
        }
    }

    /// Ranks on one node sum at once, through `allreduce` (the shared-memory window or
    /// MPI_Allreduce: its bits, and nothing in flight to overlap on loopback). Ranks on several
    /// nodes: two exchange their buffers (MPIPairSum: a + b, MPI_Allreduce's bits at two ranks);
    /// more start MPI_Iallreduce (Open MPI's algorithms choose the order, as MPI_Allreduce's do).
    /// The pair holds a scratch copy of the buffer until it completes.
    public func startAllreduce(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> any PendingCollective {
        guard buffer.count > 0, size > 1, try sharedSum() == nil else {
            try allreduce(buffer, op: .sum)
            return CompletedCollective()
        }
        if size == 2 && pairSumsEnabled { return try MPIPairSum(buffer, peer: 1 - rank, comm: comm, watch: watch) }
        let request = MPIPendingCollective(watch: watch)
        try check(
            CMPI_Iallreduce_float_sum(
                buffer.baseAddress, try count32(buffer.count, "MPI_Iallreduce"), comm, &request.request),
            "MPI_Iallreduce")
        MPIProgress.shared?.add(request)
        return request
    }

    public func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        guard root >= 0 && root < size else { throw CommError("broadcast: root \(root) outside 0..<\(size)") }
        guard buffer.count > 0 else { return }
        let n = try count32(buffer.count, "MPI_Bcast")
        try watch.watched("MPI_Bcast") {
            try check(MPI_Bcast(buffer.baseAddress, n, datatype(T.self), Int32(root), comm), "MPI_Bcast")
        }
    }

    public func allgather<T: CommScalar>(_ send: UnsafeBufferPointer<T>, into recv: UnsafeMutableBufferPointer<T>)
        throws
    {
        guard recv.count == send.count * size else {
            throw CommError("allgather: recv holds \(recv.count) elements, needs \(send.count) x \(size)")
        }
        guard send.count > 0 else { return }
        let c = try count32(send.count, "MPI_Allgather")
        try watch.watched("MPI_Allgather") {
            try check(
                MPI_Allgather(send.baseAddress, c, datatype(T.self), recv.baseAddress, c, datatype(T.self), comm),
                "MPI_Allgather")
        }
    }

    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        guard counts.count == size, counts.reduce(0, +) == buffer.count else {
            throw CommError("reduceScatter: counts \(counts) do not split \(buffer.count) elements over \(size) ranks")
        }
        guard buffer.count > 0 else { return }
        let rc = try counts.map { try count32($0, "MPI_Reduce_scatter") }
        // In place, MPI leaves this rank's chunk at the start of the buffer: move it to its offset.
        try watch.watched("MPI_Reduce_scatter") {
            try check(
                MPI_Reduce_scatter(CMPI_IN_PLACE(), buffer.baseAddress, rc, CMPI_FLOAT(), CMPI_SUM(), comm),
                "MPI_Reduce_scatter")
        }
        let offset = counts[0..<rank].reduce(0, +)
        if offset > 0 && counts[rank] > 0 {
            (buffer.baseAddress! + offset).update(from: buffer.baseAddress!, count: counts[rank])
        }
    }

    public func allgatherv(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        guard counts.count == size, counts.reduce(0, +) == buffer.count else {
            throw CommError("allgatherv: counts \(counts) do not split \(buffer.count) elements over \(size) ranks")
        }
        guard buffer.count > 0 else { return }
        let rc = try counts.map { try count32($0, "MPI_Allgatherv") }
        let displs = try prefix(rc)
        try watch.watched("MPI_Allgatherv") {
            try check(
                MPI_Allgatherv(
                    CMPI_IN_PLACE(), 0, CMPI_FLOAT(), buffer.baseAddress, rc, displs, CMPI_FLOAT(), comm),
                "MPI_Allgatherv")
        }
    }

    public func alltoallv<T: CommScalar>(
        send: UnsafeBufferPointer<T>, sendCounts: [Int],
        recv: UnsafeMutableBufferPointer<T>, recvCounts: [Int]
    ) throws {
        try validateAlltoallv(
            sendCount: send.count, sendCounts: sendCounts, recvCount: recv.count, recvCounts: recvCounts)
        let sc = try sendCounts.map { try count32($0, "MPI_Alltoallv") }
        let rc = try recvCounts.map { try count32($0, "MPI_Alltoallv") }
        let sd = try prefix(sc), rd = try prefix(rc)
        // MPI wants non-null buffers even for zero counts.
        var dummy = T.zero
        try withUnsafeMutablePointer(to: &dummy) { d in
            let sp = UnsafeRawPointer(send.baseAddress) ?? UnsafeRawPointer(d)
            let rp = UnsafeMutableRawPointer(recv.baseAddress) ?? UnsafeMutableRawPointer(d)
            try watch.watched("MPI_Alltoallv") {
                try check(
                    MPI_Alltoallv(sp, sc, sd, datatype(T.self), rp, rc, rd, datatype(T.self), comm), "MPI_Alltoallv")
            }
        }
    }

    public func exchange<T: CommScalar>(sends: [PeerBuffer<T>], receives: [PeerMutableBuffer<T>]) throws {
        try validateExchange(peers: sends.map(\.peer) + receives.map(\.peer))
        // Every receive is posted before any send, so no order of peers can deadlock; MPI keeps
        // messages of one (source, tag, communicator) in order, which is the pairing contract.
        var dummy = T.zero
        try withUnsafeMutablePointer(to: &dummy) { d in
            var recvRequests = [MPI_Request?](repeating: nil, count: receives.count)
            var sendRequests = [MPI_Request?](repeating: nil, count: sends.count)
            for (i, r) in receives.enumerated() {
                try check(
                    MPI_Irecv(
                        UnsafeMutableRawPointer(r.buffer.baseAddress) ?? UnsafeMutableRawPointer(d),
                        try count32(r.buffer.count, "MPI_Irecv"), datatype(T.self), Int32(r.peer), 7, comm,
                        &recvRequests[i]), "MPI_Irecv")
            }
            for (i, s) in sends.enumerated() {
                try check(
                    MPI_Isend(
                        UnsafeRawPointer(s.buffer.baseAddress) ?? UnsafeRawPointer(d),
                        try count32(s.buffer.count, "MPI_Isend"), datatype(T.self), Int32(s.peer), 7, comm,
                        &sendRequests[i]), "MPI_Isend")
            }
            var counts = [Int32](repeating: 0, count: receives.count)
            try watch.watched("MPI_Waitall (point-to-point exchange)") {
                try check(
                    CMPI_Waitall(Int32(receives.count), &recvRequests, datatype(T.self), &counts),
                    "MPI_Waitall (receives)")
                try check(CMPI_Waitall(Int32(sends.count), &sendRequests, datatype(T.self), nil), "MPI_Waitall (sends)")
            }
            if let i = receives.indices.first(where: { Int(counts[$0]) != receives[$0].buffer.count }) {
                throw CommError(
                    "exchange: rank \(receives[i].peer) sent \(counts[i]) elements to rank \(rank), which "
                        + "expects \(receives[i].buffer.count)"
                )
            }
        }
    }

    public func split(color: Int, key: Int) throws -> any Communicator {
        precondition(color >= 0, "split color must be >= 0")
        var newComm: MPI_Comm? = nil
        try watch.watched("MPI_Comm_split") {
            try check(MPI_Comm_split(comm, Int32(color), Int32(key), &newComm), "MPI_Comm_split")
        }
        guard let c = newComm else { throw CommError("MPI_Comm_split returned no communicator") }
        return try MPICommunicator(comm: c, watchdog: watch)
    }

    /// The window, made on the first large sum (collective: every rank makes the same call).
    func sharedSum() throws -> SharedSum? {
        if let made = shared { return made }
        let made = sharedSumEnabled && size > 1 ? try SharedSum.make(comm: comm, rank: rank, size: size) : nil
        shared = .some(made)
        return made
    }

    func datatype<T: CommScalar>(_ t: T.Type) -> MPI_Datatype {
        switch T.commType {
        case .float32: return CMPI_FLOAT()
        case .float64: return CMPI_DOUBLE()
        case .int64: return CMPI_INT64()
        }
    }

    func prefix(_ counts: [Int32]) throws -> [Int32] {
        var out: [Int32] = []
        var acc: Int64 = 0
        for c in counts {
            guard acc <= Int64(Int32.max) else { throw CommError("MPI_Alltoallv: displacement over 2^31 elements") }
            out.append(Int32(acc)); acc += Int64(c)
        }
        return out
    }
}

/// Int to the Int32 count MPI takes, or a clear error.
func count32(_ n: Int, _ call: String) throws -> Int32 {
    guard n >= 0 && n <= Int(Int32.max) else { throw CommError("\(call): count \(n) does not fit MPI's int") }
    return Int32(n)
}

/// The one checked wrapper for MPI return codes: names the call, gives MPI's own message.
func check(_ rc: Int32, _ call: String) throws {
    guard rc != CMPI_SUCCESS() else { return }
    var buf = [CChar](repeating: 0, count: Int(CMPI_MAX_ERROR_STRING()) + 1)
    var len: Int32 = 0
    _ = MPI_Error_string(rc, &buf, &len)
    let msg = String(decoding: buf.prefix(Int(len)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    throw CommError(
        "\(call) failed (code \(rc)): \(msg); check that all ranks run the same job and that mpirun's network "
            + "settings are right"
    )
}

func mpiOp(_ op: ReduceOp) -> MPI_Op {
    switch op {
    case .sum: return CMPI_SUM()
    case .max: return CMPI_MAX()
    case .min: return CMPI_MIN()
    }
}

/// Whether a two-rank startAllreduce is a pair of messages (MPIPairSum). MPI_Iallreduce moved its
/// bytes slower than the blocking call under polling (small at 1 Gbit/s: 423 ms exposed against
/// 388 blocking; the pair, 120-150); SWITCHYARD_OVERLAP_SUM=iallreduce keeps it for comparison.
let pairSumsEnabled: Bool = {
    guard let v = getenv("SWITCHYARD_OVERLAP_SUM") else { return true }
    return String(cString: v) != "iallreduce"
}()

/// An MPI request of `startAllreduce`, tested by the main thread (MPI_THREAD_FUNNELED) or, with
/// MPIProgress, by the progress thread; `wait` runs under the world's collective deadline.
final class MPIPendingCollective: PendingCollective {
    var request: MPI_Request? = nil
    var done = false
    let watch: CollectiveWatchdog

    init(watch: CollectiveWatchdog) { self.watch = watch }

    /// Set by the progress thread when its MPI_Test failed: the main thread's wait then reports it.
    var testFailed = false

    func test() throws -> Bool {
        // A request whose test failed is not done: it stays in flight, and `wait` reports the error.
        if let progress = MPIProgress.shared { return progress.locked { done } }
        if done { return true }
        var flag: Int32 = 0
        try check(CMPI_Test(&request, &flag), "MPI_Test (MPI_Iallreduce)")
        done = flag != 0
        return done
    }

    func wait() throws {
        if let progress = MPIProgress.shared {
            let finished = progress.locked {
                progress.take(self)
                return done
            }
            if finished { return }
        }
        if done { return }
        try watch.watched("MPI_Wait (MPI_Iallreduce)") { try check(CMPI_Wait(&request), "MPI_Wait (MPI_Iallreduce)") }
        done = true
    }
}
