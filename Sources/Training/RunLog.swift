// The run directory and its log: `<runsDir>/<name>/job.json` (the resolved spec) and
// `log.jsonl`, one complete JSON object per line, flushed per line so `switchyard tail` and
// `jq` can follow it. Only rank 0 writes.
import Foundation
import JSON

/// An append-only JSON-lines log in a run directory.
public final class RunLog: @unchecked Sendable {
    public let directory: String
    public let path: String
    private let file: UnsafeMutablePointer<FILE>

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
    }

    deinit { fclose(file) }

    /// Appends one event as a single line and flushes it.
    public func write(_ event: JSONValue) {
        let line = event.compact + "\n"
        fputs(line, file)
        fflush(file)
    }
}

/// Wall-clock seconds since the Unix epoch (for event timestamps).
func unixTime() -> Double { Date().timeIntervalSince1970 }

/// This process's peak resident memory (VmHWM in /proc/self/status), in MB; 0 where unknown.
public enum ResidentMemory {
    public static var peakMB: Double { (NodeMemory.field("VmHWM:", in: "/proc/self/status") ?? 0) / 1024 }
}
