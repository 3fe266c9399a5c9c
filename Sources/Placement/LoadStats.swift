// Load statistics: routed assignments per expert per MoE layer, as an exponential moving
// average over steps. The first sample is taken as is (no bias toward zero); each later one
// weighs (1 - decay). The planner reads `mean`, and the last few steps' counts (`recent`) to see
// how much the routing swings from step to step.

public struct LoadStats: Sendable, Equatable {
    /// Weight of the past, in [0, 1): 0 keeps only the last step.
    public let decay: Double
    /// mean[layer][expert]: the moving average (empty before the first sample).
    public private(set) var mean: [[Double]] = []
    /// Samples folded in so far.
    public private(set) var samples = 0
    /// The last `keep` samples as they were, oldest first.
    public private(set) var recent: [[[Double]]] = []
    public let keep: Int

    public init(decay: Double, keep: Int = 8) {
        precondition(decay >= 0 && decay < 1, "LoadStats decay must be in [0, 1)")
        precondition(keep >= 1, "LoadStats keeps at least one sample")
        self.decay = decay
        self.keep = keep
    }

    /// Folds one step's counts (counts[layer][expert]) in; a sample of another shape restarts.
    public mutating func add(_ counts: [[Int]]) {
        let x = counts.map { $0.map(Double.init) }
        guard !mean.isEmpty, mean.count == x.count, zip(mean, x).allSatisfy({ $0.count == $1.count }) else {
            mean = x
            samples = 1
            recent = [x]
            return
        }
        recent = Array((recent + [x]).suffix(keep))
        for l in 0..<x.count {
            for e in 0..<x[l].count { mean[l][e] = decay * mean[l][e] + (1 - decay) * x[l][e] }
        }
        samples += 1
    }
}
