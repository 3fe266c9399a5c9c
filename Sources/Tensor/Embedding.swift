// Token + learned position embedding.
// Shape legend: B batch, T time, C channels, V vocab.
// Backward *accumulates* into the weight gradients.

public enum Embedding {
    /// out[B, T, C] = wte[tokens[b, t]] + wpe[t].  wte: [V, C], wpe: [maxT, C].
    public static func forward(
        out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>,
        wte: UnsafePointer<Float>, wpe: UnsafePointer<Float>, b: Int, t: Int, c: Int
    ) {
        for bi in 0..<b {
            for ti in 0..<t {
                let o = out + (bi * t + ti) * c
                let e = wte + Int(tokens[bi * t + ti]) * c
                let p = wpe + ti * c
                for i in 0..<c { o[i] = e[i] + p[i] }
            }
        }
    }

    /// dwte[tok] += dOut[b, t];  dwpe[t] += dOut[b, t].
    public static func backward(
        dwte: UnsafeMutablePointer<Float>, dwpe: UnsafeMutablePointer<Float>,
        dOut: UnsafePointer<Float>, tokens: UnsafePointer<Int32>, b: Int, t: Int, c: Int
    ) {
        for bi in 0..<b {
            for ti in 0..<t {
                let d = dOut + (bi * t + ti) * c
                let e = dwte + Int(tokens[bi * t + ti]) * c
                let p = dwpe + ti * c
                for i in 0..<c { e[i] += d[i]; p[i] += d[i] }
            }
        }
    }
}
