// The axes' scales: round tick values (steps of 1, 2 or 5 times a power of ten, the axis widened
// to the ticks around the data), linear or logarithmic, and the tick labels.
import Foundation

/// One axis: its range after rounding, its ticks, and the map from values to 0...1.
public struct Scale: Sendable {
    public let low: Double, high: Double
    public let ticks: [Double]
    public let logarithmic: Bool

    /// A linear axis over [lo, hi] widened to multiples of a 1-2-5 step giving at most `intervals`
    /// intervals (at least 4 where the range allows).
    public static func linear(_ lo: Double, _ hi: Double, intervals: Int = 8) -> Scale {
        var (lo, hi) = (lo, hi)
        if lo == hi { (lo, hi) = (lo - 1, hi + 1) }
        let step = niceStep((hi - lo) / Double(intervals))
        let first = (lo / step).rounded(.down), last = (hi / step).rounded(.up)
        let ticks = stride(from: first, through: last, by: 1).map { clean($0 * step, step) }
        return Scale(low: ticks.first!, high: ticks.last!, ticks: ticks, logarithmic: false)
    }

    /// A logarithmic axis over [lo, hi] (both > 0): ticks at powers of ten, or, when the range
    /// spans less than two decades, at 1, 2, 3 and 5 times them from the last one at or below lo to
    /// the first one at or above hi.
    public static func logarithmic(_ lo: Double, _ hi: Double) -> Scale {
        let a = log10(lo).rounded(.down), b = max(log10(hi).rounded(.up), a + 1)
        let decades = stride(from: a, through: b, by: 1).map { pow(10, $0) }
        guard b - a < 2 else {
            return Scale(low: decades.first!, high: decades.last!, ticks: decades, logarithmic: true)
        }
        let candidates = decades.flatMap { d in [1.0, 2, 3, 5].map { clean($0 * d, d) } }
        let first = candidates.last { $0 <= lo } ?? candidates[0], last = candidates.first { $0 >= hi } ?? decades.last!
        let ticks = candidates.filter { $0 >= first && $0 <= last }
        return Scale(low: first, high: last, ticks: ticks, logarithmic: true)
    }

    /// 1, 2 or 5 times the power of ten at or above `raw`'s leading digit: the smallest round step >= raw.
    static func niceStep(_ raw: Double) -> Double {
        let magnitude = pow(10, log10(raw).rounded(.down))
        let r = raw / magnitude
        return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * magnitude
    }

    /// `v` without the binary noise of k * step (0.30000000000000004 -> 0.3).
    static func clean(_ v: Double, _ step: Double) -> Double {
        let digits = max(0, -Int(log10(step).rounded(.down)) + 1)
        return (v * pow(10, Double(digits))).rounded() / pow(10, Double(digits))
    }

    /// Where `v` sits on the axis, 0 at `low` and 1 at `high`.
    public func fraction(_ v: Double) -> Double {
        logarithmic ? (log10(v) - log10(low)) / (log10(high) - log10(low)) : (v - low) / (high - low)
    }

    /// A tick's label: as short as the tick values need.
    public static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e7 { return String(Int(v)) }
        if abs(v) >= 1e7 || abs(v) < 1e-4 { return String(format: "%g", v) }
        var s = String(format: "%.6f", v)
        while s.hasSuffix("0") { s.removeLast() }
        return s
    }
}
