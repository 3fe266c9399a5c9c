// Training a byte-level BPE: count the pieces of the text (GPT-2's split pattern, special
// tokens cut out first), start from the 256 bytes, and merge the most frequent adjacent pair
// until the vocabulary is full or no pair occurs twice. Pair counts are kept incrementally:
// a merge revisits only the pieces that hold the pair, and a max-heap with lazy deletion finds
// the next pair (ties: the smaller (left id, right id) first, so training is deterministic).
// Ids: bytes 0...255 in byte order, merges in the order learned, then the special tokens.
import JSON

/// Learns merges from piece counts.
public struct BPETrainer {
    public let vocabSize: Int
    public let specialTokens: [String]
    let pre = PreTokenizer(pattern: .gpt2)
    var counts: [[UInt8]: Int] = [:]

    public init(vocabSize: Int, specialTokens: [String] = ["<|endoftext|>"]) {
        self.vocabSize = vocabSize; self.specialTokens = specialTokens
    }

    /// Counts the pieces of `text` (special tokens in it are not learned from).
    public mutating func add(_ text: String) {
        var parts = [Substring(text)]
        for s in specialTokens { parts = parts.flatMap { $0.split(separator: s, omittingEmptySubsequences: true) } }
        for p in parts { pre.forEachPiece(Array(p.utf8)) { counts[Array($0), default: 0] += 1 } }
    }

    /// The merges learned, as (left id, right id); token 256 + i is merge i.
    public func merges() -> [(Int, Int)] {
        let keys = counts.keys.sorted { $0.lexicographicallyPrecedes($1) }
        var words = keys.map { $0.map(Int.init) }
        let freq = keys.map { counts[$0]! }
        var pairs = PairCounts()
        for (w, word) in words.enumerated() { pairs.add(word, times: freq[w], word: w) }
        var learned: [(Int, Int)] = []
        while 256 + learned.count + specialTokens.count < vocabSize, let (a, b) = pairs.popMax(minCount: 2) {
            let merged = 256 + learned.count
            learned.append((a, b))
            for w in pairs.takeWords(a, b) {
                let old = words[w]
                let new = Self.apply(a, b, merged, to: old)
                if new.count == old.count { continue }
                pairs.add(old, times: -freq[w], word: w)
                pairs.add(new, times: freq[w], word: w)
                words[w] = new
                pairs.pushPairs(of: new, containing: merged)
            }
            pairs.count[PairCounts.key(a, b)] = nil
        }
        return learned
    }

    /// `word` with every (a, b), left to right, replaced by `merged`.
    static func apply(_ a: Int, _ b: Int, _ merged: Int, to word: [Int]) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(word.count)
        var i = 0
        while i < word.count {
            if i + 1 < word.count && word[i] == a && word[i + 1] == b {
                out.append(merged); i += 2
            } else {
                out.append(word[i]); i += 1
            }
        }
        return out
    }

    /// The tokenizer.json of the learned merges: byte-level BPE, GPT-2 split, special tokens last.
    public func tokenizerJSON() -> JSONValue {
        var spelled = (0..<256).map { String(ByteLevel.symbols[$0]) }
        var mergeList: [JSONValue] = []
        for (a, b) in merges() {
            mergeList.append(.string(spelled[a] + " " + spelled[b]))
            spelled.append(spelled[a] + spelled[b])
        }
        let added = specialTokens.enumerated().map { i, s -> JSONValue in
            [
                "id": .integer(spelled.count + i), "content": .string(s), "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            ]
        }
        let vocab = JSONValue.object(
            spelled.enumerated().map { ($0.element, .integer($0.offset)) }
                + specialTokens.enumerated().map { ($0.element, .integer(spelled.count + $0.offset)) })
        let byteLevel: JSONValue = [
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
        ]
        return [
            "version": "1.0", "truncation": .null, "padding": .null, "added_tokens": .array(added),
            "normalizer": .null, "pre_tokenizer": byteLevel, "post_processor": .null, "decoder": byteLevel,
            "model": [
                "type": "BPE", "dropout": .null, "unk_token": .null, "continuing_subword_prefix": .null,
                "end_of_word_suffix": .null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": .array(mergeList)
            ]
        ]
    }
}

/// Adjacent-pair counts over weighted words, the words holding each pair, and a max-heap.
struct PairCounts {
    var count: [UInt64: Int] = [:]
    var words: [UInt64: [Int]] = [:]
    var heap = PairHeap()
    var seeded = false

    static func key(_ a: Int, _ b: Int) -> UInt64 { UInt64(a) << 32 | UInt64(b) }

    mutating func add(_ word: [Int], times: Int, word w: Int) {
        guard word.count > 1 else { return }
        for i in 0..<(word.count - 1) {
            let k = Self.key(word[i], word[i + 1])
            count[k, default: 0] += times
            if times > 0 { words[k, default: []].append(w) }
        }
    }

    /// Pushes the current counts of `word`'s pairs that hold `id` (their counts only grew).
    mutating func pushPairs(of word: [Int], containing id: Int) {
        guard word.count > 1 else { return }
        for i in 0..<(word.count - 1) where word[i] == id || word[i + 1] == id {
            let k = Self.key(word[i], word[i + 1])
            heap.push(count[k]!, k)
        }
    }

    /// The words that held (a, b), once each, sorted; the pair's word list is dropped.
    mutating func takeWords(_ a: Int, _ b: Int) -> [Int] {
        let k = Self.key(a, b)
        defer { words[k] = nil }
        return Array(Set(words[k] ?? [])).sorted()
    }

    /// The pair with the highest current count (at least `minCount`), or nil.
    mutating func popMax(minCount: Int) -> (Int, Int)? {
        if !seeded {
            for (k, c) in count { heap.push(c, k) }
            seeded = true
        }
        while let (c, k) = heap.pop() {
            let now = count[k] ?? 0
            if now != c {
                if now > 0 { heap.push(now, k) }
                continue
            }
            if c < minCount { return nil }
            return (Int(k >> 32), Int(k & 0xffff_ffff))
        }
        return nil
    }
}

/// A binary max-heap of (count, pair key): higher count first, then the smaller key.
struct PairHeap {
    var items: [(Int, UInt64)] = []

    static func above(_ x: (Int, UInt64), _ y: (Int, UInt64)) -> Bool { x.0 > y.0 || (x.0 == y.0 && x.1 < y.1) }

    mutating func push(_ c: Int, _ k: UInt64) {
        items.append((c, k))
        var i = items.count - 1
        while i > 0, Self.above(items[i], items[(i - 1) / 2]) {
            items.swapAt(i, (i - 1) / 2); i = (i - 1) / 2
        }
    }

    mutating func pop() -> (Int, UInt64)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return top }
        items[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && Self.above(items[l], items[m]) { m = l }
            if r < items.count && Self.above(items[r], items[m]) { m = r }
            if m == i { return top }
            items.swapAt(i, m); i = m
        }
    }
}
