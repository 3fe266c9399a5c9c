import Tensor
import XCTest

/// A direct Double-precision causal attention, forward and backward, written from the formulas:
/// the independent reference for the tiled kernel. Layout as in Attention.swift: q, y [B, T, ldc]
/// of H heads; k, v [B, T, ldkv] of G heads, query head h reading key/value head h / (H / G).
struct ReferenceAttention {
    let b: Int, t: Int, h: Int, d: Int, ldc: Int
    var g: Int, ldkv: Int
    let q: [Float], k: [Float], v: [Float]

    init(b: Int, t: Int, h: Int, d: Int, ldc: Int, g: Int? = nil, ldkv: Int? = nil, q: [Float], k: [Float], v: [Float])
    {
        (self.b, self.t, self.h, self.d, self.ldc) = (b, t, h, d, ldc)
        (self.g, self.ldkv, self.q, self.k, self.v) = (g ?? h, ldkv ?? ldc, q, k, v)
    }

    func at(_ x: [Float], _ bi: Int, _ i: Int, _ hi: Int, _ c: Int) -> Double {
        Double(x[bi * t * ldc + i * ldc + hi * d + c])
    }

    /// Index of key/value row j, channel c, as query head hi reads it.
    func kvIndex(_ bi: Int, _ j: Int, _ hi: Int, _ c: Int) -> Int { bi * t * ldkv + j * ldkv + (hi / (h / g)) * d + c }
    func kvAt(_ x: [Float], _ bi: Int, _ j: Int, _ hi: Int, _ c: Int) -> Double { Double(x[kvIndex(bi, j, hi, c)]) }

    /// Softmax probabilities of (b, h) row i over keys 0...i.
    func probs(_ bi: Int, _ hi: Int, _ i: Int) -> [Double] {
        let scale = 1 / Double(d).squareRoot()
        let s = (0...i).map { j in (0..<d).reduce(0.0) { $0 + at(q, bi, i, hi, $1) * kvAt(k, bi, j, hi, $1) } * scale }
        let mx = s.max()!
        let e = s.map { expDouble($0 - mx) }
        let z = e.reduce(0, +)
        return e.map { $0 / z }
    }

    /// y and, for upstream gradient dy, (dq, dk, dv); y, dq [B, T, ldc], dk, dv [B, T, ldkv].
    func run(dy: [Float]) -> (y: [Double], dq: [Double], dk: [Double], dv: [Double]) {
        let n = b * t * ldc, scale = 1 / Double(d).squareRoot()
        var y = [Double](repeating: 0, count: n), dq = y
        var dk = [Double](repeating: 0, count: b * t * ldkv), dv = dk
        for bi in 0..<b {
            for hi in 0..<h {
                for i in 0..<t {
                    let p = probs(bi, hi, i)
                    let row = bi * t * ldc + i * ldc + hi * d
                    var dp = [Double](repeating: 0, count: i + 1)
                    for j in 0...i {
                        for c in 0..<d {
                            y[row + c] += p[j] * kvAt(v, bi, j, hi, c)
                            dp[j] += Double(dy[row + c]) * kvAt(v, bi, j, hi, c)
                            dv[kvIndex(bi, j, hi, c)] += p[j] * Double(dy[row + c])
                        }
                    }
                    let rowDot = (0...i).reduce(0.0) { $0 + p[$1] * dp[$1] }
                    for j in 0...i {
                        let ds = p[j] * (dp[j] - rowDot) * scale
                        for c in 0..<d {
                            dq[row + c] += ds * kvAt(k, bi, j, hi, c)
                            dk[kvIndex(bi, j, hi, c)] += ds * at(q, bi, i, hi, c)
                        }
                    }
                }
            }
        }
        return (y, dq, dk, dv)
    }
}

final class AttentionTests: XCTestCase {
    struct Outputs: Equatable {
        let y, lse, dq, dk, dv: [Float]
    }

    func tiled(_ r: ReferenceAttention, dy: [Float]) -> Outputs {
        let n = r.b * r.t * r.ldc, nkv = r.b * r.t * r.ldkv, scratch = WorkerScratch()
        let y = FloatBuffer(count: n), lse = FloatBuffer(count: r.b * r.h * r.t)
        let dq = FloatBuffer(count: n), dk = FloatBuffer(count: nkv), dv = FloatBuffer(count: nkv)
        let q = keep(r.q), k = keep(r.k), v = keep(r.v)
        Attention.forward(
            y: y.base, lse: lse.base, q: q, k: k, v: v, b: r.b, t: r.t, h: r.h, kvHeads: r.g, d: r.d, ldq: r.ldc,
            ldkv: r.ldkv, scratch: scratch)
        Attention.backward(
            dq: dq.base, dk: dk.base, dv: dv.base, dy: keep(dy), q: q, k: k, v: v, y: y.base, lse: lse.base,
            b: r.b, t: r.t, h: r.h, kvHeads: r.g, d: r.d, ldq: r.ldc, ldkv: r.ldkv, scratch: scratch)
        return Outputs(y: y.toArray(), lse: lse.toArray(), dq: dq.toArray(), dk: dk.toArray(), dv: dv.toArray())
    }

