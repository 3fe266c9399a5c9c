// Reading safetensors files written elsewhere (Hugging Face checkpoints): F32, BF16 or F16
// tensors, read as Float32 (bf16 and fp16 widen exactly). Read in chunks, so a tensor is held
// once, as the Float32 it becomes. Nothing is trusted: header, dtype, shape against the byte
// range, and bytes past the last tensor, as SafeTensorsFile checks its own files.
import Foundation
import JSON

/// One tensor of a foreign safetensors file.
public struct TypedTensorEntry: Equatable, Sendable {
    public let name: String
    public let dtype: String  // F32 | BF16 | F16
    public let shape: [Int]
    public let begin: Int, end: Int
    public var count: Int { shape.reduce(1, *) }
}

/// A safetensors file whose tensors may be F32, BF16 or F16.
public final class TypedSafeTensorsFile {
    public let path: String
    public let entries: [String: TypedTensorEntry]
    let fd: Int32
    let dataStart: Int

    static let widths = ["F32": 4, "BF16": 2, "F16": 2]

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CheckpointError("\(path): cannot open: \(String(cString: strerror(errno)))") }
        self.fd = fd
        do {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw CheckpointError("\(path): cannot stat") }
            let size = Int(st.st_size)
            let header = try SafeTensorsFile.readHeader(fd: fd, path: path, fileSize: size)
            dataStart = 8 + header.count
            entries = try Self.entries(header, dataSize: size - dataStart, path: path)
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    static func entries(_ header: [UInt8], dataSize: Int, path: String) throws -> [String: TypedTensorEntry] {
        guard case .object(let members)? = try? JSONValue.parse(bytes: header) else {
            throw CheckpointError("\(path): the header is not a JSON object; the file is corrupt or not safetensors")
        }
        var out: [String: TypedTensorEntry] = [:]
        for (name, v) in members where name != "__metadata__" {
            func bad(_ m: String) -> CheckpointError { CheckpointError("\(path): tensor \(name): \(m)") }
            let dtype = v["dtype"]?.stringValue ?? "missing"
            guard let width = widths[dtype] else {
                throw bad("dtype \(dtype) is not supported (F32, BF16, F16 are)")
            }
            guard let shapeJ = v["shape"]?.arrayValue, case let shape = shapeJ.compactMap(\.intValue),
                shape.count == shapeJ.count, shape.allSatisfy({ $0 >= 0 && $0 < 1 << 40 })
            else { throw bad("bad shape") }
            guard let off = v["data_offsets"]?.arrayValue, off.count == 2, let b = off[0].intValue,
                let e = off[1].intValue, b >= 0, e >= b, e <= dataSize
            else {
                throw bad("bad data_offsets (outside the \(dataSize) data bytes?); the file is truncated or corrupt")
            }
            guard e - b == width * shape.reduce(1, *) else {
                throw bad(
                    "shape \(shape) of \(dtype) needs \(width * shape.reduce(1, *)) bytes, data_offsets cover \(e - b)")
            }
            out[name] = TypedTensorEntry(name: name, dtype: dtype, shape: shape, begin: b, end: e)
        }
        if let end = out.values.map(\.end).max(), end < dataSize {
            throw CheckpointError("\(path): \(dataSize - end) bytes after the last tensor's data; the file is corrupt")
        }
        return out
    }

    /// Elements [first, first + count) of tensor `name` as Float32.
    public func read(_ name: String, first: Int = 0, count: Int, into out: UnsafeMutablePointer<Float>) throws {
        guard let e = entries[name] else { throw CheckpointError("\(path): no tensor named \(name)") }
        let width = Self.widths[e.dtype]!
        guard first >= 0, count >= 0, first + count <= e.count else {
            throw CheckpointError(
                "\(path): tensor \(name): elements \(first)..<\(first + count) outside its \(e.count)")
        }
        let chunk = 1 << 20
        let raw = UnsafeMutableRawPointer.allocate(byteCount: width * min(max(count, 1), chunk), alignment: 8)
        defer { raw.deallocate() }
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            try readBytes(raw, count: width * n, at: dataStart + e.begin + width * (first + done), name: name)
            Self.widen(raw, dtype: e.dtype, count: n, into: out + done)
            done += n
        }
    }

    func readBytes(_ p: UnsafeMutableRawPointer, count: Int, at offset: Int, name: String) throws {
        var done = 0
        while done < count {
            let n = pread(fd, p + done, count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CheckpointError("\(path): tensor \(name): short read (the file is truncated)") }
            done += n
        }
    }

    /// Little-endian F32, BF16 (the high half of an F32) or F16 (IEEE half) to Float32, exactly.
    static func widen(_ raw: UnsafeRawPointer, dtype: String, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch dtype {
        case "F32":
            for i in 0..<count {
                out[i] = Float(
                    bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
        case "BF16":
            for i in 0..<count {
                let h = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                out[i] = Float(bitPattern: UInt32(h) << 16)
            }
        default:
            for i in 0..<count {
                let h = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                out[i] = Float(Float16(bitPattern: h))
            }
        }
    }
}
