// MoE dispatch and combine: where each kept assignment's row goes, and the two ways of getting it
// there behind one protocol. The send plan (a counting sort of this rank's assignments by
// destination rank, expert, token) is shared; a dispatcher then moves the rows:
// - LocalDispatcher (MoE+LocalDispatcher.swift): world 1, or every expert on every rank. Each
//   rank serves its own rows, so send order already is expert-major: rows are packed straight
//   into the experts' input, outputs read where the experts wrote them. No exchange, no copy.
// - AllToAllDispatcher (MoE+AllToAllDispatcher.swift): counts exchange, alltoallv of the rows,
//   expert-major permutation; combine and backward run the same steps in reverse.
// Shape legend as in MoE.swift; S send rows, R received rows.
import Placement
import Tensor

/// Moves rows between the ranks that own tokens and the ranks that serve experts.
/// Forward: `dispatch` leaves the rows expert-major in s.xe; the experts write s.o; `combine`
/// returns the outputs home in send order. Backward: combine's backward writes each kept
/// assignment's output gradient at its send slot of `outputGradients`; `gradientsToExperts`
/// leaves them expert-major in sc.dOe; the experts write sc.dXe; `gradientsHome` returns them home
/// in send order.
protocol TokenDispatcher {
    /// Sources of the rows one rank's experts can receive (1 for a local layer, the world else):
    /// with the routed rows per rank, the bound of every expert-side buffer.
    var sources: Int { get }
    /// The send plan's rows of xs [rows, C] to their experts: s.xe [R, C] expert-major, with
    /// s.recvRows, s.expertStart/Rows and the experts' buffers sized.
    func dispatch(_ s: MoEState, x xs: UnsafePointer<Float>, plan: SendPlan) throws
    /// The experts' outputs s.o home: [S, C] in send order (kept for backward: `returned`).
    func combine(_ s: MoEState) throws -> UnsafePointer<Float>
    /// The outputs home as the last combine left them, [S, C] in send order.
    func returned(_ s: MoEState) -> UnsafePointer<Float>
    /// Where combine's backward writes the output gradients [S, C] in send order (sized here).
    func outputGradients(_ s: MoEState, _ sc: MoEScratch) -> UnsafeMutablePointer<Float>
    /// The output gradients to the experts, expert-major in sc.dOe [R, C]; sc.dXe sized and zeroed.
    func gradientsToExperts(_ s: MoEState, _ sc: MoEScratch) throws
    /// The experts' input gradients sc.dXe home: [S, C] in send order.
    func gradientsHome(_ s: MoEState, _ sc: MoEScratch) throws -> UnsafePointer<Float>
}

/// Where this rank's kept assignments go: rows per (destination rank, expert), [world * E]; each
/// assignment's row in send order is in the state's sendSlot.
struct SendPlan {
    let bucket: [Int]
    let k: Int  // experts per token in this forward
    /// Rows sent in all (S).
    var total: Int { bucket.reduce(0, +) }

    /// Copies each kept assignment's row of xs [rows, C] to its send slot of `into` [S, C].
    func pack(_ s: MoEState, x xs: UnsafePointer<Float>, into: UnsafeMutablePointer<Float>, c: Int) {
        let k = self.k
        Parallel.forEachBlock(s.rows, grain: MoELayer.rowGrain) { block in
            for r in block {
                for j in 0..<k where !s.dropped[r * k + j] {
                    (into + Int(s.sendSlot[r * k + j]) * c).update(from: xs + r * c, count: c)
                }
            }
        }
    }
}

/// What every dispatcher knows of its layer: the shape and the bounds of its buffers.
struct DispatchShape {
    let ctx: ParallelContext
    let layer: Int  // MoE layer index (placement row)
    let c: Int, f: Int, e: Int
    let preWidth: Int  // floats of pre-activation per routed row
    /// This rank's experts of the layer under ctx's placement, ascending (every expert in a local layer).
    let experts: [Int]