    /// The tiled kernel at 1 and 2 threads (bitwise the same) against the Double reference; dk and
    /// dv sum a group's query heads, so grouped-query cases allow them more.
    func assertTiledMatchesReference(
        _ r: ReferenceAttention, dy: [Float], _ label: String, kvTolerance: Double, line: UInt = #line
    ) {
        let want = r.run(dy: dy)
        let saved = Parallel.threads
        Parallel.threads = 1
        let one = tiled(r, dy: dy)
        Parallel.threads = 2
        let two = tiled(r, dy: dy)
        Parallel.threads = saved
        XCTAssertLessThan(maxError(one.y, want.y), 2e-6, "\(label): y", line: line)
        XCTAssertLessThan(maxError(one.dq, want.dq), 2e-5, "\(label): dq", line: line)
        XCTAssertLessThan(maxError(one.dk, want.dk), kvTolerance, "\(label): dk", line: line)
        XCTAssertLessThan(maxError(one.dv, want.dv), kvTolerance, "\(label): dv", line: line)
        XCTAssertEqual(one, two, "\(label): 1 and 2 threads differ", line: line)
    }

    func maxError(_ got: [Float], _ want: [Double]) -> Double {
        zip(got, want).reduce(0.0) { max($0, abs(Double($1.0) - $1.1)) }
    }

    /// T values span one partial query tile, exact tiles, a tile remainder and more than one key
    /// tile (online softmax across tiles); D = 4, 32 and 64; ldc > H*D (a tp rank's columns).
    /// Forward and backward against the Double reference; 1 and 2 threads give the same bits.
    func testTiledAttentionMatchesReferenceAcrossTilesAndThreads() {
        let cases: [(b: Int, t: Int, h: Int, d: Int, ldc: Int)] = [
            (2, 1, 2, 4, 8), (1, 63, 2, 4, 10), (2, 65, 1, 32, 32), (1, 130, 2, 8, 20), (1, 300, 1, 64, 64),
            (1, 520, 1, 32, 40)
        ]
        for (ci, cs) in cases.enumerated() {
            let n = cs.b * cs.t * cs.ldc, seed = UInt64(100 + 10 * ci)
            let r = ReferenceAttention(
                b: cs.b, t: cs.t, h: cs.h, d: cs.d, ldc: cs.ldc, q: randomValues(n, seed: seed, scale: 2),
                k: randomValues(n, seed: seed + 1, scale: 2), v: randomValues(n, seed: seed + 2))
            var dy = randomValues(n, seed: seed + 3)
            for i in 0..<n where i % cs.ldc >= cs.h * cs.d { dy[i] = 0 }
            assertTiledMatchesReference(
                r, dy: dy, "B\(cs.b) T\(cs.t) H\(cs.h) D\(cs.d) ldc\(cs.ldc)", kvTolerance: 2e-5)
        }
    }

    /// Row 0 sees only key 0; a future value never changes the past; finite differences of the
    /// tiled kernel's own backward (T = 5 inside one tile, T = 300 across two key tiles).
    func testCausalityAndFiniteDifferences() {
        for (t, seed) in [(5, UInt64(20)), (300, UInt64(30))] {
            let b = 1, h = 2, d = 3, c = h * d, n = b * t * c
            let q = randomValues(n, seed: seed), k = randomValues(n, seed: seed + 1)
            let v = randomValues(n, seed: seed + 2), dy = randomValues(n, seed: seed + 3)
            func forward(_ q: [Float], _ k: [Float], _ v: [Float]) -> FloatBuffer {
                let y = FloatBuffer(count: n), lse = FloatBuffer(count: b * h * t)
                Attention.forward(
                    y: y.base, lse: lse.base, q: keep(q), k: keep(k), v: keep(v), b: b, t: t, h: h, kvHeads: h, d: d,
                    ldq: c, ldkv: c, scratch: WorkerScratch())
                return y
            }
            let y = forward(q, k, v)
            for i in 0..<c { XCTAssertEqual(y[i], v[i], accuracy: 1e-6, "T\(t): row 0 must copy v[0]") }
            var v2 = v
            for i in 0..<c { v2[(t - 1) * c + i] += 1 }
            let y2 = forward(q, k, v2)
            for i in 0..<((t - 1) * c) { XCTAssertEqual(y2[i], y[i], "T\(t): the last value changed an earlier row") }
            let r = ReferenceAttention(b: b, t: t, h: h, d: d, ldc: c, q: q, k: k, v: v)
            let g = tiled(r, dy: dy)
            assertGradient("T\(t) dq", x: q, analytic: g.dq, samples: 30) { dot(forward($0, k, v), dy) }
            assertGradient("T\(t) dk", x: k, analytic: g.dk, samples: 30) { dot(forward(q, $0, v), dy) }
            assertGradient("T\(t) dv", x: v, analytic: g.dv, samples: 30) { dot(forward(q, k, $0), dy) }
        }
    }

    /// Grouped-query attention: 4 query heads on 2 and on 1 key/value heads, with row strides
    /// wider than the heads (a tp rank's columns), across key tiles; against the Double
    /// reference, and 1 vs 2 threads bitwise (backward adds a group's heads into one dk, dv).
    func testGroupedQueryAttentionMatchesReference() {
        for (ci, cs) in [(b: 2, t: 70, g: 2, ldkv: 18), (b: 1, t: 300, g: 1, ldkv: 8)].enumerated() {
            let h = 4, d = 8, ldc = 36, seed = UInt64(500 + 10 * ci)
            let r = ReferenceAttention(
                b: cs.b, t: cs.t, h: h, d: d, ldc: ldc, g: cs.g, ldkv: cs.ldkv,
                q: randomValues(cs.b * cs.t * ldc, seed: seed, scale: 2),
                k: randomValues(cs.b * cs.t * cs.ldkv, seed: seed + 1, scale: 2),
                v: randomValues(cs.b * cs.t * cs.ldkv, seed: seed + 2))
            var dy = randomValues(cs.b * cs.t * ldc, seed: seed + 3)
            for i in dy.indices where i % ldc >= h * d { dy[i] = 0 }
            assertTiledMatchesReference(r, dy: dy, "H\(h) G\(cs.g) T\(cs.t)", kvTolerance: 4e-5)
        }
    }
}
