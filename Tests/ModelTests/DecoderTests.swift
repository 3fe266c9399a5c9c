import Model
import Tensor
import XCTest

/// The KV-cache decoder against the training forward: the same tokens give the same logits,
/// whether fed at once, one at a time, or interleaved with another sequence.
final class DecoderTests: XCTestCase {
    func config(_ positions: String, _ ffn: String, qkNorm: String = "none") -> ModelConfig {
        var c = ModelConfig(
            vocabSize: 19, seqLen: 12, nLayer: 2, nEmbd: 16, nHead: 4, nExpert: 3, topK: 2, ffHidden: 20,
            moeEvery: 1, positions: positions, ffn: ffn)
        if qkNorm != "none" {  // grouped-query heads (the cache holds 2 of 4), head size 6, a q/k norm
            c.nKVHead = 2; c.headDim = 6; c.qkNorm = qkNorm
        }
        return c
    }

    func testCachedLogitsEqualTheFullForward() throws {
        for (positions, ffn, qkNorm) in [
            ("learned", "gelu", "none"), ("rope", "swiglu", "none"), ("rope", "swiglu", "head"),
            ("rope", "swiglu", "full")
        ] {
            let cfg = config(positions, ffn, qkNorm: qkNorm)
            let model = Transformer(config: cfg, maxBatch: 2)
            model.store.initialize(seed: 7)
            for i in 0..<model.store.count { model.store.params.base[i] *= 10 }
            let a = (0..<12).map { Int32(CounterRNG.below(19, CounterRNG.hash(1, UInt64($0)))) }
            let b = (0..<12).map { Int32(CounterRNG.below(19, CounterRNG.hash(2, UInt64($0)))) }
            let full = try model.forward(
                MicroBatch(tokens: a + b, targets: a + b, batch: 2, time: 12), keepLogits: true
            ).logits!
            let v = cfg.vocabSize
            // Sequence 0: a prompt of 5 at once, then one by one; sequence 1 one by one, interleaved.
            let dec = Decoder(model: model, sequences: 2, capacity: 12)
            var got0 = try dec.append(tokens: Array(a[0..<5]), seqs: [0, 0, 0, 0, 0])
            var got1: [Float] = []
            for t in 5..<12 {
                let both = try dec.append(tokens: [a[t], b[t - 5]], seqs: [0, 1])
                got0 += both[0..<v]
                got1 += both[v..<(2 * v)]
            }
            got1 += try dec.append(tokens: Array(b[7..<12]), seqs: [1, 1, 1, 1, 1])
            XCTAssertEqual(dec.lengths, [12, 12])
            let want = Array(full[0..<(12 * v)]) + Array(full[(12 * v)...])
            let worst = zip(got0 + got1, want).map { abs($0 - $1) }.max()!
            let scale = want.map { abs($0) }.max()!
            XCTAssertLessThan(worst, 1e-4 * max(1, scale), "\(positions) \(ffn) \(qkNorm): cached vs full forward")
            XCTAssertGreaterThan(scale, 1, "logits are not trivially small")
            print(
                "decoder \(positions) \(ffn) qkNorm \(qkNorm): max |cached - full| = \(worst) (logits up to \(scale))")
        }
    }

    func testSamplerIsGreedyAtZeroAndRespectsTopKAndTopP() {
        let logits: [Float] = [0.5, 3, 1, 2.9, -1]
        logits.withUnsafeBufferPointer { p in
            let l = p.baseAddress!
            XCTAssertEqual(TokenSampler.choose(l, v: 5, options: .init(temperature: 0), uniform: 0.99), 1)
            // top-k 2 keeps tokens 1 and 3 whatever the draw.
            for u in stride(from: 0.0, to: 1, by: 0.05) {
                XCTAssertTrue([1, 3].contains(TokenSampler.choose(l, v: 5, options: .init(topK: 2), uniform: u)))
            }
            // top-p 0.3 keeps the single most likely token.
            XCTAssertEqual(TokenSampler.choose(l, v: 5, options: .init(topP: 0.3), uniform: 0.99), 1)
            // Without limits, a draw near 1 reaches the least likely token.
            XCTAssertEqual(TokenSampler.choose(l, v: 5, options: .init(), uniform: 0.99999), 4)
        }
    }
}
