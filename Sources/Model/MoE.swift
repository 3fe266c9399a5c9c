// The expert-parallel MoE FFN. Inside a tp group activations are replicated, so each tp rank
// routes a disjoint slice of its rows. Forward, top to bottom: route (router logits + bias,
// softmax, top-k, global balance loss), apply the capacity limit, dispatch (MoE+Dispatch.swift:
// sort assignments by (destination rank, expert, token), exchange counts, alltoallv the rows,
// permute them expert-major), one MLP (sgemm pair) per local expert over every row it received,
// combine (reverse alltoallv, weighted sum per token in slot order: a fixed summation order), and
// all-gather the slices over tp. The moving of rows is a TokenDispatcher's (MoE+Dispatch.swift):
// an all-to-all one, or a local one that moves nothing (world 1, every expert on every rank).
// Shape legend: N rows (this rank's B_local*T), C channels, F hidden, E experts, K top-k,
// S send rows (this rank's assignments), R received rows (assignments this rank's experts serve).
// Forward *adds* into the residual stream; backward *accumulates* into dx and weight grads.
import Clock
import Placement
import Tensor

/// Pointers to one MoE block's router and local experts (params or grads).
struct MoEWeights {
    let router: UnsafeMutablePointer<Float>  // [E, C]
    let experts: [Int]  // local expert ids, ascending
    let ffn: [FFNWeights]  // per local expert
}

/// How every MoE block of a model routes, beyond its shape.
public struct MoEOptions: Sendable {
    /// 0: dropless. Otherwise each expert serves at most ceil(capacityFactor * tokens * K / E)
    /// assignments of the global batch; later ones (in global token order, then top-k order) are dropped.
    public var capacityFactor = 0.0
    /// [E] constants added to the router logits before softmax and top-k (nil: none). A constant
    /// shifts routing without changing backward (benchmarks skew routing with it).
    public var logitBias: [Float]? = nil
    /// Aux-loss-free balancing's per-block selection biases (nil: none); see RouterBias.
    public var selectionBias: RouterBias? = nil
    public init(capacityFactor: Double = 0, logitBias: [Float]? = nil, selectionBias: RouterBias? = nil) {
        self.capacityFactor = capacityFactor
        self.logitBias = logitBias
        self.selectionBias = selectionBias
    }
}

/// Everything one MoE block keeps from forward for backward.
final class MoEState {
    let e: Int
    let maxK: Int  // the most experts per token its [N, K] buffers hold
    let capacityRows: Int  // N: the most rows of its [N, ...] buffers
    var rowStart = 0, rows = 0
    let logits, probs: FloatBuffer  // [N, E] (first `rows` used)
    let topIndex: UnsafeMutablePointer<Int32>  // [N, K]
    let topWeight: FloatBuffer  // [N, K]
    let share: FloatBuffer  // [E] global assignment shares
    let lse: FloatBuffer  // [N] logsumexp of each row's router logits (z-loss)
    var zLoss: Float = 0  // this block's router z-loss over the global batch
    var globalCounts: [Int]  // tokens per expert over the global batch
    let dropped: UnsafeMutablePointer<Bool>  // [N, K] true: over capacity, the token skips that expert
    let sendSlot: UnsafeMutablePointer<Int32>  // [N, K] row in send order (kept assignments only)
    var droppedGlobal = 0  // assignments dropped over the global batch
    var sendRows: [Int] = [], recvRows: [Int] = []  // rows to / from each rank
    var perm: [Int32] = []  // expert-major row i <- received row perm[i]
    var expertStart: [Int] = [], expertRows: [Int] = []
    /// Local experts by rows received, most first (ties by index): the order work items are
    /// handed out in, so that a busy expert does not start last. Each item writes only its own
    /// outputs, so the order changes no bit.
    var busiestFirst: [Int] { expertRows.indices.sorted { (-expertRows[$0], $0) < (-expertRows[$1], $1) } }
    /// The all-to-all dispatcher's wire buffers (empty in a local layer).
    let exchange = ExchangeBuffers()
    // [R, C], pre-activations [R, F] (SwiGLU: per expert [2, rows, F]), activations [R, F], [R, C]
    let xe = GrowBuffer(), h = GrowBuffer(), a = GrowBuffer(), o = GrowBuffer()

    init(n: Int, e: Int, k: Int) {
        self.e = e
        self.maxK = k
        capacityRows = n
        logits = FloatBuffer(count: n * e)
        probs = FloatBuffer(count: n * e)
        topIndex = .allocate(capacity: n * k)
        topIndex.initialize(repeating: 0, count: n * k)
        topWeight = FloatBuffer(count: n * k)
        share = FloatBuffer(count: e)
        lse = FloatBuffer(count: n)
        globalCounts = Array(repeating: 0, count: e)
        dropped = .allocate(capacity: n * k)
        dropped.initialize(repeating: false, count: n * k)
        sendSlot = .allocate(capacity: n * k)
        sendSlot.initialize(repeating: 0, count: n * k)
    }
    deinit {
        topIndex.deallocate()
        dropped.deallocate()
        sendSlot.deallocate()
    }
}

