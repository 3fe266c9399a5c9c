// The BPE model and the added tokens of a tokenizer.json, each entry checked: ids are
// non-negative integers, every merge names two tokens of the vocabulary whose concatenation is
// one too, and merges come as "a b" strings (tokenizers < 0.20) or ["a", "b"] pairs.
import JSON

extension Tokenizer {
    static func bpeModel(_ m: JSONValue, fail: Fail) throws -> ([Int: String], BPEModel) {
        if let p = m["continuing_subword_prefix"]?.stringValue {
            throw fail("model.continuing_subword_prefix", "'\(p)' is not supported")
        }
        if let s = m["end_of_word_suffix"]?.stringValue {
            throw fail("model.end_of_word_suffix", "'\(s)' is not supported")
        }
        if m["byte_fallback"]?.boolValue == true {
            throw fail("model.byte_fallback", "true is not supported (byte-level BPEs need none)")
        }
        if let d = m["dropout"]?.doubleValue, d > 0 {
            throw fail("model.dropout", "\(d) is not supported at encode time")
        }
        guard case .object(let entries) = m["vocab"] ?? .null, !entries.isEmpty else {
            throw fail("model.vocab", "missing or empty; expected an object of token: id")
        }
        var vocab: [String: Int] = [:], byId: [Int: String] = [:]
        for (token, value) in entries {
            guard let id = value.intValue, id >= 0, id < 1 << 24 else {
                throw fail("model.vocab[\"\(token)\"]", "id \(value.compact) is not an integer in 0..<16777216")
            }
            if let other = byId[id] { throw fail("model.vocab", "id \(id) is given to both '\(other)' and '\(token)'") }
            vocab[token] = id; byId[id] = token
        }
        let merges = try (m["merges"]?.arrayValue ?? []).enumerated().map { i, v in
            try merge(v, at: i, vocab: vocab, fail: fail)
        }
        var idOf: [[UInt8]: Int] = [:]
        for (token, id) in vocab { idOf[ByteLevel.decode(token) ?? Array(token.utf8)] = id }
        return (byId, BPEModel(idOf: idOf, merges: merges, ignoreMerges: m["ignore_merges"]?.boolValue ?? false))
    }

    static func merge(_ v: JSONValue, at i: Int, vocab: [String: Int], fail: Fail) throws -> (Int, Int, Int) {
        let parts: [String]
        if let s = v.stringValue {
            parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        } else {
            parts = v.arrayValue?.compactMap(\.stringValue) ?? []
        }
        guard parts.count == 2 else {
            throw fail("model.merges[\(i)]", "\(v.compact) is not a pair (\"a b\" or [\"a\", \"b\"])")
        }
        guard let a = vocab[parts[0]], let b = vocab[parts[1]], let ab = vocab[parts[0] + parts[1]] else {
            throw fail("model.merges[\(i)]", "\(v.compact) names a token (or a merged token) not in model.vocab")
        }
        return (a, b, ab)
    }

    static func addedTokens(_ list: JSONValue, fail: Fail) throws -> [AddedToken] {
        guard let items = list.arrayValue else { throw fail("added_tokens", "is \(list.typeName), expected an array") }
        return try items.enumerated().map { i, t in
            guard let id = t["id"]?.intValue, id >= 0, id < 1 << 24, let content = t["content"]?.stringValue,
                !content.isEmpty
            else {
                throw fail("added_tokens[\(i)]", "needs an integer id in 0..<16777216 and a non-empty content")
            }
            for flag in ["lstrip", "rstrip", "single_word"] where t[flag]?.boolValue == true {
                throw fail("added_tokens[\(i)].\(flag)", "true is not supported ('\(content)')")
            }
            return AddedToken(id: id, content: content, special: t["special"]?.boolValue ?? false)
        }
    }
}
