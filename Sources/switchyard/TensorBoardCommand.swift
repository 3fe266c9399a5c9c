// `switchyard tb RUN...`: each run's log as a TensorBoard event file in RUN/tb (what
// train.tensorboard writes during training), from the log's start; --follow keeps appending as
// the log grows, so a running job can be watched in TensorBoard. log.jsonl stays the source of
// truth: the event files in RUN/tb are derived from it and replaced.
import Foundation
import Monitor
import RunEvents
import TensorBoard

enum TensorBoardCommand {
    static let spec = CommandSpec(
        name: "tb",
        summary: "Write a run's log as a TensorBoard event file (RUN/tb); --follow keeps it up to date.",
        positionals: [("RUN", "a run directory (runs/<name>); several: each gets its own RUN/tb")],
        options: [
            OptionSpec(
                .follow, alias: "-f",
                "keep appending as the logs grow (exits 0 when every run has ended, or on Ctrl-C)")
        ],
        details:
            "Scalars: train/loss, aux_loss, z_loss, lr, grad_norm; perf/tokens_per_sec, mfu, step_ms;\n"
            + "eval/val_loss; moe/block{b}/max_over_mean_load and dropped_tokens; ranks/rank{r}/step_ms;\n"
            + "checkpoint/seconds and GBps. Earlier event files in RUN/tb are replaced (they are derived from\n"
            + "log.jsonl). View with: tensorboard --logdir RUN/tb\n"
            + "(several runs: tensorboard --logdir_spec a:runs/a/tb,b:runs/b/tb)\n",
        variadic: true
    ) { try run($0) }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        var conversions: [Conversion] = []
        for runDir in args.positionals {
            let path = MonitorCommands.logPath(runDir)
            let reader = LogReader(path: path)
            guard reader.exists else {
                Runtime.printError("\(path): no such log (is the run name right? logs are runs/<name>/log.jsonl)")
                return 1
            }
            reader.seekThreshold = .max  // every event, not only the log's tail
            for old in EventFile.files(in: runDir + "/tb") { try? FileManager.default.removeItem(atPath: old) }
            let writer = try EventFileWriter(directory: runDir + "/tb", host: Runtime.hostName)
            conversions.append(Conversion(path: path, reader: reader, writer: writer))
        }
        installStopSignals()
        while true {
            for c in conversions { try c.step() }
            if !args.flag(.follow) || conversions.allSatisfy(\.ended) || stopSignalCount > 0 { break }
            usleep(500_000)
        }
        for c in conversions { say("tb: \(c.written) event(s) with scalars from \(c.path) -> \(c.writer.path)") }
        return 0
    }

    /// One run's log being converted.
    final class Conversion {
        let path: String, reader: LogReader
        var writer: EventFileWriter
        var written = 0, ended = false
        init(path: String, reader: LogReader, writer: EventFileWriter) {
            self.path = path
            self.reader = reader
            self.writer = writer
        }

        /// What the log gained since the last call, into the event file; a log truncated or
        /// replaced since (read again from its start) gets a fresh file instead of a second copy.
        func step() throws {
            let r = reader.poll()
            if r.restarted {
                try? FileManager.default.removeItem(atPath: writer.path)
                writer = try EventFileWriter(
                    directory: (writer.path as NSString).deletingLastPathComponent, host: Runtime.hostName)
                written = 0
                ended = false
            }
            for w in r.warnings { FileHandle.standardError.write(Data("!! \(w)\n".utf8)) }
            for e in r.events {
                if writer.append(logEvent: e.json) { written += 1 }
                ended = ended || e.kind == .end
            }
            writer.flush()
        }
    }
}
