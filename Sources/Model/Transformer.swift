// The decoder-only MoE transformer at one rank: parameters and the forward pass (per-block weights
// and activations: BlockActivations.swift).
// Shape legend: B batch (this rank's share), T time, N = B*T rows, C channels, H heads,
// Hl = H/tp local heads, Cl = C/tp local channels, D = C/H, F FFN hidden, E experts,
// K top-k, V vocab, L layers.
// Block: x += allreduce_tp(attn_local(rmsnorm1(x)) @ wo_local^T); x += ffn(rmsnorm2(x)) (MoE or
// dense). Then final rmsnorm, output head, cross-entropy. Rows are replicated over the tp group;
// the MoE routes a disjoint slice of them per tp rank (MoE.swift). Backward: Transformer+Backward.swift.
import Comm
import Tensor

/// One rank's share of the model: `forward` computes the loss of its rows, `forwardBackward` also
/// accumulates their gradients into `store.grads` (ShardedAdamW reduces them and updates).
/// Both return what they computed (StepOutputs).
public final class Transformer: @unchecked Sendable {
    public let config: ModelConfig
    public let store: ParameterStore
    public let ctx: ParallelContext
    /// The largest batch `forward` accepts (buffers are sized for maxBatch x seqLen).
    public let maxBatch: Int
    /// When set, forward and backward charge their time to regions (see `switchyard bench`).
    public var profile: KernelProfile?
    /// Called by backward after each stage that finishes gradients: the head and final norm
    /// (2 nLayer), block l's FFN half (2l + 1) and attention half (2l), the embeddings (-1). The
    /// trainer sets it for the last micro-batch of an overlapped reduction (ShardedAdamW.gradientsFinal).
    public var gradientsFinal: ((Int) throws -> Void)?
    /// What backward recomputes (see `Recompute`).
    public let recompute: Recompute

    let weights: [BlockWeights]
    let gradients: [BlockWeights]
    let blocks: [BlockActivations]
    var moeLayers: [MoELayer?]
    let resid: [FloatBuffer]  // L+1 x [N, C]: resid[l] is block l's input
    let lnf: FloatBuffer  // [N, C]
    let rstdf: FloatBuffer  // [N]
    let logits: FloatBuffer  // [N, V]
    /// Rope's cos/sin for positions 0..<T (nil: learned positions).
    let rope: RopeTable?
    let losses: FloatBuffer  // [N]
    let gatherScratch: FloatBuffer  // tp all-gather of rows
    var tokens: [Int32]  // [N]
    var targets: [Int32]  // [N]
    var scratch: BackwardScratch

    /// The most experts per token `activeTopK` may be set to (the MoE state is sized for it).
    public let maxTopK: Int

    /// `ctx` defaults to world size 1; `store` defaults to a new store for ctx's layout. `maxTopK`
    /// (at least config.topK) sizes the MoE state for a topK schedule or inference's --top-k.
    public init(
        config: ModelConfig, maxBatch: Int, context: ParallelContext? = nil, store: ParameterStore? = nil,
        moe options: MoEOptions = MoEOptions(), recompute: Recompute = .none, maxTopK: Int? = nil
    ) {
        self.maxTopK = min(config.nExpert, max(maxTopK ?? config.topK, config.topK))
        self.recompute = recompute
        precondition(maxBatch >= 1, "maxBatch must be >= 1")
        let ctx = context ?? .single(config)
        self.ctx = ctx
        self.config = config
        self.maxBatch = maxBatch
        let store = store ?? ParameterStore(config: config, layout: ctx.layout)
        self.store = store
        let n = maxBatch * config.seqLen, tp = ctx.mesh.tp
        (weights, gradients) = Transformer.bind(store, config: config, context: ctx)
        blocks = Transformer.activations(
            config: config, n: n, b: maxBatch, tp: tp, recompute: recompute, maxTopK: self.maxTopK)
        resid = (0...config.nLayer).map { _ in FloatBuffer(count: n * config.nEmbd) }
        lnf = FloatBuffer(count: n * config.nEmbd)
        rstdf = FloatBuffer(count: n)
        logits = FloatBuffer(count: n * config.vocabSize)
        rope =
            config.usesRope
            ? RopeTable(positions: config.seqLen, headSize: config.headSize, theta: config.ropeTheta) : nil
        losses = FloatBuffer(count: n)
        gatherScratch = FloatBuffer(count: 2 * tp * ((n + tp - 1) / tp) * config.nEmbd)
        tokens = Array(repeating: 0, count: n)
        targets = Array(repeating: 0, count: n)
        scratch = BackwardScratch(config: config, n: n, tp: tp, maxTopK: self.maxTopK)
        let moeLayerOf = Dictionary(uniqueKeysWithValues: config.moeBlocks.enumerated().map { ($1, $0) })
        let (w, g, b, sc, gather) = (weights, gradients, blocks, scratch.moe, gatherScratch.base)
        moeLayers = (0..<config.nLayer).map { l in
            moeLayerOf[l].map {
                MoELayer(
                    ctx: ctx, layer: $0, config: config, k: config.topK, options: options,
                    weights: (w[l].moe!, g[l].moe!), state: b[l].moe!, scratch: sc, gatherScratch: gather)
            }
        }
    }

