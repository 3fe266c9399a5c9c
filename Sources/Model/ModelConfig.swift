// The architecture of the decoder-only MoE transformer (see DESIGN.md, "Model").
// Shape legend: V vocab, T max sequence length, L layers, C channels, H heads, G key/value heads
// (grouped-query attention: H / G query heads share one), D head size, E experts per MoE layer,
// K top-k, F expert hidden width.
import Placement

/// A model architecture problem a user can cause; the message names the field.
public struct ModelConfigError: Error, CustomStringConvertible, Sendable {
    public let field: String
    public let message: String
    public var description: String { "model.\(field): \(message)" }
}

/// The architecture. Every field is a plain number so a job file can set it.
public struct ModelConfig: Equatable, Sendable, Codable {
    public var vocabSize: Int  // V
    public var seqLen: Int  // T (max positions)
    public var nLayer: Int  // L
    public var nEmbd: Int  // C
    public var nHead: Int  // H
    public var nExpert: Int  // E
    public var topK: Int  // K
    public var ffHidden: Int  // F
    public var moeEvery: Int  // 1: every block is MoE; n: every n-th block (1-based); 0: all dense
    /// "learned": a [T, C] position embedding added to the tokens; "rope": rotary embeddings on q
    /// and k (rotate-half layout, as Hugging Face's Llama and Mixtral), no position parameters.
    public var positions: String
    /// "gelu": w2(gelu(w1 x)); "swiglu": w2(silu(w1 x) * w3 x), as Mixtral's experts.
    public var ffn: String
    /// RoPE base: frequency i of a head of size D is ropeTheta^(-2i / D).
    public var ropeTheta: Double
    /// Always-active experts of every MoE block beside the routed ones (DeepSeek-MoE), each an
    /// FFN of width F applied to every token and added to the routed experts' output.
    public var nSharedExperts: Int = 0
    /// "learned": the MoE router is trained; "random": a fixed random router (SMoE-Dropout),
    /// initialised from the seed like any weight and never updated.
    public var router: String = "learned"
    /// "mha": every head's output counts fully; "moh": Mixture-of-Head attention, each token's head
    /// outputs weighted by a head router before the output projection (HeadRouter).
    public var attention: String = "mha"
    /// MoH: heads 0..<mohSharedHeads are always active; of the rest, each token takes its top
    /// mohActiveHeads by router score (0: half the routed heads, at least one; `activeRoutedHeads`).
    public var mohSharedHeads: Int = 0
    public var mohActiveHeads: Int = 0
    /// The routed heads each token takes under MoH: mohActiveHeads, or half the routed heads when
    /// it is left at 0.
    public var activeRoutedHeads: Int { mohActiveHeads > 0 ? mohActiveHeads : max(1, (nHead - mohSharedHeads) / 2) }
    /// G: key/value heads (grouped-query attention; 0: nHead, plain multi-head attention).
    public var nKVHead: Int = 0
    /// D when it is not C / H (Qwen3-MoE sets it; 0: C / H).
    public var headDim: Int = 0
    /// "none" | "head": RMSNorm over each head's q and k, weights [D] (Qwen3) | "full": RMSNorm
    /// over the whole q [H*D] and k [G*D] projections, weights of those widths (OLMoE).
    public var qkNorm: String = "none"
    /// Renormalise the top-k gate weights to sum to 1 (Mixtral) or keep the softmax
    /// probabilities (Qwen3-MoE, OLMoE).
    public var normTopK: Bool = true
    /// The epsilon of every RMSNorm.
    public var rmsNormEps: Double = 1e-5
    /// The Hugging Face family the export writes ("": Mixtral; "mixtral", "qwen3_moe", "olmoe"):
    /// set by `ckpt import`, or by the user.
    public var family: String = ""

    public init(
        vocabSize: Int, seqLen: Int, nLayer: Int, nEmbd: Int, nHead: Int,
        nExpert: Int, topK: Int, ffHidden: Int, moeEvery: Int,
        positions: String = "learned", ffn: String = "gelu", ropeTheta: Double = 10000
    ) {
        self.vocabSize = vocabSize; self.seqLen = seqLen; self.nLayer = nLayer; self.nEmbd = nEmbd
        self.nHead = nHead; self.nExpert = nExpert; self.topK = topK; self.ffHidden = ffHidden
        self.moeEvery = moeEvery; self.positions = positions; self.ffn = ffn; self.ropeTheta = ropeTheta
    }

