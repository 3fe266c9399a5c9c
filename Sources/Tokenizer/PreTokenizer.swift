// The split patterns of byte-level BPEs, written as scanners instead of a regex engine: the
// pattern strings below are recognised in tokenizer.json and each maps to a rule set that
// matches exactly what the regex matches (leftmost alternative first, greedy, with the
// backtracking the regex would do spelled out), one scalar class lookup per character.
//
//   GPT-2 (GPT-2, GPT-NeoX, OLMoE):
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama 3 (Qwen 2/3 the same with \p{N} for \p{N}{1,3}):
//     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//     \s*[\r\n]+|\s+(?!\S)|\s+

/// A split pattern Switchyard can run.
public enum SplitPattern: String, Sendable, CaseIterable {
    case gpt2, llama3, qwen2
    /// No split: the text is one piece (ByteLevel with use_regex false and nothing before it).
    case whole

    public var regex: String {
        switch self {
        case .whole: return ""
        case .gpt2: return #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        case .llama3:
            return #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"#
                + #"\s*[\r\n]+|\s+(?!\S)|\s+"#
        case .qwen2:
            return #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"#
                + #"\s*[\r\n]+|\s+(?!\S)|\s+"#
        }
    }

    /// The pattern whose regex is `text`, if any.
    public init?(regex text: String) {
        guard !text.isEmpty, let p = SplitPattern.allCases.first(where: { $0.regex == text }) else { return nil }
        self = p
    }
}

/// What a scalar is to the split patterns.
enum ScalarClass: UInt8 {
    case letter, number, space, newline, other  // newline: \r or \n (also whitespace)
}

extension ScalarClass {
    static let ascii: [ScalarClass] = (0..<128).map { classify(Unicode.Scalar(UInt8($0))) }

    @inline(__always) static func of(_ s: Unicode.Scalar) -> ScalarClass {
        s.value < 128 ? ascii[Int(s.value)] : classify(s)
    }

    static func classify(_ s: Unicode.Scalar) -> ScalarClass {
        if s == "\r" || s == "\n" { return .newline }
        if s.properties.isWhitespace { return .space }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    var isSpace: Bool { self == .space || self == .newline }
}

/// Splits text into the pieces BPE encodes one by one.
struct PreTokenizer {
    let pattern: SplitPattern

    /// The pieces of `text` as ranges of its scalars (the pieces cover the text, in order).
    func split(_ s: [Unicode.Scalar], _ c: [ScalarClass]) -> [Range<Int>] {
        if pattern == .whole { return s.isEmpty ? [] : [0..<s.count] }
        var out: [Range<Int>] = []
        var i = 0
        while i < s.count {
            let n = pattern == .gpt2 ? gpt2Match(s, c, i) : llamaMatch(s, c, i, digits: pattern == .llama3 ? 3 : 1)
            out.append(i..<(i + n))
            i += n
        }
        return out
    }

    /// Calls `body` with the UTF-8 bytes of each piece of `bytes` (valid UTF-8), in order.
    func forEachPiece(_ bytes: [UInt8], _ body: (ArraySlice<UInt8>) throws -> Void) rethrows {
        var scalars: [Unicode.Scalar] = [], offsets: [Int] = [], classes: [ScalarClass] = []
        scalars.reserveCapacity(bytes.count); offsets.reserveCapacity(bytes.count + 1)
        classes.reserveCapacity(bytes.count)
        var it = bytes.makeIterator(), decoder = UTF8(), at = 0
        while case .scalarValue(let s) = decoder.decode(&it) {
            scalars.append(s); offsets.append(at); classes.append(ScalarClass.of(s))
            at += UTF8.width(s)
        }
        offsets.append(at)
        for r in split(scalars, classes) { try body(bytes[offsets[r.lowerBound]..<offsets[r.upperBound]]) }
    }

    /// Length of the run of scalars from `i` that satisfy `p`.
    @inline(__always) func run(_ c: [ScalarClass], _ i: Int, _ p: (ScalarClass) -> Bool) -> Int {
        var j = i
        while j < c.count && p(c[j]) { j += 1 }
        return j - i
    }

    /// Length of a contraction ('s 't 're 've 'm 'll 'd) at `i`, or 0.
    func contraction(_ s: [Unicode.Scalar], _ i: Int, ignoreCase: Bool) -> Int {
        guard s[i] == "'", i + 1 < s.count else { return 0 }
        func lower(_ k: Int) -> Unicode.Scalar? {
            guard k < s.count else { return nil }
            guard ignoreCase else { return s[k] }
            if s[k] == "\u{17F}" { return "s" }  // LATIN SMALL LETTER LONG S folds to s
            return s[k].value < 128 ? Unicode.Scalar(UInt8(s[k].value) | (s[k].properties.isUppercase ? 32 : 0)) : s[k]
        }
        switch (lower(i + 1), lower(i + 2)) {
        case ("s", _), ("t", _), ("m", _), ("d", _): return 2
        case ("r", "e"), ("v", "e"), ("l", "l"): return 3
        default: return 0
        }
    }

    /// `\s+(?!\S)` then `\s+`: a whitespace run, less its last scalar when a non-space follows.
    func whitespace(_ c: [ScalarClass], _ i: Int) -> Int {
        let n = run(c, i) { $0.isSpace }
        if i + n == c.count || n == 1 { return n }
        return n - 1
    }

    func gpt2Match(_ s: [Unicode.Scalar], _ c: [ScalarClass], _ i: Int) -> Int {
        let k = contraction(s, i, ignoreCase: false)
        if k > 0 { return k }
        let lead = s[i] == " " && i + 1 < s.count ? 1 : 0
        for cls in [ScalarClass.letter, .number] {
            if c[i] == cls { return run(c, i) { $0 == cls } }
            if lead == 1 && c[i + 1] == cls { return 1 + run(c, i + 1) { $0 == cls } }
        }
        if c[i] == .other { return run(c, i) { $0 == .other } }
        if lead == 1 && c[i + 1] == .other { return 1 + run(c, i + 1) { $0 == .other } }
        return whitespace(c, i)
    }

    func llamaMatch(_ s: [Unicode.Scalar], _ c: [ScalarClass], _ i: Int, digits: Int) -> Int {
        let k = contraction(s, i, ignoreCase: true)
        if k > 0 { return k }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if c[i] == .letter { return run(c, i) { $0 == .letter } }
        if (c[i] == .space || c[i] == .other) && i + 1 < s.count && c[i + 1] == .letter {
            return 1 + run(c, i + 1) { $0 == .letter }
        }
        if c[i] == .number { return min(digits, run(c, i) { $0 == .number }) }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let lead = s[i] == " " && i + 1 < s.count && c[i + 1] == .other ? 1 : 0
        if c[i] == .other || lead == 1 {
            let body = lead + run(c, i + lead) { $0 == .other }
            return body + run(c, i + body) { $0 == .newline }
        }
        // `\s*[\r\n]+`: the whitespace run up to and including its last newline.
        let n = run(c, i) { $0.isSpace }
        if let last = (i..<(i + n)).last(where: { c[$0] == .newline }) { return last + 1 - i }
        return whitespace(c, i)
    }
}
