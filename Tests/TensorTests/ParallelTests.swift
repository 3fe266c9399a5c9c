import Dispatch
import Synchronization
import XCTest

@testable import Tensor

/// Parallel.forEach over the worker pool: every item runs exactly once, worker indices stay
/// below the thread count, and regions nested in an item or started from several threads at
/// once (LocalCommunicator's rank-threads) run serially instead of sharing the pool.
final class ParallelTests: XCTestCase {
    func withThreads(_ n: Int, _ body: () throws -> Void) rethrows {
        let saved = Parallel.threads
        Parallel.threads = n
        defer { Parallel.threads = saved }
        try body()
    }

    /// Counts per item of one region of `count` items; fails on a worker index out of range.
    func hits(_ count: Int, work: Int = 0) -> [Int] {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
        counts.initialize(repeating: 0, count: max(count, 1))
        defer { counts.deallocate() }
        let badWorker = Atomic<Int>(-1)
        Parallel.forEach(count) { item, worker in
            if worker < 0 || worker >= Parallel.threads { badWorker.store(worker, ordering: .relaxed) }
            var x = 0.0
            for k in 0..<work { x += Double(k) }
            counts[item] += x < 0 ? 2 : 1
        }
        XCTAssertEqual(badWorker.load(ordering: .relaxed), -1, "a worker index outside 0..<\(Parallel.threads)")
        return Array(UnsafeBufferPointer(start: counts, count: count))
    }

    func testEveryItemRunsOnceAcrossThreadCountsAndIdleGaps() {
        for threads in [2, 3, 1, 4, 2] {
            withThreads(threads) {
                for (round, count) in [1, 2, 3, 7, 64, 1000, 5].enumerated() {
                    XCTAssertEqual(
                        hits(count, work: round * 200), [Int](repeating: 1, count: count), "\(threads) threads")
                }
            }
        }
        // After a pause longer than the helpers' spin, they sleep: the next region must wake them.
        withThreads(2) {
            usleep(useconds_t(3 * WorkerPool.spinNanoseconds / 1000))
            XCTAssertEqual(hits(100, work: 1000), [Int](repeating: 1, count: 100))
        }
    }

    func testManyShortRegionsInARow() {
        withThreads(2) {
            var total = 0
            for r in 0..<20_000 { total += hits(1 + r % 5).reduce(0, +) }
            XCTAssertEqual(total, (0..<20_000).reduce(0) { $0 + 1 + $1 % 5 })
        }
    }

    func testNestedAndConcurrentRegionsRunSerially() {
        withThreads(2) {
            // Nested: the inner region runs on the item's own thread.
            let inner = Atomic<Int>(0)
            Parallel.forEach(4) { _, _ in
                Parallel.forEach(10) { _, w in if w == 0 { inner.add(1, ordering: .relaxed) } }
            }
            XCTAssertEqual(inner.load(ordering: .relaxed), 40, "nested items not all run with worker 0")
            // Concurrent callers: every region still runs each item once.
            let total = Atomic<Int>(0)
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                for _ in 0..<200 { Parallel.forEach(8) { _, _ in total.add(1, ordering: .relaxed) } }
            }
            XCTAssertEqual(total.load(ordering: .relaxed), 4 * 200 * 8)
        }
    }

    /// A varying count grows the buffers with a quarter to spare, never past atMost, and a count
    /// below the capacity keeps the same buffers; without atMost the size is the count.
    func testWorkerScratchGrowsWithSlackUpToItsBound() {
        let scratch = WorkerScratch()
        let first = scratch.reserve(1000, atMost: 10_000)
        XCTAssertEqual(scratch.capacity, 1250)
        XCTAssertEqual(scratch.reserve(1200, atMost: 10_000), first, "a count under the capacity reallocated")
        _ = scratch.reserve(9000, atMost: 10_000)
        XCTAssertEqual(scratch.capacity, 10_000, "growth went past atMost")
        _ = scratch.reserve(12_000)
        XCTAssertEqual(scratch.capacity, 12_000)
    }
}
