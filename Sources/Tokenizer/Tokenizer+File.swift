// Reading Hugging Face's tokenizer.json: a byte-level BPE model, its pre-tokenizer (GPT-2's
// ByteLevel with its regex, or a Split by the Llama 3 / Qwen 2 pattern then ByteLevel), an
// optional NFC normalizer, and added tokens. Anything else is refused naming the field, since
// encoding it differently from `tokenizers` would silently feed a model other ids.
import Foundation
import JSON

extension Tokenizer {
    /// Loads `path` (a tokenizer.json, or a folder holding one).
    public static func load(path given: String) throws -> Tokenizer {
        var isDir: ObjCBool = false
        let path =
            FileManager.default.fileExists(atPath: given, isDirectory: &isDir) && isDir.boolValue
            ? given + "/tokenizer.json" : given
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError(path, "cannot read the file (missing? a tokenizer.json is expected)")
        }
        let root: JSONValue
        do { root = try JSONValue.parse(bytes: Array(data)) } catch {
            throw TokenizerError(path, "not JSON: \(error)")
        }
        return try parse(root, path: path)
    }

    static func parse(_ root: JSONValue, path: String) throws -> Tokenizer {
        func fail(_ field: String, _ m: String) -> TokenizerError { TokenizerError(path, "\(field): \(m)") }
        guard case .object = root, let model = root["model"], case .object = model else {
            throw fail("model", "missing; expected a BPE model object")
        }
        guard model["type"]?.stringValue ?? "BPE" == "BPE" else {
            throw fail("model.type", "\(model["type"]!.compact) is not supported (BPE is)")
        }
        let (pattern, prefix) = try preTokenizer(root["pre_tokenizer"] ?? .null, fail: fail)
        let nfc = try normalizer(root["normalizer"] ?? .null, fail: fail)
        try checkDecoder(root["decoder"] ?? .null, fail: fail)
        let (vocab, bpe) = try bpeModel(model, fail: fail)
        let added = try addedTokens(root["added_tokens"] ?? .array([]), fail: fail)
        return Tokenizer(
            path: path, model: bpe, pattern: pattern, nfc: nfc, addPrefixSpace: prefix, added: added, tokens: vocab)
    }

    typealias Fail = (String, String) -> TokenizerError

    static func preTokenizer(_ p: JSONValue, fail: Fail) throws -> (SplitPattern, Bool) {
        let type = p["type"]?.stringValue ?? "null"
        if type == "ByteLevel" {
            return (p["use_regex"]?.boolValue ?? true ? .gpt2 : .whole, p["add_prefix_space"]?.boolValue ?? false)
        }
        guard type == "Sequence", let parts = p["pretokenizers"]?.arrayValue, parts.count == 2,
            parts[0]["type"]?.stringValue == "Split", parts[1]["type"]?.stringValue == "ByteLevel"
        else {
            throw fail(
                "pre_tokenizer",
                "type \(type) is not supported; byte-level BPEs (ByteLevel, or Sequence of a Split "
                    + "and a ByteLevel) are")
        }
        let split = parts[0]
        guard let regex = split["pattern"]?["Regex"]?.stringValue, let pattern = SplitPattern(regex: regex) else {
            throw fail(
                "pre_tokenizer.pretokenizers[0].pattern",
                "this split pattern is not one Switchyard runs (GPT-2, Llama 3, Qwen 2): "
                    + (split["pattern"]?.compact ?? "null"))
        }
        guard split["behavior"]?.stringValue == "Isolated", split["invert"]?.boolValue != true,
            parts[1]["use_regex"]?.boolValue == false
        else {
            throw fail(
                "pre_tokenizer",
                "only an Isolated, non-inverted Split followed by ByteLevel(use_regex false) is supported")
        }
        return (pattern, parts[1]["add_prefix_space"]?.boolValue ?? false)
    }

    static func normalizer(_ n: JSONValue, fail: Fail) throws -> Bool {
        switch n["type"]?.stringValue ?? "null" {
        case "null": return false
        case "NFC": return true
        case let t: throw fail("normalizer", "type \(t) is not supported (none or NFC are)")
        }
    }

    static func checkDecoder(_ d: JSONValue, fail: Fail) throws {
        let t = d["type"]?.stringValue ?? "null"
        guard t == "null" || t == "ByteLevel" else {
            throw fail("decoder", "type \(t) is not supported (ByteLevel is)")
        }
    }
}
