// A run's TensorBoard event file, RUN/tb/events.out.tfevents.<unix time>.<host>.<pid>: the
// file-version event, then one event per log event that has scalars (LogScalars). Written by
// rank 0 during training (train.tensorboard) or by `switchyard tb` from log.jsonl, the source of
// truth; read back (framing, CRCs, fields) by `EventFile.read`.
import Foundation
import JSON

/// An event file being appended to.
public final class EventFileWriter: @unchecked Sendable {
    public let path: String
    private let file: UnsafeMutablePointer<FILE>

    /// Creates `directory` if needed and a new event file in it, starting with the version event.
    public init(directory: String, host: String, time: Double = Date().timeIntervalSince1970) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw EventFileError("cannot create \(directory): \(error.localizedDescription)")
        }
        path = "\(directory)/events.out.tfevents.\(Int(time)).\(host).\(getpid())"
        guard let f = fopen(path, "w") else {
            throw EventFileError("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        file = f
        append(EventProto.versionEvent(wallTime: time))
        flush()
    }

    deinit { fclose(file) }

    /// Appends the scalars of one log event (nothing for an event without any); buffered.
    /// Returns whether the event had scalars.
    @discardableResult
    public func append(logEvent e: JSONValue) -> Bool {
        guard let s = LogScalars.of(e) else { return false }
        append(EventProto.scalarEvent(wallTime: s.time, step: s.step, scalars: s.scalars))
        return true
    }

    func append(_ event: [UInt8]) {
        let record = TFRecord.frame(event)
        _ = record.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    }

    /// Hands what is buffered to the file system.
    public func flush() { fflush(file) }
}

public struct EventFileError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}

public enum EventFile {
    /// Every event of the file at `path`, framing and CRCs checked (a truncated or corrupt
    /// record throws, naming the file and the byte), the first one the version event.
    public static func read(_ path: String) throws -> [DecodedEvent] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EventFileError("\(path): cannot read")
        }
        do {
            let events = try TFRecord.records(Array(data)).map(EventProto.decode)
            guard events.first?.fileVersion == EventProto.fileVersion else {
                throw EventFileError("\(path): the first event is not the file version \(EventProto.fileVersion)")
            }
            return events
        } catch let e as TFRecordError {
            throw EventFileError("\(path): \(e)")
        } catch let e as EventFileError {
            throw e
        } catch {
            throw EventFileError("\(path): \(error)")
        }
    }

    /// The event files in `directory`, oldest name first.
    public static func files(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("events.out.tfevents.") }.sorted().map { "\(directory)/\($0)" }
    }
}
