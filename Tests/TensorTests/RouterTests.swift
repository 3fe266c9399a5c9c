import Tensor
import XCTest

final class RouterTests: XCTestCase {
    func run(_ logits: [Float], n: Int, e: Int, k: Int) -> (probs: FloatBuffer, idx: [Int32], w: FloatBuffer) {
        let probs = FloatBuffer(count: n * e), w = FloatBuffer(count: n * k)
        var idx = [Int32](repeating: -1, count: n * k)
        idx.withUnsafeMutableBufferPointer {
            Router.forward(
                probs: probs.base, topIndex: $0.baseAddress!, topWeight: w.base, logits: keep(logits), n: n, e: e, k: k)
        }
        return (probs, idx, w)
    }

    func testTopKPicksLargestWithLowerIndexOnTiesAndRenormalises() {
        // Row 0: experts 1 and 3 tie for the top; 1 wins the first slot. Row 1: plain order.
        let logits: [Float] = [0, 2, 1, 2, 3, 0, 1, 2]
        let (probs, idx, w) = run(logits, n: 2, e: 4, k: 2)
        XCTAssertEqual(idx, [1, 3, 0, 3])
        XCTAssertEqual(w[0], 0.5, accuracy: 1e-6)
        XCTAssertEqual(w[0] + w[1], 1, accuracy: 1e-6)
        let p0 = probs[4], p3 = probs[7]
        XCTAssertEqual(w[2], p0 / (p0 + p3), accuracy: 1e-6)
        // Softmax closed form for row 1.
        let z = [3.0, 0, 1, 2].map(expDouble).reduce(0, +)
        XCTAssertEqual(Double(probs[4]), expDouble(3) / z, accuracy: 1e-6)
        let (_, idx1, w1) = run(logits, n: 2, e: 4, k: 1)
        XCTAssertEqual(idx1, [1, 0])
        XCTAssertEqual(w1.toArray(), [1, 1])
    }

    func testBackwardMatchesFiniteDifferences() {
        let n = 4, e = 5, k = 2
        // Distinct logits with gaps far above h so the top-k set does not flip under perturbation.
        let logits = (0..<(n * e)).map { Float(($0 * 7) % (n * e)) * 0.13 - 1.2 }
        let rw = randomValues(n * k, seed: 30), rp = randomValues(n * e, seed: 31)
        func objective(_ l: [Float]) -> Double {
            let (probs, _, w) = run(l, n: n, e: e, k: k)
            return dot(w, rw) + dot(probs, rp)
        }
        let (probs, idx, w) = run(logits, n: n, e: e, k: k)
        let dl = FloatBuffer(count: n * e), scratch = FloatBuffer(count: e)
        idx.withUnsafeBufferPointer {
            Router.backward(
                dLogits: dl.base, dTopWeight: keep(rw), dProbsExtra: keep(rp),
                probs: probs.base, topIndex: $0.baseAddress!, topWeight: w.base, n: n, e: e, k: k, scratch: scratch.base
            )
        }
        assertGradient("Router dLogits", x: logits, analytic: dl.toArray(), h: 1e-3, atol: 1e-3) { objective($0) }
    }

    func testLoadBalanceClosedFormAndBackward() {
        // Uniform probabilities and perfectly balanced assignments give aux == 1.
        let n = 4, e = 4, k = 1
        let uniform = FloatBuffer([Float](repeating: 0.25, count: n * e))
        let f = FloatBuffer(count: e)
        let balanced: [Int32] = [0, 1, 2, 3]
        let aux = balanced.withUnsafeBufferPointer {
            LoadBalance.forward(f: f.base, probs: uniform.base, topIndex: $0.baseAddress!, n: n, e: e, k: k)
        }
        XCTAssertEqual(aux, 1, accuracy: 1e-6)
        // All tokens to expert 0 with p0 = 0.7: aux = E * 1 * 0.7.
        let skewed = FloatBuffer((0..<(n * e)).map { $0 % e == 0 ? 0.7 : 0.1 })
        let all0: [Int32] = [0, 0, 0, 0]
        let aux2 = all0.withUnsafeBufferPointer {
            LoadBalance.forward(f: f.base, probs: skewed.base, topIndex: $0.baseAddress!, n: n, e: e, k: k)
        }
        XCTAssertEqual(aux2, 4 * 0.7, accuracy: 1e-5)
        // Backward: d aux / d p[n, j] = E * f_j / N (f held fixed), checked by finite differences.
        let probs = randomValues(n * e, seed: 40).map { 0.3 + 0.2 * $0 }
        let idx: [Int32] = [0, 0, 2, 3]
        func objective(_ p: [Float]) -> Double {
            Double(
                idx.withUnsafeBufferPointer {
                    LoadBalance.forward(f: f.base, probs: keep(p), topIndex: $0.baseAddress!, n: n, e: e, k: k)
                })
        }
        _ = objective(probs)
        let dp = FloatBuffer(count: n * e)
        LoadBalance.backward(dProbs: dp.base, f: f.base, dAux: 1, n: n, e: e, tokens: n)
        assertGradient("LoadBalance dProbs", x: probs, analytic: dp.toArray(), h: 1e-3, atol: 1e-4) { objective($0) }
    }

