// Named parameters in contiguous buffers: parameters, gradients and each AdamW moment are one
// FloatBuffer each, and every named tensor is a view (offset, shape) into them. Gradient
// reduction and checkpoint I/O can then be one call over a buffer.
// Matrices are row-major [out, in]; names match a PyTorch-style module tree (DESIGN.md).
import Tensor

/// One named tensor's place in the contiguous buffers.
public struct ParameterInfo: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// AdamW weight decay applies (matrices and embeddings: yes; norm weights: no).
    public let decay: Bool
    /// The initial standard deviation (0 means the tensor starts at ones: norm weights).
    public let initStd: Float
}

/// The parameter list of a ModelConfig, in a fixed order, and the buffers behind it.
public final class ParameterStore: @unchecked Sendable {
    public let infos: [ParameterInfo]
    public let params: FloatBuffer
    public let grads: FloatBuffer
    public let adamM: FloatBuffer
    public let adamV: FloatBuffer
    private let indexByName: [String: Int]

    public var count: Int { params.count }

    public init(config c: ModelConfig) {
        var infos: [ParameterInfo] = []
        var offset = 0
        // Output projections (wo, w2) start scaled by 1/sqrt(2L) (GPT-2's residual scaling).
        let std: Float = 0.02
        let outStd = std / Float(2 * c.nLayer).squareRoot()
        func add(_ name: String, _ shape: [Int], decay: Bool = true, initStd: Float = std) {
            let info = ParameterInfo(name: name, shape: shape, offset: offset, decay: decay, initStd: initStd)
            infos.append(info)
            offset += info.count
        }
        let C = c.nEmbd, F = c.ffHidden
        add("embed.weight", [c.vocabSize, C])
        add("pos.weight", [c.seqLen, C])
        for l in 0..<c.nLayer {
            let p = "layers.\(l)."
            add(p + "norm1.weight", [C], decay: false, initStd: 0)
            add(p + "attn.wq.weight", [C, C])
            add(p + "attn.wk.weight", [C, C])
            add(p + "attn.wv.weight", [C, C])
            add(p + "attn.wo.weight", [C, C], initStd: outStd)
            add(p + "norm2.weight", [C], decay: false, initStd: 0)
            if c.isMoE(l) {
                add(p + "moe.router.weight", [c.nExpert, C])
                for e in 0..<c.nExpert {
                    add(p + "moe.experts.\(e).w1.weight", [F, C])
                    add(p + "moe.experts.\(e).w2.weight", [C, F], initStd: outStd)
                }
            } else {
                add(p + "ffn.w1.weight", [F, C])
                add(p + "ffn.w2.weight", [C, F], initStd: outStd)
            }
        }
        add("norm.weight", [C], decay: false, initStd: 0)
        add("head.weight", [c.vocabSize, C])
        self.infos = infos
        var idx: [String: Int] = [:]
        for (i, info) in infos.enumerated() { idx[info.name] = i }
        indexByName = idx
        params = FloatBuffer(count: offset)
        grads = FloatBuffer(count: offset)
        adamM = FloatBuffer(count: offset)
        adamV = FloatBuffer(count: offset)
    }

    /// The info of a named tensor, or nil.
    public func info(_ name: String) -> ParameterInfo? { indexByName[name].map { infos[$0] } }

    /// Pointer to a named tensor in `buffer` (params, grads, adamM or adamV).
    public func pointer(_ name: String, in buffer: FloatBuffer) -> UnsafeMutablePointer<Float> {
        guard let i = indexByName[name] else { preconditionFailure("no parameter named \(name)") }
        return buffer.base + infos[i].offset
    }

    /// Deterministic initialisation keyed by (seed, parameter name, element index):
    /// N(0, initStd) for matrices and embeddings, ones for norm weights. The same parameter gets
    /// the same values whatever the layout or the order of initialisation.
    public func initialize(seed: UInt64) {
        for info in infos {
            let p = params.base + info.offset
            if info.initStd == 0 {
                for i in 0..<info.count { p[i] = 1 }
                continue
            }
            let key = CounterRNG.hash(seed, 0x494E4954 /* "INIT" */, CounterRNG.fnv1a(info.name))
            for i in 0..<info.count {
                p[i] = info.initStd * CounterRNG.normal(CounterRNG.mix(key ^ CounterRNG.mix(UInt64(i))))
            }
        }
        adamM.zero()
        adamV.zero()
        grads.zero()
    }
}