    /// Rotary position embeddings instead of learned ones.
    public var usesRope: Bool { positions == "rope" }
    /// SwiGLU experts and dense FFN (three matrices) instead of GELU (two).
    public var usesSwiGLU: Bool { ffn == "swiglu" }
    /// Matrices of one expert (or the dense FFN), in buffer order: w1 [F, C], (w3 [F, C],) w2 [C, F].
    public var ffnMatrices: [String] { usesSwiGLU ? ["w1", "w3", "w2"] : ["w1", "w2"] }
    /// Width of an FFN's saved pre-activation per row: F (gelu) or 2F (swiglu: w1 x and w3 x).
    public var ffnPreactWidth: Int { usesSwiGLU ? 2 * ffHidden : ffHidden }

    /// The random (never trained) SMoE-Dropout router.
    public var usesRandomRouter: Bool { router == "random" }
    /// Mixture-of-Head attention.
    public var usesMoH: Bool { attention == "moh" }
    /// Rows of a block's head router `attn.router.weight` [rows, C] (MoH only): a score per head,
    /// and with shared heads two more for the shared/routed mix.
    public var headRouterRows: Int { usesMoH ? nHead + (mohSharedHeads > 0 ? 2 : 0) : 0 }

    /// Head size D: headDim, or C / H.
    public var headSize: Int { headDim > 0 ? headDim : nEmbd / nHead }
    /// G: key/value heads.
    public var kvHeads: Int { nKVHead > 0 ? nKVHead : nHead }
    /// Width of the query projection and of the attention output, H * D (C unless headDim is set).
    public var qWidth: Int { nHead * headSize }
    /// Width of the key and value projections, G * D.
    public var kvWidth: Int { kvHeads * headSize }
    /// RMSNorm over q and k (per head or over the whole projection).
    public var usesQKNorm: Bool { qkNorm != "none" }
    /// Elements of one block's q-norm and k-norm weights: D each (head), H*D and G*D (full).
    public var qkNormWidths: (q: Int, k: Int) {
        switch qkNorm {
        case "head": return (headSize, headSize)
        case "full": return (qWidth, kvWidth)
        default: return (0, 0)
        }
    }
    /// Parameters of one block's attention: wq, wk, wv, wo and the q/k norm weights.
    public var attentionParams: Int {
        2 * nEmbd * qWidth + 2 * nEmbd * kvWidth + qkNormWidths.q + qkNormWidths.k
    }

    /// Whether block `layer` (0-based) uses the MoE FFN: blocks moeEvery-1, 2*moeEvery-1, ...
    public func isMoE(_ layer: Int) -> Bool { moeEvery > 0 && (layer + 1) % moeEvery == 0 }

    /// Number of MoE blocks.
    public var moeLayerCount: Int { (0..<nLayer).filter(isMoE).count }
    /// The block index of each MoE layer: moeBlocks[moeLayer] is the block it sits in (the
    /// placement counts MoE layers; parameter names count blocks).
    public var moeBlocks: [Int] { (0..<nLayer).filter(isMoE) }
    /// "layers.{block}.moe.experts.{expert}.": the prefix of one routed expert's matrices (the
    /// one place expert parameter names are built; `expertWeight` adds the matrix).
    public static func expertPrefix(block: Int, expert: Int) -> String { "layers.\(block).moe.experts.\(expert)." }
    /// The name of one matrix ("w1", "w2", "w3") of routed expert `expert` of block `block`.
    public static func expertWeight(block: Int, expert: Int, matrix: String) -> String {
        expertPrefix(block: block, expert: expert) + matrix + ".weight"
    }
    /// Whether a parameter name is a routed expert's (the tensors re-placement migrates).
    public static func isExpertParameter(_ name: String) -> Bool { name.contains(".moe.experts.") }
    /// Whether any block runs a dense MLP (a dense FFN block, or shared experts beside the routed
    /// ones): only then does backward need the dense scratch [N, F + pre-activation].
    public var hasDenseMLP: Bool { moeLayerCount < nLayer || nSharedExperts > 0 }

