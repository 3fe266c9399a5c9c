// Token sources: `data.path` names a file or a glob of shard files (llm.c's
// `fineweb_train_*.bin`), read as one stream in the glob's sorted order. Each file stays open and
// is read a window at a time (TokenShard), so a 20 GB corpus costs a rank only its windows, and
// the ranks of a node share the page cache. Nothing read from disk is trusted: headers and sizes
// are checked when a file opens, every id against model.vocabSize when a window is read.
import Foundation
import Tensor

/// A problem with the data, naming the file and saying what to do.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String
    public let key: String
    public init(path: String, message: String, key: String = "data.path") {
        self.path = path; self.message = message; self.key = key
    }
    public var description: String { "\(key) \(path): \(message)" }
}

/// The tokens of one or more files, read as one stream.
public final class TokenData: @unchecked Sendable {
    /// The file or glob as the job gave it.
    public let path: String
    /// "text" (a byte per token) or "bin" (llm.c).
    public let format: String
    /// Tokens in all files.
    public let count: Int
    /// Ids at or above this are refused when read.
    public let vocabSize: Int
    /// Held-out tokens for eval (data.valPath); nil: the sampler holds out this stream's tail.
    public let validation: TokenData?
    /// The job key that named the files (data.path or data.valPath), for errors.
    public let key: String
    let shards: [TokenShard]
    /// starts[i]: the stream index of shard i's first token; starts.last == count.
    let starts: [Int]

    init(
        path: String, format: String, shards: [TokenShard], vocabSize: Int, validation: TokenData? = nil,
        key: String = "data.path"
    ) {
        self.path = path; self.format = format; self.shards = shards; self.vocabSize = vocabSize
        self.validation = validation; self.key = key
        var s = [0]
        for shard in shards { s.append(s.last! + shard.count) }
        starts = s
        count = s.last!
    }

    /// An in-memory stream (tests and tools): bytes for "text", uint16 ids for "bin".
    public convenience init(path: String, format: String, tokens: [UInt16], validation: TokenData? = nil) {
        let width = format == "text" ? 1 : 2
        let shard = TokenShard.owning(tokens.map(UInt32.init), width: width, path: path)
        self.init(path: path, format: format, shards: [shard], vocabSize: 1 << 31, validation: validation)
    }

    /// An in-memory stream of token ids (text a tokenizer encoded), checked against `vocabSize`.
    public convenience init(path: String, ids: [Int], vocabSize: Int) {
        let shard = TokenShard.owning(ids.map { UInt32(truncatingIfNeeded: $0) }, width: 4, path: path)
        self.init(path: path, format: "text", shards: [shard], vocabSize: vocabSize, key: "--data")
    }

    /// The files read, in order.
    public var files: [String] { shards.map(\.path) }

    /// "text" or "bin": what `format` "auto" means for `path` (a .bin suffix is llm.c's format).
    public static func resolvedFormat(path: String, format: String) -> String {
        format == "auto" ? (path.hasSuffix(".bin") ? "bin" : "text") : format
    }

    /// Opens `path` (a file or a glob) as `format` ("auto", "text" or "bin") for a model of
    /// `vocabSize`, and `valPath` (if not empty) as its held-out stream.
    public static func load(path: String, format: String, vocabSize: Int, valPath: String = "") throws -> TokenData {
        let validation =
            valPath.isEmpty
            ? nil : try open(path: valPath, format: format, vocabSize: vocabSize, key: "data.valPath")
        return try open(path: path, format: format, vocabSize: vocabSize, key: "data.path", validation: validation)
    }

    public static func open(
        path: String, format: String, vocabSize: Int, key: String = "data.path", validation: TokenData? = nil
    ) throws -> TokenData {
        let files = try expand(path, key: key)
        let formats = Set(files.map { resolvedFormat(path: $0, format: format) })
        guard formats.count == 1, let fmt = formats.first, let kind = TokenFileFormat(rawValue: fmt) else {
            throw DataError(
                path: path, message: "matches both .bin and text files; name one kind or set data.format", key: key)
        }
        if kind == .text && vocabSize < 256 {
            throw DataError(
                path: path,
                message: "text data has byte tokens 0...255 but model.vocabSize is \(vocabSize); set it to 256",
                key: key)
        }
        let shards = try files.map { file in
            do { return try TokenShard.open(path: file, format: kind) } catch let e as DataError {
                throw DataError(path: e.path, message: e.message, key: key)
            }
        }
        return TokenData(
            path: path, format: fmt, shards: shards, vocabSize: vocabSize, validation: validation, key: key)
    }

    /// The files `path` names: itself, or a glob's matches in sorted order.
    static func expand(_ path: String, key: String) throws -> [String] {
        guard path.contains(where: { "*?[".contains($0) }) else { return [path] }
        var g = glob_t()
        defer { globfree(&g) }
        let rc = glob(path, 0, nil, &g)
        guard rc == 0, g.gl_pathc > 0 else {
            throw DataError(
                path: path, message: "no file matches the glob (check the folder and the pattern)", key: key)
        }
        return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }
    }

    /// Appends tokens [start, start + n) of the stream to `out` as Int32, checking every id.
    public func read(_ start: Int, count n: Int, into out: inout [Int32]) throws {
        precondition(start >= 0 && n >= 0 && start + n <= count, "read \(start)..<\(start + n) of \(count) tokens")
        var i = start, left = n
        var s = shardIndex(containing: start)
        let limit = UInt32(min(vocabSize, Int(UInt32.max)))
        while left > 0 {
            let shard = shards[s], local = i - starts[s], take = min(left, shard.count - local)
            let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, take * shard.width), alignment: 8)
            defer { raw.deallocate() }
            try shard.copyBytes(local, take, into: raw)
            for k in 0..<take {
                let id = shard.id(k, in: raw)
                if id >= limit { throw badToken(id, at: local + k, of: shard) }
                out.append(Int32(bitPattern: id))
            }
            i += take; left -= take; s += 1
        }
    }

    /// Tokens [start, start + n) as Int32 (tests and tools).
    public func ids(_ start: Int = 0, count n: Int? = nil) throws -> [Int32] {
        var out: [Int32] = []
        try read(start, count: n ?? (count - start), into: &out)
        return out
    }

    func shardIndex(containing i: Int) -> Int {
        var lo = 0, hi = shards.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if starts[mid] <= i { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    func badToken(_ id: UInt32, at k: Int, of shard: TokenShard) -> DataError {
        DataError(
            path: shard.path,
            message: "token \(id) at index \(k) is >= model.vocabSize (\(vocabSize)); raise model.vocabSize or "
                + "check that the file was made with this model's tokenizer", key: key)
    }
}