    init(ctx: ParallelContext, layer: Int, c: Int, f: Int, e: Int, preWidth: Int) {
        (self.ctx, self.layer, self.c, self.f, self.e, self.preWidth) = (ctx, layer, c, f, e, preWidth)
        experts = ctx.plan.localExperts(layer: layer, rank: ctx.comms.world.rank)
    }

    /// The most rows a rank routes: its tp share of the state's N rows, ceil(N / tp).
    func mostRoutedRows(_ s: MoEState) -> Int { (s.capacityRows + ctx.comms.tp.size - 1) / ctx.comms.tp.size }

    /// The most rows this rank sends in one exchange: its routed rows, K each.
    func mostSentRows(_ s: MoEState) -> Int { mostRoutedRows(s) * s.maxK }

    /// The most rows this rank's experts can receive from `sources` ranks, each sending its routed
    /// rows to at most min(K, local experts) of them (a token picks an expert once). Dropless
    /// routing can reach it when every token picks this rank; MemoryEstimate counts it.
    func mostReceivedRows(_ s: MoEState, sources: Int, localExperts: Int) -> Int {
        sources * mostRoutedRows(s) * min(s.maxK, localExperts)
    }

    /// s.expertStart/Rows from the rows received per (source, expert), [world * E] (source-major
    /// in the order they arrive), and the experts' buffers sized for them.
    func expertRanges(_ s: MoEState, received: [Int], experts: [Int], sources: Int) {
        let world = ctx.comms.world.size
        s.expertStart = []
        s.expertRows = []
        var placed = 0
        for ex in experts {
            s.expertStart.append(placed)
            for src in 0..<world { placed += received[src * e + ex] }
            s.expertRows.append(placed - s.expertStart.last!)
        }
        precondition(placed == s.recvRows.reduce(0, +), "a rank received rows for an expert it does not hold")
        let most = mostReceivedRows(s, sources: sources, localExperts: experts.count)
        s.o.reserve(placed * c, atMost: most * c)
        s.h.reserve(placed * preWidth, atMost: most * preWidth)
        s.a.reserve(placed * f, atMost: most * f)
    }

    /// dst[i] = src[perm[i]]: received order [R, C] to expert-major order.
    func expertMajor(_ s: MoEState, from src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        s.perm.withUnsafeBufferPointer { perm in
            Parallel.forEachBlock(perm.count, grain: MoELayer.rowGrain) { block in
                for i in block { (dst + i * c).update(from: src + Int(perm[i]) * c, count: c) }
            }
        }
    }

    /// dst[perm[i]] = src[i]: expert-major order [R, C] back to received order.
    func receivedOrder(_ s: MoEState, from src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        s.perm.withUnsafeBufferPointer { perm in
            Parallel.forEachBlock(perm.count, grain: MoELayer.rowGrain) { block in
                for i in block { (dst + Int(perm[i]) * c).update(from: src + i * c, count: c) }
            }
        }
    }
}

extension MoELayer {
    /// The dispatcher for `shape`'s layer under its context's placement.
    static func dispatcher(_ shape: DispatchShape) -> any TokenDispatcher {
        shape.ctx.localLayers[shape.layer] ? LocalDispatcher(shape: shape) : AllToAllDispatcher(shape: shape)
    }

    /// The counting sort: each kept assignment's destination (the replica that serves the token,
    /// PlacementPlan.replica) and its row in send order, s.sendSlot (destination, expert, token).
    /// Sets s.sendRows. `tokenOffset`: the global index of the first routed row.
    func sendPlan(_ s: MoEState, tokenOffset: Int) -> SendPlan {
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
        for r in 0..<rows {
            for j in 0..<k where !s.dropped[r * k + j] {
                let key = Int(destOf[r * k + j]) * e + Int(s.topIndex[r * k + j])
                s.sendSlot[r * k + j] = Int32(fill[key])
                fill[key] += 1
            }
        }
        return SendPlan(bucket: bucket, k: k)
    }
}
