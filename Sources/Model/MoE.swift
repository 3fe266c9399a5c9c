// The expert-parallel MoE FFN. Inside a tp group activations are replicated, so each tp rank
// routes a disjoint slice of its rows. Dispatch: assignments are sorted by (destination rank,
// expert, token), counts per (rank, expert) are exchanged, then rows go by alltoallv over the
// world; each rank runs one MLP (sgemm pair) per local expert over every row it received, in
// (expert, source rank, token) order; outputs return by the reverse alltoallv and are combined
// per token in slot order (a fixed summation order). The slices are then all-gathered over tp.
// At world size 1 the same code path sends everything to itself.
// Shape legend: N rows (this rank's B_local*T), C channels, F hidden, E experts, K top-k,
// S send rows (this rank's assignments), R received rows (assignments this rank's experts serve).
// Forward *adds* into the residual stream; backward *accumulates* into dx and weight grads.
import Placement
import Tensor

/// Pointers to one MoE block's router and local experts (params or grads).
struct MoEWeights {
    let router: UnsafeMutablePointer<Float>  // [E, C]
    let experts: [Int]  // local expert ids, ascending
    let w1: [UnsafeMutablePointer<Float>]  // per local expert: [F, C]
    let w2: [UnsafeMutablePointer<Float>]  // per local expert: [C, F]
}

/// Everything one MoE block keeps from forward for backward.
final class MoEState {
    let e: Int, k: Int
    var rowStart = 0, rows = 0
    let logits, probs: FloatBuffer  // [N, E] (first `rows` used)
    let topIndex: UnsafeMutablePointer<Int32>  // [N, K]
    let topWeight: FloatBuffer  // [N, K]
    let share: FloatBuffer  // [E] global assignment shares
    var globalCounts: [Int]  // tokens per expert over the global batch
    let sendSlot: UnsafeMutablePointer<Int32>  // [N, K] -> row in send order, or `dropped`
    /// sendSlot of an assignment dropped by the capacity limit (the token skips that expert).
    static let dropped: Int32 = -1
    var droppedGlobal = 0  // assignments dropped over the global batch
    var sendRows: [Int] = [], recvRows: [Int] = []
    var perm: [Int32] = []  // expert-major row i <- received row perm[i]
    var expertStart: [Int] = [], expertRows: [Int] = []
    let send = GrowBuffer(), back = GrowBuffer(), recv = GrowBuffer()  // [S, C], [S, C], [R, C]
    let xe = GrowBuffer(), h = GrowBuffer(), a = GrowBuffer(), o = GrowBuffer()  // [R, C], [R, F], [R, F], [R, C]

    init(n: Int, e: Int, k: Int) {
        self.e = e; self.k = k
        logits = FloatBuffer(count: n * e); probs = FloatBuffer(count: n * e)
        topIndex = .allocate(capacity: n * k); topIndex.initialize(repeating: 0, count: n * k)
        topWeight = FloatBuffer(count: n * k); share = FloatBuffer(count: e)
        globalCounts = Array(repeating: 0, count: e)
        sendSlot = .allocate(capacity: n * k); sendSlot.initialize(repeating: 0, count: n * k)
    }
    deinit { topIndex.deallocate(); sendSlot.deallocate() }
}

/// Backward scratch for MoE blocks.
final class MoEScratch {
    let dSend = GrowBuffer(), dRecv = GrowBuffer(), dXe = GrowBuffer(), dOe = GrowBuffer()
    let dA = GrowBuffer(), dH = GrowBuffer()
    let dLogits, dProbs, dTopWeight, rowScratch: FloatBuffer
    init(n: Int, e: Int, k: Int) {
        dLogits = FloatBuffer(count: n * e); dProbs = FloatBuffer(count: n * e)
        dTopWeight = FloatBuffer(count: n * k); rowScratch = FloatBuffer(count: e)
    }
}

struct MoELayer {
    var ctx: ParallelContext  // replaced when a re-placement rebinds the model
    let layer: Int  // MoE layer index (placement row)
    let c: Int, f: Int, e: Int, k: Int
    /// 0: dropless. Otherwise each expert serves at most ceil(capacityFactor * tokens * K / E)
    /// assignments of the global batch; later ones (in global token order, then top-k order) are dropped.
    var capacityFactor = 0.0
    /// Skews routing on purpose (tests, benchmarks): adds -routerSkew * ln(p(e) + 1) to expert e's
    /// logit, where p orders the experts 0, s, 2s, ..., 1, 1+s, ... for stride s = routerSkewStride
    /// (s = 1: low-numbered experts get the most tokens). A constant: backward is unchanged.
    var routerSkew = 0.0
    var routerSkewStride = 1

