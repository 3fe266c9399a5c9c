import XCTest

@testable import Tensor

final class OptimizerTests: XCTestCase {
    func testAdamWFirstStepsClosedForm() {
        let cfg = AdamWConfig(beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        let p = FloatBuffer([1, -2]), g = FloatBuffer([0.5, -0.25]), m = FloatBuffer(count: 2),
            v = FloatBuffer(count: 2)
        AdamW.update(
            params: p.base, grads: g.base, m: m.base, v: v.base, count: 2, lr: 0.01, step: 1, config: cfg, decay: true)
        // Step 1: mhat = g, vhat = g^2, so the Adam part is sign(g): p - lr * (sign(g) + wd * p).
        XCTAssertEqual(p[0], 1 - 0.01 * (1 + 0.1 * 1), accuracy: 1e-6)
        XCTAssertEqual(p[1], -2 - 0.01 * (-1 + 0.1 * -2), accuracy: 1e-6)
        XCTAssertEqual(m[0], 0.05, accuracy: 1e-7)
        XCTAssertEqual(v[0], 0.05 * 0.25, accuracy: 1e-7)
        // Step 2 with the same gradient: mhat == g and vhat == g^2 again (bias correction).
        let before = p[0]
        AdamW.update(
            params: p.base, grads: g.base, m: m.base, v: v.base, count: 2, lr: 0.01, step: 2, config: cfg, decay: false)
        XCTAssertEqual(p[0], before - 0.01 * 1, accuracy: 1e-6)
    }

    /// The 8-lane AdamW gives the scalar formula's bits, lanes and tail alike.
    func testAdamWVectorLanesMatchTheScalarFormulaBitForBit() {
        let n = 8 * 5 + 3, cfg = AdamWConfig()
        let p0 = randomValues(n, seed: 1), g = randomValues(n, seed: 2), m0 = randomValues(n, seed: 3)
        let v0 = randomValues(n, seed: 4).map { $0 * $0 }
        let p = FloatBuffer(p0), m = FloatBuffer(m0), v = FloatBuffer(v0)
        AdamW.update(
            params: p.base, grads: keep(g), m: m.base, v: v.base, count: n, lr: 0.003, step: 7, config: cfg,
            decay: true, gradScale: 0.5)
        // The bias corrections as AdamW computes them (from the Float betas, in Double).
        let c1 = 1 / (1 - Float(AdamW.powDouble(Double(cfg.beta1), 7)))
        let c2 = 1 / (1 - Float(AdamW.powDouble(Double(cfg.beta2), 7)))
        for i in 0..<n {
            let gi = g[i] * 0.5
            let mi = 0.9 * m0[i] + (1 - 0.9) * gi, vi = 0.95 * v0[i] + (1 - 0.95) * gi * gi
            let want = p0[i] - 0.003 * (mi * c1 / ((vi * c2).squareRoot() + 1e-8) + 0.1 * p0[i])
            XCTAssertEqual(p[i].bitPattern, want.bitPattern, "parameter \(i): \(p[i]) vs \(want)")
            XCTAssertEqual(m[i].bitPattern, mi.bitPattern, "m \(i)")
            XCTAssertEqual(v[i].bitPattern, vi.bitPattern, "v \(i)")
        }
    }

    /// updateAll over many ranges at a late step gives each element the scalar formula's bits, and
    /// computes beta^step once per call: once per work item (400 here, 2 x 10^6 multiplications
    /// each) took seconds, a step's worth of time on a long run.
    func testAdamWUpdateAllAtALateStepMatchesTheFormulaAndIsCheap() {
        let ranges = 400, per = 8, n = ranges * per, step = 1_000_000, cfg = AdamWConfig()
        let p0 = randomValues(n, seed: 5), g = randomValues(n, seed: 6)
        let p = FloatBuffer(p0), m = FloatBuffer(count: n), v = FloatBuffer(count: n)
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            AdamW.updateAll(
                params: p.base, grads: keep(g), m: m.base, v: v.base,
                ranges: (0..<ranges).map { (offset: $0 * per, momentOffset: $0 * per, count: per, decay: $0 % 2 == 0) },
                gradScale: 1, lr: 0.01, step: step, config: cfg)
        }
        XCTAssertLessThan(elapsed, .milliseconds(500), "updateAll at step \(step) took \(elapsed)")
        let c1 = 1 / (1 - Float(AdamW.powDouble(Double(cfg.beta1), step)))
        let c2 = 1 / (1 - Float(AdamW.powDouble(Double(cfg.beta2), step)))
        for i in 0..<n {
            let mi = (1 - 0.9) * g[i], vi = (1 - 0.95) * g[i] * g[i]
            let wd: Float = (i / per) % 2 == 0 ? 0.1 : 0
            let want = p0[i] - 0.01 * (mi * c1 / ((vi * c2).squareRoot() + 1e-8) + wd * p0[i])
            XCTAssertEqual(p[i].bitPattern, want.bitPattern, "parameter \(i): \(p[i]) vs \(want)")
        }
    }

