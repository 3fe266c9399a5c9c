// Switch-style load-balancing loss: aux = E * sum_i f_i * P_i, where f_i is the share of
// the N*K routing assignments that went to expert i (not differentiable) and P_i is the
// mean router probability of expert i. aux == 1 when routing is perfectly balanced.
// Shape legend: N tokens, E experts, K top-k.

public enum LoadBalance {
    /// Returns aux; writes f[E] (assignment shares) for backward.
    public static func forward(f: UnsafeMutablePointer<Float>, probs: UnsafePointer<Float>,
                               topIndex: UnsafePointer<Int32>, n: Int, e: Int, k: Int) -> Float {
        for j in 0..<e { f[j] = 0 }
        for i in 0..<(n * k) { f[Int(topIndex[i])] += 1 }
        let denom = Float(n * k)
        for j in 0..<e { f[j] /= denom }
        var aux: Double = 0
        for j in 0..<e {
            var pj: Double = 0
            for r in 0..<n { pj += Double(probs[r * e + j]) }
            aux += Double(f[j]) * pj / Double(n)
        }
        return Float(Double(e) * aux)
    }

    /// dProbs[N, E] += dAux * E * f_j / N.
    public static func backward(dProbs: UnsafeMutablePointer<Float>, f: UnsafePointer<Float>,
                                dAux: Float, n: Int, e: Int) {
        for r in 0..<n {
            for j in 0..<e { dProbs[r * e + j] += dAux * Float(e) * f[j] / Float(n) }
        }
    }
}
