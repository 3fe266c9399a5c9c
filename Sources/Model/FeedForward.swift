// The FFN of a block: a dense MLP, or a mixture of such MLPs (experts) behind a router.
// Shape legend: N tokens (B*T), C channels, F hidden width, E experts, K top-k,
// S = N*K routed slots (grouped by expert, token order inside each expert).
// Forward *adds* its output into the residual stream; backward *accumulates* gradients.
import Tensor

/// One MLP's matrices (params or grads): w1, w3 [F, C] and w2 [C, F]; w3 only for SwiGLU.
struct FFNWeights {
    let w1: UnsafeMutablePointer<Float>
    let w3: UnsafeMutablePointer<Float>?
    let w2: UnsafeMutablePointer<Float>

    /// The matrices of `prefix` ("layers.0.ffn." or "...moe.experts.3.") in `buffer`.
    init(_ store: ParameterStore, _ buffer: FloatBuffer, prefix: String, swiglu: Bool) {
        w1 = store.pointer(prefix + "w1.weight", in: buffer)
        w3 = swiglu ? store.pointer(prefix + "w3.weight", in: buffer) : nil
        w2 = store.pointer(prefix + "w2.weight", in: buffer)
    }
}

/// One expert (or the dense FFN). GELU: o = gelu(x w1^T) w2^T. SwiGLU (w3 given):
/// o = (silu(x w1^T) * (x w3^T)) w2^T. `pre` holds the pre-activations: [n, F] for GELU, two
/// blocks [n, F] (x w1^T, then x w3^T) for SwiGLU; `a` [n, F] the activations w2 reads.
enum MLP {
    /// Floats of `pre` per row.
    static func preWidth(f: Int, swiglu: Bool) -> Int { swiglu ? 2 * f : f }

    /// pre = x w1^T (and x w3^T); a = act(pre); o[n, C] (+)= a w2^T.
    static func forward(
        o: UnsafeMutablePointer<Float>, pre: UnsafeMutablePointer<Float>, a: UnsafeMutablePointer<Float>,
        x: UnsafePointer<Float>, w: FFNWeights, n: Int, c: Int, f: Int, accumulate: Bool = false
    ) {
        guard n > 0 else { return }
        Linear.forward(out: pre, inp: x, weight: w.w1, n: n, inFeatures: c, outFeatures: f)
        if let w3 = w.w3 {
            Linear.forward(out: pre + n * f, inp: x, weight: w3, n: n, inFeatures: c, outFeatures: f)
            SwiGLU.forward(out: a, g: pre, u: pre + n * f, count: n * f)
        } else {
            GELU.forward(out: a, inp: pre, count: n * f)
        }
        Linear.forward(out: o, inp: a, weight: w.w2, n: n, inFeatures: f, outFeatures: c, accumulate: accumulate)
    }

    /// dx += ...; g's matrices += ... from dOut[n, C]. dA [n, F] and dPre (as pre) are scratch.
    static func backward(
        dx: UnsafeMutablePointer<Float>, g: FFNWeights, dOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
        pre: UnsafePointer<Float>, a: UnsafePointer<Float>, w: FFNWeights,
        dA: UnsafeMutablePointer<Float>, dPre: UnsafeMutablePointer<Float>, n: Int, c: Int, f: Int
    ) {
        guard n > 0 else { return }
        // dA and dPre are written, not accumulated into: no zeroing pass.
        Linear.backward(
            dInp: dA, dWeight: g.w2, dOut: dOut, inp: a, weight: w.w2, n: n, inFeatures: f, outFeatures: c,
            overwriteInput: true)
        if let w3 = w.w3, let g3 = g.w3 {
            dPre.update(repeating: 0, count: n * preWidth(f: f, swiglu: true))
            SwiGLU.backward(dG: dPre, dU: dPre + n * f, dOut: dA, g: pre, u: pre + n * f, count: n * f)
            Linear.backward(
                dInp: dx, dWeight: g3, dOut: dPre + n * f, inp: x, weight: w3, n: n, inFeatures: c, outFeatures: f)
        } else {
            GELU.backward(dInp: dPre, dOut: dA, inp: pre, count: n * f, overwrite: true)
        }
        Linear.backward(dInp: dx, dWeight: g.w1, dOut: dPre, inp: x, weight: w.w1, n: n, inFeatures: c, outFeatures: f)
    }
}
