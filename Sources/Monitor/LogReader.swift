// Reading a run's log.jsonl defensively and incrementally: only complete lines are parsed (a
// half-written last line waits for its newline), a garbage line or an unknown event becomes a
// warning, never a crash; truncation and replacement of the file are noticed and the file is
// re-read from its start. A large log is not parsed whole: the reader takes its first line (the
// run's `start`) and seeks to its tail.
import Foundation
import JSON
import RunEvents

/// One parsed line of a log: an event of a known kind.
public struct LogEvent: Sendable {
    public let json: JSONValue
    public let kind: EventKind
    public func number(_ key: EventKey) -> Double? { json[key]?.doubleValue }
    public subscript(_ key: EventKey) -> JSONValue? { json[key] }
    public var step: Int? { json[.step]?.intValue }
    /// nil when `json` is not an event of a known kind.
    public init?(json: JSONValue) {
        guard let kind = json.eventKind else { return nil }
        self.json = json
        self.kind = kind
    }
}

/// What a read produced: events in order, and warnings about lines that could not be used.
public struct ReadResult: Sendable {
    public var events: [LogEvent] = []
    public var warnings: [String] = []
    /// The file was truncated or replaced since the last read (everything was read again).
    public var restarted = false
}

/// Follows one log file.
public final class LogReader {
    public let path: String
    var offset: UInt64 = 0
    var inode: UInt64 = 0
    var pending = Data()
    var lineNumber = 0
    /// Logs larger than this start from their first line plus the last `tailBytes` bytes.
    public var seekThreshold: UInt64 = 8 << 20
    public var tailBytes: UInt64 = 256 << 10

    public init(path: String) { self.path = path }

    /// Whether the file exists now.
    public var exists: Bool { FileManager.default.fileExists(atPath: path) }

    /// Reads whatever complete lines were appended since the last call.
    public func poll() -> ReadResult {
        var result = ReadResult()
        var st = stat()
        guard stat(path, &st) == 0 else { return result }
        let size = UInt64(st.st_size), ino = UInt64(st.st_ino)
        if (inode != 0 && ino != inode) || size < offset {
            offset = 0; pending = Data(); lineNumber = 0
            result.restarted = true
        }
        inode = ino
        guard size > offset, let h = FileHandle(forReadingAtPath: path) else { return result }
        defer { try? h.close() }
        if offset == 0 && size > seekThreshold {
            // First line (the start event), then only the tail: a million steps are not parsed.
            let head = (try? h.read(upToCount: 1 << 20)) ?? Data()
            if let nl = head.firstIndex(of: 0x0A) { consume(Data(head[head.startIndex..<nl]), into: &result) }
            let from = size - tailBytes
            try? h.seek(toOffset: from)
            var tail = (try? h.readToEnd()) ?? Data()
            if let nl = tail.firstIndex(of: 0x0A) { tail = Data(tail[(nl + 1)...]) }  // drop the partial first line
            offset = size
            lineNumber = -1
            split(tail, into: &result)
            return result
        }
        try? h.seek(toOffset: offset)
        let data = (try? h.readToEnd()) ?? Data()
        offset += UInt64(data.count)
        split(data, into: &result)
        return result
    }

    func split(_ data: Data, into result: inout ReadResult) {
        pending.append(data)
        while let nl = pending.firstIndex(of: 0x0A) {
            let line = Data(pending[pending.startIndex..<nl])
            pending = Data(pending[(nl + 1)...])
            consume(line, into: &result)
        }
    }

    func consume(_ line: Data, into result: inout ReadResult) {
        if lineNumber >= 0 { lineNumber += 1 }
        let where_ = lineNumber >= 0 ? "line \(lineNumber)" : "a line near the end"
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) { return }
        guard let j = try? JSONValue.parse(bytes: Array(line)), case .object = j else {
            result.warnings.append("\(path): \(where_) is not a JSON object; skipped")
            return
        }
        guard let e = LogEvent(json: j) else {
            let name = j["event"]?.stringValue ?? "?"
            result.warnings.append("\(path): \(where_): unknown event '\(name)'; skipped")
            return
        }
        result.events.append(e)
    }
}
