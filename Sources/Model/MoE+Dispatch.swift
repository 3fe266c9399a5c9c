// MoE dispatch and combine, in their phases: a counting sort of this rank's assignments into
// send order (destination rank, expert, token), the exchange of the per-(rank, expert) counts,
// the alltoallv of the rows, and the permutation of the received rows into expert-major order
// (expert, source rank, token). Combine runs the same steps backwards.
// Shape legend as in MoE.swift.
import Placement
import Tensor

extension MoELayer {
    /// Sends each kept assignment's row of xs [rows, C] (routing in s.topIndex, drops in s.dropped)
    /// to the rank serving its expert; leaves the received rows expert-major in s.xe, with s.perm,
    /// s.expertStart/Rows set. `tokenOffset`: global index of xs's first row (replica choice).
    func dispatch(s: MoEState, x xs: UnsafePointer<Float>, experts: [Int], tokenOffset: Int) throws {
        let bucket = packSendRows(s: s, x: xs, tokenOffset: tokenOffset, experts: experts.count)
        let recvCounts = try exchangeCounts(s: s, bucket: bucket)
        let recvTotal = s.recvRows.reduce(0, +)
        ctx.stats.expertRowsReceived += recvTotal
        if isLocal {
            expertRanges(s: s, recvCounts: recvCounts, experts: experts)
            return
        }
        s.recv.reserve(recvTotal * c, atMost: mostReceivedRows(s, localExperts: experts.count) * c)
        let arrived = try toExperts(s: s, send: s.send.base, recv: s.recv.base)
        permuteExpertMajor(s: s, recvCounts: recvCounts, experts: experts, arrived: arrived)
    }

    /// Phase 1, counting sort: each kept assignment's destination (the replica that serves the
    /// token, PlacementPlan.replica), its row in send order (s.sendSlot) and that row copied into
    /// s.send, or in a local layer straight into s.xe (send order is expert-major there). Sets
    /// s.sendRows; returns the rows per (destination, expert), [world * E].
    func packSendRows(s: MoEState, x xs: UnsafePointer<Float>, tokenOffset: Int, experts: Int) -> [Int] {
        let world = ctx.comms.world.size, rows = s.rows
        var bucket = [Int](repeating: 0, count: world * e)
        var destOf = [Int32](repeating: 0, count: rows * k)
        let servers = ctx.servers[layer]
        for r in 0..<rows {
            for j in 0..<k where !s.dropped[r * k + j] {
                let ex = Int(s.topIndex[r * k + j])
                let d = PlacementPlan.replica(of: servers[ex], token: tokenOffset + r)
                destOf[r * k + j] = Int32(d)
                bucket[d * e + ex] += 1
            }
        }
        s.sendRows = (0..<world).map { d in bucket[(d * e)..<((d + 1) * e)].reduce(0, +) }
        var fill = [Int](repeating: 0, count: world * e)  // next send row of each (destination, expert)
        var acc = 0
        for i in 0..<(world * e) {
            fill[i] = acc
            acc += bucket[i]
        }
        if isLocal {
            s.xe.reserve(acc * c, atMost: mostReceivedRows(s, localExperts: experts) * c)
        } else {
            s.send.reserve(acc * c, atMost: mostSentRows(s) * c)
            s.back.reserve(acc * c, atMost: mostSentRows(s) * c)
        }
        let into = isLocal ? s.xe.base : s.send.base
        for r in 0..<rows {
            for j in 0..<k where !s.dropped[r * k + j] {
                let key = Int(destOf[r * k + j]) * e + Int(s.topIndex[r * k + j])
                s.sendSlot[r * k + j] = Int32(fill[key])
                fill[key] += 1
            }
        }
        Parallel.forEachBlock(rows, grain: Self.rowGrain) { block in
            for r in block {
                for j in 0..<k where !s.dropped[r * k + j] {
                    (into + Int(s.sendSlot[r * k + j]) * c).update(from: xs + r * c, count: c)
                }
            }
        }
        return bucket
    }

    /// Phase 2, count exchange: every rank learns how many rows of each expert it receives from
    /// each source (alltoallv of the counts). Sets s.recvRows; returns the counts, [world * E].
    /// A local layer (ParallelContext.localLayers) sends only to itself: its counts are the bucket.
    func exchangeCounts(s: MoEState, bucket: [Int]) throws -> [Int] {
        let world = ctx.comms.world.size
        if isLocal {
            s.recvRows = (0..<world).map { src in bucket[(src * e)..<((src + 1) * e)].reduce(0, +) }
            return bucket
        }
        let counts64 = bucket.map { Int64($0) }
        var recvCounts64 = [Int64](repeating: 0, count: world * e)
        try counts64.withUnsafeBufferPointer { sp in
            try recvCounts64.withUnsafeMutableBufferPointer { rp in
                try ctx.alltoallv(
                    send: sp.baseAddress!, sendCounts: Array(repeating: e, count: world),
                    recv: rp.baseAddress!, recvCounts: Array(repeating: e, count: world))
            }
        }
        let recvCounts = recvCounts64.map { Int($0) }
        s.recvRows = (0..<world).map { src in recvCounts[(src * e)..<((src + 1) * e)].reduce(0, +) }
        return recvCounts
    }

    /// Phase 3, expert-major permutation: for each local expert, the rows from source 0, 1, ...
    /// in token order (s.perm, s.expertStart/Rows); copies them from `arrived` (received order)
    /// into s.xe and sizes the expert buffers.
    func permuteExpertMajor(s: MoEState, recvCounts: [Int], experts: [Int], arrived: UnsafePointer<Float>) {
        expertRanges(s: s, recvCounts: recvCounts, experts: experts)
        expertMajor(s: s, from: arrived, into: s.xe.base)
    }

