// Threads inside one rank. Work is cut into items whose number and bounds depend only on the
// problem's shape, never on the thread count; each item writes its own outputs and sums in its
// own fixed order. Any schedule of the items over any number of threads therefore gives the
// same bits, so a job at 1 and at 2 threads per rank computes the same losses.
// OpenBLAS runs single-threaded inside each item (`BLAS.setThreads(1)`).
import Synchronization

public enum Parallel {
    /// Threads this rank spreads its items over (set once at start-up, before any work).
    nonisolated(unsafe) public static var threads = 1

    /// 1 while a parallel region runs. A region asked for meanwhile (nested inside an item, or
    /// from another rank-thread of a LocalCommunicator test) runs serially on its caller's thread.
    private static let active = Atomic<Int>(0)
    /// The helper threads (Parallel+Pool.swift), made on the first parallel region.
    private static let pool = WorkerPool()

    /// Runs body(item, worker) for every item in 0..<count, over up to `threads` threads.
    /// `worker` (0..<threads) names the thread, for per-thread scratch; items are taken in
    /// order from a shared counter, so long and short items balance. Inside another region's
    /// item it runs serially with worker 0, so bodies that index per-worker scratch must not nest.
    public static func forEach(_ count: Int, _ body: (_ item: Int, _ worker: Int) -> Void) {
        let width = min(threads, count, WorkerPool.maxHelpers + 1)
        if width <= 1 || !active.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged {
            for i in 0..<count {
                body(i, 0)
                BetweenItems.poll()
            }
            return
        }
        defer { active.store(0, ordering: .releasing) }
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            pool.run(extra: width - 1) { worker in
                while true {
                    let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    if i >= count { break }
                    body(i, worker)
                    if worker == 0 { BetweenItems.poll() }
                }
            }
        }
    }

    /// Runs body(range) for the blocks of `grain` indices of 0..<total (the last shorter): items
    /// fixed by the shape alone, for loops whose iterations write disjoint outputs.
    public static func forEachBlock(_ total: Int, grain: Int, _ body: (Range<Int>) -> Void) {
        forEach((total + grain - 1) / grain) { item, _ in body((item * grain)..<min(total, item * grain + grain)) }
    }
}

/// Rows per work item of the row-wise kernels (`forEachRow`).
let rowItemGrain = 64

/// Runs body for rows 0..<n in work items of `rowItemGrain` rows, for row-wise kernels (each row
/// independent).
@inline(__always) func forEachRow(_ n: Int, _ body: (Int) -> Void) {
    Parallel.forEachBlock(n, grain: rowItemGrain) { rows in for r in rows { body(r) } }
}

/// Per-thread scratch: one buffer of `count` floats for each of `Parallel.threads` workers,
/// grown on demand and kept between calls.
public final class WorkerScratch: @unchecked Sendable {
    private var buffers: [FloatBuffer] = []
    public init() {}

    /// Buffers of at least `count` floats for workers 0..<Parallel.threads. Call outside the
    /// parallel region, then index the result by worker inside it. A count that varies from call
    /// to call (the busiest expert's rows) passes `atMost`, the most it can ever be: growing then
    /// takes a quarter more, up to that bound, so that the buffers are not reallocated (and their
    /// fresh pages faulted in) each time the count sets a new record.
    public func reserve(_ count: Int, atMost: Int? = nil) -> [UnsafeMutablePointer<Float>] {
        let need = max(1, Parallel.threads)
        if buffers.count != need || (buffers.first?.count ?? 0) < count {
            let size = max(count, min(count + count / 4, atMost ?? count), 1)
            buffers = (0..<need).map { _ in FloatBuffer(count: size) }
        }
        return buffers.map(\.base)
    }

    /// Floats in each worker's buffer (0 before the first reserve).
    public var capacity: Int { buffers.first?.count ?? 0 }
}
