// The threads behind Parallel.forEach: helper threads that wait for the next region by spinning
// on a generation counter (yielding the core every 64 turns) for up to `spinNanoseconds`, then
// sleep on a condition variable. A step runs many regions of a fraction of a millisecond to a
// few milliseconds; libdispatch's concurrentPerform woke its second thread ~100 us late on this
// project's 2-core VMs (a probe: 300 us of work per region took 405 us, with this pool 305 us).
// Which thread runs which item changes no bit (Parallel.swift), so the pool only changes when
// items start.
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

final class WorkerPool: @unchecked Sendable {
    /// How long an idle helper spins before it sleeps (2 ms: the gaps between a step's regions).
    static let spinNanoseconds: UInt64 = 2_000_000

    /// Most helpers a region can have (the low byte of `generation`).
    static let maxHelpers = 255
    /// region serial << 8 | helpers taking part, replaced (under `mutex`) to start a region; one
    /// word, so a helper that reads it late still knows whether that region was its own.
    private let generation = Atomic<Int>(0)
    /// Helpers of the current region that have not finished it yet.
    private let remaining = Atomic<Int>(0)
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Written by the region's caller before the release bump of `generation`, read by helpers
    // after their acquire load of it; `sleepers` only under `mutex`.
    private nonisolated(unsafe) var job: ((Int) -> Void)? = nil
    private nonisolated(unsafe) var sleepers = 0
    private nonisolated(unsafe) var helpers = 0

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
    }

    /// Runs body(0) on this thread and body(1) ... body(extra) on helpers; returns when all have.
    /// One region at a time (Parallel.forEach guarantees it).
    func run(extra: Int, _ body: @escaping (Int) -> Void) {
        precondition(extra >= 0 && extra <= Self.maxHelpers, "WorkerPool: \(extra) helpers")
        let current = generation.load(ordering: .relaxed)
        while helpers < extra { spawn(worker: helpers + 1, seen: current) }
        job = body
        remaining.store(extra, ordering: .relaxed)
        pthread_mutex_lock(mutex)
        generation.store(((current >> 8) + 1) << 8 | extra, ordering: .releasing)
        if sleepers > 0 { pthread_cond_broadcast(wake) }
        pthread_mutex_unlock(mutex)
        body(0)
        var turns = 0
        while remaining.load(ordering: .acquiring) > 0 {
            turns += 1
            if turns & 63 == 0 { sched_yield() }
        }
        job = nil
    }

    /// A helper that starts having seen generation `seen` (read before the region it must join).
    private func spawn(worker: Int, seen: Int) {
        helpers += 1
        let start = Unmanaged.passRetained(HelperStart(pool: self, worker: worker, seen: seen)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { raw in
                let s = Unmanaged<HelperStart>.fromOpaque(raw!).takeRetainedValue()
                s.pool.loop(worker: s.worker, seen: s.seen)
                return nil
            }, start)
        precondition(rc == 0, "pthread_create failed (\(rc)): the rank cannot start its worker threads")
        pthread_detach(thread)
    }

    private func loop(worker: Int, seen start: Int) {
        var seen = start
        while true {
            seen = awaitRegion(after: seen)
            if worker <= seen & 0xFF {
                runJob(worker)
                remaining.subtract(1, ordering: .releasing)
            }
        }
    }

    /// Its own function, so that this thread's hold on the closure ends before the region does
    /// (Parallel.forEach's closure must not outlive its call).
    @inline(never)
    private func runJob(_ worker: Int) { job!(worker) }

    /// Waits for a generation other than `seen` (spinning, then asleep) and returns it.
    private func awaitRegion(after seen: Int) -> Int {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var turns = 0
        while true {
            let g = generation.load(ordering: .acquiring)
            if g != seen { return g }
            turns += 1
            guard turns & 63 == 0 else { continue }
            sched_yield()
            guard DispatchTime.now().uptimeNanoseconds - t0 > Self.spinNanoseconds else { continue }
            pthread_mutex_lock(mutex)
            var now = generation.load(ordering: .acquiring)
            while now == seen {
                sleepers += 1
                pthread_cond_wait(wake, mutex)
                sleepers -= 1
                now = generation.load(ordering: .acquiring)
            }
            pthread_mutex_unlock(mutex)
            return now
        }
    }
}

private final class HelperStart {
    let pool: WorkerPool
    let worker: Int
    let seen: Int
    init(pool: WorkerPool, worker: Int, seen: Int) {
        self.pool = pool
        self.worker = worker
        self.seen = seen
    }
}
