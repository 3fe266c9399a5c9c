import Model
import Tensor
import XCTest

final class TransformerTests: XCTestCase {
    static let config = ModelConfig(
        vocabSize: 11, seqLen: 6, nLayer: 2, nEmbd: 8, nHead: 2,
        nExpert: 3, topK: 2, ffHidden: 12, moeEvery: 2)

    func batch(_ b: Int, _ t: Int, seed: UInt64) -> ([Int32], [Int32]) {
        let toks = (0..<(b * t + 1)).map { Int32(CounterRNG.below(11, CounterRNG.hash(seed, UInt64($0)))) }
        var x: [Int32] = [], y: [Int32] = []
        for bi in 0..<b { for ti in 0..<t { x.append(toks[bi * t + ti]); y.append(toks[bi * t + ti + 1]) } }
        return (x, y)
    }

    func testParameterNamesShapesAndContiguity() {
        let s = ParameterStore(config: Self.config)
        XCTAssertEqual(s.info("embed.weight")?.shape, [11, 8])
        XCTAssertEqual(s.info("pos.weight")?.shape, [6, 8])
        XCTAssertEqual(s.info("layers.0.ffn.w1.weight")?.shape, [12, 8])
        XCTAssertNil(s.info("layers.0.moe.router.weight"), "layer 0 is dense with moeEvery = 2")
        XCTAssertEqual(s.info("layers.1.moe.router.weight")?.shape, [3, 8])
        XCTAssertEqual(s.info("layers.1.moe.experts.2.w2.weight")?.shape, [8, 12])
        XCTAssertEqual(s.info("head.weight")?.shape, [11, 8])
        // Views tile the buffer with no gaps or overlaps.
        var next = 0
        for info in s.infos { XCTAssertEqual(info.offset, next, info.name); next += info.count }
        XCTAssertEqual(next, s.count)
        XCTAssertEqual(s.infos.first?.name, "embed.weight")
        XCTAssertEqual(s.infos.last?.name, "head.weight")
    }

    func testInitializationIsKeyedByNameAndSeed() {
        let a = ParameterStore(config: Self.config), b = ParameterStore(config: Self.config)
        a.initialize(seed: 5); b.initialize(seed: 5)
        XCTAssertEqual(a.params.toArray(), b.params.toArray())
        b.initialize(seed: 6)
        XCTAssertNotEqual(a.params.toArray(), b.params.toArray())
        XCTAssertEqual(a.pointer("norm.weight", in: a.params)[3], 1)
        // A parameter's values do not depend on which other parameters exist (layout independence).
        var deeper = Self.config
        deeper.nLayer = 3
        let c = ParameterStore(config: deeper)
        c.initialize(seed: 5)
        XCTAssertEqual(
            a.pointer("layers.1.moe.experts.0.w1.weight", in: a.params)[7],
            c.pointer("layers.1.moe.experts.0.w1.weight", in: c.params)[7])
        let w = a.params.toArray()
        let emb = Array(w[0..<88])
        let std = (emb.map { Double($0 * $0) }.reduce(0, +) / Double(emb.count)).squareRoot()
        XCTAssertEqual(std, 0.02, accuracy: 0.006)
    }

    func testInitialLossIsNearLogVocab() throws {
        let m = Transformer(config: Self.config, maxBatch: 4)
        m.store.initialize(seed: 1)
        let (x, y) = batch(4, 6, seed: 2)
        let out = try m.forward(MicroBatch(tokens: x, targets: y, batch: 4, time: 6))
        XCTAssertEqual(Double(out.meanLoss), 2.3979, accuracy: 0.05)  // ln 11
        XCTAssertEqual(out.tokens, 24)
        XCTAssertEqual(out.expertCounts.count, 1)
        XCTAssertEqual(out.expertCounts[0].reduce(0, +), 4 * 6 * 2, "every token reaches K experts")
        XCTAssertEqual(out.aux.count, 1)
        XCTAssertEqual(out.z.count, 1)
        XCTAssertNil(out.logits, "logits are copied out only when asked for")
    }

