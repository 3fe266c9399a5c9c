import Tensor
import XCTest

final class LayerKernelTests: XCTestCase {
    func testEmbeddingForwardAndBackward() {
        let b = 2, t = 3, c = 4, v = 5
        let tokens: [Int32] = [0, 3, 3, 4, 1, 0]
        let wte = randomValues(v * c, seed: 1), wpe = randomValues(t * c, seed: 2), r = randomValues(b * t * c, seed: 3)
        func objective(_ wte: [Float], _ wpe: [Float]) -> Double {
            let out = FloatBuffer(count: b * t * c)
            tokens.withUnsafeBufferPointer {
                Embedding.forward(
                    out: out.base, tokens: $0.baseAddress!, wte: keep(wte), wpe: keep(wpe), b: b, t: t, c: c)
            }
            return dot(out, r)
        }
        let dwte = FloatBuffer(count: v * c), dwpe = FloatBuffer(count: t * c)
        tokens.withUnsafeBufferPointer {
            Embedding.backward(
                dwte: dwte.base, dwpe: dwpe.base, dOut: keep(r), tokens: $0.baseAddress!, b: b, t: t, c: c)
        }
        assertGradient("Embedding dwte", x: wte, analytic: dwte.toArray(), samples: 100) { objective($0, wpe) }
        assertGradient("Embedding dwpe", x: wpe, analytic: dwpe.toArray(), samples: 100) { objective(wte, $0) }
        // Token 2 never appears: its rows get no gradient.
        XCTAssertEqual(Array(dwte.toArray()[8..<12]), [0, 0, 0, 0])
    }

    func testRMSNormForwardClosedFormAndBackward() {
        let n = 3, c = 8
        let x = randomValues(n * c, seed: 4, scale: 2), w = randomValues(c, seed: 5).map { 1 + $0 * 0.5 }
        let r = randomValues(n * c, seed: 6)
        func run(_ x: [Float], _ w: [Float]) -> (FloatBuffer, FloatBuffer) {
            let out = FloatBuffer(count: n * c), rstd = FloatBuffer(count: n)
            RMSNorm.forward(out: out.base, rstd: rstd.base, x: keep(x), weight: keep(w), n: n, c: c)
            return (out, rstd)
        }
        let (out, rstd) = run(x, w)
        for row in 0..<n {
            let ms = (0..<c).map { Double(x[row * c + $0] * x[row * c + $0]) }.reduce(0, +) / Double(c)
            let want = 1 / (ms + 1e-5).squareRoot()
            XCTAssertEqual(Double(rstd[row]), want, accuracy: 1e-5 * want)
            XCTAssertEqual(Double(out[row * c + 1]), Double(x[row * c + 1]) * want * Double(w[1]), accuracy: 1e-5)
        }
        let dx = FloatBuffer(count: n * c), dw = FloatBuffer(count: c)
        RMSNorm.backward(
            dx: dx.base, dWeight: dw.base, dOut: keep(r), x: keep(x),
            weight: keep(w), rstd: rstd.base, n: n, c: c)
        assertGradient("RMSNorm dx", x: x, analytic: dx.toArray()) { dot(run($0, w).0, r) }
        assertGradient("RMSNorm dw", x: w, analytic: dw.toArray()) { dot(run(x, $0).0, r) }
    }

    func testGELUMatchesErfFormAndBackward() {
        // Accuracy of the vectorisable erf against libm's Double erf.
        var maxErr = 0.0
        for i in -6000...6000 {
            let x = Float(i) * 1e-3
            maxErr = max(maxErr, abs(Double(GELU.erf(x)) - erfDouble(Double(x))))
        }
        XCTAssertLessThan(maxErr, 5e-7, "erf max abs error \(maxErr)")
        let xs = randomValues(64, seed: 7, scale: 4), r = randomValues(64, seed: 8)
        func run(_ x: [Float]) -> FloatBuffer {
            let out = FloatBuffer(count: x.count)
            GELU.forward(out: out.base, inp: keep(x), count: x.count)
            return out
        }
        let out = run(xs)
        for i in 0..<xs.count {
            let x = Double(xs[i])
            XCTAssertEqual(Double(out[i]), 0.5 * x * (1 + erfDouble(x / 2.0.squareRoot())), accuracy: 2e-6)
        }
        let dx = FloatBuffer(count: 64)
        GELU.backward(dInp: dx.base, dOut: keep(r), inp: keep(xs), count: 64)
        assertGradient("GELU dx", x: xs, analytic: dx.toArray(), h: 1e-3) { dot(run($0), r) }
        // overwrite: writes over whatever the scratch held, the bits of accumulating into zeros.
        let over = FloatBuffer(count: 64)
        over.base.update(repeating: .nan, count: 64)
        GELU.backward(dInp: over.base, dOut: keep(r), inp: keep(xs), count: 64, overwrite: true)
        XCTAssertEqual(over.toArray(), dx.toArray(), "GELU backward with overwrite differs from += into zeros")
    }

