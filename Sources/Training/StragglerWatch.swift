// Stragglers: a rank consistently slower than the others. Over each window of applied steps, each
// rank's mean compute time (its step time less its time inside alltoallv and allreduce, where a
// fast rank waits for a slow one) is compared with the median of the other ranks' means.

/// One window's finding: `rank` computed `ratio` times as long as the median of the others.
public struct Straggler: Equatable, Sendable {
    public let rank: Int
    public let ratio: Double
    public let meanMs: Double, othersMedianMs: Double
    public let firstStep: Int, lastStep: Int
}

public struct StragglerWatch: Sendable {
    public let window: Int
    public let ratio: Double
    var sums: [Double] = []
    var count = 0
    var first = 0

    /// Windows of `window` applied steps; a finding needs more than `ratio` x (0: off).
    public init(window: Int, ratio: Double) {
        self.window = window
        self.ratio = ratio
    }

    /// Adds one step's per-rank compute times (ms); at the end of a window returns the slowest
    /// rank if it is a straggler. Needs 2 or more ranks.
    public mutating func add(step: Int, computeMs: [Double]) -> Straggler? {
        guard ratio > 0 && window > 0 && computeMs.count >= 2 else { return nil }
        if count == 0 {
            sums = Array(repeating: 0, count: computeMs.count)
            first = step
        }
        for (r, ms) in computeMs.enumerated() { sums[r] += ms }
        count += 1
        guard count == window else { return nil }
        defer { count = 0 }
        let means = sums.map { $0 / Double(window) }
        let slow = means.indices.max { means[$0] < means[$1] }!
        let others = means.enumerated().filter { $0.offset != slow }.map(\.element).sorted()
        let median =
            others.count % 2 == 1
            ? others[others.count / 2] : (others[others.count / 2 - 1] + others[others.count / 2]) / 2
        guard median > 0 && means[slow] > ratio * median else { return nil }
        return Straggler(
            rank: slow, ratio: means[slow] / median, meanMs: means[slow], othersMedianMs: median, firstStep: first,
            lastStep: step)
    }
}
