// Bytes one rank allocates for training, estimated from the shapes before anything is allocated
// (the pre-check in `train`), in Double so that absurd sizes give a figure instead of an overflow.
// Shape legend as in Transformer.swift; N = B*T rows of this rank's dp slice, W threads per rank.
// A rank routes S = ceil(N / tp) rows and sends S*K; it can receive up to world*S*min(K, local
// experts) (every token choosing its experts), and dropless routing of an untrained router comes
// close to that, so the MoE's received-row buffers are counted at that bound (they are capped there).
import Placement

public struct MemoryEstimate: Sendable, Equatable {
    /// Parameters, gradients and both AdamW moments.
    public var stateBytes: Double
    /// Saved activations, backward scratch and the MoE's exchange buffers.
    public var activationBytes: Double
    /// The checkpoint snapshot buffer (parameters and both moments; 0 without checkpoints).
    public var checkpointBytes: Double
    /// Floats of this rank's parameter share.
    public var parameters: Double
    /// The process before any model: the binary, Swift's runtime and Foundation, OpenBLAS and MPI.
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
        threads: Int, checkpoints: Bool, recompute: Recompute = .none, momentsOverDP dp: Int = 1
    ) -> MemoryEstimate {
        let c = Double(m.nEmbd), f = Double(m.ffHidden), e = Double(m.nExpert), k = Double(m.topK)
        let v = Double(m.vocabSize), t = Double(m.seqLen), cl = c / Double(tp), hl = Double(m.nHead / max(tp, 1))
        let n = Double(maxBatch) * t, routed = (n / Double(max(tp, 1))).rounded(.up), sent = routed * k
        let world = Double(max(worldSize, 1))
        let mats = Double(m.ffnMatrices.count), pre = Double(m.ffnPreactWidth)
        var params = 2 * v * c + (m.usesRope ? 0 : t * c) + c  // embed, head, positions, final norm
        var acts = Double(m.nLayer + 1) * n * c + 3 * n * c + n * v * 2 + 2 * n  // resid, lnf, gather, logits, dLogits
        acts += 2 * n * c + 4 * n * cl + (m.hasDenseMLP ? n * (f + pre) : 0)  // backward scratch
        // MoH: the head router's state (logits, probs, gates, chosen, gated rows) and scratch.
        let hr = Double(m.headRouterRows), h = Double(m.nHead)
        let heads = m.usesMoH ? n * (2 * hr + 2 * h + cl) : 0
        if m.usesMoH { acts += n * (cl + h + hr) }
        // A block's saved activations: attention (ln1, attnOut, q, k, v, y, rstd1, lse), the FFN
        // half's input (mid, ln2, rstd2), and the FFN's own: dense (pre, a) or MoE (logits,
        // probs, top-k; send, back, recv, xe, o; pre, a; a local layer only xe, o, pre, a).
        let attention = 2 * n * c + 4 * n * cl + n + Double(maxBatch) * hl * t + heads, half = 2 * n * c + n
        let shared = Double(m.nSharedExperts), dense = n * (f + pre)
        // An MoE block's state: router rows, sent rows (send, back) and received rows at their
        // bound (recv, xe, o; pre, a). Its received rows also size the one backward exchange set
        // (dSend; dRecv, dXe, dOe), of which a local layer needs only dXe and dOe.
        var moe: [Double] = [], received = 0.0, exchanging = false
        var moeLayer = 0, ownMoments = 0.0  // experts and routers: their moments are never split
        for l in 0..<m.nLayer {
            params += 4 * c * cl + 2 * c + hr * c
            ownMoments += hr * c  // the head router reduces over the world: moments never split
            if m.isMoE(l) {
                let local = Double(plan.localExperts(layer: moeLayer, rank: rank).count)
                params += e * c + (local + shared) * mats * c * f
                ownMoments += e * c + local * mats * c * f
                let isLocal = plan.isLocal(layer: moeLayer, world: worldSize)
                let most = (isLocal ? 1 : world) * routed * min(k, local)
                received = max(received, most)
                exchanging = exchanging || !isLocal
                let rows = isLocal ? most * (2 * c + f + pre) : 2 * sent * c + most * (3 * c + f + pre)
                moe.append(2 * n * e + 2 * n * k + rows + shared * dense)
                moeLayer += 1
            } else {
                params += mats * c * f
            }
        }
        // Moments of everything replicated over dp are split over dp with train.shardOptimizer.
        let moments = ownMoments + (params - ownMoments) / Double(max(dp, 1))
        let moeBlocks = Double(m.moeLayerCount), denseBlocks = Double(m.nLayer) - moeBlocks
        let allMoE = moe.reduce(0, +), oneMoE = moe.max() ?? 0
        switch recompute {
        case .none: acts += Double(m.nLayer) * (attention + half) + allMoE + denseBlocks * dense
        case .attention: acts += attention + Double(m.nLayer) * half + allMoE + denseBlocks * dense
        case .block:
            acts += attention + (moeBlocks > 0 ? half + oneMoE : 0) + (denseBlocks > 0 ? half + dense : 0)
        }
        // The MoE backward's exchange scratch, one set for all blocks.
        if moeBlocks > 0 { acts += exchanging ? sent * c + 3 * received * c : 2 * received * c }
        // Experts' backward scratch per thread: the busiest expert, at most every token of the world
        // (on a rank that holds experts: received > 0).
        if received > 0 { acts += Double(max(threads, 1)) * world * routed * (f + pre) }
        return MemoryEstimate(
            stateBytes: 8 * params + 8 * moments, activationBytes: 4 * acts,
            checkpointBytes: checkpoints ? 4 * params + 8 * moments : 0,
            parameters: params, runtimeBytes: runtimeBaseline)
    }
}