    func testFastExpAccuracy() {
        var maxRel = 0.0
        for i in -8700...8800 {
            let x = Float(i) * 0.01
            let want = expDouble(Double(x))
            maxRel = max(maxRel, abs(Double(FastMath.exp(x)) - want) / want)
        }
        XCTAssertLessThan(maxRel, 5e-7, "exp max relative error \(maxRel)")
        XCTAssertEqual(FastMath.exp(-100), 0)
        XCTAssertEqual(FastMath.exp(-Float.infinity), 0)
    }

    /// mulAdd rounds once where the target fuses (haswell, arm64) and twice elsewhere:
    /// (1 + 2^-12)^2 - (1 + 2^-11) is 2^-24 exactly, and 0 when the product is rounded first.
    func testMulAddIsFusedExactlyWhereTheTargetSaysSo() {
        let a: Float = 1 + 0x1p-12, c: Float = -(1 + 0x1p-11)
        let got = FastMath.mulAdd(a, a, c)
        XCTAssertEqual(got, FastMath.fusedMultiplyAdd ? 0x1p-24 : 0, "fused: \(FastMath.fusedMultiplyAdd)")
    }

    /// RowMath.dot in 8 lanes, then the lanes, then the tail: against a Double sum for lengths
    /// around the lane width (0 to 41) and its fixed order (lane sums first) exactly.
    func testRowDotMatchesADoubleSumAndItsLaneOrder() {
        let a = (0..<41).map { Float(sinDouble(Double($0) * 0.7)) }, b = (0..<41).map { Float(Double($0 % 7) - 2.5) }
        for n in 0...41 {
            let got = RowMath.dot(a, b, n)
            var want = 0.0
            for j in 0..<n { want += Double(a[j]) * Double(b[j]) }
            XCTAssertEqual(Double(got), want, accuracy: 1e-5 * max(1, abs(want)), "dot of length \(n)")
            var lanes = [Float](repeating: 0, count: 8)
            let full = n / 8 * 8
            for j in 0..<full { lanes[j % 8] += a[j] * b[j] }
            var ordered: Float = 0
            for l in 0..<8 { ordered += lanes[l] }
            for j in full..<n { ordered += a[j] * b[j] }
            XCTAssertEqual(got, ordered, "length \(n): the lane order")
        }
    }

    /// The three-way row dot RMSNorm's backward uses: (a * b) * c per element, in dot's lane order.
    func testThreeWayRowDotMatchesADoubleSumAndItsLaneOrder() {
        let a = (0..<41).map { Float(sinDouble(Double($0) * 0.7)) }, b = (0..<41).map { Float(Double($0 % 7) - 2.5) }
        let c = (0..<41).map { Float(Double($0 % 5) * 0.3 - 0.4) }
        for n in 0...41 {
            let got = RowMath.dot(a, b, c, n)
            var want = 0.0
            for j in 0..<n { want += Double(a[j]) * Double(b[j]) * Double(c[j]) }
            XCTAssertEqual(Double(got), want, accuracy: 1e-5 * max(1, abs(want)), "dot of length \(n)")
            var lanes = [Float](repeating: 0, count: 8)
            let full = n / 8 * 8
            for j in 0..<full { lanes[j % 8] += a[j] * b[j] * c[j] }
            var ordered: Float = 0
            for l in 0..<8 { ordered += lanes[l] }
            for j in full..<n { ordered += a[j] * b[j] * c[j] }
            XCTAssertEqual(got, ordered, "length \(n): the lane order")
        }
    }
}
