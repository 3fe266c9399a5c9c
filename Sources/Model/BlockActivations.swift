// The per-block pieces of Transformer: weight pointers, what backward recomputes, and the saved
// activations (shared between blocks by recompute). Shape legend as in Transformer.swift.
import Tensor

/// Weight pointers of one block (into params or into grads).
struct BlockWeights {
    let norm1, wq, wk, wv, wo, norm2: UnsafeMutablePointer<Float>  // wq [Hl*D, C], wk/wv [Gl*D, C], wo [C, Hl*D]
    let qkNorm: QKNormWeights?  // model.qkNorm: [D] each (head), or [Hl*D] and [Gl*D] (full)
    let headRouter: UnsafeMutablePointer<Float>?  // MoH: [R, C]
    let ffn: FFNWeights?  // dense blocks
    let moe: MoEWeights?  // MoE blocks
    let shared: [FFNWeights]  // MoE blocks: the always-active experts
}

/// Which saved activations backward recomputes instead of keeping (same kernels, same order:
/// the gradients are bitwise those of `none`).
public enum Recompute: String, Sendable, CaseIterable {
    /// Every block keeps all its activations.
    case none
    /// Blocks share one set of attention activations (rmsnorm1 output, q, k, v, y, lse); backward
    /// recomputes a block's attention from its input before the attention's backward.
    case attention
    /// Blocks of a kind (dense, MoE) share one set of all activations; only block inputs are kept,
    /// and backward recomputes the whole block (its MoE exchanges included) before its backward.
    case block
}

/// Activations of one block, sized for maxBatch x seqLen rows.
final class BlockActivations {
    let ln1, mid, ln2, attnOut: FloatBuffer  // [N, C]
    let q, y: FloatBuffer  // [N, Hl*D]
    let k, v: FloatBuffer  // [N, Gl*D]
    let qk: QKNormState?  // model.qkNorm: the projections before the norm, and its rstd
    let rstd1, rstd2: FloatBuffer  // [N]
    let lse: FloatBuffer  // [B, Hl, T] attention rows' log-sum-exp
    let h, a: FloatBuffer?  // dense blocks: pre-activations [N, F] (SwiGLU: [2, N, F]), activations [N, F]
    let sharedPre, sharedAct: [FloatBuffer]  // MoE blocks: per shared expert, as h and a
    let moe: MoEState?
    let heads: HeadGateState?  // MoH: the head router's state (with the attention buffers)
    /// `attention` given: this block uses its attention buffers (ln1, attnOut, q, k, v, y, rstd1,
    /// lse, heads). `maxTopK`: the most experts per token its MoE state holds.
    init(
        config m: ModelConfig, n: Int, b: Int, tp: Int, moe isMoE: Bool, maxTopK: Int,
        attention shared: BlockActivations? = nil
    ) {
        let c = m.nEmbd
        mid = FloatBuffer(count: n * c); ln2 = FloatBuffer(count: n * c); rstd2 = FloatBuffer(count: n)
        if let s = shared {
            ln1 = s.ln1; attnOut = s.attnOut; q = s.q; k = s.k; v = s.v; y = s.y; rstd1 = s.rstd1; lse = s.lse
            heads = s.heads; qk = s.qk
        } else {
            let sh = AttentionShape(config: m, tp: tp)
            ln1 = FloatBuffer(count: n * c); attnOut = FloatBuffer(count: n * c)
            q = FloatBuffer(count: n * sh.ql); k = FloatBuffer(count: n * sh.kvl); v = FloatBuffer(count: n * sh.kvl)
            y = FloatBuffer(count: n * sh.ql); rstd1 = FloatBuffer(count: n)
            lse = FloatBuffer(count: b * sh.hl * m.seqLen)
            heads = m.usesMoH ? HeadGateState(config: m, n: n, tp: tp) : nil
            qk = m.usesQKNorm ? QKNormState(config: m, n: n, shape: sh) : nil
        }
        sharedPre = isMoE ? (0..<m.nSharedExperts).map { _ in FloatBuffer(count: n * m.ffnPreactWidth) } : []
        sharedAct = isMoE ? (0..<m.nSharedExperts).map { _ in FloatBuffer(count: n * m.ffHidden) } : []
        if isMoE {
            h = nil; a = nil
            moe = MoEState(n: n, e: m.nExpert, k: maxTopK)
        } else {
            h = FloatBuffer(count: n * m.ffnPreactWidth); a = FloatBuffer(count: n * m.ffHidden)
            moe = nil
        }
    }
}

/// The q/k norm's saved inputs and reciprocal RMS: per head ([N*Hl], [N*Gl]) or per row ([N]).
final class QKNormState {
    let qRaw, kRaw, qRstd, kRstd: FloatBuffer
    init(config m: ModelConfig, n: Int, shape sh: AttentionShape) {
        let perHead = m.qkNorm == "head"
        qRaw = FloatBuffer(count: n * sh.ql); kRaw = FloatBuffer(count: n * sh.kvl)
        qRstd = FloatBuffer(count: perHead ? n * sh.hl : n); kRstd = FloatBuffer(count: perHead ? n * sh.gl : n)
    }
}