    /// Throws the first invalid field, naming it.
    public func validate() throws {
        func fail(_ f: String, _ m: String) -> ModelConfigError { ModelConfigError(field: f, message: m) }
        if vocabSize < 2 || vocabSize > 1 << 22 {
            throw fail("vocabSize", "must be in 2...\(1 << 22), got \(vocabSize)")
        }
        // Upper bounds keep every count below Int overflow and every per-layer table small before
        // the memory pre-check sizes the model (which rejects what a node cannot hold).
        if seqLen < 1 || seqLen > 1 << 24 { throw fail("seqLen", "must be in 1...\(1 << 24), got \(seqLen)") }
        if nLayer < 1 || nLayer > 65536 { throw fail("nLayer", "must be in 1...65536, got \(nLayer)") }
        if nEmbd < 1 || nEmbd > 1 << 31 { throw fail("nEmbd", "must be in 1...\(1 << 31), got \(nEmbd)") }
        if nHead < 1 || nHead > 65536 { throw fail("nHead", "must be in 1...65536, got \(nHead)") }
        if headDim == 0 && nEmbd % nHead != 0 {
            throw fail(
                "nEmbd",
                "\(nEmbd) is not divisible by model.nHead = \(nHead); choose C = H x head size or set "
                    + "model.headDim")
        }
        if ffHidden < 1 || ffHidden > 1 << 31 { throw fail("ffHidden", "must be in 1...\(1 << 31), got \(ffHidden)") }
        if moeEvery < 0 { throw fail("moeEvery", "must be >= 0 (0 = no MoE blocks), got \(moeEvery)") }
        if nExpert < 1 || nExpert > 65536 { throw fail("nExpert", "must be in 1...65536, got \(nExpert)") }
        if nLayer * nExpert > 1 << 20 {
            throw fail(
                "nExpert", "\(nExpert) experts x model.nLayer = \(nLayer) blocks exceeds \(1 << 20) (expert placements)"
            )
        }
        if topK < 1 { throw fail("topK", "must be >= 1, got \(topK)") }
        if topK > nExpert {
            throw fail("topK", "\(topK) exceeds model.nExpert = \(nExpert); k experts must exist to choose from")
        }
        if positions != "learned" && positions != "rope" {
            throw fail("positions", "must be \"learned\" or \"rope\", got \"\(positions)\"")
        }
        if ffn != "gelu" && ffn != "swiglu" { throw fail("ffn", "must be \"gelu\" or \"swiglu\", got \"\(ffn)\"") }
        if !(ropeTheta > 1) || !ropeTheta.isFinite { throw fail("ropeTheta", "must be a number > 1, got \(ropeTheta)") }
        if nSharedExperts < 0 || nSharedExperts > 65536 {
            throw fail("nSharedExperts", "must be in 0...65536, got \(nSharedExperts)")
        }
        if router != "learned" && router != "random" {
            throw fail("router", "must be \"learned\" or \"random\", got \"\(router)\"")
        }
        try validateAttention()
        try validateHeads()
        if usesRope && headSize % 2 != 0 {
            throw fail("positions", "rope rotates pairs of channels: the head size D = \(headSize) must be even")
        }
    }

    /// Grouped-query heads, the head size, q/k norm and the norm epsilon.
    func validateHeads() throws {
        func fail(_ f: String, _ m: String) -> ModelConfigError { ModelConfigError(field: f, message: m) }
        if headDim < 0 || headDim > 1 << 16 { throw fail("headDim", "must be in 0...65536 (0: C / H), got \(headDim)") }
        if nKVHead < 0 || nKVHead > nHead {
            throw fail("nKVHead", "must be in 0...model.nHead (0: nHead), got \(nKVHead)")
        }
        if nHead % kvHeads != 0 {
            throw fail(
                "nKVHead",
                "\(nKVHead) does not divide model.nHead = \(nHead); each key/value head serves nHead / "
                    + "nKVHead query heads")
        }
        if !["none", "head", "full"].contains(qkNorm) {
            throw fail("qkNorm", "must be \"none\", \"head\" or \"full\", got \"\(qkNorm)\"")
        }
        if !(rmsNormEps > 0 && rmsNormEps < 1) { throw fail("rmsNormEps", "must be in (0, 1), got \(rmsNormEps)") }
        if !["", "mixtral", "qwen3_moe", "olmoe"].contains(family) {
            throw fail("family", "must be \"\", \"mixtral\", \"qwen3_moe\" or \"olmoe\", got \"\(family)\"")
        }
        if usesMoH && kvHeads != nHead {
            throw fail("nKVHead", "Mixture-of-Head attention (model.attention = moh) needs nKVHead = nHead")
        }
    }

