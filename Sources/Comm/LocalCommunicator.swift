// LocalCommunicator: ranks are threads of one process sharing a LocalWorld.
// Each collective posts a pointer, meets at a barrier, reads the others' posts in rank
// order (so reductions are deterministic), and meets again before anyone reuses memory.
// A failing rank aborts the world: the others' waits throw instead of hanging.
import Foundation

/// The shared state of one group of thread-ranks.
final class LocalWorld: @unchecked Sendable {
    let size: Int
    let timeout: TimeInterval
    private let cond = NSCondition()
    private var arrived = 0
    private var generation = 0
    private var aborted: String?
    private var posts: [UnsafeRawPointer?]
    private var postCounts: [[Int]]
    private var children: [Int: LocalWorld] = [:]
    private var mailboxes: [Int: [[UInt8]]] = [:]  // src * size + dst -> messages in order
    private var allChildren: [LocalWorld] = []

    init(size: Int, timeout: TimeInterval) {
        self.size = size
        self.timeout = timeout
        posts = Array(repeating: nil, count: size)
        postCounts = Array(repeating: [], count: size)
    }

    func barrier() throws {
        cond.lock()
        defer { cond.unlock() }
        if let a = aborted { throw CommError("aborted: \(a)") }
        let gen = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            cond.broadcast()
            return
        }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while gen == generation && aborted == nil {
            if !cond.wait(until: deadline) {
                aborted = "a rank did not arrive at a collective within \(Int(timeout)) s"
                cond.broadcast()
            }
        }
        if let a = aborted { throw CommError("aborted: \(a)") }
    }

    func abort(_ reason: String) {
        cond.lock()
        if aborted == nil { aborted = reason }
        let kids = allChildren
        cond.broadcast()
        cond.unlock()
        for k in kids { k.abort(reason) }
    }

    func post(_ rank: Int, _ p: UnsafeRawPointer?, counts: [Int] = []) {
        cond.lock(); posts[rank] = p; postCounts[rank] = counts; cond.unlock()
    }

    func posted(_ rank: Int) -> (UnsafeRawPointer?, [Int]) {
        cond.lock(); defer { cond.unlock() }
        return (posts[rank], postCounts[rank])
    }

    /// Queues a copy of a point-to-point message (sends never wait).
    func deliver(from src: Int, to dst: Int, _ bytes: [UInt8]) {
        cond.lock(); mailboxes[src * size + dst, default: []].append(bytes); cond.broadcast(); cond.unlock()
    }

    /// The next message from `src` to `dst`, waiting for it (bounded by the timeout, or an abort).
    func take(from src: Int, to dst: Int) throws -> [UInt8] {
        cond.lock()
        defer { cond.unlock() }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while aborted == nil && (mailboxes[src * size + dst]?.isEmpty ?? true) {
            if !cond.wait(until: deadline) {
                aborted = "rank \(dst) waited more than \(Int(timeout)) s for a message from rank \(src)"
                cond.broadcast()
            }
        }
        if let a = aborted { throw CommError("aborted: \(a)") }
        return mailboxes[src * size + dst]!.removeFirst()
    }

    func publishChild(_ leader: Int, _ w: LocalWorld) {
        cond.lock(); children[leader] = w; allChildren.append(w); cond.unlock()
    }

    func child(_ leader: Int) -> LocalWorld? {
        cond.lock(); defer { cond.unlock() }
        return children[leader]
    }
}

