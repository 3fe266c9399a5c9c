// `switchyard tail`, `status` and `plot`: watching runs from their logs (no MPI).
import Foundation
import JSON
import Monitor
import RunEvents

enum MonitorCommands {
    static let tail = CommandSpec(
        name: "tail",
        summary: "Show a run's progress from its log; --follow keeps watching as it grows.",
        positionals: [("RUN", "a run directory (runs/<name>) or its log.jsonl")],
        options: [
            OptionSpec(
                .follow, alias: "-f",
                "keep reading as the log grows (waits for it to appear; exits 0 at the run's end or on Ctrl-C)"),
            OptionSpec(.every, value: "N", "show every N-th step (default 1)"),
            OptionSpec(.json, "print the events as JSON lines instead of text")
        ],
        details:
            "On a terminal, --follow draws a live dashboard (progress, the whole run's loss sparkline, expert load,\n"
            + "per-rank step time) laid out for the terminal's width and height, redrawn when it is resized; piped,\n"
            + "it prints plain lines. Colour only on a terminal and never with NO_COLOR set.\n"
    ) { try runTail($0) }

    static let status = CommandSpec(
        name: "status",
        summary: "One line per run: state (running, finished, failed, stale), step, loss, tokens/s, newest checkpoint.",
        positionals: [("PATH", "a run directory or a directory of runs (e.g. runs)")],
        options: [
            OptionSpec(
                .staleAfter, value: "S",
                "seconds without log growth before a run without `end` is stale (default 300)")
        ],
        details: ""
    ) { try runStatus($0) }

    static let plot = CommandSpec(
        name: "plot",
        summary: "Write an SVG chart of a metric of one run, or of several runs on one chart.",
        positionals: [("RUN", "a run directory or its log.jsonl; several: one line per run, named by its directory")],
        options: [
            OptionSpec(.out, value: "FILE", required: true, "the SVG file to write"),
            OptionSpec(.metric, value: "M", "loss | tokensPerSec | mfu | expertLoad | rankStepMs (default loss)"),
            OptionSpec(
                .smooth, value: "W",
                "also draw an EMA of each line with weight W in [0, 1), e.g. 0.9 (the raw line faded)"),
            OptionSpec(.log, "logarithmic y axis (positive values only, e.g. loss)")
        ],
        details:
            "Ticks are round (1, 2 or 5 times a power of ten). The loss chart also marks each eval's validation\n"
            + "loss. Several runs: switchyard plot runs/a runs/b --metric loss --out ab.svg\n",
        variadic: true
    ) { try runPlot($0) }

    static func logPath(_ p: String) -> String { p.hasSuffix(".jsonl") ? p : p + "/log.jsonl" }

    static func runTail(_ args: ParsedArgs) throws -> Int32 {
        let every = try args.positiveInt(.every) ?? 1
        let path = logPath(args.positionals[0])
        let follow = args.flag(.follow), json = args.flag(.json)
        let terminal = isatty(1) == 1
        let style = Style(color: terminal && ProcessInfo.processInfo.environment["NO_COLOR"] == nil)
        let view = TailView(path: path, every: every, json: json, dashboard: follow && terminal && !json, style: style)
        let reader = LogReader(path: path)
        if !follow && !reader.exists {
            Runtime.printError("\(path): no such log (is the run name right? logs are runs/<name>/log.jsonl)")
            return 1
        }
        installStopSignals()
        if view.dashboard { signal(SIGWINCH) { _ in resizeSignalCount += 1 } }
        var state = RunState()
        var waited = false, resizes = resizeSignalCount
        while true {
            if reader.exists {
                let resized = resizes != resizeSignalCount  // the terminal changed size: redraw for it
                resizes = resizeSignalCount
                view.show(reader.poll(), state: &state, redraw: resized)
            } else if !waited {
                FileHandle.standardError.write(Data("switchyard tail: waiting for \(path) to appear...\n".utf8))
                waited = true
            }
            if !follow || state.ended != nil || stopSignalCount > 0 { return 0 }
            usleep(200_000)
        }
    }

    /// How `tail` shows new events: text lines, JSON lines, or a redrawn dashboard.
    struct TailView {
        let path: String, every: Int, json: Bool, dashboard: Bool, style: Style