    /// The norm's eight-blocks-at-a-time loop gives the bits of summing one block at a time.
    func testGradNormMatchesTheBlockAtATimeSumBitForBit() {
        let n = 8 * 4096 * 2 + 3 * 4096 + 123
        let g = randomValues(n, seed: 9)
        var want = 0.0
        for start in stride(from: 0, to: n, by: 4096) {
            var part: Float = 0
            for j in start..<min(start + 4096, n) { part += g[j] * g[j] }
            want += Double(part)
        }
        XCTAssertEqual(GradClip.norm(keep(g), count: n).bitPattern, want.squareRoot().bitPattern)
    }

    func testGradClipScalesToMaxNorm() {
        let g = FloatBuffer([3, 4])
        let n = GradClip.clip(g.base, count: 2, maxNorm: 1)
        XCTAssertEqual(n, 5, accuracy: 1e-12)
        XCTAssertEqual(g[0], 0.6, accuracy: 1e-6)
        XCTAssertEqual(g[1], 0.8, accuracy: 1e-6)
        let small = FloatBuffer([0.3, 0.4])
        GradClip.clip(small.base, count: 2, maxNorm: 1)
        XCTAssertEqual(small.toArray(), [0.3, 0.4])
        // Long buffers accumulate across blocks.
        let long = FloatBuffer([Float](repeating: 1, count: 10_000))
        XCTAssertEqual(GradClip.norm(long.base, count: 10_000), 100, accuracy: 1e-9)
    }

    func testLRScheduleWarmupAndCosine() {
        let s = LRSchedule(maxLR: 1e-3, minLR: 1e-4, warmup: 10, total: 110)
        XCTAssertEqual(s.lr(at: 0), 1e-4, accuracy: 1e-12)
        XCTAssertEqual(s.lr(at: 9), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(s.lr(at: 10), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(s.lr(at: 60), 0.5 * (1e-3 + 1e-4), accuracy: 1e-12)
        XCTAssertEqual(s.lr(at: 110), 1e-4, accuracy: 1e-12)
        XCTAssertGreaterThan(s.lr(at: 30), s.lr(at: 31))
    }

    func testCounterRNGIsAPureFunctionOfKeys() {
        XCTAssertEqual(CounterRNG.hash(1, 2, 3), CounterRNG.hash(1, 2, 3))
        XCTAssertNotEqual(CounterRNG.hash(1, 2, 3), CounterRNG.hash(1, 3, 2))
        let draws = (0..<20_000).map { CounterRNG.normal(CounterRNG.hash(7, UInt64($0))) }
        let mean = draws.map(Double.init).reduce(0, +) / Double(draws.count)
        let variance = draws.map { Double($0) * Double($0) }.reduce(0, +) / Double(draws.count) - mean * mean
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
        let below = (0..<1000).map { CounterRNG.below(10, CounterRNG.hash(9, UInt64($0))) }
        XCTAssertTrue(below.allSatisfy { $0 >= 0 && $0 < 10 })
        XCTAssertEqual(Set(below).count, 10)
    }

    func testBLASCoreDecision() {
        let avx512: Set<String> = ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]
        let avx2: Set<String> = ["avx2", "fma"]
        XCTAssertEqual(BLASCore.decide(currentCore: "Prescott", cpuFlags: avx512, userCoreType: nil), "SkylakeX")
        XCTAssertEqual(BLASCore.decide(currentCore: "Prescott", cpuFlags: avx2, userCoreType: nil), "Haswell")
        XCTAssertNil(
            BLASCore.decide(currentCore: "Prescott", cpuFlags: avx512, userCoreType: "Haswell"), "user's choice wins")
        XCTAssertNil(
            BLASCore.decide(currentCore: "Zen", cpuFlags: avx2, userCoreType: nil), "a recognised core is kept")
        XCTAssertNil(BLASCore.decide(currentCore: "SkylakeX", cpuFlags: avx512, userCoreType: nil))
        XCTAssertNil(
            BLASCore.decide(currentCore: "Prescott", cpuFlags: ["sse2"], userCoreType: nil), "nothing better to pick")
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f\nbogomips\t: 1\n"
        XCTAssertEqual(BLASCore.flags(fromCPUInfo: cpuinfo), ["fpu", "sse2", "avx2", "fma", "avx512f"])
    }
}
