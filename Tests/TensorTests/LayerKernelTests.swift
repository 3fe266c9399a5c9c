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

    func testAttentionCausalityAndBackward() {
        let b = 2, t = 5, h = 2, d = 3, c = h * d
        let q = randomValues(b * t * c, seed: 20), k = randomValues(b * t * c, seed: 21)
        let v = randomValues(b * t * c, seed: 22), r = randomValues(b * t * c, seed: 23)
        func run(_ q: [Float], _ k: [Float], _ v: [Float]) -> (FloatBuffer, FloatBuffer) {
            let y = FloatBuffer(count: b * t * c), att = FloatBuffer(count: b * h * t * t)
            Attention.forward(
                y: y.base, att: att.base, q: keep(q), k: keep(k),
                v: keep(v), b: b, t: t, h: h, d: d, ldc: c)
            return (y, att)
        }
        let (y, att) = run(q, k, v)
        // Row 0 attends only to position 0: y[b, 0, head] == v[b, 0, head].
        for bi in 0..<b { for i in 0..<c { XCTAssertEqual(y[bi * t * c + i], v[bi * t * c + i], accuracy: 1e-6) } }
        // Rows are probability distributions with zeros above the diagonal.
        for row in 0..<(b * h * t) {
            let i = row % t
            let probs = (0..<t).map { att[row * t + $0] }
            XCTAssertEqual(probs.reduce(0, +), 1, accuracy: 1e-5)
            XCTAssertTrue(probs[(i + 1)...].allSatisfy { $0 == 0 })
        }
        // Changing a future token does not change the past: perturb v at t-1, check y at 0..t-2.
        var v2 = v
        for i in 0..<c { v2[(t - 1) * c + i] += 1 }
        let (y2, _) = run(q, k, v2)
        for i in 0..<((t - 1) * c) { XCTAssertEqual(y2[i], y[i]) }
        let dq = FloatBuffer(count: b * t * c), dk = FloatBuffer(count: b * t * c), dv = FloatBuffer(count: b * t * c)
        let scratch = FloatBuffer(count: t * t)
        Attention.backward(
            dq: dq.base, dk: dk.base, dv: dv.base, dy: keep(r), q: keep(q),
            k: keep(k), v: keep(v), att: att.base, scratch: scratch.base,
            b: b, t: t, h: h, d: d, ldc: c)
        assertGradient("Attention dq", x: q, analytic: dq.toArray()) { dot(run($0, k, v).0, r) }
        assertGradient("Attention dk", x: k, analytic: dk.toArray()) { dot(run(q, $0, v).0, r) }
        assertGradient("Attention dv", x: v, analytic: dv.toArray()) { dot(run(q, k, $0).0, r) }
    }
}

final class AttentionBlockTests: XCTestCase {
    /// T = 130 spans three causal row blocks (64, 64, 2): forward against a Double reference,
    /// backward against finite differences; heads use a row stride larger than H*D (ldc).
    func testBlockedCausalAttentionMatchesReference() {
        let b = 1, t = 130, h = 2, d = 4, ldc = 10
        let q = randomValues(b * t * ldc, seed: 60), k = randomValues(b * t * ldc, seed: 61)
        let v = randomValues(b * t * ldc, seed: 62)
        var rMask = randomValues(b * t * ldc, seed: 63)
        for i in 0..<(b * t * ldc) where i % ldc >= h * d { rMask[i] = 0 }
        let r = rMask
        func run(_ q: [Float], _ k: [Float], _ v: [Float]) -> (FloatBuffer, FloatBuffer) {
            let y = FloatBuffer(count: b * t * ldc), att = FloatBuffer(count: b * h * t * t)
            Attention.forward(
                y: y.base, att: att.base, q: keep(q), k: keep(k), v: keep(v), b: b, t: t, h: h, d: d, ldc: ldc)
            return (y, att)
        }
        let (y, att) = run(q, k, v)
        var worst = 0.0
        for hi in 0..<h {
            for i in 0..<t {
                var s = [Double](repeating: 0, count: i + 1)
                for j in 0...i {
                    for x in 0..<d { s[j] += Double(q[i * ldc + hi * d + x]) * Double(k[j * ldc + hi * d + x]) }
                }
                let mx = s.max()!
                let e = s.map { expDouble(($0 - mx) / Double(d).squareRoot()) }
                let z = e.reduce(0, +)
                for x in 0..<d {
                    var want = 0.0
                    for j in 0...i { want += e[j] / z * Double(v[j * ldc + hi * d + x]) }
                    worst = max(worst, abs(want - Double(y[i * ldc + hi * d + x])))
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5, "max |y - reference| = \(worst)")
        let dq = FloatBuffer(count: b * t * ldc), dk = FloatBuffer(count: b * t * ldc),
            dv = FloatBuffer(count: b * t * ldc)
        let scratch = FloatBuffer(count: t * t)
        Attention.backward(
            dq: dq.base, dk: dk.base, dv: dv.base, dy: keep(r), q: keep(q), k: keep(k), v: keep(v),
            att: att.base, scratch: scratch.base, b: b, t: t, h: h, d: d, ldc: ldc)
        assertGradient("blocked dq", x: q, analytic: dq.toArray(), samples: 40) { dot(run($0, k, v).0, r) }
        assertGradient("blocked dk", x: k, analytic: dk.toArray(), samples: 40) { dot(run(q, $0, v).0, r) }
        assertGradient("blocked dv", x: v, analytic: dv.toArray(), samples: 40) { dot(run(q, k, $0).0, r) }
    }
}
