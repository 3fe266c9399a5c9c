// Softmax cross-entropy over the vocabulary.
// Shape legend: N tokens, V vocab.
// Backward *accumulates* into dLogits.

public enum CrossEntropy {
    /// losses[N] = logsumexp(logits[n]) - logits[n, target[n]].
    public static func forward(
        losses: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
        targets: UnsafePointer<Int32>, n: Int, v: Int
    ) {
        forEachRow(n) { r in
            let l = logits + r * v
            var mx = -Float.infinity
            for j in 0..<v where l[j] > mx { mx = l[j] }
            var sum: Float = 0
            for j in 0..<v { sum += FastMath.exp(l[j] - mx) }
            losses[r] = (mx + log(sum)) - l[Int(targets[r])]
        }
    }

    /// dLogits[n, j] += dLoss[n] * (softmax(logits[n])_j - [j == target[n]]).
    /// dLoss is one scalar per token (the same for all tokens of a mean loss).
    public static func backward(
        dLogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
        targets: UnsafePointer<Int32>, dLoss: Float, n: Int, v: Int
    ) {
        forEachRow(n) { r in
            let l = logits + r * v, d = dLogits + r * v
            var mx = -Float.infinity
            for j in 0..<v where l[j] > mx { mx = l[j] }
            var sum: Float = 0
            for j in 0..<v { sum += FastMath.exp(l[j] - mx) }
            let inv = 1 / sum
            for j in 0..<v { d[j] += dLoss * FastMath.exp(l[j] - mx) * inv }
            d[Int(targets[r])] -= dLoss
        }
    }
}

@inline(__always) func log(_ x: Float) -> Float { Float(logDouble(Double(x))) }
