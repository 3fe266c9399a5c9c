// A quick measurement of this process's sgemm rate, the denominator of MFU.
import Clock

#if canImport(Glibc)
    import Glibc
#endif

public enum SgemmPeak {
    /// FLOP/s of square sgemm (n x n) with the current BLAS thread count, best of repeated
    /// calls for about `seconds`.
    public static func measure(n: Int = 1024, seconds: Double = 0.3) -> Double {
        let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
        for i in 0..<(n * n) { a.base[i] = Float(i % 7) * 0.1; b.base[i] = Float(i % 5) * 0.1 }
        let flops = 2 * Double(n) * Double(n) * Double(n)
        var best = 0.0
        var spent = 0.0
        var runs = 0
        while spent < seconds || runs < 2 {
            let t0 = monotonicSeconds()
            sgemm(.no, .no, m: n, n: n, k: n, a: a.base, lda: n, b: b.base, ldb: n, c: c.base, ldc: n)
            let dt = monotonicSeconds() - t0
            spent += dt
            runs += 1
            best = max(best, flops / dt)
        }
        return best
    }

}
