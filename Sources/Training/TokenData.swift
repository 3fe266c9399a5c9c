// Token sources: a text file (each byte is a token, vocab 256) or an llm.c .bin file
// (a 256 x int32 header: magic 20240520, version 1, token count; then uint16 tokens).
// Nothing read from disk is trusted: sizes, header and token ids are checked.
import Foundation
import Tensor

/// A problem with the data file, naming it and saying what to do.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
    public var description: String { "data.path \(path): \(message)" }
}

/// The tokens of one file, with the split into training head and held-out tail.
public struct TokenData: Sendable {
    public let path: String
    public let format: String
    public let tokens: [UInt16]

    public static let binMagic: Int32 = 20240520
    public static let binHeaderBytes = 256 * 4

    /// "text" or "bin": what `format` "auto" means for `path` (a .bin suffix is llm.c's format).
    public static func resolvedFormat(path: String, format: String) -> String {
        format == "auto" ? (path.hasSuffix(".bin") ? "bin" : "text") : format
    }

    /// Reads `path` as `format` ("auto", "text" or "bin") and checks every token id < vocabSize.
    public static func load(path: String, format: String, vocabSize: Int) throws -> TokenData {
        func fail(_ m: String) -> DataError { DataError(path: path, message: m) }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw fail("file not found (set data.path in the job or with --set data.path=FILE)")
        }
        if isDir.boolValue { throw fail("is a directory; data.path must be a file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw fail("cannot read the file (permissions?)")
        }
        if data.isEmpty { throw fail("the file is empty") }
        let fmt = resolvedFormat(path: path, format: format)
        if fmt == "text" {
            if vocabSize < 256 {
                throw fail("text data has byte tokens 0...255 but model.vocabSize is \(vocabSize); set it to 256")
            }
            return TokenData(path: path, format: fmt, tokens: data.map { UInt16($0) })
        }
        return TokenData(path: path, format: fmt, tokens: try binTokens(data, vocabSize: vocabSize, fail: fail))
    }

    /// The tokens of an llm.c .bin file's bytes, header and every id checked.
    static func binTokens(_ data: Data, vocabSize: Int, fail: (String) -> DataError) throws -> [UInt16] {
        guard data.count >= binHeaderBytes else {
            throw fail(
                "too short for an llm.c .bin header (\(data.count) bytes < \(binHeaderBytes)); is it a text "
                    + "file? set data.format=text"
            )
        }
        let header: [Int32] = data.prefix(12).withUnsafeBytes { raw in
            (0..<3).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        }
        guard header[0] == binMagic else {
            throw fail(
                "bad .bin header: magic \(header[0]), expected \(binMagic) (llm.c format); for plain text set "
                    + "data.format=text"
            )
        }
        guard header[1] == 1 else {
            throw fail("unsupported .bin version \(header[1]); only version 1 (uint16 tokens) is read")
        }
        let n = Int(header[2])
        guard n >= 0, data.count == binHeaderBytes + 2 * n else {
            throw fail(
                "header says \(n) tokens (\(binHeaderBytes + 2 * max(n, 0)) bytes) but the file "
                    + "has \(data.count) bytes; the file is truncated or corrupt"
            )
        }
        if n == 0 { throw fail("the .bin file holds no tokens") }
        let tokens = data.withUnsafeBytes { raw in
            (0..<n).map {
                UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: binHeaderBytes + 2 * $0, as: UInt16.self))
            }
        }
        if let i = tokens.firstIndex(where: { Int($0) >= vocabSize }) {
            throw fail("token \(tokens[i]) at index \(i) is >= model.vocabSize (\(vocabSize)); raise model.vocabSize")
        }
        return tokens
    }

    public init(path: String, format: String, tokens: [UInt16]) {
        self.path = path; self.format = format; self.tokens = tokens
    }

    /// Writes tokens in llm.c's .bin format (tests and tools).
    public static func writeBin(_ tokens: [UInt16], to path: String) throws {
        var header = [Int32](repeating: 0, count: 256)
        header[0] = binMagic; header[1] = 1; header[2] = Int32(tokens.count)
        var bytes = Data()
        header.withUnsafeBytes { bytes.append(contentsOf: $0) }
        tokens.withUnsafeBytes { bytes.append(contentsOf: $0) }
        try bytes.write(to: URL(fileURLWithPath: path))
    }
}