    /// Marks assignments over capacity as dropped (sendSlot = dropped), identically on every layout:
    /// ranks own consecutive token ranges in rank order, so an exclusive prefix over ranks of the
    /// per-expert counts gives each assignment its position in the global order.
    func applyCapacity(s: MoEState, globalTokens: Int) throws {
        for i in 0..<(s.rows * k) { s.sendSlot[i] = 0 }
        s.droppedGlobal = 0
        guard capacityFactor > 0 else { return }
        let capacity = Int((capacityFactor * Double(globalTokens * k) / Double(e)).rounded(.up))
        var local = [Int64](repeating: 0, count: e)
        for i in 0..<(s.rows * k) { local[Int(s.topIndex[i])] += 1 }
        let all = try ctx.comms.world.allgather(local)
        let me = ctx.comms.world.rank
        var position = (0..<e).map { ex in (0..<me).reduce(0) { $0 + Int(all[$1 * e + ex]) } }
        for i in 0..<(s.rows * k) {
            let ex = Int(s.topIndex[i])
            if position[ex] >= capacity { s.sendSlot[i] = MoEState.dropped }
            position[ex] += 1
        }
        for ex in 0..<e {
            let total = (0..<ctx.comms.world.size).reduce(0) { $0 + Int(all[$1 * e + ex]) }
            s.droppedGlobal += max(0, total - capacity)
        }
    }

    /// out[N, C] += MoE(x[N, C]). `tokenOffset` is the global index of row 0 (replica choice);
    /// `globalTokens` the tokens in the whole batch (balance loss). Returns aux (global).
    func forward(
        out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: MoEWeights, s: MoEState,
        n: Int, tokenOffset: Int, globalTokens: Int, gatherScratch: UnsafeMutablePointer<Float>,
        profile: KernelProfile?
    ) throws -> Float {
        var clock = RegionClock(profile)
        let mine = ctx.tpRows(n, rank: ctx.comms.tp.rank)
        s.rowStart = mine.start; s.rows = mine.end - mine.start
        let rows = s.rows, xs = x + mine.start * c
        // Route this rank's rows.
        Linear.forward(out: s.logits.base, inp: xs, weight: w.router, n: rows, inFeatures: c, outFeatures: e)
        if routerSkew != 0 {
            for j in 0..<e {
                let st = e % routerSkewStride == 0 ? routerSkewStride : 1
                let position = (j % st) * (e / st) + j / st
                let bias = Float(-routerSkew * logDouble(Double(position + 1)))
                for r in 0..<rows { s.logits.base[r * e + j] += bias }
            }
        }
        Router.forward(
            probs: s.probs.base, topIndex: s.topIndex, topWeight: s.topWeight.base, logits: s.logits.base, n: rows,
            e: e, k: k)
        var sums = [Double](repeating: 0, count: 2 * e)
        sums.withUnsafeMutableBufferPointer { p in
            LoadBalance.accumulate(
                counts: p.baseAddress!, probSums: p.baseAddress! + e, probs: s.probs.base, topIndex: s.topIndex,
                n: rows, e: e, k: k)
        }
        try ctx.allreduceWorld(&sums)
        for j in 0..<e { s.globalCounts[j] = Int(sums[j]) }
        let aux = sums.withUnsafeBufferPointer {
            LoadBalance.loss(
                f: s.share.base, counts: $0.baseAddress!, probSums: $0.baseAddress! + e, tokens: globalTokens, e: e,
                k: k)
        }
        try applyCapacity(s: s, globalTokens: globalTokens)
        clock.lap(.router)

        try dispatch(s: s, x: xs, experts: w.experts, tokenOffset: tokenOffset + mine.start)
        clock.lap(.dispatchCombine)
        for (li, _) in w.experts.enumerated() where s.expertRows[li] > 0 {
            let st = s.expertStart[li]
            MLP.forward(
                o: s.o.base + st * c, h: s.h.base + st * f, a: s.a.base + st * f, x: s.xe.base + st * c,
                w1: w.w1[li], w2: w.w2[li], n: s.expertRows[li], c: c, f: f)
        }
        clock.lap(.experts)
        try combine(s: s, out: out, n: n, gatherScratch: gatherScratch)
        clock.lap(.dispatchCombine)
        return aux
    }