    /// s.perm, s.expertStart/Rows and the expert buffers' sizes for the rows received. A local
    /// layer's perm is the identity (its experts are every expert, in order, and its only source
    /// is itself), so it is left empty and s.xe already holds the rows.
    func expertRanges(s: MoEState, recvCounts: [Int], experts: [Int]) {
        let world = ctx.comms.world.size
        let recvTotal = s.recvRows.reduce(0, +)
        var srcStart = [Int](repeating: 0, count: world)
        var acc = 0
        for src in 0..<world {
            srcStart[src] = acc
            acc += s.recvRows[src]
        }
        s.perm = []
        s.expertStart = []
        s.expertRows = []
        var placed = 0
        if !isLocal { s.perm.reserveCapacity(recvTotal) }
        for ex in experts {
            s.expertStart.append(placed)
            for src in 0..<world {
                let first = srcStart[src] + recvCounts[(src * e)..<(src * e + ex)].reduce(0, +)
                let count = recvCounts[src * e + ex]
                precondition(!isLocal || count == 0 || first == placed, "a local layer's rows arrive expert-major")
                if !isLocal { for i in 0..<count { s.perm.append(Int32(first + i)) } }
                placed += count
            }
            s.expertRows.append(placed - s.expertStart.last!)
        }
        precondition(placed == recvTotal, "a rank received rows for an expert it does not hold")
        let most = mostReceivedRows(s, localExperts: experts.count)
        if !isLocal { s.xe.reserve(recvTotal * c, atMost: most * c) }
        s.o.reserve(recvTotal * c, atMost: most * c)
        s.h.reserve(recvTotal * preWidth, atMost: most * preWidth)
        s.a.reserve(recvTotal * f, atMost: most * f)
    }

    /// Returns the expert outputs s.o (expert-major) to the rows' owners and adds
    /// sum_k w[n, k] * o into out's owned rows, in slot order; then all-gathers the rows over tp.
    func combine(s: MoEState, out: UnsafeMutablePointer<Float>, n: Int, gatherScratch: UnsafeMutablePointer<Float>)
        throws
    {
        // Outputs back to received order, then home (a local layer's s.o is in send order already).
        if !isLocal {
            receivedOrder(s: s, from: s.o.base, into: s.recv.base)
            try toOwners(s: s, send: s.recv.base, recv: s.back.base)
        }
        let home = returned(s)
        Parallel.forEachBlock(s.rows, grain: Self.rowGrain) { block in
            for r in block {
                let dst = out + (s.rowStart + r) * c
                for j in 0..<k where !s.dropped[r * k + j] {
                    let wt = s.topWeight.base[r * k + j]
                    let src = home + Int(s.sendSlot[r * k + j]) * c
                    for i in 0..<c { dst[i] += wt * src[i] }
                }
            }
        }
        try ctx.allgatherRowsTP(out, n: n, c: c, scratch: gatherScratch)
    }

    /// Whether this layer's exchanges are the identity (every expert on every rank, or world 1:
    /// ParallelContext.localLayers): send order is expert-major order, and nothing is copied.
    var isLocal: Bool { ctx.localLayers[layer] }

    /// The expert outputs back home in send order [S, C]: s.back, or s.o itself in a local layer.
    func returned(_ s: MoEState) -> UnsafeMutablePointer<Float> { isLocal ? s.o.base : s.back.base }

    /// Rows in send order [S, C] to the ranks serving their experts, arriving in received order
    /// [R, C] in `recv` (not called in a local layer, which packs its rows expert-major).
    func toExperts(s: MoEState, send: UnsafePointer<Float>, recv: UnsafeMutablePointer<Float>) throws
        -> UnsafePointer<Float>
    {
        precondition(!isLocal, "a local layer exchanges nothing")
        try ctx.alltoallv(
            send: send, sendCounts: s.sendRows.map { $0 * c }, recv: recv, recvCounts: s.recvRows.map { $0 * c })
        return UnsafePointer(recv)
    }

    /// Rows in received order [R, C] back to the ranks that sent them, arriving in send order
    /// [S, C] in `recv` (not called in a local layer).
    func toOwners(s: MoEState, send: UnsafePointer<Float>, recv: UnsafeMutablePointer<Float>) throws {
        precondition(!isLocal, "a local layer exchanges nothing")
        try ctx.alltoallv(
            send: send, sendCounts: s.recvRows.map { $0 * c }, recv: recv, recvCounts: s.sendRows.map { $0 * c })
    }

    /// dst[i] = src[perm[i]]: received order [R, C] to expert-major order.
    func expertMajor(s: MoEState, from src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        s.perm.withUnsafeBufferPointer { perm in
            Parallel.forEachBlock(perm.count, grain: Self.rowGrain) { block in
                for i in block { (dst + i * c).update(from: src + Int(perm[i]) * c, count: c) }
            }
        }
    }

    /// dst[perm[i]] = src[i]: expert-major order [R, C] back to received order.
    func receivedOrder(s: MoEState, from src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        s.perm.withUnsafeBufferPointer { perm in
            Parallel.forEachBlock(perm.count, grain: Self.rowGrain) { block in
                for i in block { (dst + Int(perm[i]) * c).update(from: src + i * c, count: c) }
            }
        }
    }

    /// Rows per work item of the copies and sums above (each row writes only its own outputs).
    static var rowGrain: Int { 128 }
}
