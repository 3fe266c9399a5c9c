// Choosing the next token from logits: greedy at temperature 0, else a draw from
// softmax(logits / temperature) restricted to the top-k tokens and to the smallest set whose
// probability reaches top-p. The draw is a uniform number the caller keys (seed, sequence,
// position), so the same seed gives the same text. Shape legend: V vocab.

public struct SamplingOptions: Sendable, Equatable {
    public var temperature: Double = 1
    public var topK: Int = 0  // 0: all tokens
    public var topP: Double = 1
    public init(temperature: Double = 1, topK: Int = 0, topP: Double = 1) {
        self.temperature = temperature; self.topK = topK; self.topP = topP
    }
}

public enum TokenSampler {
    /// The chosen token of logits[V]: the lowest index of the maximum when greedy, else the first
    /// token (in order of decreasing probability) where the cumulative probability exceeds u * total.
    public static func choose(_ logits: UnsafePointer<Float>, v: Int, options o: SamplingOptions, uniform u: Double)
        -> Int
    {
        var best = 0
        for j in 1..<v where logits[j] > logits[best] { best = j }
        if o.temperature <= 0 { return best }
        // Candidates by decreasing logit (ties: lower id first), cut to top-k.
        var order = Array(0..<v)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if o.topK > 0 && o.topK < v { order.removeLast(v - o.topK) }
        let mx = Double(logits[best])
        var probs = order.map { expDouble((Double(logits[$0]) - mx) / o.temperature) }
        let total = probs.reduce(0, +)
        // top-p: keep the smallest prefix whose probability reaches topP.
        if o.topP < 1 {
            var cum = 0.0, keep = probs.count
            for (i, p) in probs.enumerated() {
                cum += p / total
                if cum >= o.topP { keep = i + 1; break }
            }
            probs.removeLast(probs.count - keep)
        }
        let target = u * probs.reduce(0, +)
        var cum = 0.0
        for (i, p) in probs.enumerated() {
            cum += p
            if cum > target { return order[i] }
        }
        return order[probs.count - 1]
    }
}
