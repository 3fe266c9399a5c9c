// Softmax cross-entropy over the vocabulary.
// Shape legend: N tokens, V vocab.
// Backward *accumulates* into dLogits.

public enum CrossEntropy {
    /// losses[N] = logsumexp(logits[n]) - logits[n, target[n]].
    public static func forward(
        losses: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
        targets: UnsafePointer<Int32>, n: Int, v: Int
    ) {
        forEachRowWithExps(n, v) { r, ex in
            let l = logits + r * v
            let (mx, sum) = shiftedExps(l, v, into: ex)
            losses[r] = (mx + log(sum)) - l[Int(targets[r])]
        }
    }

    /// dLogits[n, j] += dLoss[n] * (softmax(logits[n])_j - [j == target[n]]).
    /// dLoss is one scalar per token (the same for all tokens of a mean loss).
    public static func backward(
        dLogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
        targets: UnsafePointer<Int32>, dLoss: Float, n: Int, v: Int
    ) {
        forEachRowWithExps(n, v) { r, ex in
            let l = logits + r * v, d = dLogits + r * v
            let (_, sum) = shiftedExps(l, v, into: ex)
            let inv = 1 / sum
            for j in 0..<v { d[j] += dLoss * ex[j] * inv }
            d[Int(targets[r])] -= dLoss
        }
    }

    /// body(r, ex) for every row, as forEachRow's items, with a row buffer ex [V] allocated once
    /// per item.
    @inline(__always)
    static func forEachRowWithExps(_ n: Int, _ v: Int, _ body: (Int, UnsafeMutablePointer<Float>) -> Void) {
        Parallel.forEachBlock(n, grain: rowItemGrain) { rows in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: v) { ex in
                for r in rows { body(r, ex.baseAddress!) }
            }
        }
    }

    /// ex[j] = e^(l[j] - max) for j < v (a loop the compiler vectorises), and (max, the sum of
    /// ex in index order: one add after another, as a loop summing the exps as it goes would).
    @inline(__always)
    static func shiftedExps(_ l: UnsafePointer<Float>, _ v: Int, into ex: UnsafeMutablePointer<Float>)
        -> (max: Float, sum: Float)
    {
        var mx = -Float.infinity
        for j in 0..<v where l[j] > mx { mx = l[j] }
        for j in 0..<v { ex[j] = FastMath.exp(l[j] - mx) }
        var sum: Float = 0
        for j in 0..<v { sum += ex[j] }
        return (mx, sum)
    }
}

@inline(__always) func log(_ x: Float) -> Float { Float(logDouble(Double(x))) }