    /// Experts per token of every MoE block from the next forward on (1...maxTopK).
    public var activeTopK: Int {
        get { moeLayers.compactMap { $0 }.first?.k ?? config.topK }
        set {
            precondition(newValue >= 1 && newValue <= maxTopK, "activeTopK must be in 1...maxTopK (\(maxTopK))")
            for i in moeLayers.indices { moeLayers[i]?.k = newValue }
        }
    }

    /// The same model share under a new placement: `store` (laid out for `context`, whose mesh
    /// must be `other`'s) replaces `other`'s parameters, and `other`'s activation and scratch
    /// buffers are reused, since none of them depends on the placement (re-placement would
    /// otherwise allocate and page in hundreds of MB per migration). `other` must not be used
    /// afterwards.
    public init(rebinding other: Transformer, context: ParallelContext, store: ParameterStore) {
        precondition(
            context.mesh.tp == other.ctx.mesh.tp && context.mesh.rank == other.ctx.mesh.rank, "rebinding keeps the mesh"
        )
        config = other.config; maxBatch = other.maxBatch; ctx = context; self.store = store; profile = other.profile
        recompute = other.recompute; maxTopK = other.maxTopK
        (weights, gradients) = Transformer.bind(store, config: config, context: context)
        let (w, g) = (weights, gradients)
        moeLayers = other.moeLayers.enumerated().map { l, layer in
            layer.map { $0.rebound(to: context, weights: (w[l].moe!, g[l].moe!)) }
        }
        blocks = other.blocks; resid = other.resid; lnf = other.lnf; rstdf = other.rstdf; logits = other.logits
        rope = other.rope
        losses = other.losses; gatherScratch = other.gatherScratch; tokens = other.tokens; targets = other.targets
        scratch = other.scratch
    }

    /// Every block's activations: its own (none), or views of shared ones (see `Recompute`).
    static func activations(config m: ModelConfig, n: Int, b: Int, tp: Int, recompute: Recompute, maxTopK: Int)
        -> [BlockActivations]
    {
        func make(_ l: Int, _ attention: BlockActivations? = nil) -> BlockActivations {
            BlockActivations(config: m, n: n, b: b, tp: tp, moe: m.isMoE(l), maxTopK: maxTopK, attention: attention)
        }
        switch recompute {
        case .none: return (0..<m.nLayer).map { make($0) }
        case .attention:
            let first = make(0)
            return [first] + (1..<m.nLayer).map { make($0, first) }
        case .block:
            var shared: [Bool: BlockActivations] = [:]
            return (0..<m.nLayer).map { l in
                if let s = shared[m.isMoE(l)] { return s }
                let a = make(l, shared.values.first)
                shared[m.isMoE(l)] = a
                return a
            }
        }
    }

    /// Pointers of every block into `store`'s parameters and gradients, with the local experts
    /// of `context`'s placement.
    static func bind(_ store: ParameterStore, config: ModelConfig, context: ParallelContext) -> (
        [BlockWeights], [BlockWeights]
    ) {
        var w: [BlockWeights] = [], g: [BlockWeights] = []
        var moeIndex = 0
        for l in 0..<config.nLayer {
            let experts = config.isMoE(l) ? context.plan.localExperts(layer: moeIndex, rank: context.mesh.rank) : []
            if config.isMoE(l) { moeIndex += 1 }
            w.append(Transformer.blockWeights(store, store.params, layer: l, experts: experts, config: config))
            g.append(Transformer.blockWeights(store, store.grads, layer: l, experts: experts, config: config))
        }
        return (w, g)
    }

