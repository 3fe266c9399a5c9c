// The FMA peak of the cores a run uses: the physical limit of the matrix products (the sgemm
// peak, SgemmPeak.swift, is what OpenBLAS reaches). A loop of independent FMAs of the widest
// vectors the CPU has (CPeak), on each of `threads` threads at once, best of repeated rounds.
import CPeak
import Clock

public enum FMAPeak {
    /// The vector width the loop runs (512 with AVX-512F, 256 with FMA3, 0 without FMA).
    public static var bits: Int { Int(cpeak_fma_bits()) }

    /// FLOP/s of `threads` threads each running the FMA loop, best of rounds for about `seconds`.
    /// Runs on `threads` threads whatever Parallel.threads is (restored after): bench measures the
    /// peaks before it sets the rank's threads, and with 1 the loops had run one after the other,
    /// so a 2-thread peak read as the 1-thread one.
    public static func measure(threads: Int = 1, seconds: Double = 0.5) -> Double {
        let saved = Parallel.threads
        Parallel.threads = max(threads, 1)
        defer { Parallel.threads = saved }
        let iterations = 2_000_000
        let sinks = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(threads, 1))
        defer { sinks.deallocate() }
        var best = 0.0, spent = 0.0, rounds = 0
        while spent < seconds || rounds < 3 {
            let t0 = monotonicSeconds()
            Parallel.forEach(max(threads, 1)) { item, _ in _ = cpeak_fma(iterations, sinks.baseAddress! + item) }
            let dt = monotonicSeconds() - t0
            let flops = 2.0 * Double(bits / 32) * 12 * Double(iterations) * Double(max(threads, 1))
            best = max(best, flops / dt)
            spent += dt
            rounds += 1
        }
        return best
    }
}
