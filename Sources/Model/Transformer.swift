// The decoder-only MoE transformer at one rank: parameters, activations and the forward pass.
// Shape legend: B batch, T time, N = B*T tokens, C channels, H heads, D = C/H, F FFN hidden,
// E experts, K top-k, V vocab, L layers.
// Block: x += attn(rmsnorm1(x)) @ wo^T; x += ffn(rmsnorm2(x)) (MoE or dense). Then final
// rmsnorm, output head, cross-entropy. The backward pass is in Transformer+Backward.swift.
import Tensor

/// Weight pointers of one block (into params or into grads).
struct BlockWeights {
    let norm1, wq, wk, wv, wo, norm2: UnsafeMutablePointer<Float>
    let ffnW1, ffnW2: UnsafeMutablePointer<Float>?  // dense blocks
    let moe: MoEWeights?                              // MoE blocks
}

/// Activations of one block, sized for maxBatch x seqLen tokens.
final class BlockActivations {
    let ln1, q, k, v, y, mid, ln2: FloatBuffer   // [N, C]
    let rstd1, rstd2: FloatBuffer                // [N]
    let att: FloatBuffer                         // [B, H, T, T]
    let h, a: FloatBuffer?                       // [N, F] dense blocks
    let moe: MoEActivations?
    init(config m: ModelConfig, n: Int, b: Int, moe isMoE: Bool) {
        let c = m.nEmbd
        ln1 = FloatBuffer(count: n * c); q = FloatBuffer(count: n * c); k = FloatBuffer(count: n * c)
        v = FloatBuffer(count: n * c); y = FloatBuffer(count: n * c); mid = FloatBuffer(count: n * c)
        ln2 = FloatBuffer(count: n * c)
        rstd1 = FloatBuffer(count: n); rstd2 = FloatBuffer(count: n)
        att = FloatBuffer(count: b * m.nHead * m.seqLen * m.seqLen)
        if isMoE {
            h = nil; a = nil
            moe = MoEActivations(n: n, c: c, f: m.ffHidden, e: m.nExpert, k: m.topK)
        } else {
            h = FloatBuffer(count: n * m.ffHidden); a = FloatBuffer(count: n * m.ffHidden)
            moe = nil
        }
    }
}

/// The model at world size 1: forward computes the loss, backward accumulates gradients
/// into `store.grads`.
public final class Transformer: @unchecked Sendable {
    public let config: ModelConfig
    public let store: ParameterStore
    /// The largest batch `forward` accepts (buffers are sized for maxBatch x seqLen).
    public let maxBatch: Int

    let weights: [BlockWeights]
    let gradients: [BlockWeights]
    let blocks: [BlockActivations]
    let resid: [FloatBuffer]          // L+1 x [N, C]: resid[l] is block l's input
    let lnf: FloatBuffer              // [N, C]
    let rstdf: FloatBuffer            // [N]
    let logits: FloatBuffer           // [N, V]
    let losses: FloatBuffer           // [N]
    var tokens: [Int32]               // [N]
    var targets: [Int32]              // [N]
    var batch = 0, time = 0
    var scratch: BackwardScratch

    /// When set, forward and backward charge their time to regions (see `switchyard bench`).
    public var profile: KernelProfile?

    /// Balance loss of each MoE block in the last forward (in block order).
    public private(set) var lastAux: [Float] = []

    public init(config: ModelConfig, maxBatch: Int, store: ParameterStore? = nil) {
        precondition(maxBatch >= 1, "maxBatch must be >= 1")
        self.config = config
        self.maxBatch = maxBatch
        let store = store ?? ParameterStore(config: config)
        self.store = store
        let n = maxBatch * config.seqLen
        var w: [BlockWeights] = [], g: [BlockWeights] = []
        var acts: [BlockActivations] = []
        for l in 0..<config.nLayer {
            w.append(Transformer.blockWeights(store, store.params, layer: l, config: config))
            g.append(Transformer.blockWeights(store, store.grads, layer: l, config: config))
            acts.append(BlockActivations(config: config, n: n, b: maxBatch, moe: config.isMoE(l)))
        }
        weights = w; gradients = g; blocks = acts
        resid = (0...config.nLayer).map { _ in FloatBuffer(count: n * config.nEmbd) }
        lnf = FloatBuffer(count: n * config.nEmbd)
        rstdf = FloatBuffer(count: n)
        logits = FloatBuffer(count: n * config.vocabSize)
        losses = FloatBuffer(count: n)
        tokens = Array(repeating: 0, count: n)
        targets = Array(repeating: 0, count: n)
        scratch = BackwardScratch(config: config, n: n)
    }

