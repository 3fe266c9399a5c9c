// Bytes one rank allocates for training, estimated from the shapes before anything is allocated
// (the pre-check in `train`), in Double so that absurd sizes give a figure instead of an overflow.
// Shape legend as in Transformer.swift; N = B*T rows of this rank's dp slice, W threads per rank.
// A rank routes S = ceil(N / tp) rows and sends S*K; it can receive up to world*S*min(K, local
// experts) (every token choosing its experts), and dropless routing of an untrained router comes
// close to that, so the MoE's received-row buffers are counted at that bound (they are capped there).
import Placement
import Tensor

public struct MemoryEstimate: Sendable, Equatable {
    /// Parameters, gradients and both AdamW moments.
    public var stateBytes: Double
    /// Saved activations, backward scratch and the MoE's exchange buffers.
    public var activationBytes: Double
    /// The checkpoint snapshot buffer (parameters and both moments; 0 without checkpoints).
    public var checkpointBytes: Double
    /// Floats of this rank's parameter share.
    public var parameters: Double
    /// The process before any model (the binary, Swift's runtime and Foundation, OpenBLAS and MPI),
    /// and the matrix products' packing scratch (OpenBLAS's own buffers are in the baseline; CGemm's
    /// packed weights are counted from the shapes); with train.overlapReduce, the two-rank sums'
    /// copies of the gradients in flight (at most the rank's parameters; none on one node).
    public var runtimeBytes: Double

    /// Measured: tiny.json (15 MB of model) peaks at 62 MB resident at world 1 on the CI machine.
    public static let runtimeBaseline = 48e6

    public var totalBytes: Double { stateBytes + activationBytes + checkpointBytes + runtimeBytes }

    public init(
        stateBytes: Double, activationBytes: Double, checkpointBytes: Double, parameters: Double,
        runtimeBytes: Double = 0
    ) {
        self.stateBytes = stateBytes; self.activationBytes = activationBytes
        self.checkpointBytes = checkpointBytes; self.parameters = parameters; self.runtimeBytes = runtimeBytes
    }

    /// The estimate for `rank` of a layout of `world` ranks with `tp` and `plan`, batch rows
    /// `maxBatch` x T, and the saved activations `recompute` keeps (shared buffers counted once).
    public static func perRank(
        config m: ModelConfig, world worldSize: Int, tp: Int, plan: PlacementPlan, rank: Int, maxBatch: Int,
        threads: Int, checkpoints: Bool, recompute: Recompute = .none, momentsOverDP dp: Int = 1,
        overlapReduce: Bool = false
    ) -> MemoryEstimate {
        let s = EstimateShape(config: m, tp: tp, maxBatch: maxBatch, world: worldSize)
        let b = s.blocks(plan: plan, rank: rank)
        let params = s.outsideBlocks + b.params
        // Moments of everything replicated over dp are split over dp with train.shardOptimizer.
        let moments = b.ownMoments + (params - b.ownMoments) / Double(max(dp, 1))
        return MemoryEstimate(
            stateBytes: 8 * params + 8 * moments,
            activationBytes: 4 * s.activations(b, recompute: recompute, threads: threads),
            checkpointBytes: checkpoints ? 4 * params + 8 * moments : 0,
            parameters: params,
            runtimeBytes: runtimeBaseline + 4 * Double(max(threads, 1)) * s.packedWeight
                + (overlapReduce ? 4 * params : 0))
    }
}

/// The shapes the estimate counts in floats (all whole numbers, so sums are exact in Double).
struct EstimateShape {
    let m: ModelConfig
    let worldSize: Int
    let c, f, e, k, v, t, hl, n, routed, sent, world, mats, pre: Double
    /// This rank's q/y and k/v row widths (Hl*D, Gl*D) and key/value heads.
    let ql, kvl, gl: Double
    let maxBatch: Double

    init(config m: ModelConfig, tp: Int, maxBatch: Int, world worldSize: Int) {
        self.m = m
        self.worldSize = worldSize
        (c, f, e, k) = (Double(m.nEmbd), Double(m.ffHidden), Double(m.nExpert), Double(m.topK))
        (v, t) = (Double(m.vocabSize), Double(m.seqLen))
        hl = Double(m.nHead / max(tp, 1))
        (ql, kvl) = (Double(m.qWidth / max(tp, 1)), Double(m.kvWidth / max(tp, 1)))
        gl = Double(m.kvHeads / max(tp, 1))
        self.maxBatch = Double(maxBatch)
        n = Double(maxBatch) * Double(m.seqLen)
        routed = (n / Double(max(tp, 1))).rounded(.up)
        sent = routed * k
        world = Double(max(worldSize, 1))
        (mats, pre) = (Double(m.ffnMatrices.count), Double(m.ffnPreactWidth))
    }

    /// Parameters outside the blocks: embed, head, positions, final norm.
    var outsideBlocks: Double { 2 * v * c + (m.usesRope ? 0 : t * c) + c }

    /// What the blocks add up to at one rank.
    struct Blocks {
        var params = 0.0
        var ownMoments = 0.0  // experts and routers: their moments are never split over dp
        var moe: [Double] = []  // each MoE block's state
        var received = 0.0  // the most rows one block's experts receive
        var exchanging = false  // some MoE layer is not local
    }

