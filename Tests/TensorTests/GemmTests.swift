import XCTest

@testable import Tensor

/// CGemm (Gemm.swift) against references it could disagree with: a Float64 sum (the product is
/// right), and one Float fused multiply-add chain in ascending k per output (the summation order
/// the header promises, so any tile, ISA or row split that reorders it fails bitwise).
final class GemmTests: XCTestCase {
    /// (rows, in features, out features): remainders in every dimension against the 14 x 32 and
    /// 6 x 16 tiles and the 256-wide k blocks, one row, one column, k = 1.
    let shapes = [(1, 1, 1), (1, 7, 33), (15, 31, 17), (29, 257, 65), (3, 300, 100), (130, 64, 47), (14, 513, 32)]

    func skipWithoutKernel() throws {
        try XCTSkipIf(Gemm.kernelBits == 0, "this CPU has no CGemm kernel (needs AVX2+FMA)")
    }

    /// Runs body with each kernel this CPU has (AVX-512F and AVX2 on an AVX-512 machine).
    func forEachKernel(_ body: (Int) throws -> Void) rethrows {
        let best = Gemm.kernelBits
        defer { _ = Gemm.useKernel(bits: best) }
        for bits in [512, 256] where bits <= best {
            XCTAssertEqual(Gemm.useKernel(bits: bits), bits)
            try body(bits)
        }
    }

    /// An output's references: the Float FMA chain in ascending k from `start`, and the sum in Float64.
    func references(_ start: Float, _ k: Int, _ a: (Int) -> Float, _ b: (Int) -> Float) -> (chain: Float, wide: Double)
    {
        var chain = start, wide = Double(start)
        for p in 0..<k {
            chain = chain.addingProduct(a(p), b(p))
            wide += Double(a(p)) * Double(b(p))
        }
        return (chain, wide)
    }

    func testForwardIsTheAscendingFMAChainAndMatchesFloat64() throws {
        try skipWithoutKernel()
        forEachKernel { bits in forwardChecks(bits) }
    }

    func forwardChecks(_ bits: Int) {
        for (n, i, o) in shapes {
            let x = randomValues(n * i, seed: 1), w = randomValues(o * i, seed: 2), c0 = randomValues(n * o, seed: 3)
            for accumulate in [false, true] {
                let out = FloatBuffer(accumulate ? c0 : [Float](repeating: .nan, count: n * o))
                Gemm.forward(
                    out: out.base, inp: keep(x), weight: keep(w), n: n, inFeatures: i, outFeatures: o,
                    accumulate: accumulate, rowGrain: 8)
                for r in 0..<n {
                    for j in 0..<o {
                        let (acc, wide) = references(
                            accumulate ? c0[r * o + j] : 0, i, { x[r * i + $0] }, { w[j * i + $0] })
                        let got = out[r * o + j],
                            at = "\(bits)-bit forward \(n)x\(i)x\(o) accumulate \(accumulate) (\(r), \(j))"
                        XCTAssertEqual(got.bitPattern, acc.bitPattern, "\(at): \(got) is not the FMA chain's \(acc)")
                        XCTAssertEqual(Double(got), wide, accuracy: 1e-5 * Double(i).squareRoot() + 1e-6, at)
                    }
                }
            }
        }
    }

    func testInputAndWeightGradientsAreTheFMAChain() throws {
        try skipWithoutKernel()
        forEachKernel { bits in gradientChecks(bits) }
    }

    func gradientChecks(_ bits: Int) {
        for (n, i, o) in shapes {
            let x = randomValues(n * i, seed: 4), w = randomValues(o * i, seed: 5), dy = randomValues(n * o, seed: 6)
            let dx0 = randomValues(n * i, seed: 7), dw0 = randomValues(o * i, seed: 8)
            let dx = FloatBuffer(dx0), dw = FloatBuffer(dw0)
            Gemm.inputGradient(
                rows: 0..<n, dInp: dx.base, dOut: keep(dy), weight: keep(w), inFeatures: i, outFeatures: o,
                overwrite: false)
            Gemm.weightGradient(
                rows: 0..<o, dWeight: dw.base, dOut: keep(dy), inp: keep(x), n: n, inFeatures: i, outFeatures: o)
            for r in 0..<n {
                for c in 0..<i {
                    let acc = references(dx0[r * i + c], o, { dy[r * o + $0] }, { w[$0 * i + c] }).chain
                    XCTAssertEqual(
                        dx[r * i + c].bitPattern, acc.bitPattern, "\(bits)-bit dInp \(n)x\(i)x\(o) (\(r), \(c))")
                }
            }
            for j in 0..<o {
                for c in 0..<i {
                    let (acc, wide) = references(dw0[j * i + c], n, { dy[$0 * o + j] }, { x[$0 * i + c] })
                    XCTAssertEqual(
                        dw[j * i + c].bitPattern, acc.bitPattern, "\(bits)-bit dW \(n)x\(i)x\(o) (\(j), \(c))")
                    XCTAssertEqual(Double(dw[j * i + c]), wide, accuracy: 1e-5 * Double(n).squareRoot() + 1e-6)
                }
            }
        }
    }

