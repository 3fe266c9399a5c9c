// The architecture of the decoder-only MoE transformer (see DESIGN.md, "Model").
// Shape legend: V vocab, T max sequence length, L layers, C channels, H heads,
// E experts per MoE layer, K top-k, F expert hidden width.
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

    public init(
        vocabSize: Int, seqLen: Int, nLayer: Int, nEmbd: Int, nHead: Int,
        nExpert: Int, topK: Int, ffHidden: Int, moeEvery: Int
    ) {
        self.vocabSize = vocabSize; self.seqLen = seqLen; self.nLayer = nLayer; self.nEmbd = nEmbd
        self.nHead = nHead; self.nExpert = nExpert; self.topK = topK; self.ffHidden = ffHidden
        self.moeEvery = moeEvery
    }

    /// Head size D = C / H.
    public var headSize: Int { nEmbd / nHead }

    /// Whether block `layer` (0-based) uses the MoE FFN: blocks moeEvery-1, 2*moeEvery-1, ...
    public func isMoE(_ layer: Int) -> Bool { moeEvery > 0 && (layer + 1) % moeEvery == 0 }

    /// Number of MoE blocks.
    public var moeLayerCount: Int { (0..<nLayer).filter(isMoE).count }

    /// Throws the first invalid field, naming it.
    public func validate() throws {
        func fail(_ f: String, _ m: String) -> ModelConfigError { ModelConfigError(field: f, message: m) }
        if vocabSize < 2 || vocabSize > 65536 { throw fail("vocabSize", "must be in 2...65536, got \(vocabSize)") }
        if seqLen < 1 { throw fail("seqLen", "must be >= 1, got \(seqLen)") }
        if nLayer < 1 { throw fail("nLayer", "must be >= 1, got \(nLayer)") }
        if nEmbd < 1 { throw fail("nEmbd", "must be >= 1, got \(nEmbd)") }
        if nHead < 1 { throw fail("nHead", "must be >= 1, got \(nHead)") }
        if nEmbd % nHead != 0 {
            throw fail("nEmbd", "\(nEmbd) is not divisible by model.nHead = \(nHead); choose C = H x head size")
        }
        if ffHidden < 1 { throw fail("ffHidden", "must be >= 1, got \(ffHidden)") }
        if moeEvery < 0 { throw fail("moeEvery", "must be >= 0 (0 = no MoE blocks), got \(moeEvery)") }
        if nExpert < 1 { throw fail("nExpert", "must be >= 1, got \(nExpert)") }
        if topK < 1 || topK > 2 { throw fail("topK", "must be 1 or 2, got \(topK)") }
        if topK > nExpert {
            throw fail("topK", "\(topK) exceeds model.nExpert = \(nExpert); k experts must exist to choose from")
        }
    }

    /// Parameters a token passes through, excluding the token and position embeddings:
    /// attention, norms, router, K experts (MoE blocks) or the dense FFN, final norm, output head.
    public var activeNonEmbeddingParams: Int {
        let c = nEmbd, f = ffHidden
        var n = 0
        for l in 0..<nLayer {
            n += 4 * c * c + 2 * c
            n += isMoE(l) ? (c * nExpert + topK * 2 * c * f) : 2 * c * f
        }
        return n + c + vocabSize * c
    }

    /// Every parameter of the model (all experts, embeddings included).
    public var totalParams: Int {
        let c = nEmbd, f = ffHidden
        var n = vocabSize * c + seqLen * c
        for l in 0..<nLayer { n += 4 * c * c + 2 * c + (isMoE(l) ? c * nExpert + nExpert * 2 * c * f : 2 * c * f) }
        return n + c + vocabSize * c
    }

    /// Model FLOPs per token for training at sequence length `t`:
    /// 6 x active non-embedding parameters + 12 x L x C x T (attention scores and values).
    public func flopsPerToken(seqLen t: Int) -> Double {
        6 * Double(activeNonEmbeddingParams) + 12 * Double(nLayer * nEmbd * t)
    }
}

extension ModelConfig {
    /// Training FLOPs per token in the routed experts: 6 x (K experts x 2 matrices of C x F) per MoE block.
    public var expertFlopsPerToken: Double { 6 * Double(moeLayerCount * topK * 2 * nEmbd * ffHidden) }

    /// The scheduler's view of this model: expert shapes and the FLOPs of everything else.
    public func moeShape(baseBytesPerRank: Double) -> MoEShape {
        MoEShape(
            nEmbd: nEmbd, ffHidden: ffHidden, nExpert: nExpert, moeLayers: moeLayerCount,
            denseFlopsPerToken: flopsPerToken(seqLen: seqLen) - expertFlopsPerToken, baseBytesPerRank: baseBytesPerRank)
    }
}
