import Foundation
import JSON
import RunEvents
import XCTest

@testable import Monitor

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// The chart's scales and what `plot` puts on one chart.
final class PlotTests: XCTestCase {
    /// A round number: 1, 2 or 5 times a power of ten, times a whole number of steps.
    func isRound(_ v: Double, step: Double) -> Bool {
        abs(v / step - (v / step).rounded()) < 1e-9
    }

    func testTicksAreRoundStepsCoveringTheDataFrom1e3To1e6() {
        var rng = SplitMix(seed: 7)
        for decade in -3...6 {
            for _ in 0..<40 {
                let span = pow(10, Double(decade)) * (1 + 9 * rng.unit())
                let lo = (rng.unit() - 0.3) * span * 3, hi = lo + span
                let s = Scale.linear(lo, hi)
                let step = s.ticks[1] - s.ticks[0]
                let lead = step / pow(10, log10(step).rounded(.down))
                XCTAssertTrue(
                    [1, 2, 5, 10].contains { abs(lead - $0) < 1e-6 }, "step \(step) for [\(lo), \(hi)] is not 1-2-5")
                XCTAssertTrue(s.ticks.allSatisfy { isRound($0, step: step) }, "ticks \(s.ticks) for [\(lo), \(hi)]")
                XCTAssertLessThanOrEqual(s.low, lo)
                XCTAssertGreaterThanOrEqual(s.high, hi)
                XCTAssertTrue((4...11).contains(s.ticks.count - 1), "\(s.ticks.count - 1) intervals for [\(lo), \(hi)]")
                XCTAssertTrue(s.ticks.allSatisfy { Scale.label($0).count <= 10 }, "labels of \(s.ticks)")
            }
        }
        // The issue's example: steps 0-599 and losses 1.77-5.53.
        XCTAssertEqual(Scale.linear(0, 599).ticks, [0, 100, 200, 300, 400, 500, 600])
        XCTAssertEqual(Scale.linear(1.77, 5.53).ticks, [1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6])
        XCTAssertEqual(
            Scale.linear(1.77, 5.53).ticks.map(Scale.label),
            ["1.5", "2", "2.5", "3", "3.5", "4", "4.5", "5", "5.5", "6"])
        XCTAssertEqual(Scale.logarithmic(0.002, 40).ticks, [0.001, 0.01, 0.1, 1, 10, 100])
        XCTAssertEqual(Scale.logarithmic(1.8, 5.5).ticks, [1, 2, 3, 5, 10])
    }

    func testSeveralRunsValidationMarkersSmoothingAndLogScale() throws {
        func run(_ name: String, _ loss0: Double) -> PlotRun {
            let lines =
                [MonitorTests.start()] + (0..<20).map { MonitorTests.step($0, loss: loss0 - Double($0) * 0.1) }
                + [#"{"event":"eval","step":9,"valLoss":3.5}"#, #"{"event":"eval","step":19,"valLoss":3.1}"#]
            return PlotRun(name: name, events: lines.map { LogEvent(json: try! JSONValue.parse($0))! })
        }
        var o = PlotOptions()
        o.smooth = 0.6
        o.logScale = true
        let svg = try Plot.svg(runs: [run("fp32", 5), run("bf16", 5.2)], metric: "loss", title: "loss", options: o)
        let counter = SVGCounter()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = counter
        XCTAssertTrue(parser.parse())
        XCTAssertEqual(counter.polylines, 4, "a raw and a smoothed line per run")
        XCTAssertEqual(counter.markers, 4, "two evals per run")
        for legend in ["fp32", "bf16", "fp32 val loss", "bf16 val loss"] {
            XCTAssertTrue(counter.texts.contains(legend), "legend \(legend): \(counter.texts)")
        }
        XCTAssertTrue(counter.texts.contains("loss (log scale)"))
        XCTAssertEqual(counter.yTicks, ["3", "5", "10"], "log ticks over losses 3.1-5.2")
        var bad = PlotOptions()
        bad.logScale = true
        let zero = PlotRun(name: "z", events: [LogEvent(json: try JSONValue.parse(MonitorTests.step(0, loss: 0)))!])
        XCTAssertThrowsError(try Plot.svg(runs: [zero], metric: "loss", title: "t", options: bad))
        XCTAssertThrowsError(try Plot.svg(runs: [run("a", 5), run("b", 5)], metric: "expertLoad", title: "t"))
    }
}

/// A deterministic source of test values.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func unit() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
    }
}
