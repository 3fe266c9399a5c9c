// `switchyard plot`: a self-contained SVG (axes, ticks, labels, legend) of one metric over steps:
// a line per series (loss, tokensPerSec, mfu; rankStepMs: one per rank) or, for expertLoad, a
// heatmap (rows: MoE layer x expert; colour: share of the layer's tokens).
import Foundation
import RunEvents

public enum Plot {
    public static let metrics = ["loss", "tokensPerSec", "mfu", "expertLoad", "rankStepMs"]

    /// The SVG text for `metric` over one run's step events (see `svg(runs:...)`).
    public static func svg(events: [LogEvent], metric: String, title: String, maxPoints: Int = 5000) throws -> String {
        var o = PlotOptions()
        o.maxPoints = maxPoints
        return try svg(runs: [PlotRun(name: metric, events: events)], metric: metric, title: title, options: o)
    }

    /// The SVG text for `metric` over the step events of each run, one colour per run (at most
    /// `maxPoints` per series; longer series are thinned evenly). For loss, each eval's validation
    /// loss is a marker on the same chart. Throws when the logs have no such values.
    public static func svg(runs: [PlotRun], metric: String, title: String, options o: PlotOptions = PlotOptions())
        throws -> String
    {
        if metric == "expertLoad" {
            guard runs.count == 1 else { throw PlotError("expertLoad is a heatmap of one run; give one run") }
            return try heatmap(runs[0].events.filter { $0.kind == .step && $0.step != nil }, title: title)
        }
        let series = try PlotSeries.build(runs, metric: metric, options: o)
        let xs = series.flatMap { $0.points.map(\.0) }, ys = series.flatMap { $0.points.map(\.1) }
        if o.logScale && ys.contains(where: { $0 <= 0 }) {
            throw PlotError("a log scale needs positive values; '\(metric)' has some <= 0")
        }
        let x = Scale.linear(xs.min()!, max(xs.max()!, xs.min()! + 1))
        let y = o.logScale ? Scale.logarithmic(ys.min()!, ys.max()!) : Scale.linear(ys.min()!, ys.max()!)
        let frame = Frame(x: x, y: y)
        var s = header(frame.W, frame.H, title)
        s += axes(frame, xLabel: "step", yLabel: metric + (o.logScale ? " (log scale)" : ""))
        var row = 0
        for series in series {
            s += series.svg(frame, legendRow: row)
            if series.kind != .faded { row += 1 }
        }
        return s + "</svg>\n"
    }

    /// (step, value) of a per-step number.
    static func metricSeries(_ steps: [LogEvent], _ metric: String) -> [(Double, Double)] {
        steps.compactMap { e in e.json[metric]?.doubleValue.map { (Double(e.step!), $0) } }
    }

    /// One series per rank of rankStepMs.
    static func rankSeries(_ steps: [LogEvent]) -> [(String, [(Double, Double)])] {
        let ranks = steps.compactMap { $0[.rankStepMs]?.arrayValue?.count }.max() ?? 0
        return (0..<ranks).map { r in
            (
                "rank \(r)",
                steps.compactMap { e in
                    guard let v = e[.rankStepMs]?.arrayValue, r < v.count, let y = v[r].doubleValue else { return nil }
                    return (Double(e.step!), y)
                }
            )
        }
    }

    /// The colour of a share t in 0...1 of the heatmap's scale (blue, green at 1/E, red).
    static func heatColor(_ t: Double) -> String {
        String(format: "rgb(%d,%d,%d)", Int(255 * t), Int(80 + 100 * (1 - abs(2 * t - 1))), Int(255 * (1 - t)))
    }

