// The safetensors file format: 8-byte little-endian header length N, N bytes of JSON header
// ({"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}),
// then the raw little-endian data; offsets are relative to the end of the header.
// Nothing read is trusted: header length, JSON, dtype, shape x dtype size against the byte range,
// and every range inside the file are checked, with errors naming the file and tensor.
import Foundation
import JSON

/// A checkpoint file problem: names the file (and tensor) and what is wrong.
public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One tensor's entry in a safetensors header.
public struct SafeTensorEntry: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    /// Byte range in the data section.
    public let begin: Int, end: Int
}

/// A tensor to write: name, shape and where its Float32 data is.
public struct SafeTensorSource {
    public let name: String
    public let shape: [Int]
    public let data: UnsafePointer<Float>
    public init(name: String, shape: [Int], data: UnsafePointer<Float>) {
        self.name = name; self.shape = shape; self.data = data
    }
    var count: Int { shape.reduce(1, *) }
}

public enum SafeTensors {
    /// Writes `tensors` to `path` (created or truncated) and fsyncs it. Returns each tensor's
    /// entry and CRC32C of its bytes, in order. Errors (disk full...) name the file.
    /// `ready(i)` is called before tensor i's bytes are read (a writer that follows a copy waits
    /// there); writes of back-to-back tensors are coalesced up to `maxRunBytes`. `direct`: pad
    /// the header to `directAlignment` and write with O_DIRECT where memory and file allow
    /// (SafeTensors+Direct.swift); the data then goes out without a page-cache copy.
    public static func write(
        _ tensors: [SafeTensorSource], to path: String, metadata: [String: String] = [:],
        maxRunBytes: Int = Int.max, direct: Bool = false, ready: @escaping @Sendable (Int) -> Void = { _ in }
    ) throws -> [(SafeTensorEntry, UInt32)] {
        var entries: [SafeTensorEntry] = []
        var offset = 0
        var header: [(String, JSONValue)] = []
        if !metadata.isEmpty {
            header.append(
                ("__metadata__", .object(metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        }
        for t in tensors {
            let e = SafeTensorEntry(name: t.name, shape: t.shape, begin: offset, end: offset + 4 * t.count)
            entries.append(e)
            header.append(
                (
                    t.name,
                    [
                        "dtype": "F32", "shape": .array(t.shape.map { .number(Double($0)) }),
                        "data_offsets": [.number(Double(e.begin)), .number(Double(e.end))]
                    ]
                ))
            offset = e.end
        }
        let out = try DirectOutput(path: path, direct: direct)
        let head = headBytes(JSONValue.object(header).compact, alignment: direct ? directAlignment : 8)
        defer { head.deallocate() }
        try out.append(UnsafeRawPointer(head.baseAddress!), head.count)
        // The checksums are computed on a second thread while the bytes go out: both only read.
        let crcs = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: max(tensors.count, 1))
        defer { crcs.deallocate() }
        let work = ChecksumAndWrite(tensors: tensors, crcs: crcs)
        DispatchQueue.concurrentPerform(iterations: 2) { part in
            if part == 1 {
                for (i, t) in work.tensors.enumerated() {
                    ready(i)
                    work.crcs[i] = CRC32C.checksum(UnsafeRawPointer(t.data), count: 4 * t.count)
                }
            } else {
                do { try writeRuns(work.tensors, to: out, maxRunBytes: maxRunBytes, ready: ready) } catch {
                    work.error = error
                }
            }
        }
        if let error = work.error { throw error }
        try out.finish()
        return (0..<tensors.count).map { (entries[$0], crcs[$0]) }
    }

    /// The 8-byte little-endian length and the header JSON, padded with spaces (as the format
    /// allows) so that the data starts at a multiple of `alignment`; in an `alignment`-aligned buffer.
    static func headBytes(_ json: String, alignment: Int) -> UnsafeMutableRawBufferPointer {
        var header = Array(json.utf8)
        while (8 + header.count) % alignment != 0 { header.append(0x20) }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 + header.count, alignment: alignment)
        buf.storeBytes(of: UInt64(header.count).littleEndian, toByteOffset: 0, as: UInt64.self)
        header.withUnsafeBytes {
            buf.baseAddress!.advanced(by: 8).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
        }
        return buf
    }

    /// Writes the tensors' bytes in order; tensors that lie back to back in memory (a save's
    /// snapshot) go out in one write.
    static func writeRuns(
        _ tensors: [SafeTensorSource], to out: DirectOutput, maxRunBytes: Int, ready: (Int) -> Void
    ) throws {
        var runStart = 0, runBytes = 0
        for i in 0..<tensors.count {
            let t = tensors[i]
            runBytes += 4 * t.count
            if i == tensors.count - 1 || tensors[i + 1].data != t.data + t.count || runBytes >= maxRunBytes {
                ready(i)
                try out.append(UnsafeRawPointer(tensors[runStart].data), runBytes)
                runStart = i + 1
                runBytes = 0
            }
        }
    }

    static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer, _ count: Int, _ path: String) throws {
        var done = 0
        while done < count {
            let n = Foundation.write(fd, p + done, min(count - done, 1 << 30))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw writeError(path) }
            done += n
        }
    }

    /// The error of a failed write to `path`, from errno (a full disk said as such).
    static func writeError(_ path: String) -> CheckpointError {
        CheckpointError(
            "\(path): write failed: \(String(cString: strerror(errno)))\(errno == ENOSPC ? " (the disk is full)" : "")")
    }
}