    /// Sends each routed row of xs [rows, C] (routing in s.topIndex) to the rank serving its expert;
    /// leaves the received rows in expert-major order in s.xe, with s.perm, s.expertStart/Rows set.
    /// `tokenOffset`: global index of xs's first row (replica choice among the replicas that
    /// serve this rank: those on its node if any, else all).
    func dispatch(s: MoEState, x xs: UnsafePointer<Float>, experts: [Int], tokenOffset: Int) throws {
        let world = ctx.comms.world.size, rows = s.rows
        // Sort assignments by (destination, expert, token): counting sort over dest * E + expert.
        var bucket = [Int](repeating: 0, count: world * e)
        var destOf = [Int32](repeating: 0, count: rows * k)
        let servers = ctx.servers[layer]
        for r in 0..<rows {
            for j in 0..<k where s.sendSlot[r * k + j] != MoEState.dropped {
                let ex = Int(s.topIndex[r * k + j])
                let to = servers[ex]
                let d = to.count == 1 ? to[0] : to[(tokenOffset + r) % to.count]
                destOf[r * k + j] = Int32(d)
                bucket[d * e + ex] += 1
            }
        }
        let counts64 = bucket.map { Int64($0) }
        s.sendRows = (0..<world).map { d in bucket[(d * e)..<((d + 1) * e)].reduce(0, +) }
        var fill = [Int](repeating: 0, count: world * e)
        var acc = 0
        for i in 0..<(world * e) { fill[i] = acc; acc += bucket[i] }
        let sendTotal = acc
        s.send.reserve(sendTotal * c)
        s.back.reserve(sendTotal * c)
        for r in 0..<rows {
            for j in 0..<k where s.sendSlot[r * k + j] != MoEState.dropped {
                let key = Int(destOf[r * k + j]) * e + Int(s.topIndex[r * k + j])
                let slot = fill[key]
                fill[key] += 1
                s.sendSlot[r * k + j] = Int32(slot)
                (s.send.base + slot * c).update(from: xs + r * c, count: c)
            }
        }
        // Exchange the (rank, expert) counts, then the rows.
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
        let recvTotal = s.recvRows.reduce(0, +)
        ctx.stats.expertRowsReceived += recvTotal
        s.recv.reserve(recvTotal * c)
        try ctx.alltoallv(
            send: s.send.base, sendCounts: s.sendRows.map { $0 * c },
            recv: s.recv.base, recvCounts: s.recvRows.map { $0 * c })

        // Expert-major order: for each local expert, rows from source 0, 1, ... in token order.
        var srcStart = [Int](repeating: 0, count: world)
        acc = 0
        for src in 0..<world { srcStart[src] = acc; acc += s.recvRows[src] }
        s.perm = []
        s.perm.reserveCapacity(recvTotal)
        s.expertStart = []; s.expertRows = []
        for ex in experts {
            s.expertStart.append(s.perm.count)
            for src in 0..<world {
                let before = recvCounts[(src * e)..<(src * e + ex)].reduce(0, +)
                let first = srcStart[src] + before
                for i in 0..<recvCounts[src * e + ex] { s.perm.append(Int32(first + i)) }
            }
            s.expertRows.append(s.perm.count - s.expertStart.last!)
        }
        precondition(s.perm.count == recvTotal, "a rank received rows for an expert it does not hold")
        s.xe.reserve(recvTotal * c); s.o.reserve(recvTotal * c)
        s.h.reserve(recvTotal * f); s.a.reserve(recvTotal * f)
        for i in 0..<recvTotal { (s.xe.base + i * c).update(from: s.recv.base + Int(s.perm[i]) * c, count: c) }
    }

    /// Returns the expert outputs s.o (expert-major) to the rows' owners and adds
    /// sum_k w[n, k] * o into out's owned rows, in slot order; then all-gathers the rows over tp.
    func combine(s: MoEState, out: UnsafeMutablePointer<Float>, n: Int, gatherScratch: UnsafeMutablePointer<Float>)
        throws
    {
        let recvTotal = s.recvRows.reduce(0, +)
        // Outputs back to received order, then home.
        for i in 0..<recvTotal { (s.recv.base + Int(s.perm[i]) * c).update(from: s.o.base + i * c, count: c) }
        try ctx.alltoallv(
            send: s.recv.base, sendCounts: s.recvRows.map { $0 * c },
            recv: s.back.base, recvCounts: s.sendRows.map { $0 * c })
        // Combine this rank's rows in slot order, into the residual; then share the rows over tp.
        for r in 0..<s.rows {
            let dst = out + (s.rowStart + r) * c
            for j in 0..<k where s.sendSlot[r * k + j] != MoEState.dropped {
                let wt = s.topWeight.base[r * k + j]
                let src = s.back.base + Int(s.sendSlot[r * k + j]) * c
                for i in 0..<c { dst[i] += wt * src[i] }
            }
        }
        try ctx.allgatherRowsTP(out, n: n, c: c, scratch: gatherScratch)
    }