    static func heatmap(_ steps: [LogEvent], title: String) throws -> String {
        let rows = steps.compactMap { e -> (Double, [[Double]])? in
            guard let l = e[.expertLoad]?.arrayValue, !l.isEmpty else { return nil }
            return (Double(e.step!), l.map { ($0.arrayValue ?? []).compactMap(\.doubleValue) })
        }
        guard let first = rows.first else { throw PlotError("the log has no 'expertLoad' values to plot") }
        let layers = first.1.count, experts = first.1.first?.count ?? 0
        let cols = thin(rows.map { ($0.0, 0.0) }, 400).map(\.0)
        let byStep = Dictionary(rows.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        let W = 800.0, H = 120.0 + Double(layers * experts) * 12, L = 110.0, R = 140.0, T = 40.0, B = 60.0
        let x0 = cols.first!, x1 = max(cols.last!, x0 + 1)
        let cw = (W - L - R) / Double(max(cols.count, 1)), ch = (H - T - B) / Double(max(layers * experts, 1))
        var s = header(W, H, title)
        for (ci, x) in cols.enumerated() {
            guard let load = byStep[x] else { continue }
            for l in 0..<min(layers, load.count) {
                let total = load[l].reduce(0, +)
                for e in 0..<min(experts, load[l].count) {
                    let share = total > 0 ? load[l][e] / total : 0
                    let color = heatColor(min(1, share * Double(experts) / 2))  // 1/E (balanced) -> mid colour
                    s += String(
                        format:
                            "<rect class=\"cell\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%@\"/>",
                        L + Double(ci) * cw,
                        T + Double(l * experts + e) * ch, cw + 0.3, ch + 0.3, color as NSString)
                }
            }
            s += "\n"
        }
        for l in 0..<layers {
            s += String(
                format:
                    "<text x=\"%.0f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" "
                    + "dominant-baseline=\"middle\">moe %d e0..%d</text>\n",
                L - 6, T + (Double(l * experts) + Double(experts) / 2) * ch, l, experts - 1)
        }
        s += String(
            format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\">step (%.0f to %.0f)</text>\n",
            (L + W - R) / 2, H - 20, x0, x1)
        return s + heatLegend(x: W - R, top: T) + "</svg>\n"
    }

    /// The heatmap's legend, from (x, top).
    static func heatLegend(x: Double, top T: Double) -> String {
        var s = String(format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">share of tokens:</text>", x + 8, T + 10)
        for (i, (label, t)) in [("0", 0.0), ("1/E", 0.5), (">=2/E", 1.0)].enumerated() {
            let color = heatColor(t)
            s += String(
                format:
                    "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"12\" fill=\"%@\"/><text x=\"%.0f\" y=\"%.0f\" "
                    + "font-size=\"11\" dominant-baseline=\"middle\">%@</text>\n",
                x + 10, T + 22 + Double(i) * 18, color as NSString, x + 30, T + 28 + Double(i) * 18, label as NSString)
        }
        return s
    }

    static func header(_ w: Double, _ h: Double, _ title: String) -> String {
        String(
            format:
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
                + "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n<rect "
                + "width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%.0f\" y=\"22\" "
                + "font-size=\"15\" text-anchor=\"middle\">%@</text>\n",
            w, h, w, h, w / 2, esc(title) as NSString)
    }

    /// The axes, their round ticks and grid lines, and the axis labels.
    static func axes(_ f: Frame, xLabel: String, yLabel: String) -> String {
        let (W, H, L, R, T, B) = (f.W, f.H, f.L, f.R, f.T, f.B)
        var s = String(
            format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>", L, H - B, W - R, H - B)
        s += String(
            format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B)
        for x in f.x.ticks {
            s += String(
                format:
                    "<line class=\"tick\" x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"black\"/><text "
                    + "class=\"xtick\" x=\"%.1f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"middle\">%@</text>\n",
                f.px(x), H - B, f.px(x), H - B + 5, f.px(x), H - B + 18, Scale.label(x) as NSString)
        }
        for y in f.y.ticks {
            s += String(
                format:
                    "<line class=\"tick\" x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"black\"/><text "
                    + "class=\"ytick\" x=\"%.0f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" "
                    + "dominant-baseline=\"middle\">%@</text>",
                L - 5, f.py(y), L, f.py(y), L - 8, f.py(y), Scale.label(y) as NSString)
            s += String(
                format: "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, f.py(y),
                W - R, f.py(y))
        }
        s += String(
            format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\">%@</text>\n", (L + W - R) / 2,
            H - 20, xLabel as NSString)
        s += String(
            format:
                "<text x=\"18\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
                + "%.0f)\">%@</text>\n",
            (T + H - B) / 2, (T + H - B) / 2, esc(yLabel) as NSString)
        return s
    }

    static func thin(_ pts: [(Double, Double)], _ n: Int) -> [(Double, Double)] {
        guard pts.count > n else { return pts }
        let stride = Double(pts.count - 1) / Double(n - 1)
        return (0..<n).map { pts[Int((Double($0) * stride).rounded())] }
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
            of: ">", with: "&gt;"
        ).replacingOccurrences(of: "\"", with: "&quot;")
    }
}

public struct PlotError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}
