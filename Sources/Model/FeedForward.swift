// The FFN of a block: a dense 2-layer MLP, or a mixture of such MLPs (experts) behind a router.
// Shape legend: N tokens (B*T), C channels, F hidden width, E experts, K top-k,
// S = N*K routed slots (grouped by expert, token order inside each expert).
// Forward *adds* its output into the residual stream; backward *accumulates* gradients.
import Tensor

/// One expert (or the dense FFN): out[n] = gelu(x[n] @ w1^T) @ w2^T. w1: [F, C], w2: [C, F].
enum MLP {
    /// h[n, F] = x @ w1^T; a = gelu(h); o[n, C] = a @ w2^T.
    static func forward(o: UnsafeMutablePointer<Float>, h: UnsafeMutablePointer<Float>, a: UnsafeMutablePointer<Float>,
                        x: UnsafePointer<Float>, w1: UnsafePointer<Float>, w2: UnsafePointer<Float>,
                        n: Int, c: Int, f: Int, accumulate: Bool = false) {
        guard n > 0 else { return }
        Linear.forward(out: h, inp: x, weight: w1, n: n, inFeatures: c, outFeatures: f)
        GELU.forward(out: a, inp: h, count: n * f)
        Linear.forward(out: o, inp: a, weight: w2, n: n, inFeatures: f, outFeatures: c, accumulate: accumulate)
    }

    /// dx += ...; dw1 += ...; dw2 += ... from dOut[n, C]. dA, dH: [n, F] scratch.
    static func backward(dx: UnsafeMutablePointer<Float>, dw1: UnsafeMutablePointer<Float>, dw2: UnsafeMutablePointer<Float>,
                         dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, h: UnsafePointer<Float>, a: UnsafePointer<Float>,
                         w1: UnsafePointer<Float>, w2: UnsafePointer<Float>,
                         dA: UnsafeMutablePointer<Float>, dH: UnsafeMutablePointer<Float>, n: Int, c: Int, f: Int) {
        guard n > 0 else { return }
        dA.update(repeating: 0, count: n * f)
        Linear.backward(dInp: dA, dWeight: dw2, dOut: dOut, inp: a, weight: w2, n: n, inFeatures: f, outFeatures: c)
        dH.update(repeating: 0, count: n * f)
        GELU.backward(dInp: dH, dOut: dA, inp: h, count: n * f)
        Linear.backward(dInp: dx, dWeight: dw1, dOut: dH, inp: x, weight: w1, n: n, inFeatures: c, outFeatures: f)
    }
}

/// Activations of one MoE block for one batch (sized for the largest N this model runs).
final class MoEActivations {
    let probs: FloatBuffer        // [N, E]
    let logits: FloatBuffer       // [N, E]
    let topIndex: UnsafeMutablePointer<Int32>  // [N, K]
    let topWeight: FloatBuffer    // [N, K]
    let share: FloatBuffer        // [E] assignment shares f_e (balance loss)
    var counts: [Int]             // tokens per expert, this batch
    var offsets: [Int]            // first slot of each expert
    let slotOf: UnsafeMutablePointer<Int32>    // [N, K] -> slot
    let tokenOf: UnsafeMutablePointer<Int32>   // [S] -> token
    let xe: FloatBuffer           // [S, C] dispatched inputs
    let h: FloatBuffer            // [S, F]
    let a: FloatBuffer            // [S, F]
    let o: FloatBuffer            // [S, C] expert outputs (unweighted)

    init(n: Int, c: Int, f: Int, e: Int, k: Int) {
        probs = FloatBuffer(count: n * e); logits = FloatBuffer(count: n * e)
        topIndex = .allocate(capacity: n * k); topIndex.initialize(repeating: 0, count: n * k)
        topWeight = FloatBuffer(count: n * k); share = FloatBuffer(count: e)
        counts = Array(repeating: 0, count: e); offsets = Array(repeating: 0, count: e)
        slotOf = .allocate(capacity: n * k); slotOf.initialize(repeating: 0, count: n * k)
        tokenOf = .allocate(capacity: n * k); tokenOf.initialize(repeating: 0, count: n * k)
        xe = FloatBuffer(count: n * k * c); h = FloatBuffer(count: n * k * f)
        a = FloatBuffer(count: n * k * f); o = FloatBuffer(count: n * k * c)
    }

    deinit { topIndex.deallocate(); slotOf.deallocate(); tokenOf.deallocate() }
}

/// Scratch shared by all blocks' backward passes.
final class FFNScratch {
    let dxe: FloatBuffer     // [S, C]
    let dO: FloatBuffer      // [S, C]
    let dA: FloatBuffer      // [S, F]
    let dH: FloatBuffer      // [S, F]
    let dLogits: FloatBuffer // [N, E]
    let dProbs: FloatBuffer  // [N, E]
    let dTopWeight: FloatBuffer // [N, K]
    let rowScratch: FloatBuffer // [E]
    init(n: Int, c: Int, f: Int, e: Int, k: Int) {
        let s = n * max(k, 1)
        dxe = FloatBuffer(count: s * c); dO = FloatBuffer(count: s * c)
        dA = FloatBuffer(count: s * f); dH = FloatBuffer(count: s * f)
        dLogits = FloatBuffer(count: n * e); dProbs = FloatBuffer(count: n * e)
        dTopWeight = FloatBuffer(count: n * k); rowScratch = FloatBuffer(count: e)
    }
}
