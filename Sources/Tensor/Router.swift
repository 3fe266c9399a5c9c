// MoE router after its linear layer: softmax over experts in Float32, top-k by value
// (the lower expert index wins ties), weights renormalised to sum to 1 over the k chosen
// (Mixtral), or with `normalize` false the chosen probabilities themselves (Qwen3-MoE, OLMoE).
// Shape legend: N tokens, E experts, K top-k (1 or 2).
// Backward *accumulates* into dLogits.

public enum Router {
    /// probs[N, E] = softmax(logits); topIndex[N, K], topWeight[N, K] (renormalised). With
    /// `selectionBias` [E], the k chosen are the largest probs + bias, weighted by their probs.
    public static func forward(
        probs: UnsafeMutablePointer<Float>, topIndex: UnsafeMutablePointer<Int32>,
        topWeight: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
        n: Int, e: Int, k: Int, selectionBias: UnsafePointer<Float>? = nil, normalize: Bool = true
    ) {
        precondition(k >= 1 && k <= e, "top-k must satisfy 1 <= k <= E")
        for r in 0..<n {
            let l = logits + r * e, p = probs + r * e
            var mx = -Float.infinity
            for j in 0..<e where l[j] > mx { mx = l[j] }
            var sum: Float = 0
            for j in 0..<e { p[j] = FastMath.exp(l[j] - mx); sum += p[j] }
            let inv = 1 / sum
            for j in 0..<e { p[j] *= inv }
            // top-k by repeated selection: strict '>' keeps the lowest index on ties.
            var chosenSum: Float = 0
            for slot in 0..<k {
                var best = -1
                var bestValue = -Float.infinity
                for j in 0..<e {
                    var taken = false
                    for s in 0..<slot where Int(topIndex[r * k + s]) == j { taken = true }
                    let score = p[j] + (selectionBias?[j] ?? 0)
                    if !taken && (best < 0 || score > bestValue) { best = j; bestValue = score }
                }
                topIndex[r * k + slot] = Int32(best)
                topWeight[r * k + slot] = p[best]
                chosenSum += p[best]
            }
            if normalize { for slot in 0..<k { topWeight[r * k + slot] /= chosenSum } }
        }
    }

    /// Backward from dTopWeight[N, K] (and optional dProbsExtra[N, E], e.g. the balance loss)
    /// to dLogits[N, E]. Through the renormalisation w_j = p_j / S:
    /// dp_i = (dw_i - sum_j dw_j w_j) / S for chosen i (without it, dp_i = dw_i); then the softmax
    /// backward.
    public static func backward(
        dLogits: UnsafeMutablePointer<Float>, dTopWeight: UnsafePointer<Float>,
        dProbsExtra: UnsafePointer<Float>?, probs: UnsafePointer<Float>,
        topIndex: UnsafePointer<Int32>, topWeight: UnsafePointer<Float>,
        n: Int, e: Int, k: Int, scratch: UnsafeMutablePointer<Float>, normalize: Bool = true
    ) {
        for r in 0..<n {
            let p = probs + r * e, dp = scratch
            if let dProbsExtra {
                for j in 0..<e { dp[j] = dProbsExtra[r * e + j] }
            } else {
                for j in 0..<e { dp[j] = 0 }
            }
            var s: Float = 0
            var dotWW: Float = 0
            for slot in 0..<k {
                s += p[Int(topIndex[r * k + slot])]
                dotWW += dTopWeight[r * k + slot] * topWeight[r * k + slot]
            }
            for slot in 0..<k {
                dp[Int(topIndex[r * k + slot])] +=
                    normalize ? (dTopWeight[r * k + slot] - dotWW) / s : dTopWeight[r * k + slot]
            }
            var dot: Float = 0
            for j in 0..<e { dot += p[j] * dp[j] }
            let dl = dLogits + r * e
            for j in 0..<e { dl[j] += p[j] * (dp[j] - dot) }
        }
    }
}