        func show(_ r: ReadResult, state: inout RunState, redraw: Bool = false) {
            if r.restarted {
                state = RunState()
                if !dashboard { say("== the log was truncated or replaced; reading it again") }
            }
            for w in r.warnings { FileHandle.standardError.write(Data("!! \(w)\n".utf8)) }
            for e in r.events {
                state.apply(e)
                if dashboard { continue }
                if json {
                    say(e.json.compact)
                } else if let line = Render.line(e, state: state, every: every, style: style) {
                    say(line)
                }
            }
            if dashboard && (!r.events.isEmpty || r.restarted || redraw) {
                // One column short of the terminal's: a line filling the last column may wrap on some.
                let size = terminalSize()
                let lines = Render.dashboard(
                    state, path: path, style: style, width: size.width - 1, height: size.height)
                say("\u{1B}[H\u{1B}[2J" + lines.joined(separator: "\n"))
            }
        }
    }

    static func runStatus(_ args: ParsedArgs) throws -> Int32 {
        let stale = try args.positiveDouble(.staleAfter, what: "seconds") ?? 300
        let path = args.positionals[0]
        var dirs: [String] = []
        if FileManager.default.fileExists(atPath: path + "/log.jsonl") {
            dirs = [path]
        } else {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
            dirs = names.map { path + "/" + $0 }.filter { FileManager.default.fileExists(atPath: $0 + "/log.jsonl") }
        }
        guard !dirs.isEmpty else {
            Runtime.printError("\(path): no runs (a run directory holds log.jsonl; give runs/<name> or runs)")
            return 1
        }
        for d in dirs { if let l = RunStatus.line(runDir: d, staleAfter: stale) { say(l) } }
        return 0
    }

    static func runPlot(_ args: ParsedArgs) throws -> Int32 {
        let out = args.required(.out)
        let metric = args.value(.metric) ?? "loss"
        guard Plot.metrics.contains(metric) else {
            throw args.usageError("--metric must be one of \(Plot.metrics.joined(separator: ", ")), got '\(metric)'")
        }
        var options = PlotOptions()
        options.logScale = args.flag(.log)
        if let w = args.value(.smooth) {
            guard let v = Double(w), v >= 0, v < 1 else {
                throw args.usageError("--smooth needs W in [0, 1), got '\(w)'")
            }
            options.smooth = v
        }
        var runs: [PlotRun] = [], state = RunState()
        for arg in args.positionals {
            let path = logPath(arg)
            let reader = LogReader(path: path)
            guard reader.exists else { Runtime.printError("\(path): no such log"); return 1 }
            reader.seekThreshold = UInt64.max  // a plot wants every point
            let r = reader.poll()
            for w in r.warnings { FileHandle.standardError.write(Data("!! \(w)\n".utf8)) }
            r.events.forEach { state.apply($0) }
            runs.append(PlotRun(name: runName(arg), events: r.events))
        }
        if Set(runs.map(\.name)).count < runs.count {  // runs of one name in different directories
            runs = zip(runs, args.positionals).map { PlotRun(name: runName($1, parents: 1), events: $0.events) }
        }
        let title = runs.count == 1 ? "\(state.job): \(metric)" : metric
        do {
            let svg = try Plot.svg(runs: runs, metric: metric, title: title, options: options)
            try Data(svg.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
            let steps = runs.map { $0.events.filter { $0.kind == .step }.count }
            say("wrote \(out) (\(metric), \(steps.map(String.init).joined(separator: " + ")) steps)")
            return 0
        } catch {
            Runtime.printError("\(args.positionals.joined(separator: ", ")): \(error)")
            return 1
        }
    }

    /// A run's name for a legend: its directory's name (runs/a/log.jsonl and runs/a both give a),
    /// with `parents` directories above it (a/runs/x and b/runs/x: runs/x twice; with 1: a/runs/x).
    static func runName(_ arg: String, parents: Int = 0) -> String {
        let dir = arg.hasSuffix(".jsonl") ? (arg as NSString).deletingLastPathComponent : arg
        let parts = (dir as NSString).standardizingPath.split(separator: "/")
        return parts.suffix(parents + 1).joined(separator: "/")
    }
}

/// Set by SIGWINCH while `tail --follow` draws its dashboard: the terminal changed size.
nonisolated(unsafe) var resizeSignalCount: Int32 = 0

/// The terminal's columns and rows (80 x 24 when stdout is not a terminal or does not say).
func terminalSize() -> (width: Int, height: Int) {
    var w = winsize()
    guard ioctl(1, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 0, w.ws_row > 0 else { return (80, 24) }
    return (Int(w.ws_col), Int(w.ws_row))
}
