// `switchyard plot`: a self-contained SVG (axes, ticks, labels, legend) of one metric over steps:
// a line per series (loss, tokensPerSec, mfu; rankStepMs: one per rank) or, for expertLoad, a
// heatmap (rows: MoE layer x expert; colour: share of the layer's tokens).
import Foundation
import RunEvents

public enum Plot {
    public static let metrics = ["loss", "tokensPerSec", "mfu", "expertLoad", "rankStepMs"]

    /// The SVG text for `metric` over the step events (at most `maxPoints` per series; longer
    /// series are thinned evenly). Throws when the log has no such values.
    public static func svg(events: [LogEvent], metric: String, title: String, maxPoints: Int = 5000) throws -> String {
        let steps = events.filter { $0.kind == .step && $0.step != nil }
        if metric == "expertLoad" { return try heatmap(steps, title: title) }
        var series = metric == "rankStepMs" ? rankSeries(steps) : [(metric, metricSeries(steps, metric))]
        series = series.map { ($0.0, thin($0.1, maxPoints)) }.filter { !$0.1.isEmpty }
        guard !series.isEmpty else { throw PlotError("the log has no '\(metric)' values to plot") }
        let xs = series.flatMap { $0.1.map(\.0) }, ys = series.flatMap { $0.1.map(\.1) }
        var (y0, y1) = (ys.min()!, ys.max()!)
        if y0 == y1 { y0 -= 1; y1 += 1 }
        let x0 = xs.min()!, x1 = max(xs.max()!, x0 + 1)
        let W = 800.0, H = 450.0, L = 80.0, R = 140.0, T = 40.0, B = 60.0
        func px(_ x: Double) -> Double { L + (x - x0) / (x1 - x0) * (W - L - R) }
        func py(_ y: Double) -> Double { H - B - (y - y0) / (y1 - y0) * (H - T - B) }
        var s = header(W, H, title)
        s += axes(
            W: W, H: H, L: L, R: R, T: T, B: B, x0: x0, x1: x1, y0: y0, y1: y1, xLabel: "step", yLabel: metric, px: px,
            py: py)
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        for (i, (name, pts)) in series.enumerated() {
            let c = colors[i % colors.count]
            let d = pts.map { String(format: "%.2f,%.2f", px($0.0), py($0.1)) }.joined(separator: " ")
            s +=
                "<polyline class=\"series\" data-name=\"\(esc(name))\" fill=\"none\" stroke=\"\(c)\" "
                + "stroke-width=\"1.5\" points=\"\(d)\"/>\n"
            let ly = T + 16 * Double(i)
            s += String(
                format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%@\" stroke-width=\"3\"/>",
                W - R + 10, ly, W - R + 30, ly, c as NSString)
            s += String(
                format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" dominant-baseline=\"middle\">%@</text>\n",
                W - R + 36, ly, esc(name) as NSString)
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

    static func axes(
        W: Double, H: Double, L: Double, R: Double, T: Double, B: Double, x0: Double, x1: Double, y0: Double,
        y1: Double,
        xLabel: String, yLabel: String, px: (Double) -> Double, py: (Double) -> Double
    ) -> String {
        var s = String(
            format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>", L, H - B, W - R, H - B)
        s += String(
            format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B)
        for i in 0...5 {
            let x = x0 + (x1 - x0) * Double(i) / 5, y = y0 + (y1 - y0) * Double(i) / 5
            s += String(
                format:
                    "<line class=\"tick\" x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"black\"/><text "
                    + "x=\"%.1f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"middle\">%@</text>",
                px(x), H - B, px(x), H - B + 5, px(x), H - B + 18, tick(x) as NSString)
            s += String(
                format:
                    "<line class=\"tick\" x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"black\"/><text "
                    + "x=\"%.0f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" "
                    + "dominant-baseline=\"middle\">%@</text>",
                L - 5, py(y), L, py(y), L - 8, py(y), tick(y) as NSString)
            s += String(
                format: "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py(y), W - R,
                py(y))
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

    static func tick(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e7 { return String(Int(v)) }
        return abs(v) >= 1000 || abs(v) < 0.01 ? String(format: "%.2g", v) : String(format: "%.3g", v)
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
