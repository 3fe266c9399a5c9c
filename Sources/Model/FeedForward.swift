// The FFN of a block: a dense 2-layer MLP, or a mixture of such MLPs (experts) behind a router.
// Shape legend: N tokens (B*T), C channels, F hidden width, E experts, K top-k,
// S = N*K routed slots (grouped by expert, token order inside each expert).
// Forward *adds* its output into the residual stream; backward *accumulates* gradients.
import Tensor

/// One expert (or the dense FFN): out[n] = gelu(x[n] @ w1^T) @ w2^T. w1: [F, C], w2: [C, F].
enum MLP {
    /// h[n, F] = x @ w1^T; a = gelu(h); o[n, C] = a @ w2^T.
    static func forward(
        o: UnsafeMutablePointer<Float>, h: UnsafeMutablePointer<Float>, a: UnsafeMutablePointer<Float>,
        x: UnsafePointer<Float>, w1: UnsafePointer<Float>, w2: UnsafePointer<Float>,
        n: Int, c: Int, f: Int, accumulate: Bool = false
    ) {
        guard n > 0 else { return }
        Linear.forward(out: h, inp: x, weight: w1, n: n, inFeatures: c, outFeatures: f)
        GELU.forward(out: a, inp: h, count: n * f)
        Linear.forward(out: o, inp: a, weight: w2, n: n, inFeatures: f, outFeatures: c, accumulate: accumulate)
    }

    /// dx += ...; dw1 += ...; dw2 += ... from dOut[n, C]. dA, dH: [n, F] scratch.
    static func backward(
        dx: UnsafeMutablePointer<Float>, dw1: UnsafeMutablePointer<Float>, dw2: UnsafeMutablePointer<Float>,
        dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, h: UnsafePointer<Float>, a: UnsafePointer<Float>,
        w1: UnsafePointer<Float>, w2: UnsafePointer<Float>,
        dA: UnsafeMutablePointer<Float>, dH: UnsafeMutablePointer<Float>, n: Int, c: Int, f: Int
    ) {
        guard n > 0 else { return }
        dA.update(repeating: 0, count: n * f)
        Linear.backward(dInp: dA, dWeight: dw2, dOut: dOut, inp: a, weight: w2, n: n, inFeatures: f, outFeatures: c)
        dH.update(repeating: 0, count: n * f)
        GELU.backward(dInp: dH, dOut: dA, inp: h, count: n * f)
        Linear.backward(dInp: dx, dWeight: dw1, dOut: dH, inp: x, weight: w1, n: n, inFeatures: c, outFeatures: f)
    }
}
