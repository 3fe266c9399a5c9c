// Writing llm.c .bin files: version 1 (uint16 ids) for vocabularies up to 65,536 ids,
// version 7 (uint32 ids, llm.c's Llama 3 variant) above. The writer streams: the header's count
// is written last, so a file cut short by a crash says so when it is opened (its count is 0
// or disagrees with its size) instead of passing for a shorter corpus.
import Foundation

/// Appends token ids to one llm.c .bin file.
public final class TokenBinWriter {
    public let path: String
    /// Bytes per id: 2 or 4.
    public let width: Int
    public private(set) var count = 0
    private let handle: FileHandle
    private var buffer: [UInt8] = []

    /// The id width llm.c uses for a vocabulary of `vocabSize` ids.
    public static func width(vocabSize: Int) -> Int { vocabSize <= 65_536 ? 2 : 4 }

    /// Creates (or truncates) `path` with a header whose count is still 0.
    public init(path: String, vocabSize: Int) throws {
        self.path = path
        width = TokenBinWriter.width(vocabSize: vocabSize)
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path)
        else {
            throw DataError(
                path: path, message: "cannot create the file (folder missing or not writable?)", key: "--out")
        }
        handle = h
        try handle.write(contentsOf: header(count: 0))
    }

    func header(count: Int) -> Data {
        var h = [Int32](repeating: 0, count: 256)
        h[0] = width == 2 ? TokenShard.magic16 : TokenShard.magic32
        h[1] = width == 2 ? 1 : 7
        h[2] = Int32(count)
        return h.withUnsafeBytes { Data($0) }
    }

    /// The most ids one file's int32 header can count.
    public static let maxTokens = Int(Int32.max)

    /// Appends ids (each < 2^(8 * width); the caller's tokenizer guarantees it).
    public func append(_ ids: [Int]) throws {
        guard count + ids.count <= TokenBinWriter.maxTokens else {
            throw DataError(
                path: path,
                message: "more than \(TokenBinWriter.maxTokens) tokens do not fit one .bin header; "
                    + "write shards (--shard-tokens N)", key: "--out")
        }
        for id in ids {
            let v = UInt32(id)
            buffer.append(UInt8(v & 0xff)); buffer.append(UInt8((v >> 8) & 0xff))
            if width == 4 { buffer.append(UInt8((v >> 16) & 0xff)); buffer.append(UInt8(v >> 24)) }
        }
        count += ids.count
        if buffer.count >= 1 << 22 { try flush() }
    }

    /// Writes the buffered ids (the header still counts 0 until `finish`).
    public func flush() throws {
        try handle.write(contentsOf: buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes what is buffered, then the header's count, and closes the file.
    public func finish() throws {
        try flush()
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: header(count: count))
        try handle.synchronize()
        try handle.close()
    }
}

extension TokenData {
    /// Writes tokens as one llm.c .bin file (tests and tools): uint16 ids, or uint32 when
    /// `vocabSize` is over 65,536.
    public static func writeBin(_ tokens: [Int], vocabSize: Int = 65_536, to path: String) throws {
        let w = try TokenBinWriter(path: path, vocabSize: vocabSize)
        try w.append(tokens)
        try w.finish()
    }

    public static func writeBin(_ tokens: [UInt16], to path: String) throws {
        try writeBin(tokens.map(Int.init), to: path)
    }
}