    static func blockWeights(_ s: ParameterStore, _ buf: FloatBuffer, layer l: Int, experts: [Int], config: ModelConfig)
        -> BlockWeights
    {
        let p = "layers.\(l).", swiglu = config.usesSwiGLU
        func ptr(_ name: String) -> UnsafeMutablePointer<Float> { s.pointer(p + name, in: buf) }
        let moe: MoEWeights? =
            config.isMoE(l)
            ? MoEWeights(
                router: ptr("moe.router.weight"), experts: experts,
                ffn: experts.map {
                    FFNWeights(s, buf, prefix: ModelConfig.expertPrefix(block: l, expert: $0), swiglu: swiglu)
                }) : nil
        return BlockWeights(
            norm1: ptr("norm1.weight"), wq: ptr("attn.wq.weight"), wk: ptr("attn.wk.weight"),
            wv: ptr("attn.wv.weight"), wo: ptr("attn.wo.weight"), norm2: ptr("norm2.weight"),
            qkNorm: config.usesQKNorm ? QKNormWeights(q: ptr("attn.qnorm.weight"), k: ptr("attn.knorm.weight")) : nil,
            headRouter: config.usesMoH ? ptr("attn.router.weight") : nil,
            ffn: moe == nil ? FFNWeights(s, buf, prefix: p + "ffn.", swiglu: swiglu) : nil, moe: moe,
            shared: moe == nil
                ? []
                : (0..<config.nSharedExperts).map {
                    FFNWeights(s, buf, prefix: p + "moe.shared.\($0).", swiglu: swiglu)
                })
    }

    /// Runs the model on a micro-batch [B, T] and returns its loss sum, routing and balance losses
    /// (and the logits [N, V] when `keepLogits`). Every rank of the world must call it (the MoE
    /// exchanges rows), tp ranks with the same rows.
    public func forward(_ mb: MicroBatch, keepLogits: Bool = false) throws -> StepOutputs {
        let rows = try load(mb)
        var out = try forwardPass(rows)
        if keepLogits { out.logits = Array(UnsafeBufferPointer(start: logits.base, count: rows.n * config.vocabSize)) }
        return out
    }

    /// Forward, then backward of `objective`, accumulating this rank's gradients into store.grads
    /// (zeroed by the optimizer once per step; micro-batches add up). Collective, as `forward`.
    public func forwardBackward(_ mb: MicroBatch, objective: Objective) throws -> StepOutputs {
        let rows = try load(mb)
        let out = try forwardPass(rows)
        try backward(rows, objective: objective)
        return out
    }

    /// Copies the micro-batch's tokens and targets into the model's buffers; its rows.
    func load(_ mb: MicroBatch) throws -> PassRows {
        let b = mb.batch, t = mb.time
        precondition(b >= 1 && b <= maxBatch && t >= 1 && t <= config.seqLen, "batch/time outside the allocated shape")
        precondition(mb.tokens.count == b * t && mb.targets.count == b * t, "tokens/targets must hold B*T entries")
        for i in 0..<(b * t) { tokens[i] = mb.tokens[i]; targets[i] = mb.targets[i] }
        return mb.rows
    }

    /// Embedding, every block, the head and the loss of the loaded rows.
    func forwardPass(_ rows: PassRows) throws -> StepOutputs {
        let m = config, n = rows.n
        timed(.embedding) {
            tokens.withUnsafeBufferPointer { tokenIds in
                Embedding.forward(
                    out: resid[0].base, tokens: tokenIds.baseAddress!,
                    wte: store.pointer("embed.weight", in: store.params),
                    wpe: rope == nil ? store.pointer("pos.weight", in: store.params) : nil, b: rows.batch,
                    t: rows.time, c: m.nEmbd)
            }
        }
        var out = StepOutputs()
        for l in 0..<m.nLayer {
            try attentionForward(layer: l, rows)
            if let moeAux = try feedForward(layer: l, rows) { out.aux.append(moeAux) }
            // Read now: with recompute = block the MoE blocks share one state.
            if let s = blocks[l].moe {
                out.z.append(s.zLoss)
                out.expertCounts.append(s.globalCounts)
                out.dropped.append(s.droppedGlobal)
            }
        }
        out.lossSum = headForward(n: n)
        out.tokens = n
        return out
    }

