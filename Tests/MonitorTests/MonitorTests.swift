import Foundation
import JSON
import RunEvents
import XCTest

@testable import Monitor

#if canImport(FoundationXML)
    import FoundationXML
#endif

final class MonitorTests: XCTestCase {
    var dir = ""
    override func setUp() {
        dir = NSTemporaryDirectory() + "switchyard-monitor-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    static func start(total: Int = 20, resumedFrom: Int? = nil, world: Int = 1) -> String {
        JSONValue.object([
            ("event", "start"), ("job", "t"), ("time", 1000), ("totalSteps", .number(Double(total))),
            ("world", .number(Double(world))),
            ("resumedFrom", resumedFrom.map { ["step": .number(Double($0))] } ?? .null)
        ]).compact
    }
    static func step(_ s: Int, loss: Double = 3, time: Double? = nil) -> String {
        JSONValue.object([
            ("event", "step"), ("step", .number(Double(s))), ("time", .number(time ?? 1000 + Double(s))),
            ("loss", .number(loss)),
            ("lr", 0.001), ("tokensPerSec", 5000), ("mfu", 0.5), ("gradNorm", 0.7),
            ("expertLoad", [[10, 30, 20, 4]]), ("rankStepMs", [100, 130, 101])
        ]).compact
    }

    func append(_ path: String, _ text: String) { Self.append(path, text) }

    static func append(_ path: String, _ text: String) {
        let h =
            FileHandle(forWritingAtPath: path)
            ?? {
                FileManager.default.createFile(atPath: path, contents: nil); return FileHandle(forWritingAtPath: path)!
            }()
        h.seekToEndOfFile(); h.write(Data(text.utf8)); try? h.close()
    }

    func testHalfWrittenLineWaitsForItsNewline() {
        let p = dir + "/log.jsonl"
        append(p, Self.start() + "\n" + Self.step(0) + "\n")
        let line = Self.step(1)
        append(p, String(line.prefix(20)))
        let r = LogReader(path: p)
        XCTAssertEqual(r.poll().events.map(\.kind), [.start, .step])
        XCTAssertEqual(r.poll().events.count, 0, "a half-written line is not shown")
        append(p, String(line.dropFirst(20)) + "\n")
        let more = r.poll()
        XCTAssertEqual(more.events.map(\.step), [1])
        XCTAssertEqual(more.warnings, [])
    }

    func testGrowingLogWrittenByAnotherThread() {
        let p = dir + "/log.jsonl"
        append(p, Self.start(total: 300) + "\n")
        let writer = Thread {
            for s in 0..<300 {
                MonitorTests.append(p, MonitorTests.step(s))  // the newline comes separately, sometimes later
                MonitorTests.append(p, "\n")
                if s % 50 == 0 { usleep(2000) }
            }
        }
        writer.start()
        let r = LogReader(path: p)
        var steps: [Int] = []
        let deadline = Date().addingTimeInterval(20)
        while steps.count < 300 && Date() < deadline {
            let got = r.poll()
            XCTAssertEqual(got.warnings, [])
            steps += got.events.compactMap { $0.kind == .step ? $0.step : nil }
            usleep(1000)
        }
        XCTAssertEqual(steps, Array(0..<300), "every step once, in order")
    }