    static func blockWeights(_ s: ParameterStore, _ buf: FloatBuffer, layer l: Int, config: ModelConfig) -> BlockWeights {
        let p = "layers.\(l)."
        func ptr(_ name: String) -> UnsafeMutablePointer<Float> { s.pointer(p + name, in: buf) }
        let moe: MoEWeights? = config.isMoE(l) ? MoEWeights(
            router: ptr("moe.router.weight"),
            w1: (0..<config.nExpert).map { ptr("moe.experts.\($0).w1.weight") },
            w2: (0..<config.nExpert).map { ptr("moe.experts.\($0).w2.weight") }) : nil
        return BlockWeights(norm1: ptr("norm1.weight"), wq: ptr("attn.wq.weight"), wk: ptr("attn.wk.weight"),
                            wv: ptr("attn.wv.weight"), wo: ptr("attn.wo.weight"), norm2: ptr("norm2.weight"),
                            ffnW1: moe == nil ? ptr("ffn.w1.weight") : nil,
                            ffnW2: moe == nil ? ptr("ffn.w2.weight") : nil, moe: moe)
    }

    /// Runs the model on tokens [B, T] and returns the mean cross-entropy against targets [B, T].
    /// Token ids must be < vocabSize (the data loader checks); B <= maxBatch, T <= seqLen.
    @discardableResult
    public func forward(tokens tok: [Int32], targets tgt: [Int32], batch b: Int, time t: Int) -> Float {
        let m = config
        precondition(b >= 1 && b <= maxBatch && t >= 1 && t <= m.seqLen, "batch/time outside the allocated shape")
        precondition(tok.count == b * t && tgt.count == b * t, "tokens/targets must hold B*T entries")
        let n = b * t, c = m.nEmbd, f = m.ffHidden
        batch = b; time = t
        for i in 0..<n { tokens[i] = tok[i]; targets[i] = tgt[i] }
        timed(.embedding) {
            tokens.withUnsafeBufferPointer { tp in
                Embedding.forward(out: resid[0].base, tokens: tp.baseAddress!, wte: store.pointer("embed.weight", in: store.params),
                                  wpe: store.pointer("pos.weight", in: store.params), b: b, t: t, c: c)
            }
        }
        var aux: [Float] = []
        for l in 0..<m.nLayer {
            let w = weights[l], a = blocks[l], x = resid[l].base, out = resid[l + 1].base
            timed(.norms) { RMSNorm.forward(out: a.ln1.base, rstd: a.rstd1.base, x: x, weight: w.norm1, n: n, c: c) }
            timed(.attnProjections) {
                Linear.forward(out: a.q.base, inp: a.ln1.base, weight: w.wq, n: n, inFeatures: c, outFeatures: c)
                Linear.forward(out: a.k.base, inp: a.ln1.base, weight: w.wk, n: n, inFeatures: c, outFeatures: c)
                Linear.forward(out: a.v.base, inp: a.ln1.base, weight: w.wv, n: n, inFeatures: c, outFeatures: c)
            }
            timed(.attnCore) {
                Attention.forward(y: a.y.base, att: a.att.base, q: a.q.base, k: a.k.base, v: a.v.base,
                                  b: b, t: t, h: m.nHead, d: m.headSize, ldc: c)
            }
            timed(.attnProjections) {
                a.mid.base.update(from: x, count: n * c)
                Linear.forward(out: a.mid.base, inp: a.y.base, weight: w.wo, n: n, inFeatures: c, outFeatures: c, accumulate: true)
            }
            timed(.norms) { RMSNorm.forward(out: a.ln2.base, rstd: a.rstd2.base, x: a.mid.base, weight: w.norm2, n: n, c: c) }
            out.update(from: a.mid.base, count: n * c)
            if let mw = w.moe, let ma = a.moe {
                aux.append(MoE.forward(out: out, x: a.ln2.base, w: mw, act: ma, n: n, c: c, f: f, e: m.nExpert, k: m.topK, profile: profile))
            } else {
                timed(.denseFFN) {
                    MLP.forward(o: out, h: a.h!.base, a: a.a!.base, x: a.ln2.base, w1: w.ffnW1!, w2: w.ffnW2!,
                                n: n, c: c, f: f, accumulate: true)
                }
            }
        }
        lastAux = aux
        timed(.norms) {
            RMSNorm.forward(out: lnf.base, rstd: rstdf.base, x: resid[m.nLayer].base,
                            weight: store.pointer("norm.weight", in: store.params), n: n, c: c)
        }
        timed(.headLoss) {
            Linear.forward(out: logits.base, inp: lnf.base, weight: store.pointer("head.weight", in: store.params),
                           n: n, inFeatures: c, outFeatures: m.vocabSize)
            targets.withUnsafeBufferPointer { tp in
                CrossEntropy.forward(losses: losses.base, logits: logits.base, targets: tp.baseAddress!, n: n, v: m.vocabSize)
            }
        }
        var sum: Double = 0
        for i in 0..<n { sum += Double(losses.base[i]) }
        return Float(sum / Double(n))
    }

    /// Tokens routed to each expert in the last forward: [MoE block][expert].
    public var expertTokenCounts: [[Int]] { blocks.compactMap { $0.moe?.counts } }

    /// Per-token losses of the last forward, [B*T].
    public var lastTokenLosses: [Float] { Array(UnsafeBufferPointer(start: losses.base, count: batch * time)) }
}
