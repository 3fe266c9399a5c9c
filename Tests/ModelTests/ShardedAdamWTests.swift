import Model
import Tensor
import XCTest

/// The optimizer component at world 1: its norm, its guard, AdamW through it and its hook.
final class ShardedAdamWTests: XCTestCase {
    static let config = ModelConfig(
        vocabSize: 11, seqLen: 6, nLayer: 2, nEmbd: 8, nHead: 2, nExpert: 3, topK: 2, ffHidden: 12, moeEvery: 2)

    func optimizer(_ store: ParameterStore, maxNorm: Double = 1e9) -> ShardedAdamW {
        ShardedAdamW(
            store: store, context: .single(Self.config), model: Self.config, config: AdamWConfig(),
            maxGradNorm: maxNorm)
    }

    /// Gradients 0.001 * (i % 7 - 3) on every element: known norm, nonzero almost everywhere.
    func fillGradients(_ s: ParameterStore) {
        for i in 0..<s.count { s.grads.base[i] = 0.001 * Float(i % 7 - 3) }
    }

    func testNormIsTheL2NormOfEveryGradientAndTheUpdateIsAdamW() throws {
        let s = ParameterStore(config: Self.config)
        s.initialize(seed: 1)
        fillGradients(s)
        let before = s.params.toArray(), grads = s.grads.toArray()
        let opt = optimizer(s)
        var hooked = 0
        opt.afterUpdate = { store in
            hooked += 1
            XCTAssertTrue(store === s, "the hook sees the updated store")
        }
        let r = try opt.step(lr: 0.01, loss: 2.5, expertCounts: [[4, 4, 4]])
        let expected = grads.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
        XCTAssertEqual(r.gradNorm, expected, accuracy: 1e-6 * expected, "float partial sums")
        XCTAssertTrue(r.applied)
        XCTAssertEqual(opt.updates, 1)
        XCTAssertEqual(hooked, 1)
        // AdamW's first step moves every element with a nonzero gradient by about lr against its sign.
        let after = s.params.toArray()
        for i in [0, 5, s.count / 2, s.count - 1] where grads[i] != 0 {
            let info = s.infos.last { $0.offset <= i }!
            let decay: Float = info.decay ? 1 - 0.01 * 0.1 : 1
            XCTAssertEqual(after[i], before[i] * decay - 0.01 * (grads[i] > 0 ? 1 : -1), accuracy: 1e-6, "\(i)")
        }
    }

    func testNonFiniteLossOrNormChangesNothing() throws {
        for (loss, poison) in [(Float.nan, false), (2.5, true), (Float.infinity, false)] {
            let s = ParameterStore(config: Self.config)
            s.initialize(seed: 2)
            fillGradients(s)
            if poison { s.grads.base[3] = .nan }
            let before = s.params.toArray()
            let opt = optimizer(s)
            var hooked = false
            opt.afterUpdate = { _ in hooked = true }
            let r = try opt.step(lr: 0.01, loss: loss, expertCounts: [[4, 4, 4]])
            XCTAssertFalse(r.applied, "loss \(loss), NaN gradient \(poison)")
            XCTAssertEqual(s.params.toArray(), before, "parameters unchanged")
            XCTAssertTrue(s.adamM.toArray().allSatisfy { $0 == 0 }, "moments unchanged")
            XCTAssertEqual(opt.updates, 0)
            XCTAssertFalse(hooked, "no hook after a skipped step")
        }
    }

    func testClippingScalesTheGradientTheUpdateReads() throws {
        // With clipping the first AdamW step is unchanged in sign and size (m/sqrt(v) is scale-free),
        // so compare the second moment instead: v = (1 - beta2) * (clip * g)^2.
        let s = ParameterStore(config: Self.config)
        fillGradients(s)
        let g = s.grads.toArray()
        let opt = optimizer(s, maxNorm: 0.01)
        let r = try opt.step(lr: 0.01, loss: 1, expertCounts: [[4, 4, 4]])
        let scale = Float(0.01 / r.gradNorm)
        XCTAssertLessThan(scale, 1, "the norm is above the threshold")
        let i = s.infos[0].offset + 1
        XCTAssertEqual(s.adamV.base[i], 0.05 * (scale * g[i]) * (scale * g[i]), accuracy: 1e-12)
    }

    func testZeroGradientsClearsEveryElement() {
        let s = ParameterStore(config: Self.config)
        fillGradients(s)
        optimizer(s).zeroGradients()
        XCTAssertTrue(s.grads.toArray().allSatisfy { $0 == 0 })
    }
}