    /// The whole model's backward (every parameter tensor) against central finite differences.
    /// Rope and SwiGLU run with K = E = 2: every token takes every expert, so no step of the
    /// difference crosses a top-k routing change (where the objective jumps).
    func testWholeModelGradientsMatchFiniteDifferences() throws {
        let shapes = [
            (1, "learned", "gelu", 3), (2, "learned", "gelu", 3), (1, "rope", "swiglu", 2), (2, "rope", "swiglu", 2),
            (1, "rope", "gelu", 2), (1, "learned", "swiglu", 2), (2, "rope", "swiglu", -2)
        ]
        var configs: [(String, ModelConfig)] = shapes.map { moeEvery, positions, ffn, experts in
            var cfg = Self.config
            cfg.moeEvery = moeEvery
            cfg.positions = positions
            cfg.ffn = ffn
            cfg.nExpert = abs(experts)
            cfg.nSharedExperts = experts < 0 ? 2 : 0  // -2: two routed and two shared experts
            return ("moeEvery \(moeEvery) \(positions) \(ffn) E\(abs(experts)) shared \(cfg.nSharedExperts)", cfg)
        }
        // MoH with every routed head active (no top-A choice for a difference to flip), with and
        // without shared heads (the two-stage mix); and SMoE-Dropout's random router, not trained.
        for (shared, active) in [(1, 3), (0, 4)] {
            var cfg = Self.config
            cfg.nHead = 4; cfg.nExpert = 2; cfg.positions = "rope"; cfg.ffn = "swiglu"
            cfg.attention = "moh"; cfg.mohSharedHeads = shared; cfg.mohActiveHeads = active
            configs.append(("moh shared \(shared) active \(active)", cfg))
        }
        var random = Self.config
        random.nExpert = 2
        random.router = "random"
        configs.append(("random router", random))
        // The open families' options: grouped-query heads with a head size not C / H and Qwen3's
        // per-head q/k norm; one key/value head with OLMoE's whole-projection norm; unrenormalised
        // top-k weights and another norm epsilon.
        for (kv, headDim, qkNorm) in [(2, 4, "head"), (1, 0, "full")] {
            var cfg = Self.config
            cfg.nHead = 4; cfg.nKVHead = kv; cfg.headDim = headDim; cfg.qkNorm = qkNorm
            cfg.positions = "rope"; cfg.ffn = "swiglu"; cfg.nExpert = 2; cfg.moeEvery = 1
            cfg.normTopK = false; cfg.rmsNormEps = 1e-3
            configs.append(("gqa H4 G\(kv) D\(cfg.headSize) qkNorm \(qkNorm) normTopK false", cfg))
        }
        for (label, cfg) in configs {
            let m = Transformer(config: cfg, maxBatch: 2)
            let s = m.store
            s.initialize(seed: 3)
            // Larger weights than the 0.02 init so gradients are well above float noise.
            for i in 0..<s.count { s.params.base[i] *= 15 }
            let (x, y) = batch(2, 5, seed: 4)
            let auxCoef: Float = 0.3, zCoef: Float = 0.002
            let mb = MicroBatch(tokens: x, targets: y, batch: 2, time: 5)
            func objective(_ o: StepOutputs) -> Double {
                Double(o.meanLoss) + Double(auxCoef) * o.aux.map(Double.init).reduce(0, +)
                    + Double(zCoef) * o.z.map(Double.init).reduce(0, +)
            }
            func objective() -> Double { objective(try! m.forward(mb)) }
            s.grads.zero()
            let out = try m.forwardBackward(mb, objective: Objective(lossScale: 1 / 10, auxCoef: auxCoef, zCoef: zCoef))
            XCTAssertEqual(objective(out), objective(), "forwardBackward's forward is forward's")
            XCTAssertGreaterThan(out.z.max() ?? 0, 1, "\(label): the z-loss term is not negligible")
            // Richardson's extrapolation of central differences at h and h/2 cancels their h^2
            // error, which SwiGLU's products of three weights make large at these weights.
            func centralDifference(_ i: Int, _ h: Float) -> Double {
                let saved = s.params.base[i]
                s.params.base[i] = saved + h; let fp = objective()
                s.params.base[i] = saved - h; let fm = objective()
                s.params.base[i] = saved
                return (fp - fm) / Double(2 * h)
            }
            var worst = 0.0
            for info in s.infos {
                for j in [0, info.count / 2, info.count - 1] {
                    let i = info.offset + j
                    guard info.trainable else {
                        XCTAssertEqual(s.grads.base[i], 0, "\(label) \(info.name) is frozen: no gradient")
                        continue
                    }
                    // The step grows with the weight (norm weights sit at 15): the loss is a Float.
                    let h = 1e-3 * max(1, abs(s.params.base[i]))
                    let fd = (4 * centralDifference(i, h / 2) - centralDifference(i, h)) / 3
                    let an = Double(s.grads.base[i])
                    worst = max(worst, abs(an - fd))
                    XCTAssertEqual(an, fd, accuracy: 4e-3 + 1e-2 * abs(fd), "\(label) \(info.name)[\(j)]")
                }
            }
            XCTAssertGreaterThan(s.grads.toArray().map { abs($0) }.max()!, 1e-2)
            print("whole-model gradcheck \(label): max |analytic - fd| = \(worst)")
        }
    }

