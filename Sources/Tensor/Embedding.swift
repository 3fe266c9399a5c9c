// Token embedding, plus the learned position embedding when the model has one (wpe nil: rope).
// Shape legend: B batch, T time, C channels, V vocab.
// Backward *accumulates* into the weight gradients.

public enum Embedding {
    /// out[B, T, C] = wte[tokens[b, t]] + wpe[t].  wte: [V, C], wpe: [maxT, C].
    public static func forward(
        out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>,
        wte: UnsafePointer<Float>, wpe: UnsafePointer<Float>?, b: Int, t: Int, c: Int
    ) {
        forward(out: out, tokens: tokens, wte: wte, wpe: wpe, rows: b * t, c: c) { $0 % t }
    }

    /// out[r] = wte[tokens[r]] + wpe[positionOf(r)] for rows r of any positions (generation).
    public static func forward(
        out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>, wte: UnsafePointer<Float>,
        wpe: UnsafePointer<Float>?, rows n: Int, c: Int, positionOf: (Int) -> Int
    ) {
        for r in 0..<n {
            let o = out + r * c, e = wte + Int(tokens[r]) * c
            guard let wpe else {
                o.update(from: e, count: c)
                continue
            }
            let p = wpe + positionOf(r) * c
            for i in 0..<c { o[i] = e[i] + p[i] }
        }
    }

    /// dwte[tok] += dOut[b, t];  dwpe[t] += dOut[b, t] (when there is a wpe).
    public static func backward(
        dwte: UnsafeMutablePointer<Float>, dwpe: UnsafeMutablePointer<Float>?,
        dOut: UnsafePointer<Float>, tokens: UnsafePointer<Int32>, b: Int, t: Int, c: Int
    ) {
        for bi in 0..<b {
            for ti in 0..<t {
                let d = dOut + (bi * t + ti) * c
                let e = dwte + Int(tokens[bi * t + ti]) * c
                for i in 0..<c { e[i] += d[i] }
                guard let dwpe else { continue }
                let p = dwpe + ti * c
                for i in 0..<c { p[i] += d[i] }
            }
        }
    }
}