/// Backward scratch for MoE blocks.
final class MoEScratch {
    let dXe = GrowBuffer(), dOe = GrowBuffer()  // the experts' input and output gradients [R, C]
    /// The all-to-all dispatcher's backward wire buffers (empty in local layers).
    let exchange = GradientExchangeBuffers()
    let hidden = WorkerScratch()  // per thread: dA [rows, F] and dPre (as pre) of one expert
    let dLogits, dProbs, dTopWeight, rowScratch: FloatBuffer
    init(n: Int, e: Int, k: Int) {
        dLogits = FloatBuffer(count: n * e)
        dProbs = FloatBuffer(count: n * e)
        dTopWeight = FloatBuffer(count: n * k)
        rowScratch = FloatBuffer(count: e)
    }
}

/// One MoE block at this rank: its weights' views, its state (shared between blocks under
/// recompute = block) and scratch, and the dispatcher its placement calls for.
struct MoELayer {
    private(set) var ctx: ParallelContext  // replaced when a re-placement rebinds the model
    let layer: Int  // MoE layer index (placement row)
    let c: Int, f: Int, e: Int
    /// Experts per token in this forward (train.topKSchedule and inference's --top-k change it;
    /// at most the k the block's state was allocated for).
    var k: Int
    let swiglu: Bool
    /// Renormalise the top-k weights (model.normTopK).
    let normTopK: Bool
    let options: MoEOptions
    /// false: SMoE-Dropout's fixed random router; backward leaves its gradient at zero.
    var trainRouter = true
    /// The router and local experts: parameters and gradients.
    private(set) var w: MoEWeights, g: MoEWeights
    let s: MoEState
    let sc: MoEScratch
    /// The tp all-gather's scratch (see ParallelContext.allgatherRowsTP).
    let gatherScratch: UnsafeMutablePointer<Float>
    /// The shape and buffer bounds its dispatcher sees, and the dispatcher (made again on rebinding).
    private(set) var shape: DispatchShape
    private(set) var dispatcher: any TokenDispatcher

    init(
        ctx: ParallelContext, layer: Int, config m: ModelConfig, k: Int, options: MoEOptions,
        weights: (w: MoEWeights, g: MoEWeights), state: MoEState, scratch: MoEScratch,
        gatherScratch: UnsafeMutablePointer<Float>
    ) {
        self.ctx = ctx
        self.layer = layer
        (c, f, e, self.k, swiglu, normTopK) = (m.nEmbd, m.ffHidden, m.nExpert, k, m.usesSwiGLU, m.normTopK)
        self.options = options
        trainRouter = !m.usesRandomRouter
        (w, g) = weights
        s = state
        sc = scratch
        self.gatherScratch = gatherScratch
        shape = DispatchShape(
            ctx: ctx, layer: layer, c: m.nEmbd, f: m.ffHidden, e: m.nExpert,
            preWidth: MLP.preWidth(f: m.ffHidden, swiglu: m.usesSwiGLU))
        dispatcher = MoELayer.dispatcher(shape)
    }

    /// The same block under a new placement: its context, weights and dispatcher.
    func rebound(to context: ParallelContext, weights: (w: MoEWeights, g: MoEWeights)) -> MoELayer {
        var m = self
        m.ctx = context
        (m.w, m.g) = weights
        m.shape = DispatchShape(ctx: context, layer: layer, c: c, f: f, e: e, preWidth: preWidth)
        m.dispatcher = MoELayer.dispatcher(m.shape)
        return m
    }

    /// Floats of pre-activation per routed row.
    var preWidth: Int { MLP.preWidth(f: f, swiglu: swiglu) }

    /// out[N, C] += MoE(x[N, C]). `tokenOffset` is the global index of row 0 (replica choice);
    /// `globalTokens` the tokens in the whole batch (balance loss). Returns aux (global).
    func forward(
        out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, n: Int, tokenOffset: Int, globalTokens: Int,
        profile: KernelProfile?
    ) throws -> Float {
        var clock = RegionClock(profile)
        let mine = ctx.tpRows(n, rank: ctx.comms.tp.rank)
        s.rowStart = mine.start
        s.rows = mine.end - mine.start
        let xs = x + mine.start * c
        let aux = try route(s: s, x: xs, router: w.router, globalTokens: globalTokens)
        try applyCapacity(s: s, globalTokens: globalTokens)
        clock.lap(.router)
        try dispatcher.dispatch(s, x: xs, plan: sendPlan(s, tokenOffset: tokenOffset + mine.start))
        clock.lap(.dispatchCombine)
        // One work item per local expert: each writes its own rows of o, h and a.
        let order = s.busiestFirst
        Parallel.forEach(order.count) { item, _ in
            let li = order[item], st = s.expertStart[li]
            MLP.forward(
                o: s.o.base + st * c, pre: s.h.base + st * preWidth, a: s.a.base + st * f, x: s.xe.base + st * c,
                w: w.ffn[li], n: s.expertRows[li], c: c, f: f)
        }
        clock.lap(.experts)
        try combine(out: out, n: n)
        clock.lap(.dispatchCombine)
        return aux
    }