    /// An expert that received no rows: k = 0 overwrites with zeros and leaves accumulators alone.
    func testEmptySumsAndEmptyRows() throws {
        try skipWithoutKernel()
        let dw0 = randomValues(5 * 3, seed: 10)
        let dw = FloatBuffer(dw0)
        Gemm.weightGradient(
            rows: 0..<5, dWeight: dw.base, dOut: keep([]), inp: keep([]), n: 0, inFeatures: 3, outFeatures: 5)
        XCTAssertEqual(dw.toArray(), dw0, "a weight gradient over 0 rows changed the gradient")
        let dx = FloatBuffer([Float](repeating: .nan, count: 4 * 5))
        Gemm.inputGradient(
            rows: 0..<4, dInp: dx.base, dOut: keep([]), weight: keep([]), inFeatures: 5, outFeatures: 0,
            overwrite: true)
        XCTAssertEqual(dx.toArray(), [Float](repeating: 0, count: 20), "k = 0 without accumulate must write zeros")
    }

    /// Linear on each engine (CGemm, and the OpenBLAS path it replaced) against a Float64 product,
    /// at a row count where the forward runs CGemm (>= Gemm.ownForwardRows) and one where it does not.
    func testLinearMatchesFloat64OnBothEngines() throws {
        let saved = Gemm.engine
        defer { Gemm.engine = saved }
        let i = 37, o = 45
        for n in [Gemm.ownForwardRows + 3, 5] {
            let x = randomValues(n * i, seed: 20), w = randomValues(o * i, seed: 21), dy = randomValues(n * o, seed: 22)
            for engine in GemmEngine.allCases where engine == .blas || Gemm.kernelBits > 0 {
                Gemm.engine = engine
                let out = FloatBuffer(count: n * o), dx = FloatBuffer(count: n * i), dw = FloatBuffer(count: o * i)
                Linear.forward(out: out.base, inp: keep(x), weight: keep(w), n: n, inFeatures: i, outFeatures: o)
                Linear.backward(
                    dInp: dx.base, dWeight: dw.base, dOut: keep(dy), inp: keep(x), weight: keep(w), n: n,
                    inFeatures: i, outFeatures: o)
                func dot(_ k: Int, _ a: (Int) -> Float, _ b: (Int) -> Float) -> Double { references(0, k, a, b).wide }
                let label = "\(engine) engine, n \(n)"
                for r in 0..<n {
                    for j in 0..<o {
                        let want = dot(i, { x[r * i + $0] }, { w[j * i + $0] })
                        XCTAssertEqual(Double(out[r * o + j]), want, accuracy: 1e-5, "\(label): out")
                    }
                    for c in 0..<i {
                        let want = dot(o, { dy[r * o + $0] }, { w[$0 * i + c] })
                        XCTAssertEqual(Double(dx[r * i + c]), want, accuracy: 1e-5, "\(label): dInp")
                    }
                }
                for j in 0..<o {
                    for c in 0..<i {
                        let want = dot(n, { dy[$0 * o + j] }, { x[$0 * i + c] })
                        XCTAssertEqual(
                            Double(dw[j * i + c]), want, accuracy: 2e-5 * Double(n).squareRoot(), "\(label): dW")
                    }
                }
            }
        }
    }

    /// Linear on CGemm gives the same bits at 1 and 2 threads (rows and weight rows in items).
    func testLinearOnCGemmIsThreadCountInvariant() throws {
        try skipWithoutKernel()
        let saved = (Gemm.engine, Parallel.threads)
        defer { (Gemm.engine, Parallel.threads) = saved }
        Gemm.engine = .own
        let n = 600, i = 70, o = 300
        let x = randomValues(n * i, seed: 11), w = randomValues(o * i, seed: 12), dy = randomValues(n * o, seed: 13)
        func run(threads: Int) -> [[Float]] {
            Parallel.threads = threads
            let out = FloatBuffer(count: n * o), dx = FloatBuffer(count: n * i), dw = FloatBuffer(count: o * i)
            Linear.forward(out: out.base, inp: keep(x), weight: keep(w), n: n, inFeatures: i, outFeatures: o)
            Linear.backward(
                dInp: dx.base, dWeight: dw.base, dOut: keep(dy), inp: keep(x), weight: keep(w), n: n, inFeatures: i,
                outFeatures: o)
            return [out.toArray(), dx.toArray(), dw.toArray()]
        }
        let one = run(threads: 1), two = run(threads: 2)
        for (name, pair) in zip(["out", "dInp", "dW"], zip(one, two)) {
            XCTAssertEqual(pair.0, pair.1, "\(name) differs between 1 and 2 threads")
        }
    }
}
