// Collective checks with rank-dependent inputs and closed-form expected results.
// The same checks run with LocalCommunicator inside `swift test` and with MPICommunicator
// under `mpirun -np 1..4` (`switchyard selftest`), so both implementations meet one contract.

public struct CollectiveChecks {
    let comm: any Communicator
    let r: Int, n: Int
    var failures: [String] = []

    /// Runs every check on `comm`; returns one line per failure (empty when all pass).
    public static func run(_ comm: any Communicator) throws -> [String] {
        var c = CollectiveChecks(comm: comm, r: comm.rank, n: comm.size)
        let (r, n) = (comm.rank, comm.size)
        c.expect(r >= 0 && r < n && n >= 1, "rank \(r) outside 0..<\(n)")
        try c.allreduce()
        try c.broadcast()
        try c.allgather()
        try c.reduceScatterAndAllgatherv()
        try c.alltoallv()
        try c.exchange()
        try c.split()
        try comm.barrier()
        return c.failures
    }

    mutating func expect(_ ok: Bool, _ what: @autoclosure () -> String) {
        if !ok { failures.append("rank \(comm.rank)/\(comm.size): \(what())") }
    }

    mutating func allreduce() throws {
        // sum, Float: x_i = (r + 1) + i/2  ->  n(n+1)/2 + n*i/2 (exact in Float32).
        let len = 1031
        var xs = (0..<len).map { Float(r + 1) + Float($0) * 0.5 }
        try comm.allreduce(&xs, op: .sum)
        let badSum = (0..<len).first { xs[$0] != Float(n * (n + 1) / 2) + Float(n) * Float($0) * 0.5 }
        expect(badSum == nil, "allreduce(Float, sum) element \(badSum ?? 0) = \(badSum.map { xs[$0] } ?? 0)")
        // A long Float sum (MPICommunicator takes its shared-memory path from 2^20 elements, in
        // pieces of 2^21): x_i = (r + 1) * (i % 1024) -> n(n+1)/2 * (i % 1024), exact.
        let long = (1 << 21) * 2 + 12_345
        var ls = (0..<long).map { Float(r + 1) * Float($0 % 1024) }
        try comm.allreduce(&ls, op: .sum)
        let badLong = (0..<long).first { ls[$0] != Float(n * (n + 1) / 2) * Float($0 % 1024) }
        expect(
            badLong == nil, "allreduce(Float, sum) of \(long): element \(badLong ?? 0) = \(badLong.map { ls[$0] } ?? 0)"
        )
        // max and min, Double: x_i = r * 10 + i -> (n-1) * 10 + i and i.
        var ds = (0..<7).map { Double(r * 10 + $0) }
        try comm.allreduce(&ds, op: .max)
        expect(ds == (0..<7).map { Double((n - 1) * 10 + $0) }, "allreduce(Double, max) = \(ds)")
        var lows = (0..<7).map { Double(r * 10 + $0) }
        try comm.allreduce(&lows, op: .min)
        expect(lows == (0..<7).map { Double($0) }, "allreduce(Double, min) = \(lows)")
        // sum, Int64: 2^40 * r + 1 -> 2^40 * n(n-1)/2 + n.
        var ints: [Int64] = [(Int64(1) << 40) * Int64(r) + 1]
        try comm.allreduce(&ints, op: .sum)
        expect(ints[0] == (Int64(1) << 40) * Int64(n * (n - 1) / 2) + Int64(n), "allreduce(Int64, sum) = \(ints[0])")
    }

    /// From every root: root's values are root * 100 + i.
    mutating func broadcast() throws {
        for root in 0..<n {
            var b = (0..<5).map { r == root ? Float(root * 100 + $0) : -1 }
            try comm.broadcast(&b, root: root)
            expect(b == (0..<5).map { Float(root * 100 + $0) }, "broadcast(root \(root)) = \(b)")
        }
    }

    /// Uneven chunks (rank q: q + 1 elements, rank 0 also 2 more): x_i = (r + 1) * (i + 1) sums to
    /// n(n+1)/2 * (i + 1) in this rank's chunk; then every chunk set to its owner's rank, gathered.
    mutating func reduceScatterAndAllgatherv() throws {
        let counts = (0..<n).map { $0 + 1 + ($0 == 0 ? 2 : 0) }, len = counts.reduce(0, +)
        let start = counts[0..<r].reduce(0, +)
        var xs = (0..<len).map { Float((r + 1) * ($0 + 1)) }
        let c = comm
        try xs.withUnsafeMutableBufferPointer { try c.reduceScatter($0, counts: counts) }
        let want = (start..<(start + counts[r])).map { Float(n * (n + 1) / 2 * ($0 + 1)) }
        let got = Array(xs[start..<(start + counts[r])])
        expect(got == want, "reduceScatter chunk \(got), expected \(want)")
        for i in 0..<len { xs[i] = -1 }
        for i in start..<(start + counts[r]) { xs[i] = Float(r) }
        try xs.withUnsafeMutableBufferPointer { try c.allgatherv($0, counts: counts) }
        let owners = (0..<n).flatMap { q in Array(repeating: Float(q), count: counts[q]) }
        expect(xs == owners, "allgatherv = \(xs)")
    }