    /// Block l's attention half: a.mid = x + wo(attention(rmsnorm1(x))), reduced over tp.
    func attentionForward(layer l: Int, _ rows: PassRows) throws {
        let n = rows.n, c = config.nEmbd, tp = ctx.mesh.tp, sh = attentionShape, t = rows.time
        let w = weights[l], a = blocks[l], x = resid[l].base
        try projectQKV(layer: l, n: n, rope: rope) { $0 % t }
        timed(.attnCore) {
            Attention.forward(
                y: a.y.base, lse: a.lse.base, q: a.q.base, k: a.k.base, v: a.v.base, b: rows.batch, t: t, h: sh.hl,
                kvHeads: sh.gl, d: sh.d, ldq: sh.ql, ldkv: sh.kvl, scratch: scratch.attention)
        }
        let y = timed(.attnProjections) { gateHeads(layer: l, n: n) }
        if tp == 1 {
            timed(.attnProjections) {
                a.mid.base.update(from: x, count: n * c)
                Linear.forward(
                    out: a.mid.base, inp: y, weight: w.wo, n: n, inFeatures: sh.ql, outFeatures: c,
                    accumulate: true)
            }
        } else {
            timed(.attnProjections) {
                Linear.forward(out: a.attnOut.base, inp: y, weight: w.wo, n: n, inFeatures: sh.ql, outFeatures: c)
            }
            try ctx.allreduce(a.attnOut.base, n * c, over: ctx.comms.tp)
            for i in 0..<(n * c) { a.mid.base[i] = x[i] + a.attnOut.base[i] }
        }
    }

    /// Block l's FFN half: resid[l + 1] = a.mid + ffn(rmsnorm2(a.mid)), MoE or dense. Returns the
    /// MoE block's balance loss (nil for a dense block).
    func feedForward(layer l: Int, _ rows: PassRows) throws -> Float? {
        let n = rows.n, c = config.nEmbd
        let w = weights[l], a = blocks[l], out = resid[l + 1].base
        timed(.norms) {
            RMSNorm.forward(
                out: a.ln2.base, rstd: a.rstd2.base, x: a.mid.base, weight: w.norm2, n: n, c: c, eps: normEps)
        }
        out.update(from: a.mid.base, count: n * c)
        if let layer = moeLayers[l] {
            let aux = try layer.forward(
                out: out, x: a.ln2.base, n: n, tokenOffset: rows.tokenOffset, globalTokens: rows.globalTokens,
                profile: profile)
            // Shared experts: every row, on every tp rank (replicated like the dense FFN).
            timed(.denseFFN) {
                for (i, sw) in w.shared.enumerated() {
                    MLP.forward(
                        o: out, pre: a.sharedPre[i].base, a: a.sharedAct[i].base, x: a.ln2.base, w: sw, n: n, c: c,
                        f: config.ffHidden, accumulate: true)
                }
            }
            return aux
        }
        timed(.denseFFN) {
            MLP.forward(
                o: out, pre: a.h!.base, a: a.a!.base, x: a.ln2.base, w: w.ffn!, n: n, c: c, f: config.ffHidden,
                accumulate: true)
        }
        return nil
    }

    /// Final norm, output head and cross-entropy; returns the sum of the rows' losses.
    func headForward(n: Int) -> Double {
        let m = config, c = m.nEmbd
        timed(.norms) {
            RMSNorm.forward(
                out: lnf.base, rstd: rstdf.base, x: resid[m.nLayer].base,
                weight: store.pointer("norm.weight", in: store.params), n: n, c: c, eps: normEps)
        }
        timed(.headLoss) {
            Linear.forward(
                out: logits.base, inp: lnf.base, weight: store.pointer("head.weight", in: store.params),
                n: n, inFeatures: c, outFeatures: m.vocabSize)
            targets.withUnsafeBufferPointer { targetIds in
                CrossEntropy.forward(
                    losses: losses.base, logits: logits.base, targets: targetIds.baseAddress!, n: n, v: m.vocabSize)
            }
        }
        var sum: Double = 0
        for i in 0..<n { sum += Double(losses.base[i]) }
        return sum
    }

}
