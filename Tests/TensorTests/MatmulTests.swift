import Tensor
import XCTest

final class MatmulTests: XCTestCase {
    /// Every transpose combination of sgemm against a naive triple loop, with alpha and beta.
    func testSgemmAllTransposesMatchNaive() {
        let m = 5, n = 7, k = 3
        for ta in [Transpose.no, .yes] {
            for tb in [Transpose.no, .yes] {
                let a = randomValues(m * k, seed: 1), b = randomValues(k * n, seed: 2)
                let c0 = randomValues(m * n, seed: 3)
                let lda = ta == .no ? k : m, ldb = tb == .no ? n : k
                func A(_ i: Int, _ p: Int) -> Float { ta == .no ? a[i * lda + p] : a[p * lda + i] }
                func B(_ p: Int, _ j: Int) -> Float { tb == .no ? b[p * ldb + j] : b[j * ldb + p] }
                let c = FloatBuffer(c0)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        sgemm(
                            ta, tb, m: m, n: n, k: k, alpha: 0.5, a: ap.baseAddress!, lda: lda,
                            b: bp.baseAddress!, ldb: ldb, beta: 2, c: c.base, ldc: n)
                    }
                }
                for i in 0..<m {
                    for j in 0..<n {
                        var s: Float = 0
                        for p in 0..<k { s += A(i, p) * B(p, j) }
                        XCTAssertEqual(
                            c[i * n + j], 0.5 * s + 2 * c0[i * n + j], accuracy: 1e-5, "ta \(ta) tb \(tb) (\(i),\(j))")
                    }
                }
            }
        }
    }

    func testLinearBackwardMatchesFiniteDifferences() {
        let n = 4, i = 6, o = 5
        let x = randomValues(n * i, seed: 10), w = randomValues(o * i, seed: 11), r = randomValues(n * o, seed: 12)
        func objective(_ x: [Float], _ w: [Float]) -> Double {
            let out = FloatBuffer(count: n * o)
            Linear.forward(out: out.base, inp: keep(x), weight: keep(w), n: n, inFeatures: i, outFeatures: o)
            return dot(out, r)
        }
        let dx = FloatBuffer(count: n * i), dw = FloatBuffer(count: o * i)
        Linear.backward(
            dInp: dx.base, dWeight: dw.base, dOut: keep(r), inp: keep(x),
            weight: keep(w), n: n, inFeatures: i, outFeatures: o)
        assertGradient("Linear dx", x: x, analytic: dx.toArray()) { objective($0, w) }
        assertGradient("Linear dW", x: w, analytic: dw.toArray()) { objective(x, $0) }
    }

    /// Shapes that span several items of both kinds, with remainders (rows 2 x rowGrain + 37,
    /// weight rows weightRowGrain + 44): dInp and dW against a Double reference, accumulated
    /// onto what was there, and the same bits at 1 and 2 threads.
    func testLinearBackwardOverSeveralItemsMatchesReference() {
        let n = 2 * Linear.rowGrain + 37, i = 9, o = Linear.weightRowGrain + 44
        let x = randomValues(n * i, seed: 20), w = randomValues(o * i, seed: 21), d = randomValues(n * o, seed: 22)
        func run(threads: Int) -> ([Float], [Float]) {
            let saved = Parallel.threads
            Parallel.threads = threads
            defer { Parallel.threads = saved }
            let dx = FloatBuffer([Float](repeating: 1, count: n * i)),
                dw = FloatBuffer([Float](repeating: 2, count: o * i))
            Linear.backward(
                dInp: dx.base, dWeight: dw.base, dOut: keep(d), inp: keep(x), weight: keep(w),
                n: n, inFeatures: i, outFeatures: o)
            return (dx.toArray(), dw.toArray())
        }
        let (dx, dw) = run(threads: 1)
        for r in stride(from: 0, to: n, by: 7) {
            for c in 0..<i {
                let ref = 1 + (0..<o).reduce(0.0) { $0 + Double(d[r * o + $1]) * Double(w[$1 * i + c]) }
                XCTAssertEqual(Double(dx[r * i + c]), ref, accuracy: 1e-3 * max(1, abs(ref)), "dInp[\(r), \(c)]")
            }
        }
        for r in stride(from: 0, to: o, by: 5) {
            for c in 0..<i {
                let ref = 2 + (0..<n).reduce(0.0) { $0 + Double(d[$1 * o + r]) * Double(x[$1 * i + c]) }
                XCTAssertEqual(Double(dw[r * i + c]), ref, accuracy: 1e-3 * max(1, abs(ref)), "dW[\(r), \(c)]")
            }
        }
        let (dx2, dw2) = run(threads: 2)
        XCTAssertEqual(dx2.map(\.bitPattern), dx.map(\.bitPattern), "dInp differs at 2 threads")
        XCTAssertEqual(dw2.map(\.bitPattern), dw.map(\.bitPattern), "dW differs at 2 threads")
    }

    func testLinearBackwardAccumulates() {
        let dx = FloatBuffer([1, 1]), dw = FloatBuffer([1, 1])
        // n = 1, in = 2, out = 1: dx += dOut * w, dW += dOut * x.
        Linear.backward(
            dInp: dx.base, dWeight: dw.base, dOut: keep([2]), inp: keep([3, 4]),
            weight: keep([5, 6]), n: 1, inFeatures: 2, outFeatures: 1)
        XCTAssertEqual(dx.toArray(), [11, 13])
        XCTAssertEqual(dw.toArray(), [7, 9])
        // overwriteInput: dx is written (its old contents ignored), dW still accumulates.
        Linear.backward(
            dInp: dx.base, dWeight: dw.base, dOut: keep([2]), inp: keep([3, 4]),
            weight: keep([5, 6]), n: 1, inFeatures: 2, outFeatures: 1, overwriteInput: true)
        XCTAssertEqual(dx.toArray(), [10, 12], "overwriteInput must replace dx, not add to it")
        XCTAssertEqual(dw.toArray(), [13, 17])
    }

    /// The FMA loop runs the CPU's widest FMA vectors and reaches a rate no core without FMAs
    /// would (every machine this project builds for has FMA3; the sgemm peak is measured beside it).
    func testFMAPeakRunsTheWidestVectors() {
        XCTAssertTrue([256, 512].contains(FMAPeak.bits), "FMA vector width \(FMAPeak.bits)")
        let peak = FMAPeak.measure(threads: 1, seconds: 0.05)
        XCTAssertGreaterThan(peak, 4e9, "an FMA core does more than 4 GFLOP/s")
        XCTAssertLessThan(peak, 1e12, "one core does not do a TFLOP/s: the loop was optimised away")
    }
}
