// The run directory and its log: `<runsDir>/<name>/job.json` (the resolved spec) and
// `log.jsonl`, one complete JSON object per line, flushed per line so `switchyard tail` and
// `jq` can follow it. Only rank 0 writes.
import Foundation
import JSON
import RunEvents
import TensorBoard

/// An append-only JSON-lines log in a run directory.
public final class RunLog: @unchecked Sendable {
    public let directory: String
    public let path: String
    private let file: UnsafeMutablePointer<FILE>
    /// TensorBoard's event file beside the log (train.tensorboard), and how often it is flushed.
    public let tensorboard: EventFileWriter?
    let flushEvery: Int

    /// Creates the run directory if needed, writes job.json, and opens log.jsonl for appending
    /// (a re-run appends a new `start` event; earlier lines are never rewritten).
    public init(job: Job) throws {
        directory = job.runDirectory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw JobError(
                key: "runsDir", "cannot create the run directory \(directory): \(error.localizedDescription)")
        }
        let jobPath = directory + "/job.json"
        do {
            try Data(job.resolvedJSON.pretty.utf8).write(to: URL(fileURLWithPath: jobPath), options: .atomic)
        } catch {
            throw JobError(key: "runsDir", "cannot write \(jobPath): \(error.localizedDescription)")
        }
        path = directory + "/log.jsonl"
        guard let f = fopen(path, "a") else {
            throw JobError(key: "runsDir", "cannot open \(path) for appending: \(String(cString: strerror(errno)))")
        }
        file = f
        flushEvery = max(1, job.train.logEvery)
        do {
            tensorboard =
                job.train.tensorboard
                ? try EventFileWriter(directory: directory + "/tb", host: ProcessInfo.processInfo.hostName) : nil
        } catch {
            throw JobError(key: "train.tensorboard", "\(error)")
        }
    }

    deinit { fclose(file) }

    /// Appends one event as a single line and flushes it; its scalars go to the TensorBoard file,
    /// flushed at every train.logEvery-th step and at every other event (a buffered write: the
    /// step does not wait for the disk).
    public func write(_ event: JSONValue) {
        let line = event.compact + "\n"
        fputs(line, file)
        fflush(file)
        guard let tb = tensorboard else { return }
        tb.append(logEvent: event)
        if event.eventKind != .step || (event[.step]?.intValue ?? 0) % flushEvery == 0 { tb.flush() }
    }
}

/// Wall-clock seconds since the Unix epoch (for event timestamps).
func unixTime() -> Double { Date().timeIntervalSince1970 }

/// This process's peak resident memory (VmHWM in /proc/self/status), in MB; 0 where unknown.
public enum ResidentMemory {
    public static var peakMB: Double { (NodeMemory.field("VmHWM:", in: "/proc/self/status") ?? 0) / 1024 }
}
