// Aux-loss-free load balancing (DeepSeek-V3; Megatron's --moe-router-enable-expert-bias): a
// per-expert bias added to the router probabilities for top-k *selection* only (the gate weights
// stay the renormalised probabilities), moved after every step by rate x sign(mean load - load)
// from the global expert counts, so under-used experts are chosen more. Not trained by the
// optimizer; the same on every rank (the counts are global); saved in checkpoints.
// Shape legend: L MoE blocks, E experts.
import Tensor

public final class RouterBias: @unchecked Sendable {
    /// The checkpoint's name for the biases, [L, E].
    public static let tensorName = "router.selectionBias"
    public let layers: Int, experts: Int
    public let values: FloatBuffer  // [L, E]

    public init(layers: Int, experts: Int) {
        self.layers = layers; self.experts = experts
        values = FloatBuffer(count: layers * experts)
    }

    /// Block l's biases.
    func pointer(layer l: Int) -> UnsafePointer<Float> { UnsafePointer(values.base + l * experts) }

    /// b[l, e] += rate * sign(mean_e' counts[l][e'] - counts[l][e]) for every block.
    public func update(counts: [[Int]], rate: Float) {
        for (l, row) in counts.enumerated() {
            let mean = Double(row.reduce(0, +)) / Double(experts)
            for (e, c) in row.enumerated() {
                let d = mean - Double(c)
                values[l * experts + e] += d > 0 ? rate : (d < 0 ? -rate : 0)
            }
        }
    }
}
