// The optimizer as one component: everything between backward and the next forward. A step is
//   reduce (each tensor's gradient summed over the group its shard spec names; ZeRO-1 tensors
//   reduce-scattered over dp) -> global norm (each element counted once) -> non-finite guard ->
//   clip factor -> AdamW over this rank's moment rows -> all-gather of ZeRO-1 rows over dp ->
//   the router's selection biases -> `afterUpdate` (the hook for weights derived from the
//   parameters: packed GEMM panels, low-precision compute copies).
// It reads the parameter layout from ParameterStore's shard specs and nothing else: the model
// does not know how it is optimized. Reductions: ShardedAdamW+Reduce.swift.
import Clock
import Tensor

/// What one optimizer step did.
public struct UpdateResult: Sendable {
    /// The global L2 norm of the reduced gradients, before clipping.
    public let gradNorm: Double
    /// false: the loss or the norm was not finite; parameters, moments and biases are unchanged.
    public let applied: Bool
}

/// AdamW over a ParameterStore whose tensors may be split over tp, replicated over dp (moments
/// optionally split over dp: ZeRO-1) or held by some ranks (experts). Collective: every rank of
/// the world calls `step` with the same global loss.
public final class ShardedAdamW: @unchecked Sendable {
    public let config: AdamWConfig
    /// The clip threshold of the global gradient norm (train.gradClip).
    public let maxGradNorm: Double
    /// Aux-loss-free balancing's selection biases, moved after every applied step (nil: off).
    public let routerBias: RouterBias?
    let routerBiasRate: Float
    let model: ModelConfig
    /// The parameters it updates and the layout it reduces over (replaced by `rebind` after a
    /// re-placement).
    public private(set) var store: ParameterStore
    public private(set) var ctx: ParallelContext
    /// AdamW updates applied so far (the bias correction's step is this + 1).
    public var updates: Int
    /// Called after every applied update with the new parameters. Weights derived from the
    /// master parameters (packed panels, compute copies) are refreshed here.
    public var afterUpdate: ((ParameterStore) -> Void)?
    /// When set, each step's time is charged to the optimizer region.
    public var profile: KernelProfile?

    /// The collectives of the gradient reduction, fixed by the store's layout (made on first use).
    lazy var reductions: [GradientReduction] = planGradientReductions()
    /// The `.allreduce` reductions in the buckets an overlapped backward starts (train.overlapReduce).
    lazy var buckets: [GradientBucket] = planBuckets()
    /// The overlapped reduction of this step, between beginOverlappedReduction and step.
    var overlap: OverlapState?
    /// Replicated experts' gradients gathered for their allreduce (allocated on first use).
    var replicaGradScratch: FloatBuffer?

    public init(
        store: ParameterStore, context: ParallelContext, model: ModelConfig, config: AdamWConfig,
        maxGradNorm: Double, routerBias: RouterBias? = nil, routerBiasRate: Double = 0, updates: Int = 0
    ) {
        self.store = store
        self.ctx = context
        self.model = model
        self.config = config
        self.maxGradNorm = maxGradNorm
        self.routerBias = routerBias
        self.routerBiasRate = Float(routerBiasRate)
        self.updates = updates
    }

    /// The same optimizer over a re-placed store (moments migrated with it): the update count,
    /// hyperparameters and hooks carry over; the reduction plan is made again.
    public func rebind(store: ParameterStore, context: ParallelContext) {
        self.store = store
        self.ctx = context
        reductions = planGradientReductions()
        buckets = planBuckets()
        replicaGradScratch = nil
    }

    /// Zeroes every gradient, in 1 MB blocks over the rank's threads (4 bytes a parameter).
    public func zeroGradients() {
        let grads = store.grads
        Parallel.forEachBlock(grads.count, grain: 1 << 18) { r in
            (grads.base + r.lowerBound).update(repeating: 0, count: r.count)
        }
    }

    /// One step at learning rate `lr`: reduce, norm, and unless `loss` (global) or the norm is not
    /// finite, clip, AdamW, the ZeRO-1 all-gather and the router biases (from `expertCounts`,
    /// the step's global tokens per expert per MoE block).
    public func step(lr: Double, loss: Float, expertCounts: [[Int]]) throws -> UpdateResult {
        let t0 = profile == nil ? 0 : monotonicSeconds()
        defer { profile?.add(.optimizer, monotonicSeconds() - t0) }
        try reduceGradients()
        let norm = try globalGradNorm()
        guard loss.isFinite && norm.isFinite else { return UpdateResult(gradNorm: norm, applied: false) }
        updates += 1
        update(lr: Float(lr), gradScale: GradClip.factor(norm: norm, maxNorm: maxGradNorm))
        try gatherShardedParameters()
        routerBias?.update(counts: expertCounts, rate: routerBiasRate)
        afterUpdate?(store)
        return UpdateResult(gradNorm: norm, applied: true)
    }

    /// Clip factor and AdamW in one pass over every trainable tensor's moment rows (all rows
    /// unless they are split over dp; decay only where the tensor asks for it).
    func update(lr: Float, gradScale: Float) {
        let s = store
        AdamW.updateAll(
            params: s.params.base, grads: s.grads.base, m: s.adamM.base, v: s.adamV.base,
            ranges: s.infos.filter(\.trainable).map {
                ($0.offset + $0.momentRows.lowerBound * $0.cols, $0.momentOffset, $0.momentCount, $0.decay)
            }, gradScale: gradScale, lr: lr, step: updates, config: config)
    }
}