    /// The experts' outputs home, then out's owned rows += sum_k w[n, k] * o in slot order; then
    /// the rows all-gathered over tp.
    func combine(out: UnsafeMutablePointer<Float>, n: Int) throws {
        let home = try dispatcher.combine(s)
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

    /// Rows per work item of the copies and sums of dispatch and combine (each row writes only its
    /// own outputs).
    static var rowGrain: Int { 128 }

    /// Routes this rank's rows xs [rows, C]: logits (+ bias), softmax, top-k into s; the global
    /// expert counts and the balance loss (one world allreduce). Returns the balance loss.
    func route(s: MoEState, x xs: UnsafePointer<Float>, router: UnsafePointer<Float>, globalTokens: Int) throws
        -> Float
    {
        let rows = s.rows
        Linear.forward(out: s.logits.base, inp: xs, weight: router, n: rows, inFeatures: c, outFeatures: e)
        if let bias = options.logitBias {
            for j in 0..<e {
                for r in 0..<rows { s.logits.base[r * e + j] += bias[j] }
            }
        }
        Router.forward(
            probs: s.probs.base, topIndex: s.topIndex, topWeight: s.topWeight.base, logits: s.logits.base, n: rows,
            e: e, k: k, selectionBias: options.selectionBias?.pointer(layer: layer), normalize: normTopK)
        var sums = [Double](repeating: 0, count: 2 * e + 1)  // counts, probability sums, sum of lse^2
        sums.withUnsafeMutableBufferPointer { p in
            LoadBalance.accumulate(
                counts: p.baseAddress!, probSums: p.baseAddress! + e, probs: s.probs.base, topIndex: s.topIndex,
                n: rows, e: e, k: k)
        }
        sums[2 * e] = RouterZLoss.forward(lse: s.lse.base, logits: s.logits.base, n: rows, e: e)
        try ctx.allreduceWorld(&sums)
        s.zLoss = Float(sums[2 * e] / Double(globalTokens))
        for j in 0..<e { s.globalCounts[j] = Int(sums[j]) }
        return sums.withUnsafeBufferPointer {
            LoadBalance.loss(
                f: s.share.base, counts: $0.baseAddress!, probSums: $0.baseAddress! + e, tokens: globalTokens, e: e,
                k: k)
        }
    }

    /// Marks assignments over capacity in s.dropped, identically on every layout: ranks own
    /// consecutive token ranges in rank order, so an exclusive prefix over ranks of the per-expert
    /// counts gives each assignment its position in the global order.
    func applyCapacity(s: MoEState, globalTokens: Int) throws {
        s.dropped.update(repeating: false, count: s.rows * k)
        s.droppedGlobal = 0
        guard options.capacityFactor > 0 else { return }
        let capacity = Int((options.capacityFactor * Double(globalTokens * k) / Double(e)).rounded(.up))
        var local = [Int64](repeating: 0, count: e)
        for i in 0..<(s.rows * k) { local[Int(s.topIndex[i])] += 1 }
        let all = try ctx.comms.world.allgather(local)  // [world, E]
        let me = ctx.comms.world.rank
        var position = (0..<e).map { ex in (0..<me).reduce(0) { $0 + Int(all[$1 * e + ex]) } }
        for i in 0..<(s.rows * k) {
            let ex = Int(s.topIndex[i])
            s.dropped[i] = position[ex] >= capacity
            position[ex] += 1
        }
        for ex in 0..<e {
            let total = (0..<ctx.comms.world.size).reduce(0) { $0 + Int(all[$1 * e + ex]) }
            s.droppedGlobal += max(0, total - capacity)
        }
    }
}

/// Charges consecutive spans of a function to profile regions (no clock calls without a profile).
struct RegionClock {
    let profile: KernelProfile?
    var last: Double
    init(_ p: KernelProfile?) {
        profile = p
        last = p == nil ? 0 : monotonicSeconds()
    }
    @inline(__always) mutating func lap(_ r: ProfileRegion) {
        guard let p = profile else { return }
        let t = monotonicSeconds()
        p.add(r, t - last)
        last = t
    }
}