    /// The attention keys: mha, or moh with its head counts.
    func validateAttention() throws {
        func fail(_ f: String, _ m: String) -> ModelConfigError { ModelConfigError(field: f, message: m) }
        guard usesMoH else {
            if attention != "mha" { throw fail("attention", "must be \"mha\" or \"moh\", got \"\(attention)\"") }
            if mohSharedHeads != 0 || mohActiveHeads != 0 {
                throw fail(
                    "attention", "is \"mha\", but model.mohSharedHeads/mohActiveHeads are set; set it to \"moh\"")
            }
            return
        }
        if mohSharedHeads < 0 || mohSharedHeads >= nHead {
            throw fail("mohSharedHeads", "must be in 0..<model.nHead (\(nHead)), got \(mohSharedHeads)")
        }
        let routed = nHead - mohSharedHeads
        if mohActiveHeads < 0 || mohActiveHeads > routed {
            throw fail(
                "mohActiveHeads",
                "must be in 1...\(routed) (model.nHead - model.mohSharedHeads routed heads; 0: half of them), "
                    + "got \(mohActiveHeads)")
        }
    }

    /// Parameters a token passes through, excluding the token and position embeddings:
    /// attention, norms, router, K experts (MoE blocks) or the dense FFN, final norm, output head.
    public var activeNonEmbeddingParams: Int {
        let c = nEmbd, mlp = ffnMatrices.count * nEmbd * ffHidden
        var n = 0
        for l in 0..<nLayer {
            n += attentionParams + 2 * c + headRouterRows * c
            n += isMoE(l) ? (c * nExpert + (topK + nSharedExperts) * mlp) : mlp
        }
        return n + c + vocabSize * c
    }

    /// Every parameter of the model (all experts, embeddings included).
    public var totalParams: Int {
        let c = nEmbd, mlp = ffnMatrices.count * nEmbd * ffHidden
        var n = vocabSize * c + (usesRope ? 0 : seqLen * c)
        for l in 0..<nLayer {
            n +=
                attentionParams + 2 * c + headRouterRows * c
                + (isMoE(l) ? c * nExpert + (nExpert + nSharedExperts) * mlp : mlp)
        }
        return n + c + vocabSize * c
    }

    /// Model FLOPs per token for training at sequence length `t`:
    /// 6 x active non-embedding parameters + 12 x L x (H x D) x T (attention scores and values): the
    /// matrix products MFU counts (SwiGLU's third matrix included; element-wise work is not).
    public func flopsPerToken(seqLen t: Int) -> Double {
        6 * Double(activeNonEmbeddingParams) + 12 * Double(nLayer * qWidth * t)
    }

    /// Training FLOPs per token by part: "matmuls" (6 x active non-embedding parameters),
    /// "attention" (scores and values), "rope" (q and k rotations) and "ffnActivation"
    /// (element-wise gelu or silu-and-gate of the FFN hidden rows).
    public func flopsPerTokenParts(seqLen t: Int) -> [String: Double] {
        let ffnRows = Double((0..<nLayer).reduce(0) { $0 + (isMoE($1) ? topK + nSharedExperts : 1) } * ffHidden)
        return [
            "matmuls": 6 * Double(activeNonEmbeddingParams),
            "attention": 12 * Double(nLayer * qWidth * t),
            "rope": usesRope ? 6 * Double(nLayer * (qWidth + kvWidth)) : 0,
            "ffnActivation": (usesSwiGLU ? 12 : 8) * ffnRows
        ]
    }
}

extension ModelConfig {
    /// Training FLOPs per token in the routed experts: 6 x (K experts x 2 or 3 matrices of C x F) per MoE block.
    public var expertFlopsPerToken: Double {
        6 * Double(moeLayerCount * topK * ffnMatrices.count * nEmbd * ffHidden)
    }

    /// The scheduler's view of this model: expert shapes and the FLOPs of everything else.
    public func moeShape(baseBytesPerRank: Double) -> MoEShape {
        MoEShape(
            nEmbd: nEmbd, ffHidden: ffHidden, nExpert: nExpert, moeLayers: moeLayerCount,
            denseFlopsPerToken: flopsPerToken(seqLen: seqLen) - expertFlopsPerToken, baseBytesPerRank: baseBytesPerRank,
            matrices: ffnMatrices.count)
    }
}
