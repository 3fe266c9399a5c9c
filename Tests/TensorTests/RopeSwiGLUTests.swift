import Tensor
import XCTest

/// Rope against its defining properties (rotation per channel pair, relative positions) and
/// SwiGLU against its closed form; both backwards against finite differences.
final class RopeSwiGLUTests: XCTestCase {
    func testRopeRotatesChannelPairsByPositionTimesFrequency() {
        let d = 8, h = 2, ldc = 20, t = 5, theta = 10000.0
        let table = RopeTable(positions: t, headSize: d, theta: theta)
        let x = randomValues(t * ldc, seed: 1)
        let y = FloatBuffer(x)
        Rope.apply(y.base, rows: t, heads: h, d: d, ldc: ldc, table: table) { $0 }
        for r in 0..<t {
            for hh in 0..<h {
                for i in 0..<(d / 2) {
                    let angle = Double(r) / Foundation.pow(theta, Double(2 * i) / Double(d))
                    let a = Double(x[r * ldc + hh * d + i]), b = Double(x[r * ldc + hh * d + i + d / 2])
                    XCTAssertEqual(Double(y[r * ldc + hh * d + i]), a * cos(angle) - b * sin(angle), accuracy: 1e-6)
                    XCTAssertEqual(
                        Double(y[r * ldc + hh * d + i + d / 2]), b * cos(angle) + a * sin(angle), accuracy: 1e-6)
                }
            }
            // Channels past the heads (ldc > H * D) are untouched.
            for j in (h * d)..<ldc { XCTAssertEqual(y[r * ldc + j], x[r * ldc + j]) }
        }
        // The inverse undoes it.
        Rope.apply(y.base, rows: t, heads: h, d: d, ldc: ldc, table: table, inverse: true) { $0 }
        for i in 0..<x.count { XCTAssertEqual(y[i], x[i], accuracy: 1e-6) }
    }

    func testRopeScoresDependOnlyOnRelativePosition() {
        // q at position p and k at position s: q.k after rope depends on p - s alone.
        let d = 16, table = RopeTable(positions: 40, headSize: d, theta: 500)
        let q = randomValues(d, seed: 2), k = randomValues(d, seed: 3)
        func score(_ p: Int, _ s: Int) -> Double {
            let a = FloatBuffer(q), b = FloatBuffer(k)
            Rope.apply(a.base, rows: 1, heads: 1, d: d, ldc: d, table: table) { _ in p }
            Rope.apply(b.base, rows: 1, heads: 1, d: d, ldc: d, table: table) { _ in s }
            return (0..<d).reduce(0.0) { $0 + Double(a[$1] * b[$1]) }
        }
        XCTAssertEqual(score(7, 3), score(30, 26), accuracy: 1e-5)
        XCTAssertEqual(score(0, 0), score(39, 39), accuracy: 1e-5)
        XCTAssertNotEqual(score(7, 3), score(7, 4), accuracy: 1e-3)
    }

    func testRopeBackwardMatchesFiniteDifferences() {
        let b = 2, t = 3, h = 2, d = 4, ldc = 8, n = b * t
        let table = RopeTable(positions: t, headSize: d, theta: 100)
        let x = randomValues(n * ldc, seed: 4), r = randomValues(n * ldc, seed: 5)
        func objective(_ x: [Float]) -> Double {
            let y = FloatBuffer(x)
            Rope.apply(y.base, rows: n, heads: h, d: d, ldc: ldc, table: table) { $0 % t }
            return dot(y, r)
        }
        let g = FloatBuffer(r)
        Rope.apply(g.base, rows: n, heads: h, d: d, ldc: ldc, table: table, inverse: true) { $0 % t }
        assertGradient("Rope", x: x, analytic: g.toArray(), samples: 48, objective: objective)
    }

    func testSwiGLUClosedFormAndBackward() {
        let count = 40
        let g = randomValues(count, seed: 6, scale: 4), u = randomValues(count, seed: 7, scale: 2)
        let r = randomValues(count, seed: 8)
        func run(_ g: [Float], _ u: [Float]) -> FloatBuffer {
            let out = FloatBuffer(count: count)
            SwiGLU.forward(out: out.base, g: keep(g), u: keep(u), count: count)
            return out
        }
        let out = run(g, u)
        for i in 0..<count {
            let want = Double(g[i]) / (1 + Foundation.exp(-Double(g[i]))) * Double(u[i])
            XCTAssertEqual(Double(out[i]), want, accuracy: 1e-5 * max(1, abs(want)))
        }
        let dG = FloatBuffer(count: count), dU = FloatBuffer(count: count)
        SwiGLU.backward(dG: dG.base, dU: dU.base, dOut: keep(r), g: keep(g), u: keep(u), count: count)
        assertGradient("SwiGLU dG", x: g, analytic: dG.toArray()) { dot(run($0, u), r) }
        assertGradient("SwiGLU dU", x: u, analytic: dU.toArray()) { dot(run(g, $0), r) }
    }
}