    /// Recomputing attention or whole blocks in backward gives the gradients of keeping every
    /// activation, bit for bit (dense and MoE blocks mixed, both FFN kinds, MoH heads).
    func testRecomputeGivesBitwiseTheSameGradients() throws {
        for (moeEvery, positions, ffn, moh) in [(2, "learned", "gelu", false), (1, "rope", "swiglu", true)] {
            var cfg = Self.config
            cfg.moeEvery = moeEvery; cfg.positions = positions; cfg.ffn = ffn; cfg.nLayer = 3
            if moh {  // Mixture-of-Head: its gates are attention state, recomputed with it
                cfg.attention = "moh"; cfg.mohSharedHeads = 1; cfg.mohActiveHeads = 1
            }
            let (x, y) = batch(2, 6, seed: 5)
            func gradients(_ r: Recompute) throws -> ([UInt32], [Int]) {
                let m = Transformer(config: cfg, maxBatch: 2, recompute: r)
                m.store.initialize(seed: 4)
                for i in 0..<m.store.count { m.store.params.base[i] *= 10 }
                let out = try m.forwardBackward(
                    MicroBatch(tokens: x, targets: y, batch: 2, time: 6),
                    objective: Objective(lossScale: 0.1, auxCoef: 0.2))
                return (m.store.grads.toArray().map(\.bitPattern), out.expertCounts.flatMap { $0 })
            }
            let (none, counts) = try gradients(.none)
            for r in [Recompute.attention, .block] {
                let (g, c) = try gradients(r)
                XCTAssertEqual(g, none, "\(positions) \(ffn) moeEvery \(moeEvery): recompute \(r) gradients")
                XCTAssertEqual(c, counts, "\(r): per-block routing counts survive the shared state")
            }
            XCTAssertTrue(none.contains { $0 != 0 })
        }
    }

    func testForwardIsBitwiseDeterministic() throws {
        let a = Transformer(config: Self.config, maxBatch: 2), b = Transformer(config: Self.config, maxBatch: 2)
        a.store.initialize(seed: 9); b.store.initialize(seed: 9)
        let (x, y) = batch(2, 6, seed: 1)
        let mb = MicroBatch(tokens: x, targets: y, batch: 2, time: 6)
        let objective = Objective(lossScale: 0.1, auxCoef: 0.01)
        XCTAssertEqual(
            try a.forwardBackward(mb, objective: objective).meanLoss.bitPattern,
            try b.forwardBackward(mb, objective: objective).meanLoss.bitPattern)
        XCTAssertEqual(a.store.grads.toArray(), b.store.grads.toArray())
    }

