// The router z-loss of ST-MoE: z = (1 / tokens) * sum over tokens of logsumexp(logits)^2. It
// keeps router logits small (large ones make the softmax brittle in low precision).
// Shape legend: N rows (this rank's), E experts; `tokens` counts the rows of the whole batch.
// Backward *accumulates* into dLogits.

public enum RouterZLoss {
    /// lse[r] = logsumexp(logits[r]); returns sum over rows of lse^2 (Double).
    public static func forward(lse: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, n: Int, e: Int)
        -> Double
    {
        var sum = 0.0
        for r in 0..<n {
            let l = logits + r * e
            var mx = -Float.infinity
            for j in 0..<e where l[j] > mx { mx = l[j] }
            var s: Float = 0
            for j in 0..<e { s += FastMath.exp(l[j] - mx) }
            lse[r] = mx + Float(logDouble(Double(s)))
            sum += Double(lse[r]) * Double(lse[r])
        }
        return sum
    }

    /// dLogits[r, j] += dZ * 2 * lse[r] / tokens * softmax(logits[r])_j, with the softmax in probs.
    public static func backward(
        dLogits: UnsafeMutablePointer<Float>, probs: UnsafePointer<Float>, lse: UnsafePointer<Float>, dZ: Float,
        n: Int, e: Int, tokens: Int
    ) {
        guard dZ != 0 else { return }
        for r in 0..<n {
            let g = dZ * 2 * lse[r] / Float(tokens)
            for j in 0..<e { dLogits[r * e + j] += g * probs[r * e + j] }
        }
    }
}
