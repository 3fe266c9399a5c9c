// Writing a safetensors file one tensor at a time, when the tensors are not in memory together
// (an import converting a model tensor by tensor). The header, with every tensor's shape and
// offsets, is written first; each tensor's F32 bytes follow in header order with their CRC32C.
import Foundation
import JSON

/// An F32 safetensors file written tensor by tensor, in the order of `shapes`.
public final class SafeTensorStreamWriter {
    public let path: String
    public let entries: [SafeTensorEntry]
    private let handle: FileHandle
    private var next = 0
    /// CRC32C of each tensor written so far, in order.
    public private(set) var crcs: [UInt32] = []

    public init(path: String, tensors: [(name: String, shape: [Int])]) throws {
        self.path = path
        var offset = 0
        var header: [(String, JSONValue)] = []
        var entries: [SafeTensorEntry] = []
        for t in tensors {
            let e = SafeTensorEntry(name: t.name, shape: t.shape, begin: offset, end: offset + 4 * t.shape.reduce(1, *))
            entries.append(e)
            header.append(
                (
                    t.name,
                    [
                        "dtype": "F32", "shape": .array(t.shape.map { .integer($0) }),
                        "data_offsets": [.integer(e.begin), .integer(e.end)]
                    ]
                ))
            offset = e.end
        }
        self.entries = entries
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path)
        else { throw CheckpointError("\(path): cannot create the file (folder missing or not writable?)") }
        handle = h
        let head = SafeTensors.headBytes(JSONValue.object(header).compact, alignment: 8)
        defer { head.deallocate() }
        try write(UnsafeRawPointer(head.baseAddress!), head.count)
    }

    func write(_ p: UnsafeRawPointer, _ count: Int) throws {
        do {
            try handle.write(
                contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: p), count: count, deallocator: .none))
        } catch {
            throw CheckpointError("\(path): write failed: \(error)")
        }
    }

    /// Writes the next tensor's elements (as many as its shape holds).
    public func append(_ data: UnsafePointer<Float>) throws {
        precondition(next < entries.count, "more tensors than the header lists")
        let bytes = entries[next].end - entries[next].begin
        crcs.append(CRC32C.checksum(UnsafeRawPointer(data), count: bytes))
        try write(UnsafeRawPointer(data), bytes)
        next += 1
    }

    /// Fsyncs and closes; every tensor must have been written.
    public func finish() throws {
        guard next == entries.count else {
            throw CheckpointError("\(path): \(next) of \(entries.count) tensors written")
        }
        try handle.synchronize()
        try handle.close()
    }
}