    /// An MoE block's state: router rows, sent rows (send, return) and received rows at their
    /// bound (the expert side, xe, o; pre, a); a local layer only xe, o, pre, a.
    func blocks(plan: PlacementPlan, rank: Int) -> Blocks {
        var b = Blocks()
        let hr = Double(m.headRouterRows), shared = Double(m.nSharedExperts), dense = n * (f + pre)
        var moeLayer = 0
        // q/k norm weights: per head [D] each, reduced over the world (moments never split), or
        // the whole projection's, split over tp with wq and wk.
        let d = Double(m.headSize), qkNorm = m.qkNorm == "head" ? 2 * d : m.qkNorm == "full" ? ql + kvl : 0
        for l in 0..<m.nLayer {
            b.params += 2 * c * (ql + kvl) + qkNorm + 2 * c + hr * c
            b.ownMoments += hr * c + (m.qkNorm == "head" ? qkNorm : 0)  // reduced over the world
            guard m.isMoE(l) else {
                b.params += mats * c * f
                continue
            }
            let local = Double(plan.localExperts(layer: moeLayer, rank: rank).count)
            b.params += e * c + (local + shared) * mats * c * f
            b.ownMoments += e * c + local * mats * c * f
            let isLocal = plan.isLocal(layer: moeLayer, world: worldSize)
            let most = (isLocal ? 1 : world) * routed * min(k, local)
            b.received = max(b.received, most)
            b.exchanging = b.exchanging || !isLocal
            let rows = isLocal ? most * (2 * c + f + pre) : 2 * sent * c + most * (3 * c + f + pre)
            b.moe.append(2 * n * e + 2 * n * k + rows + shared * dense)
            moeLayer += 1
        }
        return b
    }

    /// Saved activations, backward scratch and the MoE's exchange buffers, in floats.
    func activations(_ b: Blocks, recompute: Recompute, threads: Int) -> Double {
        var acts = Double(m.nLayer + 1) * n * c + 3 * n * c + n * v * 2 + 2 * n  // resid, lnf, gather, logits, dLogits
        acts += 2 * n * c + 2 * n * (ql + kvl) + (m.hasDenseMLP ? n * (f + pre) : 0)  // backward scratch
        // q/k norm: the pre-norm rows and their rstd (per head or per row); dq, dk before the norm.
        let qk = m.usesQKNorm ? n * (ql + kvl) + (m.qkNorm == "head" ? n * (hl + gl) : 2 * n) : 0
        if m.usesQKNorm { acts += n * (ql + kvl) + (m.qkNorm == "full" ? n : 0) }
        // MoH: the head router's state (logits, probs, gates, chosen, gated rows) and scratch.
        let hr = Double(m.headRouterRows), h = Double(m.nHead)
        let heads = m.usesMoH ? n * (2 * hr + 2 * h + ql) : 0
        if m.usesMoH { acts += n * (ql + h + hr) }
        // A block's saved activations: attention (ln1, attnOut, q, y, k, v, rstd1, lse, q/k norm),
        // the FFN half's input (mid, ln2, rstd2), and the FFN's own: dense (pre, a) or MoE (`blocks`).
        let attention = 2 * n * c + 2 * n * (ql + kvl) + n + maxBatch * hl * t + heads + qk, half = 2 * n * c + n
        let dense = n * (f + pre)
        let moeBlocks = Double(m.moeLayerCount), denseBlocks = Double(m.nLayer) - moeBlocks
        let allMoE = b.moe.reduce(0, +), oneMoE = b.moe.max() ?? 0
        switch recompute {
        case .none: acts += Double(m.nLayer) * (attention + half) + allMoE + denseBlocks * dense
        case .attention: acts += attention + Double(m.nLayer) * half + allMoE + denseBlocks * dense
        case .block:
            acts += attention + (moeBlocks > 0 ? half + oneMoE : 0) + (denseBlocks > 0 ? half + dense : 0)
        }
        // The MoE backward's exchange scratch, one set for all blocks: its received rows size the
        // wire buffers (dOwnerWire; dExpertWire) and dXe, dOe, of which a local layer needs only
        // dXe and dOe.
        if moeBlocks > 0 { acts += b.exchanging ? sent * c + 3 * b.received * c : 2 * b.received * c }
        // Experts' backward scratch per thread: the busiest expert, at most every token of the world
        // (on a rank that holds experts: received > 0).
        if b.received > 0 { acts += Double(max(threads, 1)) * world * routed * (f + pre) }
        return acts
    }

    /// A thread's packed W^T (Gemm.forward keeps one per thread, grown to the widest weight it
    /// packed): the largest forward weight, its output features rounded up to 32-column panels.
    /// Counted on every thread, an upper bound: helper threads pack only block weights, not the head.
    var packedWeight: Double {
        guard Gemm.engine == .own else { return 0 }
        func packed(_ outputs: Double, _ inputs: Double) -> Double { (outputs / 32).rounded(.up) * 32 * inputs }
        return [packed(v, c), packed(f, c), packed(c, f), packed(ql, c), packed(kvl, c), packed(c, ql)].max() ?? 0
    }
}
