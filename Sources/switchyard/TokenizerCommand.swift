// `switchyard tokenizer train|encode`: learn a byte-level BPE from text files and write it as
// Hugging Face's tokenizer.json, or encode files with any byte-level tokenizer.json.
import Foundation
import JSON
import Tokenizer

enum TokenizerCommand {
    static let spec = CommandSpec(
        name: "tokenizer",
        summary: "Train a byte-level BPE (tokenizer.json) or encode text with one.",
        positionals: [
            ("ACTION", "train | encode"),
            ("FILE", "train: text files to learn from; encode: the tokenizer.json (or its folder), then text files")
        ],
        options: [
            OptionSpec(.vocab, value: "N", "train: vocabulary size, bytes and special tokens included (default 8192)"),
            OptionSpec(.out, value: "PATH", "train: the tokenizer.json to write (never overwritten)"),
            OptionSpec(
                .special, value: "TOKEN", repeatable: true,
                "train: a special token, given the last ids (default <|endoftext|>)"),
            OptionSpec(.json, "encode: one JSON line per file, {\"file\": ..., \"ids\": [...]}, instead of a summary")
        ],
        details: """
            train learns GPT-2's kind of BPE: the 256 bytes, then merges of the most frequent adjacent
            pair within pieces split by GPT-2's pattern (a pair must occur twice), then the special
            tokens. The file loads in Hugging Face's tokenizers and transformers
            (PreTrainedTokenizerFast(tokenizer_file=...)).
            encode reads byte-level BPEs with GPT-2, Llama 3 or Qwen 2 split patterns (and NFC); it
            never adds BOS/EOS. It prints the token count and MB/s per file (stderr with --json).

            Exit codes: 0 success, 1 failure (unreadable file, unsupported tokenizer), 64 usage error.

            """,
        variadic: true
    ) { try run($0) }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        let action = args.positionals[0], files = Array(args.positionals.dropFirst())
        switch action {
        case "train": return try train(files, args)
        case "encode":
            guard files.count >= 2 else { throw args.usageError("encode needs the tokenizer.json, then text files") }
            return try encode(tokenizer: files[0], files: Array(files.dropFirst()), json: args.flag(.json))
        default: throw args.usageError("unknown action '\(action)' (train, encode)")
        }
    }

    static func readText(_ path: String, what: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError(path, "cannot read the \(what) (missing or not readable)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func train(_ files: [String], _ args: ParsedArgs) throws -> Int32 {
        guard let out = args.value(.out) else { throw args.usageError("train needs --out PATH") }
        let vocab = try args.positiveInt(.vocab) ?? 8192
        let special = args.all(.special).isEmpty ? ["<|endoftext|>"] : args.all(.special)
        guard vocab >= 256 + special.count else {
            throw args.usageError("--vocab must be at least 256 + \(special.count) (the bytes and special tokens)")
        }
        guard !FileManager.default.fileExists(atPath: out) else {
            throw TokenizerError(out, "exists; remove it or choose another --out (never overwritten)")
        }
        let t0 = Date()
        var trainer = BPETrainer(vocabSize: vocab, specialTokens: special)
        var bytes = 0
        for f in files {
            let text = try readText(f, what: "training text")
            bytes += text.utf8.count
            trainer.add(text)
        }
        let json = trainer.tokenizerJSON()
        let learned = json["model"]?["merges"]?.arrayValue?.count ?? 0
        try Data(json.pretty.utf8).write(to: URL(fileURLWithPath: out + ".partial"))
        try FileManager.default.moveItem(atPath: out + ".partial", toPath: out)
        say(
            String(
                format: "tokenizer: %d merges from %d bytes of %d file(s) in %.1f s: vocabulary %d -> %@",
                learned, bytes, files.count, Date().timeIntervalSince(t0), 256 + learned + special.count, out))
        if 256 + learned + special.count < vocab {
            say("tokenizer: no pair occurs twice any more; the vocabulary is smaller than --vocab \(vocab)")
        }
        return 0
    }

    static func encode(tokenizer path: String, files: [String], json: Bool) throws -> Int32 {
        let tok = try Tokenizer.load(path: path)
        for f in files {
            let text = try readText(f, what: "text")
            let t0 = Date()
            let ids = try tok.encode(text)
            let s = Date().timeIntervalSince(t0), mb = Double(text.utf8.count) / 1e6
            let line = String(
                format: "%@: %d bytes -> %d tokens in %.3f s (%.2f MB/s, one thread)", f as NSString,
                text.utf8.count, ids.count, s, mb / max(s, 1e-9))
            if json {
                say((["file": .string(f), "ids": .array(ids.map { .integer($0) })] as JSONValue).compact)
                FileHandle.standardError.write(Data((line + "\n").utf8))
            } else {
                say(line)
            }
        }
        return 0
    }
}
