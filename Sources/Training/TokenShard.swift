// One file of tokens, read a window at a time: a text file (each byte a token) or an llm.c .bin
// (a 256 x int32 header: magic, version, token count; then the tokens). Version 1 (magic
// 20240520) holds uint16 ids, version 7 (magic 20240801, llm.c's Llama 3 files) uint32 ids.
// The header and the file size are checked when the file is opened; the ids as they are read
// (TokenData.read), so that opening a 4 GB shard reads one page. Windows are read with pread,
// not through a memory map: the ranks of a node still share the file's pages in the page cache,
// but a mapping puts every page (on this kernel, every large page-cache folio) a window touches
// into the rank's resident set, which grew ~9 MB a step on a 4 GB file; pread copies only the
// window.
import Foundation

/// The layout of a token file: how wide each id is and where the ids start.
public enum TokenFileFormat: String, Sendable {
    case text, bin
}

/// An open file's (or, for tests, owned bytes') run of fixed-width token ids.
final class TokenShard: @unchecked Sendable {
    let path: String
    /// Bytes per id: 1 (text), 2 (uint16 .bin) or 4 (uint32 .bin).
    let width: Int
    let count: Int
    /// Where the ids are: owned bytes, or a file descriptor and the offset of the first id.
    enum Storage {
        case memory(UnsafeRawPointer)
        case file(fd: Int32, offset: Int)
    }
    let storage: Storage
    private let release: () -> Void

    static let headerBytes = 256 * 4
    static let magic16: Int32 = 20_240_520
    static let magic32: Int32 = 20_240_801

    init(path: String, width: Int, count: Int, storage: Storage, release: @escaping () -> Void) {
        self.path = path; self.width = width; self.count = count; self.storage = storage; self.release = release
    }

    deinit { release() }

    /// Copies the bytes of ids [first, first + n) into `into` (n * width bytes).
    func copyBytes(_ first: Int, _ n: Int, into: UnsafeMutableRawPointer) throws {
        switch storage {
        case .memory(let p): into.copyMemory(from: p + first * width, byteCount: n * width)
        case .file(let fd, let offset):
            var done = 0
            let bytes = n * width, start = offset + first * width
            while done < bytes {
                let r = pread(fd, into + done, bytes - done, off_t(start + done))
                if r < 0 && errno == EINTR { continue }
                guard r > 0 else {
                    throw DataError(
                        path: path, message: "read failed at token \(first): the file shrank or is unreadable")
                }
                done += r
            }
        }
    }

    /// Id `i` of bytes `copyBytes` wrote, unchecked against the vocabulary.
    @inline(__always) func id(_ i: Int, in raw: UnsafeRawPointer) -> UInt32 {
        switch width {
        case 1: return UInt32(raw.load(fromByteOffset: i, as: UInt8.self))
        case 2: return UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        default: return UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
        }
    }

    /// An in-memory shard holding `tokens` (tests and tools).
    static func owning(_ tokens: [UInt32], width: Int, path: String) -> TokenShard {
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(1, tokens.count * width), alignment: 8)
        for (i, t) in tokens.enumerated() {
            switch width {
            case 1: bytes.storeBytes(of: UInt8(truncatingIfNeeded: t), toByteOffset: i, as: UInt8.self)
            case 2:
                bytes.storeBytes(of: UInt16(truncatingIfNeeded: t).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
            default: bytes.storeBytes(of: t.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
            }
        }
        return TokenShard(path: path, width: width, count: tokens.count, storage: .memory(UnsafeRawPointer(bytes))) {
            bytes.deallocate()
        }
    }

    /// Opens `path` read-only and checks its header (a .bin) and size; no id is read.
    static func open(path: String, format: TokenFileFormat) throws -> TokenShard {
        func fail(_ m: String) -> DataError { DataError(path: path, message: m) }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw fail("file not found (set data.path in the job or with --set data.path=FILE)")
        }
        if isDir.boolValue { throw fail("is a directory; data.path must be a file or a glob of files") }
        let fd = Glibc.open(path, O_RDONLY)
        guard fd >= 0 else { throw fail("cannot open the file: \(String(cString: strerror(errno))) (permissions?)") }
        do {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw fail("cannot stat the file: \(String(cString: strerror(errno)))") }
            let size = Int(st.st_size)
            if size == 0 { throw fail("the file is empty") }
            // Batches read windows at random offsets: reading ahead of them only fills the page cache.
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM)
            let close = { _ = Glibc.close(fd) }
            if format == .text {
                return TokenShard(path: path, width: 1, count: size, storage: .file(fd: fd, offset: 0), release: close)
            }
            var header = [UInt8](repeating: 0, count: min(size, headerBytes))
            guard pread(fd, &header, header.count, 0) == header.count else { throw fail("cannot read the header") }
            let (width, count) = try header.withUnsafeBytes { try binLayout($0.baseAddress!, size: size, fail: fail) }
            return TokenShard(
                path: path, width: width, count: count, storage: .file(fd: fd, offset: headerBytes), release: close)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// The id width and token count an llm.c header promises, checked against the file size.
    static func binLayout(_ raw: UnsafeRawPointer, size: Int, fail: (String) -> DataError) throws -> (Int, Int) {
        guard size >= headerBytes else {
            throw fail(
                "too short for an llm.c .bin header (\(size) bytes < \(headerBytes)); is it a text file? set "
                    + "data.format=text")
        }
        let header = (0..<3).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        let width: Int
        switch (header[0], header[1]) {
        case (magic16, 1): width = 2
        case (magic32, 7): width = 4
        case (magic16, _), (magic32, _):
            throw fail(
                "unsupported .bin version \(header[1]) for magic \(header[0]); llm.c writes version 1 (uint16, "
                    + "magic \(magic16)) and version 7 (uint32, magic \(magic32))")
        default:
            throw fail(
                "bad .bin header: magic \(header[0]), expected \(magic16) or \(magic32) (llm.c format); for plain "
                    + "text set data.format=text")
        }
        let n = Int(header[2])
        guard n >= 0, size == headerBytes + width * n else {
            throw fail(
                "header says \(n) tokens of \(width) bytes (\(headerBytes + width * max(n, 0)) bytes) but the file "
                    + "has \(size) bytes; the file is truncated or corrupt")
        }
        if n == 0 { throw fail("the .bin file holds no tokens") }
        return (width, n)
    }
}