    /// Rank q contributes [q*10, q*10+1, q*10+2].
    mutating func allgather() throws {
        let g = try comm.allgather((0..<3).map { Double(r * 10 + $0) })
        expect(g == (0..<n).flatMap { q in (0..<3).map { Double(q * 10 + $0) } }, "allgather = \(g)")
    }

    /// Rank s sends (s + d) % 3 elements to d, values s*1000 + d*10 + j (zero counts included).
    mutating func alltoallv() throws {
        let (r, n) = (self.r, self.n)
        let sendCounts = (0..<n).map { (r + $0) % 3 }
        let recvCounts = (0..<n).map { ($0 + r) % 3 }
        let send = (0..<n).flatMap { d in (0..<((r + d) % 3)).map { Float(r * 1000 + d * 10 + $0) } }
        let got = try comm.alltoallv(send, sendCounts: sendCounts, recvCounts: recvCounts)
        let want = (0..<n).flatMap { s in (0..<((s + r) % 3)).map { Float(s * 1000 + r * 10 + $0) } }
        expect(got == want, "alltoallv = \(got), want \(want)")
    }

    /// Point-to-point: a ring both ways plus a message to itself; rank s sends (s % 3) + 1
    /// messages to its right neighbour, of lengths 0, 1, 2 ... (order preserved), and one of
    /// length 4 to its left; values s * 1000 + message * 10 + j.
    mutating func exchange() throws {
        let (r, n, comm) = (self.r, self.n, self.comm)
        let right = (r + 1) % n, left = (r + n - 1) % n
        func message(_ s: Int, _ m: Int, _ len: Int) -> [Double] { (0..<len).map { Double(s * 1000 + m * 10 + $0) } }
        let toRight = (0...(r % 3)).map { message(r, $0, $0) }, toLeft = message(r, 9, 4), toSelf = message(r, 5, 3)
        let fromLeftCount = left % 3 + 1
        var fromLeft = (0..<fromLeftCount).map { [Double](repeating: -1, count: $0) }
        var fromRight = [Double](repeating: -1, count: 4), fromSelf = [Double](repeating: -1, count: 3)
        try withBuffers(toRight + [toLeft, toSelf]) { out in
            try withMutableBuffers(&fromLeft) { inLeft in
                try fromRight.withUnsafeMutableBufferPointer { inRight in
                    try fromSelf.withUnsafeMutableBufferPointer { inSelf in
                        let sends = out.enumerated().map {
                            PeerBuffer(
                                peer: $0.offset < toRight.count ? right : ($0.offset == toRight.count ? left : r),
                                buffer: $0.element)
                        }
                        let receives =
                            inLeft.map { PeerMutableBuffer(peer: left, buffer: $0) }
                            + [
                                PeerMutableBuffer(peer: right, buffer: inRight),
                                PeerMutableBuffer(peer: r, buffer: inSelf)
                            ]
                        try comm.exchange(sends: sends, receives: receives)
                    }
                }
            }
        }
        expect(fromLeft == (0..<fromLeftCount).map { message(left, $0, $0) }, "exchange from the left = \(fromLeft)")
        expect(fromRight == message(right, 9, 4), "exchange from the right = \(fromRight)")
        expect(fromSelf == toSelf, "exchange with itself = \(fromSelf)")
    }

    /// By parity, keys reversed: the new rank counts down; a sum over the sub-group adds exactly
    /// the ranks of this parity.
    mutating func split() throws {
        let (r, n) = (self.r, self.n)
        let sub = try comm.split(color: r % 2, key: -r)
        let peers = (0..<n).filter { $0 % 2 == r % 2 }
        expect(sub.size == peers.count, "split size \(sub.size), want \(peers.count)")
        expect(sub.rank == peers.count - 1 - peers.firstIndex(of: r)!, "split rank \(sub.rank)")
        var s: [Int64] = [Int64(r)]
        try sub.allreduce(&s, op: .sum)
        expect(s[0] == Int64(peers.reduce(0, +)), "allreduce in split group = \(s[0]), want \(peers.reduce(0, +))")
    }
}

/// Calls `body` with buffer pointers to every array (kept alive for the call).
func withBuffers<T, R>(_ arrays: [[T]], _ body: ([UnsafeBufferPointer<T>]) throws -> R) rethrows -> R {
    func go(_ i: Int, _ acc: [UnsafeBufferPointer<T>]) throws -> R {
        if i == arrays.count { return try body(acc) }
        return try arrays[i].withUnsafeBufferPointer { try go(i + 1, acc + [$0]) }
    }
    return try go(0, [])
}

/// Calls `body` with mutable buffer pointers to every array (kept alive for the call).
func withMutableBuffers<T, R>(_ arrays: inout [[T]], _ body: ([UnsafeMutableBufferPointer<T>]) throws -> R) rethrows
    -> R
{
    let p = UnsafeMutablePointer<[T]>.allocate(capacity: arrays.count)
    p.initialize(from: arrays, count: arrays.count)
    defer {
        arrays = Array(UnsafeBufferPointer(start: p, count: arrays.count)); p.deinitialize(count: arrays.count);
        p.deallocate()
    }
    func go(_ i: Int, _ acc: [UnsafeMutableBufferPointer<T>]) throws -> R {
        if i == arrays.count { return try body(acc) }
        return try p[i].withUnsafeMutableBufferPointer { try go(i + 1, acc + [$0]) }
    }
    return try go(0, [])
}