/// Draws batches as a pure function of (seed, step, sample index), and fixed eval windows.
/// The tail `valFraction` of the tokens is never drawn for training.
public struct BatchSampler: Sendable {
    public let data: TokenData
    public let seqLen: Int
    public let seed: UInt64
    /// Tokens [0, trainEnd) are for training; [trainEnd, count) are held out.
    public let trainEnd: Int

    public init(data: TokenData, seqLen: Int, seed: Int, valFraction: Double, needsEval: Bool) throws {
        let n = data.tokens.count
        let held = Int(Double(n) * valFraction)
        self.data = data
        self.seqLen = seqLen
        self.seed = UInt64(seed)
        self.trainEnd = n - held
        if trainEnd < seqLen + 1 {
            throw DataError(
                path: data.path,
                message:
                    "\(n) tokens\(held > 0 ? " (\(trainEnd) after holding out data.valFraction)" : "") is shorter "
                    + "than one training sequence (model.seqLen + 1 = \(seqLen + 1)); use more data or a smaller "
                    + "model.seqLen"
            )
        }
        if needsEval && held < seqLen + 1 {
            throw DataError(
                path: data.path,
                message:
                    "the held-out tail (data.valFraction = \(valFraction)) has \(held) tokens, fewer than "
                    + "model.seqLen + 1 = \(seqLen + 1); raise data.valFraction or set train.evalEvery=0"
            )
        }
    }

    /// Start of sample `index` of global step `step`: uniform over the training head.
    public func offset(step: Int, index: Int) -> Int {
        CounterRNG.below(trainEnd - seqLen, CounterRNG.hash(seed, 0x4441_5441, UInt64(step), UInt64(index)))
    }

    /// Inputs and next-token targets [count, T] for samples first..<first+count of `step`.
    public func batch(step: Int, first: Int, count: Int) -> (inputs: [Int32], targets: [Int32]) {
        var x = [Int32](), y = [Int32]()
        x.reserveCapacity(count * seqLen); y.reserveCapacity(count * seqLen)
        for i in first..<(first + count) {
            let o = offset(step: step, index: i)
            for t in 0..<seqLen {
                x.append(Int32(data.tokens[o + t]))
                y.append(Int32(data.tokens[o + t + 1]))
            }
        }
        return (x, y)
    }

    /// Start of eval window i of n: trainEnd + i * (heldOut - T - 1) / n (integer division).
    public func evalWindowStart(_ i: Int, of n: Int) -> Int {
        let held = data.tokens.count - trainEnd
        return trainEnd + i * (held - seqLen - 1) / n
    }

    /// Inputs and targets of eval windows first..<first+count of n.
    public func evalBatch(first: Int, count: Int, of n: Int) -> (inputs: [Int32], targets: [Int32]) {
        var x = [Int32](), y = [Int32]()
        for i in first..<(first + count) {
            let o = evalWindowStart(i, of: n)
            for t in 0..<seqLen {
                x.append(Int32(data.tokens[o + t]))
                y.append(Int32(data.tokens[o + t + 1]))
            }
        }
        return (x, y)
    }
}

extension BatchSampler {
    /// The sampler a job trains with: its sequence length, seed and held-out tail.
    public init(job: Job, data: TokenData) throws {
        try self.init(
            data: data, seqLen: job.model.seqLen, seed: job.seed, valFraction: job.data.valFraction,
            needsEval: job.train.evalEvery > 0)
    }
}
