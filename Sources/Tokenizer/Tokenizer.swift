// A byte-level BPE tokenizer as Hugging Face's `tokenizers` runs one from tokenizer.json:
// added tokens are cut out of the text first (longest match at each place), the rest is
// normalized (NFC where the file asks), split by the pre-tokenizer's pattern, and each piece's
// UTF-8 bytes are encoded by the BPE. Decoding concatenates the tokens' bytes, so
// decode(encode(x)) == x for every string. encode never adds BOS/EOS (a post-processor's
// template): `data prepare` puts the end-of-text token before each document itself.

/// A problem with a tokenizer file or a use of it, naming the file and the field.
public struct TokenizerError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String
    public init(_ path: String, _ message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}

/// A token that is matched in the text before splitting (special tokens and the like).
public struct AddedToken: Sendable, Equatable {
    public let id: Int
    public let content: String
    public let special: Bool
    public init(id: Int, content: String, special: Bool) {
        self.id = id; self.content = content; self.special = special
    }
}

/// Encodes text to ids and back. Not safe for concurrent use (it caches pieces).
public final class Tokenizer {
    public let path: String
    let model: BPEModel
    let pre: PreTokenizer
    let nfc: Bool
    let addPrefixSpace: Bool
    public let addedTokens: [AddedToken]
    /// tokenBytes[id]: the bytes token `id` stands for (empty for ids no token has).
    let tokenBytes: [[UInt8]]
    /// Added tokens by first byte, longest first.
    let addedByFirstByte: [UInt8: [(bytes: [UInt8], id: Int)]]
    var cache: [[UInt8]: [Int]] = [:]

    /// One more than the largest id of the vocabulary and the added tokens.
    public var vocabSize: Int { tokenBytes.count }
    /// The split pattern of the pre-tokenizer.
    public var pattern: SplitPattern { pre.pattern }

    init(
        path: String, model: BPEModel, pattern: SplitPattern, nfc: Bool, addPrefixSpace: Bool,
        added: [AddedToken], tokens: [Int: String]
    ) {
        self.path = path; self.model = model; pre = PreTokenizer(pattern: pattern)
        self.nfc = nfc; self.addPrefixSpace = addPrefixSpace; addedTokens = added
        let top = max(tokens.keys.max() ?? -1, added.map(\.id).max() ?? -1)
        var bytes = [[UInt8]](repeating: [], count: top + 1)
        for (id, text) in tokens { bytes[id] = ByteLevel.decode(text) ?? Array(text.utf8) }
        for a in added { bytes[a.id] = ByteLevel.decode(a.content) ?? Array(a.content.utf8) }
        tokenBytes = bytes
        var first: [UInt8: [(bytes: [UInt8], id: Int)]] = [:]
        for a in added where !a.content.isEmpty {
            first[a.content.utf8.first!, default: []].append((Array(a.content.utf8), a.id))
        }
        addedByFirstByte = first.mapValues { $0.sorted { $0.bytes.count > $1.bytes.count } }
    }

    /// The id of an added token or a vocabulary entry spelled `text` (e.g. "<|endoftext|>").
    public func id(of text: String) -> Int? {
        if let a = addedTokens.first(where: { $0.content == text }) { return a.id }
        return model.idOf[ByteLevel.decode(text) ?? Array(text.utf8)].flatMap {
            tokenBytes.indices.contains($0) ? $0 : nil
        }
    }

    /// The ids of `text`.
    public func encode(_ text: String) throws -> [Int] {
        var out: [Int] = []
        let bytes = Array(text.utf8)
        var start = 0, i = 0
        while i < bytes.count {
            if let candidates = addedByFirstByte[bytes[i]],
                let hit = candidates.first(where: { matches($0.bytes, bytes, at: i) })
            {
                try encodeOrdinary(bytes[start..<i], into: &out)
                out.append(hit.id)
                i += hit.bytes.count; start = i
            } else {
                i += 1
            }
        }
        try encodeOrdinary(bytes[start..<bytes.count], into: &out)
        return out
    }

    func matches(_ needle: [UInt8], _ hay: [UInt8], at i: Int) -> Bool {
        guard i + needle.count <= hay.count else { return false }
        for k in 0..<needle.count where hay[i + k] != needle[k] { return false }
        return true
    }

    /// Encodes text that holds no added token: normalize, split, BPE each piece.
    func encodeOrdinary(_ slice: ArraySlice<UInt8>, into out: inout [Int]) throws {
        if slice.isEmpty { return }
        var bytes = Array(slice)
        if nfc { bytes = Array(Normalization.nfc(String(decoding: bytes, as: UTF8.self)).utf8) }
        if addPrefixSpace && bytes.first != 0x20 { bytes.insert(0x20, at: 0) }
        try pre.forEachPiece(bytes) { slice in
            let piece = Array(slice)
            if let ids = cache[piece] {
                out.append(contentsOf: ids)
                return
            }
            guard let ids = model.encode(slice) else {
                throw TokenizerError(
                    path, "the vocabulary has no token for a byte of '\(String(decoding: piece, as: UTF8.self))'")
            }
            if cache.count > 1 << 20 { cache.removeAll(keepingCapacity: true) }
            if piece.count <= 256 { cache[piece] = ids }
            out.append(contentsOf: ids)
        }
    }

    /// The bytes of `ids` (ids no token has are skipped).
    public func decodeBytes(_ ids: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        for id in ids where id >= 0 && id < tokenBytes.count { out.append(contentsOf: tokenBytes[id]) }
        return out
    }

    /// The text of `ids`; bytes that are not UTF-8 become U+FFFD, as in `tokenizers`.
    public func decode(_ ids: [Int]) -> String { String(decoding: decodeBytes(ids), as: UTF8.self) }
}
