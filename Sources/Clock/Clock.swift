// The one clock of the project for durations (step times, collectives, link probes, saves):
// CLOCK_MONOTONIC, which never jumps with the wall clock. Wall time (log timestamps) is separate.
#if canImport(Glibc)
    import Glibc
#endif

/// Monotonic seconds since an arbitrary origin: subtract two readings for a duration.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