    /// Backward from dOut[N, C] (the residual gradient at the block output, same on every tp rank).
    /// dx[N, C] (zero on entry) receives d(objective)/d(x) on every tp rank.
    func backward(
        dx: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
        w: MoEWeights, g: MoEWeights, s: MoEState, sc: MoEScratch, auxCoef: Float, n: Int, globalTokens: Int,
        gatherScratch: UnsafeMutablePointer<Float>, profile: KernelProfile?
    ) throws {
        var clock = RegionClock(profile)
        let rows = s.rows, r0 = s.rowStart
        let sendTotal = s.sendRows.reduce(0, +), recvTotal = s.recvRows.reduce(0, +)
        sc.dSend.reserve(sendTotal * c)
        let dTW = sc.dTopWeight.base
        for r in 0..<rows {
            let d = dOut + (r0 + r) * c
            for j in 0..<k {
                if s.sendSlot[r * k + j] == MoEState.dropped { dTW[r * k + j] = 0; continue }
                let slot = Int(s.sendSlot[r * k + j])
                let o = s.back.base + slot * c, dst = sc.dSend.base + slot * c
                let wt = s.topWeight.base[r * k + j]
                var dot: Float = 0
                for i in 0..<c { dot += d[i] * o[i]; dst[i] = wt * d[i] }
                dTW[r * k + j] = dot
            }
        }
        sc.dRecv.reserve(recvTotal * c)
        try ctx.alltoallv(
            send: sc.dSend.base, sendCounts: s.sendRows.map { $0 * c },
            recv: sc.dRecv.base, recvCounts: s.recvRows.map { $0 * c })
        sc.dOe.reserve(recvTotal * c); sc.dXe.reserve(recvTotal * c)
        for i in 0..<recvTotal { (sc.dOe.base + i * c).update(from: sc.dRecv.base + Int(s.perm[i]) * c, count: c) }
        sc.dXe.base.update(repeating: 0, count: recvTotal * c)
        clock.lap(.dispatchCombine)
        let maxRows = s.expertRows.max() ?? 0
        sc.dA.reserve(maxRows * f); sc.dH.reserve(maxRows * f)
        for (li, _) in w.experts.enumerated() where s.expertRows[li] > 0 {
            let st = s.expertStart[li]
            MLP.backward(
                dx: sc.dXe.base + st * c, dw1: g.w1[li], dw2: g.w2[li], dOut: sc.dOe.base + st * c,
                x: s.xe.base + st * c, h: s.h.base + st * f, a: s.a.base + st * f, w1: w.w1[li], w2: w.w2[li],
                dA: sc.dA.base, dH: sc.dH.base, n: s.expertRows[li], c: c, f: f)
        }
        clock.lap(.experts)
        for i in 0..<recvTotal { (sc.dRecv.base + Int(s.perm[i]) * c).update(from: sc.dXe.base + i * c, count: c) }
        try ctx.alltoallv(
            send: sc.dRecv.base, sendCounts: s.recvRows.map { $0 * c },
            recv: sc.dSend.base, recvCounts: s.sendRows.map { $0 * c })
        let dxs = dx + r0 * c
        for r in 0..<rows {
            let d = dxs + r * c
            for j in 0..<k where s.sendSlot[r * k + j] != MoEState.dropped {
                let src = sc.dSend.base + Int(s.sendSlot[r * k + j]) * c
                for i in 0..<c { d[i] += src[i] }
            }
        }
        clock.lap(.dispatchCombine)
        sc.dProbs.base.update(repeating: 0, count: rows * e)
        LoadBalance.backward(
            dProbs: sc.dProbs.base, f: s.share.base, dAux: auxCoef, n: rows, e: e, tokens: globalTokens)
        sc.dLogits.base.update(repeating: 0, count: rows * e)
        Router.backward(
            dLogits: sc.dLogits.base, dTopWeight: dTW, dProbsExtra: sc.dProbs.base, probs: s.probs.base,
            topIndex: s.topIndex, topWeight: s.topWeight.base, n: rows, e: e, k: k, scratch: sc.rowScratch.base)
        Linear.backward(
            dInp: dxs, dWeight: g.router, dOut: sc.dLogits.base, inp: x + r0 * c, weight: w.router,
            n: rows, inFeatures: c, outFeatures: e)
        clock.lap(.router)
        try ctx.allgatherRowsTP(dx, n: n, c: c, scratch: gatherScratch)
        clock.lap(.dispatchCombine)
    }
}

/// Charges consecutive spans of a function to profile regions (no clock calls without a profile).
struct RegionClock {
    let profile: KernelProfile?
    var last: Double
    init(_ p: KernelProfile?) { profile = p; last = p == nil ? 0 : monotonicSeconds() }
    @inline(__always) mutating func lap(_ r: ProfileRegion) {
        guard let p = profile else { return }
        let t = monotonicSeconds()
        p.add(r, t - last)
        last = t
    }
}