    func testCrossEntropyClosedFormAndBackward() {
        let n = 3, v = 6
        let logits = randomValues(n * v, seed: 50, scale: 3)
        let targets: [Int32] = [0, 5, 2]
        func losses(_ l: [Float]) -> FloatBuffer {
            let out = FloatBuffer(count: n)
            targets.withUnsafeBufferPointer {
                CrossEntropy.forward(losses: out.base, logits: keep(l), targets: $0.baseAddress!, n: n, v: v)
            }
            return out
        }
        let out = losses(logits)
        for r in 0..<n {
            let z = (0..<v).map { expDouble(Double(logits[r * v + $0])) }.reduce(0, +)
            XCTAssertEqual(Double(out[r]), -(Double(logits[r * v + Int(targets[r])]) - (z).logValue), accuracy: 1e-5)
        }
        // Uniform logits: loss is ln V.
        let flat = FloatBuffer(count: v)
        let lossFlat = FloatBuffer(count: 1)
        [Int32(3)].withUnsafeBufferPointer {
            CrossEntropy.forward(losses: lossFlat.base, logits: flat.base, targets: $0.baseAddress!, n: 1, v: v)
        }
        XCTAssertEqual(Double(lossFlat[0]), Double(v).logValue, accuracy: 1e-6)
        let dl = FloatBuffer(count: n * v)
        targets.withUnsafeBufferPointer {
            CrossEntropy.backward(
                dLogits: dl.base, logits: keep(logits), targets: $0.baseAddress!, dLoss: 0.5, n: n, v: v)
        }
        assertGradient("CrossEntropy dLogits", x: logits, analytic: dl.toArray(), h: 1e-3, atol: 1e-3) {
            0.5 * losses($0).toArray().map(Double.init).reduce(0, +)
        }
    }

    /// A selection bias picks by probs + bias but weights by the renormalised probs.
    func testSelectionBiasChoosesButDoesNotWeigh() {
        let p: [Double] = [0.5, 0.3, 0.2]
        let logits = p.map { Float(Foundation.log($0)) }, bias: [Float] = [0, 0, 0.4]
        let probs = FloatBuffer(count: 3), idx = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
        let w = FloatBuffer(count: 2)
        defer { idx.deallocate() }
        bias.withUnsafeBufferPointer { b in
            Router.forward(
                probs: probs.base, topIndex: idx, topWeight: w.base, logits: keep(logits), n: 1, e: 3, k: 2,
                selectionBias: b.baseAddress!)
        }
        XCTAssertEqual([idx[0], idx[1]], [2, 0], "0.2 + 0.4 beats 0.5, then 0.5 beats 0.3")
        XCTAssertEqual(Double(w[0]), 0.2 / 0.7, accuracy: 1e-6)
        XCTAssertEqual(Double(w[1]), 0.5 / 0.7, accuracy: 1e-6)
    }

    /// z = mean lse^2 against a Double logsumexp; its backward against finite differences.
    func testRouterZLossClosedFormAndBackward() {
        let n = 5, e = 4, tokens = 7
        let logits = randomValues(n * e, seed: 21, scale: 3)
        func z(_ l: [Float]) -> Double {
            let lse = FloatBuffer(count: n)
            return RouterZLoss.forward(lse: lse.base, logits: keep(l), n: n, e: e) / Double(tokens)
        }
        var want = 0.0
        for r in 0..<n {
            let row = (0..<e).map { Double(logits[r * e + $0]) }
            let lse = Foundation.log(row.map { Foundation.exp($0) }.reduce(0, +))
            want += lse * lse
        }
        XCTAssertEqual(z(logits), want / Double(tokens), accuracy: 1e-5 * want)
        let lse = FloatBuffer(count: n), probs = FloatBuffer(count: n * e), dLogits = FloatBuffer(count: n * e)
        _ = RouterZLoss.forward(lse: lse.base, logits: keep(logits), n: n, e: e)
        for r in 0..<n {
            for j in 0..<e { probs[r * e + j] = Float(Foundation.exp(Double(logits[r * e + j] - lse[r]))) }
        }
        RouterZLoss.backward(
            dLogits: dLogits.base, probs: probs.base, lse: lse.base, dZ: 1, n: n, e: e, tokens: tokens)
        assertGradient("z-loss dLogits", x: logits, analytic: dLogits.toArray(), objective: z)
    }
}

extension Double {
    var logValue: Double {
        // ln via exp's inverse: Newton on exp(y) = x, enough for test expectations.
        var y = 0.0
        for _ in 0..<60 { y -= 1 - self / expDouble(y) }
        return y
    }

}