/// A safetensors file opened for reading, with its header validated.
public final class SafeTensorsFile {
    public let path: String
    public let entries: [String: SafeTensorEntry]
    public let metadata: [String: String]
    let fd: Int32
    let dataStart: Int
    public let fileSize: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CheckpointError("\(path): cannot open: \(String(cString: strerror(errno)))") }
        self.fd = fd
        var st = stat()
        guard fstat(fd, &st) == 0 else { close(fd); throw CheckpointError("\(path): cannot stat") }
        fileSize = Int(st.st_size)
        do {
            let header = try SafeTensorsFile.readHeader(fd: fd, path: path, fileSize: fileSize)
            dataStart = 8 + header.count
            let json: JSONValue
            do { json = try JSONValue.parse(bytes: header) } catch {
                throw CheckpointError("\(path): the header is not valid JSON (\(error)); the file is corrupt")
            }
            guard case .object(let members) = json else {
                throw CheckpointError("\(path): the header is not a JSON object")
            }
            var entries: [String: SafeTensorEntry] = [:]
            var meta: [String: String] = [:]
            for (name, v) in members {
                if name == "__metadata__" {
                    if case .object(let m) = v { for (k, s) in m { meta[k] = s.stringValue ?? s.compact } }
                    continue
                }
                entries[name] = try SafeTensorsFile.entry(name, v, dataSize: fileSize - dataStart, path: path)
            }
            // The format indexes the whole data buffer: bytes past the last tensor are not ours.
            let end = entries.values.map(\.end).max() ?? 0
            if end < fileSize - dataStart {
                throw CheckpointError(
                    "\(path): \(fileSize - dataStart - end) bytes after the last tensor's data; the file is corrupt "
                        + "or was appended to")
            }
            self.entries = entries
            metadata = meta
        } catch {
            close(fd)
            throw error
        }
    }

    /// The header's bytes, after checking the 8-byte length against the file.
    static func readHeader(fd: Int32, path: String, fileSize: Int) throws -> [UInt8] {
        guard fileSize >= 8 else {
            throw CheckpointError(
                "\(path): \(fileSize) bytes is too short for a safetensors file (8-byte header length)")
        }
        var len: UInt64 = 0
        guard pread(fd, &len, 8, 0) == 8 else { throw CheckpointError("\(path): cannot read the header length") }
        let n = UInt64(littleEndian: len)
        guard n >= 2, n <= 100_000_000, Int(n) <= fileSize - 8 else {
            throw CheckpointError(
                "\(path): bad header length \(n) (file is \(fileSize) bytes); the file is truncated or not "
                    + "safetensors")
        }
        var header = [UInt8](repeating: 0, count: Int(n))
        guard pread(fd, &header, Int(n), 8) == Int(n) else { throw CheckpointError("\(path): cannot read the header") }
        return header
    }

    /// One tensor's header entry, checked: F32, a sane shape, offsets inside the data that cover
    /// exactly the shape's bytes.
    static func entry(_ name: String, _ v: JSONValue, dataSize: Int, path: String) throws -> SafeTensorEntry {
        func bad(_ m: String) -> CheckpointError { CheckpointError("\(path): tensor \(name): \(m)") }
        guard v["dtype"]?.stringValue == "F32" else {
            throw bad("dtype \(v["dtype"]?.compact ?? "missing") is not F32")
        }
        guard let shapeJ = v["shape"]?.arrayValue, let shape = Optional(shapeJ.compactMap(\.intValue)),
            shape.count == shapeJ.count, shape.allSatisfy({ $0 >= 0 && $0 < 1 << 40 })
        else { throw bad("bad shape") }
        guard let off = v["data_offsets"]?.arrayValue, off.count == 2, let b = off[0].intValue,
            let e = off[1].intValue
        else { throw bad("bad data_offsets") }
        guard b >= 0, e >= b, e <= dataSize else {
            throw bad(
                "data_offsets [\(b), \(e)] lie outside the \(dataSize) data bytes; the file is truncated or corrupt")
        }
        let expected = 4 * shape.reduce(1, *)
        guard e - b == expected else {
            throw bad("shape \(shape) needs \(expected) bytes but data_offsets cover \(e - b)")
        }
        return SafeTensorEntry(name: name, shape: shape, begin: b, end: e)
    }

    deinit { close(fd) }

    /// Reads `count` floats of tensor `name` starting at element `first` into `into`.
    public func read(_ name: String, first: Int = 0, count: Int, into: UnsafeMutablePointer<Float>) throws {
        guard let e = entries[name] else { throw CheckpointError("\(path): no tensor named \(name)") }
        guard first >= 0, count >= 0, 4 * (first + count) <= e.end - e.begin else {
            throw CheckpointError(
                "\(path): tensor \(name): elements \(first)..<\(first + count) outside its \((e.end - e.begin) / 4)")
        }
        var done = 0
        let bytes = 4 * count, start = dataStart + e.begin + 4 * first
        while done < bytes {
            let n = pread(fd, UnsafeMutableRawPointer(into) + done, bytes - done, off_t(start + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CheckpointError("\(path): tensor \(name): short read (the file is truncated)") }
            done += n
        }
    }

    /// CRC32C of a tensor's bytes.
    public func checksum(_ name: String) throws -> UInt32 {
        guard let e = entries[name] else { throw CheckpointError("\(path): no tensor named \(name)") }
        let n = (e.end - e.begin) / 4
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
        defer { buf.deallocate() }
        try read(name, count: n, into: buf)
        return CRC32C.checksum(buf, count: 4 * n)
    }
}

/// What the checksum thread and the write thread share: read-only tensors, disjoint outputs
/// (the checksums; the write's error), read after both finished.
private final class ChecksumAndWrite: @unchecked Sendable {
    let tensors: [SafeTensorSource]
    let crcs: UnsafeMutableBufferPointer<UInt32>
    var error: Error?
    init(tensors: [SafeTensorSource], crcs: UnsafeMutableBufferPointer<UInt32>) {
        self.tensors = tensors
        self.crcs = crcs
    }
}
