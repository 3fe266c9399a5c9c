// Switch-style load-balancing loss: aux = E * sum_i f_i * P_i, where f_i is the share of the
// routing assignments that went to expert i (not differentiable) and P_i is the mean router
// probability of expert i, both over the *global* batch. aux == 1 when routing is balanced.
// Ranks compute local sums (`accumulate`), sum them over the world, then `loss`.
// Shape legend: N tokens (local), E experts, K top-k.

public enum LoadBalance {
    /// Adds this rank's assignment counts and probability sums into counts[E] and probSums[E].
    public static func accumulate(
        counts: UnsafeMutablePointer<Double>, probSums: UnsafeMutablePointer<Double>,
        probs: UnsafePointer<Float>, topIndex: UnsafePointer<Int32>, n: Int, e: Int, k: Int
    ) {
        for i in 0..<(n * k) { counts[Int(topIndex[i])] += 1 }
        for r in 0..<n { for j in 0..<e { probSums[j] += Double(probs[r * e + j]) } }
    }

    /// aux from global sums over `tokens` tokens; writes the shares f[E] for backward.
    public static func loss(
        f: UnsafeMutablePointer<Float>, counts: UnsafePointer<Double>, probSums: UnsafePointer<Double>,
        tokens: Int, e: Int, k: Int
    ) -> Float {
        var aux = 0.0
        for j in 0..<e {
            let share = counts[j] / Double(tokens * k)
            f[j] = Float(share)
            aux += share * probSums[j] / Double(tokens)
        }
        return Float(Double(e) * aux)
    }

    /// dProbs[N, E] += dAux * E * f_j / tokens, for this rank's N rows (tokens: the global count).
    public static func backward(
        dProbs: UnsafeMutablePointer<Float>, f: UnsafePointer<Float>,
        dAux: Float, n: Int, e: Int, tokens: Int
    ) {
        for r in 0..<n {
            for j in 0..<e { dProbs[r * e + j] += dAux * Float(e) * f[j] / Float(tokens) }
        }
    }

    /// The whole loss on one rank's tokens (world size 1): accumulate + loss.
    public static func forward(
        f: UnsafeMutablePointer<Float>, probs: UnsafePointer<Float>,
        topIndex: UnsafePointer<Int32>, n: Int, e: Int, k: Int
    ) -> Float {
        var counts = [Double](repeating: 0, count: e), sums = [Double](repeating: 0, count: e)
        counts.withUnsafeMutableBufferPointer { c in
            sums.withUnsafeMutableBufferPointer { s in
                accumulate(
                    counts: c.baseAddress!, probSums: s.baseAddress!, probs: probs, topIndex: topIndex, n: n, e: e, k: k
                )
            }
        }
        return loss(f: f, counts: counts, probSums: sums, tokens: n, e: e, k: k)
    }
}