/// A rank of an in-process group; see `LocalCommunicator.run`.
public final class LocalCommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public var size: Int { world.size }
    /// Ranks that are threads share a process: no process-wide deadline is armed for them.
    public var watchdog: CollectiveWatchdog? { nil }
    let world: LocalWorld

    init(world: LocalWorld, rank: Int) {
        self.world = world
        self.rank = rank
    }

    /// A world of one rank on the calling thread (collectives return at once).
    public static func single() -> LocalCommunicator {
        LocalCommunicator(world: LocalWorld(size: 1, timeout: 120), rank: 0)
    }

    /// Runs `body` on `size` threads, one per rank, and returns their results in rank order.
    /// If any rank throws, the others' collectives fail fast and the first real error is rethrown.
    /// `timeout` bounds each wait at a collective, so a mismatched program fails instead of hanging.
    public static func run<R: Sendable>(
        size: Int, timeout: TimeInterval = 120,
        _ body: @escaping @Sendable (LocalCommunicator) throws -> R
    ) throws -> [R] {
        precondition(size >= 1, "LocalCommunicator.run needs size >= 1")
        let world = LocalWorld(size: size, timeout: timeout)
        let results = ResultBox<R>(size: size)
        let done = DispatchGroup()
        for r in 0..<size {
            done.enter()
            let t = Thread {
                defer { done.leave() }
                do {
                    results.set(r, .success(try body(LocalCommunicator(world: world, rank: r))))
                } catch {
                    results.set(r, .failure(error))
                    world.abort("rank \(r) failed: \(error)")
                }
            }
            t.stackSize = 16 << 20
            t.start()
        }
        done.wait()
        return try results.unwrap()
    }

    public func barrier() throws { try world.barrier() }

    public func allreduce<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        if size == 1 { return }
        // Float sums (gradients) take a concrete fold: generic element arithmetic across the
        // module boundary is not specialised and would cost a witness call per element.
        if T.self == Float.self && op == .sum {
            let floats = UnsafeMutableRawBufferPointer(buffer).bindMemory(to: Float.self)
            try reduce(floats) { acc, src, n in for i in 0..<n { acc[i] += src[i] } }
            return
        }
        try reduce(buffer) { acc, src, n in
            switch op {
            case .sum: for i in 0..<n { acc[i] += src[i] }
            case .max: for i in 0..<n where src[i] > acc[i] { acc[i] = src[i] }
            case .min: for i in 0..<n where src[i] < acc[i] { acc[i] = src[i] }
            }
        }
    }

    /// Posts `buffer`, checks that every rank posted as many elements, and folds the ranks'
    /// buffers in rank order (rank 0's, then fold in rank 1's, ...: the same order on every
    /// rank); the result replaces `buffer`.
    func reduce<T>(
        _ buffer: UnsafeMutableBufferPointer<T>, fold: (UnsafeMutablePointer<T>, UnsafePointer<T>, Int) -> Void
    ) throws {
        world.post(rank, UnsafeRawPointer(buffer.baseAddress), counts: [buffer.count])
        try world.barrier()
        let acc = UnsafeMutablePointer<T>.allocate(capacity: max(buffer.count, 1))
        defer { acc.deallocate() }
        for r in 0..<size {
            let (p, c) = world.posted(r)
            guard c.first == buffer.count else {
                world.abort("allreduce count mismatch")
                throw CommError("allreduce: rank \(r) has \(c.first ?? -1) elements, rank \(rank) has \(buffer.count)")
            }
            guard let src = p?.assumingMemoryBound(to: T.self) else { continue }
            if r == 0 { acc.initialize(from: src, count: buffer.count) } else { fold(acc, src, buffer.count) }
        }
        try world.barrier()
        if buffer.count > 0 { buffer.baseAddress!.update(from: acc, count: buffer.count) }
    }

    public func broadcast<T: CommScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        guard root >= 0 && root < size else { throw CommError("broadcast: root \(root) outside 0..<\(size)") }
        world.post(rank, UnsafeRawPointer(buffer.baseAddress), counts: [buffer.count])
        try world.barrier()
        let (p, c) = world.posted(root)
        guard c.first == buffer.count else {
            world.abort("broadcast count mismatch");
            throw CommError("broadcast: root has \(c.first ?? -1) elements, rank \(rank) has \(buffer.count)")
        }
        if rank != root, let src = p, buffer.count > 0 {
            UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(
                from: src, byteCount: buffer.count * MemoryLayout<T>.stride)
        }
        try world.barrier()
    }

    public func allgather<T: CommScalar>(_ send: UnsafeBufferPointer<T>, into recv: UnsafeMutableBufferPointer<T>)
        throws
    {
        guard recv.count == send.count * size else {
            throw CommError("allgather: recv holds \(recv.count) elements, needs \(send.count) x \(size)")
        }
        world.post(rank, UnsafeRawPointer(send.baseAddress), counts: [send.count])
        try world.barrier()
        for r in 0..<size {
            let (p, c) = world.posted(r)
            guard c.first == send.count else {
                world.abort("allgather count mismatch");
                throw CommError("allgather: rank \(r) sends \(c.first ?? -1), rank \(rank) sends \(send.count)")
            }
            if let src = p, send.count > 0 {
                UnsafeMutableRawPointer(recv.baseAddress! + r * send.count).copyMemory(
                    from: src, byteCount: send.count * MemoryLayout<T>.stride)
            }
        }
        try world.barrier()
    }

    /// The whole sum on every rank (a superset of reduce-scatter's result), in rank order.
    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        guard counts.count == size, counts.reduce(0, +) == buffer.count else {
            throw CommError("reduceScatter: counts \(counts) do not split \(buffer.count) elements over \(size) ranks")
        }
        try allreduce(buffer, op: .sum)
        // Outside its own chunk a rank's buffer is undefined after a reduce-scatter (MPI leaves its
        // input there): poison it, so that a test reading another rank's chunk fails here as it
        // would under MPI instead of finding the whole sum.
        guard let base = buffer.baseAddress else { return }
        let mine = counts[..<rank].reduce(0, +)
        base.update(repeating: .nan, count: mine)
        (base + mine + counts[rank]).update(repeating: .nan, count: buffer.count - mine - counts[rank])
    }

    /// Each rank copies the other ranks' chunks from their buffers; no rank writes its own chunk,
    /// so reads and writes never meet.
    public func allgatherv(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        guard counts.count == size, counts.reduce(0, +) == buffer.count else {
            throw CommError("allgatherv: counts \(counts) do not split \(buffer.count) elements over \(size) ranks")
        }
        world.post(rank, UnsafeRawPointer(buffer.baseAddress), counts: counts)
        try world.barrier()
        var offset = 0
        for r in 0..<size {
            let (p, c) = world.posted(r)
            guard c == counts else {
                world.abort("allgatherv count mismatch")
                throw CommError("allgatherv: rank \(r) has counts \(c), rank \(rank) has \(counts)")
            }
            if r != rank, counts[r] > 0, let src = p?.assumingMemoryBound(to: Float.self) {
                (buffer.baseAddress! + offset).update(from: src + offset, count: counts[r])
            }
            offset += counts[r]
        }
        try world.barrier()
    }

    public func alltoallv<T: CommScalar>(
        send: UnsafeBufferPointer<T>, sendCounts: [Int],
        recv: UnsafeMutableBufferPointer<T>, recvCounts: [Int]
    ) throws {
        try validateAlltoallv(
            sendCount: send.count, sendCounts: sendCounts, recvCount: recv.count, recvCounts: recvCounts)
        world.post(rank, UnsafeRawPointer(send.baseAddress), counts: sendCounts)
        try world.barrier()
        var out = 0
        for s in 0..<size {
            let (p, counts) = world.posted(s)
            guard counts[rank] == recvCounts[s] else {
                world.abort("alltoallv count mismatch")
                throw CommError(
                    "alltoallv: rank \(s) sends \(counts[rank]) to rank \(rank), which expects \(recvCounts[s])")
            }
            let offset = counts[0..<rank].reduce(0, +)
            if recvCounts[s] > 0, let src = p {
                UnsafeMutableRawPointer(recv.baseAddress! + out).copyMemory(
                    from: src + offset * MemoryLayout<T>.stride,
                    byteCount: recvCounts[s] * MemoryLayout<T>.stride)
            }
            out += recvCounts[s]
        }
        try world.barrier()
    }

    public func exchange<T: CommScalar>(sends: [PeerBuffer<T>], receives: [PeerMutableBuffer<T>]) throws {
        try validateExchange(peers: sends.map(\.peer) + receives.map(\.peer))
        for s in sends { world.deliver(from: rank, to: s.peer, Array(UnsafeRawBufferPointer(s.buffer))) }
        for r in receives {
            let bytes = try world.take(from: r.peer, to: rank)
            guard bytes.count == r.buffer.count * MemoryLayout<T>.stride else {
                world.abort("exchange length mismatch")
                throw CommError(
                    "exchange: rank \(r.peer) sent \(bytes.count / MemoryLayout<T>.stride) elements to rank \(rank), "
                        + "which expects \(r.buffer.count)"
                )
            }
            bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(r.buffer).copyMemory(from: $0) }
        }
    }

    public func split(color: Int, key: Int) throws -> any Communicator {
        precondition(color >= 0, "split color must be >= 0")
        world.post(rank, nil, counts: [color, key])
        try world.barrier()
        var members: [(key: Int, rank: Int)] = []
        for r in 0..<size {
            let (_, c) = world.posted(r)
            if c[0] == color { members.append((c[1], r)) }
        }
        members.sort { ($0.key, $0.rank) < ($1.key, $1.rank) }
        let leader = members[0].rank
        let newRank = members.firstIndex { $0.rank == rank }!
        if rank == leader { world.publishChild(leader, LocalWorld(size: members.count, timeout: world.timeout)) }
        try world.barrier()
        let child = world.child(leader)!
        try world.barrier()
        return LocalCommunicator(world: child, rank: newRank)
    }
}

/// Per-rank results collected from the rank threads.
final class ResultBox<R>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Result<R, any Error>?]
    init(size: Int) { items = Array(repeating: nil, count: size) }
    func set(_ i: Int, _ r: Result<R, any Error>) { lock.lock(); items[i] = r; lock.unlock() }

    /// All results, or the first error that is not a consequence of another rank's abort.
    func unwrap() throws -> [R] {
        lock.lock(); defer { lock.unlock() }
        var firstError: (any Error)?
        for case .failure(let e)? in items {
            let isEcho = (e as? CommError)?.message.hasPrefix("aborted:") ?? false
            if !isEcho { throw e }
            if firstError == nil { firstError = e }
        }
        if let e = firstError { throw e }
        return items.map { try! $0!.get() }
    }
}