    func testGarbageLinesAndUnknownEventsAreWarnings() {
        let p = dir + "/log.jsonl"
        append(p, Self.start() + "\n{not json\n" + #"{"event":"mystery"}"# + "\n[1,2]\n" + Self.step(0) + "\n")
        let r = LogReader(path: p).poll()
        XCTAssertEqual(r.events.map(\.kind), [.start, .step])
        XCTAssertEqual(r.warnings.count, 3, "\(r.warnings)")
        XCTAssertTrue(r.warnings[0].contains("line 2 is not a JSON object"), r.warnings[0])
        XCTAssertTrue(r.warnings[1].contains("unknown event 'mystery'"), r.warnings[1])
        // A step without a loss does not crash the state either.
        var s = RunState()
        s.apply(LogEvent(json: ["event": "step", "step": 3])!)
        XCTAssertNil(s.loss)
    }

    func testTruncationAndReplacementAreNoticed() throws {
        let p = dir + "/log.jsonl"
        append(p, Self.start() + "\n" + Self.step(0) + "\n" + Self.step(1) + "\n")
        let r = LogReader(path: p)
        XCTAssertEqual(r.poll().events.count, 3)
        try Data((Self.start() + "\n").utf8).write(to: URL(fileURLWithPath: p))  // truncated to one line
        let again = r.poll()
        XCTAssertTrue(again.restarted)
        XCTAssertEqual(again.events.map(\.kind), [.start])
        // Replaced by a new file (another inode) of the same length or longer.
        try Data((Self.start() + "\n" + Self.step(7) + "\n").utf8).write(to: URL(fileURLWithPath: p + ".new"))
        XCTAssertEqual(rename(p + ".new", p), 0)
        let replaced = r.poll()
        XCTAssertTrue(replaced.restarted)
        XCTAssertEqual(replaced.events.compactMap(\.step), [7])
    }

    func testRenderedLinesForStepsEventsAndResume() {
        var s = RunState()
        let plain = Style(color: false)
        var out: [String] = []
        let events = [
            Self.start(), Self.step(0, loss: 5.5), Self.step(9, loss: 4.0),
            #"{"event":"checkpoint","step":10,"time":1011,"bytes":2400000,"GBps":0.5,"stallMs":3.2}"#,
            #"{"event":"warning","step":10,"message":"non-finite loss"}"#,
            #"{"event":"end","reason":"signal"}"#, Self.start(resumedFrom: 10), Self.step(10, loss: 3.5)
        ]
        for line in events {
            let e = LogEvent(json: try! JSONValue.parse(line))!
            s.apply(e)
            if let l = Render.line(e, state: s, every: 1, style: plain) { out.append(l) }
        }
        XCTAssertEqual(out[0], "== start: job t, 20 steps, world 1")
        XCTAssertTrue(
            out[1].hasPrefix("step 1/20 [=>                  ]   5% ETA ? | loss 5.5000 (avg 5.5000)"), out[1])
        XCTAssertTrue(
            out[2].hasPrefix("step 10/20 [==========>         ]  50% ETA 10s | loss 4.0000 (avg 5.3500)"), out[2])
        XCTAssertTrue(out[2].contains("| lr 1.00e-03 | 5000 tok/s | mfu 0.50 | gnorm 0.700"), out[2])
        XCTAssertEqual(out[3], "== checkpoint step 10 saved: 2.4 MB, 0.50 GB/s, loop stalled 3.2 ms")
        XCTAssertEqual(out[4], "!! warning: non-finite loss")
        XCTAssertEqual(out[5], "== end: signal")
        XCTAssertEqual(out[6], "== start: job t, 20 steps, world 1, resumed from step 10")
        XCTAssertTrue(out[7].hasPrefix("step 11/20"), out[7])
        // Placement decisions and their measurement are distinct lines.
        let placements = [
            #"{"event":"placement","step":9,"phase":"decision","adopted":true,"predictedStepMsBefore":445,"#
                + #""predictedStepMsAfter":430,"migrationBytes":50300000}"#,
            #"{"event":"placement","step":14,"phase":"decision","adopted":true,"predictedStepMsBefore":445,"#
                + #""predictedStepMsAfter":430,"migrationBytes":50300000,"migrationMs":212.4}"#,
            #"{"event":"placement","step":14,"phase":"decision","adopted":false,"predictedGainMs":0,"#
                + #""predictedMigrationMs":0,"migrationBytes":0}"#,
            #"{"event":"placement","step":19,"phase":"decision","adopted":false,"predictedGainMs":12,"#
                + #""predictedMigrationMs":40}"#,
            #"{"event":"placement","step":19,"phase":"measured","adoptedAtStep":9,"predictedStepMs":430,"#
                + #""measuredStepMs":426.3}"#
        ]
        let rendered = placements.map {
            Render.line(LogEvent(json: try! JSONValue.parse($0))!, state: s, every: 1, style: plain)!
        }
        XCTAssertEqual(
            rendered,
            [
                "== placement changed at step 9: predicted 445.0 -> 430.0 ms/step, moving 50.3 MB",
                "== placement changed at step 14: predicted 445.0 -> 430.0 ms/step, moving 50.3 MB (took 212 ms)",
                "== placement kept at step 14: the plan for the measured load is the current one",
                "== placement kept at step 19: predicted gain 12 ms does not pay for moving (40 ms)",
                "== placement adopted at step 9: predicted 430.0 ms/step, measured 426.3"
            ])
        // --every 5 shows steps 0, 5, ... and the last.
        XCTAssertNil(Render.line(LogEvent(json: try! JSONValue.parse(Self.step(3)))!, state: s, every: 5, style: plain))
        XCTAssertNotNil(
            Render.line(LogEvent(json: try! JSONValue.parse(Self.step(19)))!, state: s, every: 5, style: plain))
        // The dashboard: expert load bars with max/mean, the straggler marked.
        let d = Render.dashboard(s, path: "p", style: plain).joined(separator: "\n")
        XCTAssertTrue(d.contains("moe 0 experts") && d.contains("max/mean 1.88"), d)
        XCTAssertTrue(d.contains("r1 130ms*"), d)
        XCTAssertFalse(d.contains("\u{1B}["), "no colour when not asked")
        XCTAssertTrue(Render.dashboard(s, path: "p", style: Style(color: true)).joined().contains("\u{1B}[31m"))
    }

    /// The dashboard at 60, 80, 120 and 200 columns: no line wider than the terminal (none would
    /// wrap), every field still there at 80, the sparkline over the whole run, rows kept to the height.
    func testDashboardFitsTheTerminalAndSpansTheWholeRun() throws {
        var s = RunState()
        s.apply(LogEvent(json: try JSONValue.parse(Self.start(total: 1000, world: 16)))!)
        for i in 0..<1000 {
            var e = try JSONValue.parse(Self.step(i, loss: 5 - 3 * Double(i) / 999))
            if case .object(var f) = e {
                f.removeAll { $0.0 == "expertLoad" || $0.0 == "rankStepMs" }
                f.append(("expertLoad", .array((0..<6).map { _ in .array((0..<32).map { .number(Double($0)) }) })))
                f.append(("rankStepMs", .array((0..<16).map { .number(100 + Double($0)) })))
                e = .object(f)
            }
            s.apply(LogEvent(json: e)!)
        }
        s.apply(LogEvent(json: try JSONValue.parse(#"{"event":"eval","step":999,"valLoss":2.1}"#))!)
        XCTAssertLessThan(s.lossHistory.count, 512, "downsampled")
        XCTAssertEqual(s.lossHistory.count * s.lossStride, 1000 - 1000 % s.lossStride, "every step in the history")
        for width in [60, 80, 120, 200] {
            for style in [Style(color: false), Style(color: true)] {
                let lines = Render.dashboard(s, path: "runs/fortunes-mixtral", style: style, width: width, height: 50)
                for l in lines {
                    XCTAssertLessThanOrEqual(Render.visibleWidth(l), width, "at \(width) columns: \(l)")
                }
                let text = lines.joined(separator: "\n")
                for field in ["step 1000/1000", "loss 2.0000", "tok/s", "mfu", "gnorm", "val 2.1000", "moe 5", "r15"] {
                    XCTAssertTrue(text.contains(field), "at \(width) columns, \(field) is missing:\n\(text)")
                }
                let sparks = "▁▂▃▄▅▆▇█"
                let line = lines.first { $0.hasPrefix("loss ") && sparks.contains($0.dropFirst(5).first!) }!
                let spark = line.dropFirst(5).prefix { sparks.contains($0) }
                XCTAssertEqual(spark.first, "█", "the run's start (loss 5) is the top")
                XCTAssertEqual(spark.last, "▁", "its end (loss 2) the bottom")
            }
        }
        let short = Render.dashboard(s, path: "p", style: Style(color: false), width: 80, height: 12)
        XCTAssertLessThanOrEqual(short.count, 11, "a row is left for the cursor")
        XCTAssertTrue(short.contains { $0.contains("more MoE blocks") }, short.joined(separator: "\n"))
        XCTAssertEqual(Render.fit("\u{1B}[1mabcdef\u{1B}[0m", width: 3), "\u{1B}[1mabc\u{1B}[0m")
    }

    /// A log of a million steps (~100 MB) starts in well under a second: the reader takes the
    /// first line and the tail, it does not parse everything.
    func testMillionStepLogStartsFast() throws {
        let p = dir + "/big.jsonl"
        FileManager.default.createFile(atPath: p, contents: nil)
        let h = FileHandle(forWritingAtPath: p)!
        h.write(Data((Self.start(total: 1_000_000) + "\n").utf8))
        var chunk = ""
        for s in 0..<1_000_000 {
            chunk +=
                "{\"event\":\"step\",\"step\":\(s),\"time\":\(1000 + s),\"loss\":2.5,\"lr\":0.001,"
                + "\"tokensPerSec\":5000,\"mfu\":0.5,\"gradNorm\":0.7}\n"
            if s % 20000 == 19999 { h.write(Data(chunk.utf8)); chunk = "" }
        }
        try h.close()
        let size = (try FileManager.default.attributesOfItem(atPath: p)[.size] as! Int)
        XCTAssertGreaterThan(size, 90_000_000)
        let t0 = Date()
        let r = LogReader(path: p).poll()
        var s = RunState()
        r.events.forEach { s.apply($0) }
        let line = Render.stepLine(s, style: Style(color: false))
        let seconds = Date().timeIntervalSince(t0)
        XCTAssertEqual(s.totalSteps, 1_000_000)
        XCTAssertEqual(s.step, 999_999)
        XCTAssertTrue(line.hasPrefix("step 1000000/1000000"), line)
        XCTAssertLessThan(seconds, 1.0)
        print("million-step log (\(size / 1_000_000) MB): first view in \(String(format: "%.3f", seconds)) s")
    }

    func testSVGParsesWithOnePointPerStep() throws {
        let events = ([Self.start()] + (0..<37).map { Self.step($0, loss: 5 - Double($0) * 0.05) }).map {
            LogEvent(json: try! JSONValue.parse($0))!
        }
        for (metric, series) in [("loss", 1), ("rankStepMs", 3), ("mfu", 1)] {
            let svg = try Plot.svg(events: events, metric: metric, title: "t: \(metric)")
            let counter = SVGCounter()
            let parser = XMLParser(data: Data(svg.utf8))
            parser.delegate = counter
            XCTAssertTrue(
                parser.parse(), "\(metric): the SVG is well-formed XML: \(String(describing: parser.parserError))")
            XCTAssertEqual(counter.polylines, series, metric)
            XCTAssertEqual(counter.points, 37 * series, metric)
            let x = Scale.linear(0, 36), y = Scale.linear(counter.yMin, counter.yMax)
            XCTAssertEqual(counter.ticks, x.ticks.count + y.ticks.count, "\(metric): the scales' ticks")
            XCTAssertTrue(
                counter.texts.contains(metric) && counter.texts.contains("step"), "\(metric): axis labels and legend")
        }
        let heat = try Plot.svg(events: events, metric: "expertLoad", title: "t")
        let counter = SVGCounter()
        let parser = XMLParser(data: Data(heat.utf8))
        parser.delegate = counter
        XCTAssertTrue(parser.parse())
        XCTAssertEqual(counter.cells, 37 * 4, "one cell per step and expert")
        XCTAssertThrowsError(try Plot.svg(events: [], metric: "loss", title: "t"))
    }
}

final class SVGCounter: NSObject, XMLParserDelegate {
    var polylines = 0, points = 0, ticks = 0, cells = 0, markers = 0
    var xTicks: [String] = [], yTicks: [String] = []
    var tickClass: String?
    var yMin: Double { yTicks.compactMap(Double.init).min() ?? 0 }
    var yMax: Double { yTicks.compactMap(Double.init).max() ?? 0 }
    var texts: [String] = []
    var inText = false
    func parser(
        _ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if name == "polyline" { polylines += 1; points += (attributes["points"] ?? "").split(separator: " ").count }
        if name == "line" && attributes["class"] == "tick" { ticks += 1 }
        if name == "circle" && attributes["class"] == "marker" { markers += 1 }
        tickClass = attributes["class"] == "xtick" ? "x" : attributes["class"] == "ytick" ? "y" : nil
        if name == "rect" && attributes["class"] == "cell" { cells += 1 }
        inText = name == "text"
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if inText { texts.append(string) }
        if tickClass == "x" { xTicks.append(string) }
        if tickClass == "y" { yTicks.append(string) }
    }
    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        inText = false
    }
}

final class StatusTests: XCTestCase {
    func testRunningFinishedFailedAndStale() throws {
        let root = NSTemporaryDirectory() + "switchyard-status-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        func run(_ name: String, _ lines: [String]) -> String {
            let d = root + "/" + name
            try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            try! Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: d + "/log.jsonl"))
            return d
        }
        let steps = (0..<5).map { MonitorTests.step($0, loss: 2.5) }
        let running = run("a-running", [MonitorTests.start()] + steps + [#"{"event":"eval","step":4,"valLoss":2.84}"#])
        let finished = run("b-finished", [MonitorTests.start()] + steps + [#"{"event":"end","reason":"completed"}"#])
        let failed = run("c-failed", [MonitorTests.start()] + steps + [#"{"event":"error","message":"boom"}"#])
        let now = Date().timeIntervalSince1970
        let r = RunStatus.line(runDir: running, now: now)!
        // Steps 0-4 logged 1 s apart, 20 in all: 15 steps left at 1 s each.
        XCTAssertTrue(r.contains("running") && r.contains("val 2.8400") && r.contains("eta 15s"), r)
        XCTAssertTrue(
            RunStatus.line(runDir: running, now: now + 1000, staleAfter: 300)!.contains("stale"),
            "no growth and no end for a while")
        let f = RunStatus.line(runDir: finished, now: now)!
        XCTAssertTrue(
            f.hasPrefix("b-finished") && f.contains("finished") && f.contains("step 5/20") && f.contains("loss 2.5000")
                && f.contains("5000 tok/s") && f.contains("no checkpoint"), f)
        XCTAssertTrue(RunStatus.line(runDir: failed, now: now)!.contains("failed"))
        XCTAssertNil(RunStatus.line(runDir: root + "/none", now: now))
    }

    /// The typed events: the kind first, keys in the writer's order, spelt as the enum says; a
    /// line of an unknown kind is not an event.
    func testEventsAreWrittenInOrderAndReadByKey() throws {
        let e = JSONValue.event(.checkpoint, [.step: 7, .gbps: 1.5, .stallMs: 2])
        XCTAssertEqual(e.compact, #"{"event":"checkpoint","step":7,"GBps":1.5,"stallMs":2}"#)
        XCTAssertEqual(e.eventKind, .checkpoint)
        let read = try XCTUnwrap(LogEvent(json: try JSONValue.parse(e.compact)))
        XCTAssertEqual(read.number(.gbps), 1.5)
        XCTAssertEqual(read.step, 7)
        XCTAssertNil(LogEvent(json: ["event": "stp", "step": 1]), "a misspelt kind is not an event")
        XCTAssertEqual(Set(EventKey.allCases.map(\.rawValue)).count, EventKey.allCases.count, "keys are distinct")
    }
}
