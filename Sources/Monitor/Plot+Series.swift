// What a chart draws: the series of one metric for each run (a line; rankStepMs: a line per
// rank), the validation loss as markers on the loss chart, an optional EMA-smoothed line over the
// raw one, and the frame that maps values to the SVG's pixels.
import Foundation
import RunEvents

/// One run on a chart: its name in the legend and its log's events.
public struct PlotRun: Sendable {
    public let name: String
    public let events: [LogEvent]
    public init(name: String, events: [LogEvent]) {
        self.name = name
        self.events = events
    }
}

public struct PlotOptions: Sendable {
    /// EMA weight in [0, 1) of a smoothed line drawn over each raw one (nil: none; TensorBoard's
    /// smoothing: s_i = w * s_{i-1} + (1 - w) * x_i).
    public var smooth: Double? = nil
    /// The y axis in powers of ten.
    public var logScale = false
    /// Points per series at most (longer series are thinned evenly).
    public var maxPoints = 5000
    public init() {}
}

/// The plotting area of an 800 x 450 chart and its two scales.
struct Frame {
    let W = 800.0, H = 450.0, L = 80.0, R = 170.0, T = 40.0, B = 60.0
    let x: Scale, y: Scale
    func px(_ v: Double) -> Double { L + x.fraction(v) * (W - L - R) }
    func py(_ v: Double) -> Double { H - B - y.fraction(v) * (H - T - B) }
}

struct PlotSeries {
    enum Kind { case line, faded, markers }
    let name: String
    let points: [(Double, Double)]
    let kind: Kind
    let color: String

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    /// Every series of `metric` for `runs`: names are the metric (one run) or the run's name.
    static func build(_ runs: [PlotRun], metric: String, options o: PlotOptions) throws -> [PlotSeries] {
        var out: [PlotSeries] = []
        for run in runs {
            let steps = run.events.filter { $0.kind == .step && $0.step != nil }
            let prefix = runs.count > 1 ? run.name + " " : ""
            let lines =
                metric == "rankStepMs"
                ? Plot.rankSeries(steps).map { (prefix + $0.0, $0.1) }
                : [(runs.count > 1 ? run.name : metric, Plot.metricSeries(steps, metric))]
            for (name, pts) in lines where !pts.isEmpty {
                let color = colors[out.filter { $0.kind != .faded }.count % colors.count]
                out += lineSeries(name, Plot.thin(pts, o.maxPoints), color: color, smooth: o.smooth)
            }
            let evals = run.events.filter { $0.kind == .eval }.compactMap { e in
                e.step.flatMap { s in e.number(.valLoss).map { (Double(s), $0) } }
            }
            if metric == "loss" && !evals.isEmpty {
                let color = out.last { $0.kind != .markers }?.color ?? colors[0]
                out.append(PlotSeries(name: prefix + "val loss", points: evals, kind: .markers, color: color))
            }
        }
        guard !out.isEmpty else { throw PlotError("the log has no '\(metric)' values to plot") }
        return out
    }

    /// A raw line, or with smoothing the raw line faded and the EMA over it.
    static func lineSeries(_ name: String, _ pts: [(Double, Double)], color: String, smooth: Double?) -> [PlotSeries] {
        guard let w = smooth else { return [PlotSeries(name: name, points: pts, kind: .line, color: color)] }
        var ema = pts[0].1
        let smoothed = pts.map { p -> (Double, Double) in
            ema = w * ema + (1 - w) * p.1
            return (p.0, ema)
        }
        return [
            PlotSeries(name: name + " (raw)", points: pts, kind: .faded, color: color),
            PlotSeries(name: name, points: smoothed, kind: .line, color: color)
        ]
    }

    /// The series' SVG and its legend entry in row `legendRow` (faded raw lines have none).
    func svg(_ f: Frame, legendRow row: Int) -> String {
        let name = Plot.esc(self.name)
        var s: String
        switch kind {
        case .line, .faded:
            let d = points.map { String(format: "%.2f,%.2f", f.px($0.0), f.py($0.1)) }.joined(separator: " ")
            let style = kind == .faded ? "stroke-width=\"1\" stroke-opacity=\"0.3\"" : "stroke-width=\"1.5\""
            s =
                "<polyline class=\"series\" data-name=\"\(name)\" fill=\"none\" stroke=\"\(color)\" \(style) "
                + "points=\"\(d)\"/>\n"
        case .markers:
            s =
                points.map {
                    String(
                        format:
                            "<circle class=\"marker\" cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"white\" stroke=\"%@\" "
                            + "stroke-width=\"1.5\"/>", f.px($0.0), f.py($0.1), color as NSString)
                }.joined(separator: "\n") + "\n"
        }
        if kind == .faded { return s }
        let ly = f.T + 16 * Double(row), lx = f.W - f.R + 10
        s +=
            kind == .markers
            ? String(
                format: "<circle cx=\"%.0f\" cy=\"%.0f\" r=\"3.5\" fill=\"white\" stroke=\"%@\" stroke-width=\"1.5\"/>",
                lx + 10, ly, color as NSString)
            : String(
                format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%@\" stroke-width=\"3\"/>", lx,
                ly, lx + 20, ly, color as NSString)
        return s
            + String(
                format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" dominant-baseline=\"middle\">%@</text>\n",
                lx + 26, ly, name as NSString)
    }
}