    func testConfigValidationNamesTheField() {
        var c = Self.config
        c.nHead = 3
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".hasPrefix("model.nEmbd:"), "\($0)") }
        c = Self.config; c.topK = 4; c.nExpert = 3
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("model.topK"), "\($0)") }
        c = Self.config; c.nExpert = 1; c.topK = 2
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("exceeds model.nExpert"), "\($0)") }
        XCTAssertNoThrow(try Self.config.validate())
        // The open families' keys: each refusal names its key.
        for (edit, key) in [
            ({ (c: inout ModelConfig) in c.nKVHead = 3 }, "model.nKVHead:"), ({ $0.nKVHead = 5 }, "model.nKVHead:"),
            ({ $0.qkNorm = "layer" }, "model.qkNorm:"), ({ $0.rmsNormEps = 0 }, "model.rmsNormEps:"),
            ({ $0.headDim = -1 }, "model.headDim:"),
            (
                {
                    $0.positions = "rope"; $0.headDim = 3
                }, "model.positions:"
            )
        ] as [((inout ModelConfig) -> Void, String)] {
            c = Self.config
            c.nHead = 4
            edit(&c)
            XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".hasPrefix(key), "\($0)") }
        }
        c = Self.config; c.nHead = 3; c.headDim = 4
        XCTAssertNoThrow(try c.validate(), "with headDim set, nEmbd need not divide by nHead")
        let gqa = { () -> ModelConfig in
            var g = Self.config
            g.nHead = 4; g.nKVHead = 2; g.headDim = 6; g.qkNorm = "full"
            return g
        }()
        let store = ParameterStore(config: gqa)
        XCTAssertEqual(store.info("layers.0.attn.wq.weight")?.shape, [24, 8])
        XCTAssertEqual(store.info("layers.0.attn.wk.weight")?.shape, [12, 8])
        XCTAssertEqual(store.info("layers.0.attn.wo.weight")?.shape, [8, 24])
        XCTAssertEqual(store.info("layers.0.attn.knorm.weight")?.shape, [12])
        XCTAssertEqual(store.count, gqa.totalParams, "totalParams counts grouped heads and the q/k norms")
    }

    func testMixtralShapeParametersAndValidation() throws {
        var c = Self.config
        c.positions = "rope"; c.ffn = "swiglu"
        let s = ParameterStore(config: c)
        XCTAssertNil(s.info("pos.weight"))
        XCTAssertEqual(s.info("layers.0.ffn.w3.weight")?.shape, [12, 8])
        XCTAssertEqual(s.info("layers.1.moe.experts.2.w3.weight")?.shape, [12, 8])
        XCTAssertEqual(s.count, c.totalParams, "totalParams counts w3 and no position table")
        c.nSharedExperts = 2
        let withShared = ParameterStore(config: c)
        XCTAssertEqual(withShared.info("layers.1.moe.shared.1.w3.weight")?.shape, [12, 8])
        XCTAssertNil(withShared.info("layers.0.moe.shared.0.w1.weight"), "layer 0 is dense")
        XCTAssertEqual(withShared.count, c.totalParams, "totalParams counts the shared experts")
        c.positions = "alibi"
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".hasPrefix("model.positions:"), "\($0)") }
        c.positions = "rope"; c.ffn = "relu"
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".hasPrefix("model.ffn:"), "\($0)") }
        c.ffn = "swiglu"; c.nEmbd = 6; c.nHead = 2
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("must be even"), "\($0)") }
    }

    func testFlopsPerTokenFormula() {
        // small.json: L4 C256 H8 F512 E8 K2 V256 T256.
        let c = ModelConfig(
            vocabSize: 256, seqLen: 256, nLayer: 4, nEmbd: 256, nHead: 8, nExpert: 8, topK: 2, ffHidden: 512,
            moeEvery: 1)
        let perLayer = 4 * 256 * 256 + 2 * 256 + 256 * 8 + 2 * 2 * 256 * 512
        XCTAssertEqual(c.activeNonEmbeddingParams, 4 * perLayer + 256 + 256 * 256)
        XCTAssertEqual(c.flopsPerToken(seqLen: 256), 6 * Double(4 * perLayer + 256 + 65536) + 12 * 4 * 256 * 256)
        var mx = c
        mx.ffn = "swiglu"; mx.positions = "rope"
        let mxLayer = perLayer + 2 * 256 * 512  // the k = 2 experts' w3
        XCTAssertEqual(mx.flopsPerToken(seqLen: 256), 6 * Double(4 * mxLayer + 256 + 65536) + 12 * 4 * 256 * 256)
        XCTAssertEqual(mx.flopsPerTokenParts(seqLen: 256)["rope"], 12 * 4 * 256)
        XCTAssertEqual(mx.totalParams, c.totalParams - 256 * 256 + 4 * 8 * 256 * 512, "no pos.weight; 8 experts' w3")
    }
}
