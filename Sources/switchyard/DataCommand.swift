// `switchyard data prepare`: text files (a document each) or JSON lines (a document a line)
// through a tokenizer into llm.c .bin files, each document preceded by the end-of-text token
// (llm.c's fineweb.py does the same), uint16 ids or uint32 above 65,536. Files are written as
// NAME.partial and renamed when complete, so an interrupted run leaves no file that passes
// for a shorter corpus.
import Foundation
import JSON
import Tokenizer
import Training

enum DataCommand {
    static let spec = CommandSpec(
        name: "data",
        summary: "Tokenize text into llm.c .bin files for data.path.",
        positionals: [
            ("ACTION", "prepare"),
            ("IN", "text files (each one document) or .jsonl files (one JSON object per line, a document each)")
        ],
        options: [
            OptionSpec(.tokenizer, value: "FILE", required: true, "the tokenizer.json (or its folder)"),
            OptionSpec(
                .out, value: "PATH", required: true,
                "the .bin to write (with --shard-tokens: PATH's stem + _NNNNNN.bin)"),
            OptionSpec(.eot, value: "TOKEN", "the token before each document (default <|endoftext|>)"),
            OptionSpec(.textKey, value: "KEY", "the member of each JSON line that holds the text (default text)"),
            OptionSpec(.shardTokens, value: "N", "start a new file every N tokens (llm.c's fineweb shards: 100000000)")
        ],
        details: """
            Writes data.bin, or data_000000.bin, data_000001.bin, ... with --shard-tokens (train on
            them with data.path="data_*.bin"). One file holds at most 2147483647 tokens (its header's
            count is an int32). Existing outputs are never overwritten.

            Exit codes: 0 success, 1 failure (unreadable input, a bad JSON line, unknown token), 64 usage error.

            """,
        variadic: true
    ) { try run($0) }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        guard args.positionals[0] == "prepare" else {
            throw args.usageError("unknown action '\(args.positionals[0])' (prepare)")
        }
        let tok = try Tokenizer.load(path: args.required(.tokenizer))
        let eotName = args.value(.eot) ?? "<|endoftext|>"
        guard let eot = tok.id(of: eotName) else {
            throw TokenizerError(tok.path, "has no token '\(eotName)' to put before each document; name one with --eot")
        }
        var out = try ShardedOutput(
            path: args.required(.out), vocabSize: tok.vocabSize, shardTokens: try args.positiveInt(.shardTokens))
        let key = args.value(.textKey) ?? "text"
        let t0 = Date()
        var documents = 0, bytes = 0
        let files: [String]
        do {
            for input in args.positionals.dropFirst() {
                try forEachDocument(input, key: key) { text in
                    try out.append([eot] + tok.encode(text))
                    documents += 1; bytes += text.utf8.count
                }
                FileHandle.standardError.write(Data("data prepare: \(input) done, \(out.tokens) tokens so far\n".utf8))
            }
            files = try out.finish()
        } catch {
            out.abandon()
            throw error
        }
        let s = Date().timeIntervalSince(t0)
        say(
            String(
                format: "data prepare: %d documents, %d bytes -> %d tokens (uint%d) in %.1f s (%.2f MB/s): %@",
                documents, bytes, out.tokens, out.width * 8, s, Double(bytes) / 1e6 / max(s, 1e-9),
                files.count == 1 ? files[0] : "\(files.count) files \(files[0]) ... \(files.last!)"))
        return 0
    }

    /// Calls `body` with each document of `path`: the whole file, or each line of a .jsonl.
    static func forEachDocument(_ path: String, key: String, _ body: (String) throws -> Void) throws {
        guard path.hasSuffix(".jsonl") else { return try body(try TokenizerCommand.readText(path, what: "text")) }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw DataError(path: path, message: "cannot read the file (missing or not readable)", key: "IN")
        }
        defer { try? handle.close() }
        var pending: [UInt8] = [], line = 0
        func document(_ raw: ArraySlice<UInt8>) throws {
            line += 1
            if raw.allSatisfy({ $0 == 32 || $0 == 13 || $0 == 9 }) { return }
            let value: JSONValue
            do { value = try JSONValue.parse(bytes: Array(raw)) } catch {
                throw DataError(path: path, message: "line \(line) is not JSON: \(error)", key: "IN")
            }
            guard let text = value[key]?.stringValue else {
                throw DataError(
                    path: path, message: "line \(line) has no string member '\(key)' (--text-key)", key: "IN")
            }
            try body(text)
        }
        while let chunk = try handle.read(upToCount: 1 << 22), !chunk.isEmpty {
            pending.append(contentsOf: chunk)
            var start = 0
            while let nl = pending[start...].firstIndex(of: 10) {
                try document(pending[start..<nl]); start = nl + 1
            }
            pending.removeFirst(start)
        }
        if !pending.isEmpty { try document(pending[...]) }
    }
}

/// .bin output cut into shards of at most `shardTokens` tokens.
struct ShardedOutput {
    let path: String
    let vocabSize: Int
    let shardTokens: Int?
    var writer: TokenBinWriter? = nil
    var written: [String] = []
    var tokens = 0
    var width: Int { TokenBinWriter.width(vocabSize: vocabSize) }

    init(path: String, vocabSize: Int, shardTokens: Int?) throws {
        self.path = path; self.vocabSize = vocabSize; self.shardTokens = shardTokens
        if shardTokens == nil, FileManager.default.fileExists(atPath: path) {
            throw DataError(
                path: path, message: "exists; remove it or choose another --out (never overwritten)", key: "--out")
        }
    }

    func shardName(_ i: Int) -> String {
        guard shardTokens != nil else { return path }
        let stem = path.hasSuffix(".bin") ? String(path.dropLast(4)) : path
        return stem + String(format: "_%06d.bin", i)
    }

    mutating func append(_ ids: [Int]) throws {
        var rest = ids[...]
        while !rest.isEmpty {
            if writer == nil { try open() }
            let room = (shardTokens ?? TokenBinWriter.maxTokens) - writer!.count
            let take = min(room, rest.count)
            try writer!.append(Array(rest.prefix(take)))
            rest = rest.dropFirst(take); tokens += take
            if shardTokens != nil && writer!.count == shardTokens! { try close() }
        }
    }

    mutating func open() throws {
        let name = shardName(written.count)
        if FileManager.default.fileExists(atPath: name) {
            throw DataError(
                path: name, message: "exists; remove it or choose another --out (never overwritten)", key: "--out")
        }
        writer = try TokenBinWriter(path: name + ".partial", vocabSize: vocabSize)
    }

    mutating func close() throws {
        guard let w = writer else { return }
        try w.finish()
        let name = shardName(written.count)
        try FileManager.default.moveItem(atPath: w.path, toPath: name)
        written.append(name); writer = nil
    }

    /// Removes the file being written (complete shards stay: each is a valid corpus on its own).
    func abandon() {
        if let w = writer { try? FileManager.default.removeItem(atPath: w.path) }
    }

    /// Closes the last file; the files written.
    mutating func finish() throws -> [String] {
        if writer == nil && written.isEmpty { try open() }
        try close()
        return written
    }
}
