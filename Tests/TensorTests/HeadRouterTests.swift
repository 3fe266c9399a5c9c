import Tensor
import XCTest

/// Mixture-of-Head attention's head router: the gates against the paper's closed form, its
/// backward and the per-head scaling's backward against finite differences.
final class HeadRouterTests: XCTestCase {
    struct Gates { var gates, probs, chosen: FloatBuffer }

    func run(_ logits: [Float], n: Int, h: Int, shared s: Int, active a: Int) -> Gates {
        let r = HeadRouter.rows(heads: h, shared: s)
        let g = Gates(
            gates: FloatBuffer(count: n * h), probs: FloatBuffer(count: n * r), chosen: FloatBuffer(count: n * h))
        HeadRouter.forward(
            gates: g.gates.base, probs: g.probs.base, chosen: g.chosen.base, logits: keep(logits), n: n, h: h,
            shared: s, active: a)
        return g
    }

    func softmax(_ x: [Double]) -> [Double] {
        let e = x.map { expDouble($0 - x.max()!) }, z = e.reduce(0, +)
        return e.map { $0 / z }
    }

    /// Shared heads get alpha1 * softmax over the shared logits; the top-A routed heads by logit
    /// get alpha2 * softmax over all routed logits (not renormalised); the rest 0; alpha from the
    /// two mix logits. Without shared heads, alpha2 = 1 and there are no mix logits.
    func testGatesFollowTheTwoStageClosedForm() {
        // H 5: shared 0-1, routed 2-4 (logits 0.3, 1.2, 1.2: heads 3 and 4 tie, 3 wins), mix 0.5, -0.2.
        let logits: [Float] = [0.1, -0.4, 0.3, 1.2, 1.2, 0.5, -0.2]
        let g = run(logits, n: 1, h: 5, shared: 2, active: 1)
        let alpha = softmax([0.5, -0.2]), sharedP = softmax([0.1, -0.4]), routedP = softmax([0.3, 1.2, 1.2])
        let want = [alpha[0] * sharedP[0], alpha[0] * sharedP[1], 0, alpha[1] * routedP[1], 0]
        for j in 0..<5 { XCTAssertEqual(Double(g.gates[j]), want[j], accuracy: 1e-6, "gate of head \(j)") }
        XCTAssertEqual(g.chosen.toArray(), [1, 1, 0, 1, 0], "shared heads and the lower-index winner of the tie")
        let noShared = run([0.3, 1.2, -1, 0.9], n: 1, h: 4, shared: 0, active: 2)
        let p = softmax([0.3, 1.2, -1, 0.9])
        for (j, w) in [0, p[1], 0, p[3]].enumerated() {
            XCTAssertEqual(Double(noShared.gates[j]), w, accuracy: 1e-6, "no shared heads: head \(j)")
        }
    }

    func testBackwardMatchesFiniteDifferences() {
        for (h, s, a) in [(6, 2, 2), (4, 0, 2), (4, 1, 3), (3, 2, 1)] {
            let n = 5, r = HeadRouter.rows(heads: h, shared: s)
            // Routed logits with gaps far above the step, so no top-A choice flips.
            let logits = (0..<(n * r)).map { Float(($0 * 7) % (n * r)) * 0.11 - 1.3 }
            let dg = randomValues(n * h, seed: 41)
            func objective(_ l: [Float]) -> Double { dot(run(l, n: n, h: h, shared: s, active: a).gates, dg) }
            let g = run(logits, n: n, h: h, shared: s, active: a)
            let dl = FloatBuffer(count: n * r)
            HeadRouter.backward(
                dLogits: dl.base, dGates: keep(dg), probs: g.probs.base, chosen: g.chosen.base, n: n, h: h, shared: s)
            XCTAssertGreaterThan(dl.toArray().map(abs).max()!, 1e-3, "H \(h) S \(s) A \(a): gradient not all zero")
            assertGradient(
                "head router H \(h) S \(s) A \(a)", x: logits, analytic: dl.toArray(), h: 1e-3, objective: objective)
        }
    }

    /// scale multiplies each local head's columns by its gate; its backward gives dy = gate * dOut
    /// and the gate's gradient sum(y * dOut), for the local heads (first = 2 of H = 4) only.
    func testScaleBackwardMatchesFiniteDifferences() {
        let n = 3, h = 4, hl = 2, d = 3, ldc = hl * d, first = 2
        let y = randomValues(n * ldc, seed: 50), gates = randomValues(n * h, seed: 51),
            r = randomValues(n * ldc, seed: 52)
        func scaled(_ y: [Float], _ g: [Float]) -> FloatBuffer {
            let out = FloatBuffer(count: n * ldc)
            HeadRouter.scale(
                out: out.base, y: keep(y), gates: keep(g), n: n, heads: hl, first: first, h: h, d: d, ldc: ldc)
            return out
        }
        let out = scaled(y, gates)
        XCTAssertEqual(Double(out[ldc + d + 1]), Double(y[ldc + d + 1] * gates[h + first + 1]), accuracy: 1e-7)
        let dy = FloatBuffer(count: n * ldc), dGates = FloatBuffer(Array(repeating: 7, count: n * h))
        HeadRouter.scaleBackward(
            dy: dy.base, dGates: dGates.base, dOut: keep(r), y: keep(y), gates: keep(gates), n: n, heads: hl,
            first: first, h: h, d: d, ldc: ldc)
        assertGradient("scale dy", x: y, analytic: dy.toArray()) { dot(scaled($0, gates), r) }
        // Gates of heads 0 and 1 belong to another rank: untouched (7) here.
        var local = dGates.toArray()
        for i in 0..<n {
            XCTAssertEqual(local[i * h], 7); XCTAssertEqual(local[i * h + 1], 7)
            local[i * h] = 0; local[i * h + 1] = 0
        }
        assertGradient("scale dGates", x: gates, analytic: local) { dot(scaled(y, $0), r) }
    }
}
