import XCTest

@testable import Tokenizer

/// The scanners against the regexes they stand for: expected pieces from Python's `regex`
/// module running each pattern string (findall) on the same text.
final class PreTokenizerTests: XCTestCase {
    static let cases: [(SplitPattern, String, [String])] = [
        (.gpt2, "Hello world's  end!!\n\n  ok", ["Hello", " world", "'s", " ", " end", "!!", "\n\n ", " ok"]),
        (.gpt2, "I'LL don't 12345 x\t\ty", ["I", "'", "LL", " don", "'t", " 12345", " x", "\t", "\t", "y"]),
        (.gpt2, "  \n \n\tab", ["  \n \n", "\t", "ab"]),
        (
            .gpt2, "¿Qué tal? 日本語テキスト ١٢٣٤",
            ["¿", "Qué", " tal", "?", " 日本語テキスト", " ١٢٣٤"]
        ),
        (.gpt2, "a\r\n\r\nb  ", ["a", "\r\n\r", "\n", "b", "  "]),
        (.gpt2, "$$$ 3.14159 'Re", ["$$$", " 3", ".", "14159", " '", "Re"]),
        (.gpt2, "emoji 🙂🙂 done\u{00A0}nbsp", ["emoji", " 🙂🙂", " done", "\u{00A0}", "nbsp"]),
        (.llama3, "Hello world's  end!!\n\n  ok", ["Hello", " world", "'s", " ", " end", "!!\n\n", " ", " ok"]),
        (.llama3, "I'LL don't 12345 x\t\ty", ["I", "'LL", " don", "'t", " ", "123", "45", " x", "\t", "\ty"]),
        (.llama3, "  \n \n\tab", ["  \n \n", "\tab"]),
        (
            .llama3, "¿Qué tal? 日本語テキスト ١٢٣٤",
            ["¿Qué", " tal", "?", " 日本語テキスト", " ", "١٢٣", "٤"]
        ),
        (.llama3, "a\r\n\r\nb  ", ["a", "\r\n\r\n", "b", "  "]),
        (.llama3, "$$$ 3.14159 'Re", ["$$$", " ", "3", ".", "141", "59", " '", "Re"]),
        (.llama3, "emoji 🙂🙂 done\u{00A0}nbsp", ["emoji", " 🙂🙂", " done", "\u{00A0}nbsp"]),
        (.qwen2, "Hello world's  end!!\n\n  ok", ["Hello", " world", "'s", " ", " end", "!!\n\n", " ", " ok"]),
        (
            .qwen2, "I'LL don't 12345 x\t\ty",
            ["I", "'LL", " don", "'t", " ", "1", "2", "3", "4", "5", " x", "\t", "\ty"]
        ),
        (.qwen2, "  \n \n\tab", ["  \n \n", "\tab"]),
        (
            .qwen2, "¿Qué tal? 日本語テキスト ١٢٣٤",
            ["¿Qué", " tal", "?", " 日本語テキスト", " ", "١", "٢", "٣", "٤"]
        ),
        (.qwen2, "a\r\n\r\nb  ", ["a", "\r\n\r\n", "b", "  "]),
        (.qwen2, "$$$ 3.14159 'Re", ["$$$", " ", "3", ".", "1", "4", "1", "5", "9", " '", "Re"]),
        (.qwen2, "emoji 🙂🙂 done\u{00A0}nbsp", ["emoji", " 🙂🙂", " done", "\u{00A0}nbsp"])
    ]

    func pieces(_ pattern: SplitPattern, _ text: String) -> [String] {
        var out: [String] = []
        PreTokenizer(pattern: pattern).forEachPiece(Array(text.utf8)) {
            out.append(String(decoding: $0, as: UTF8.self))
        }
        return out
    }

    func testScannersSplitAsTheRegexesDo() {
        for (pattern, text, expected) in Self.cases {
            XCTAssertEqual(pieces(pattern, text), expected, "\(pattern) on \(text.debugDescription)")
        }
    }

    func testPatternsAreRecognisedByTheirRegexString() {
        for p in SplitPattern.allCases where p != .whole { XCTAssertEqual(SplitPattern(regex: p.regex), p) }
        XCTAssertNil(SplitPattern(regex: ""), "no split is never a regex")
        XCTAssertNil(SplitPattern(regex: #"\w+|\s+"#))
    }

    /// Pieces always cover the text exactly, whatever it holds.
    func testPiecesCoverEveryString() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ab Z9٣'sLl\n\r\t\u{00A0}é日🙂!.,-_ ") + ["\u{17F}"]
        for _ in 0..<300 {
            let text = String(
                (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
            for p in SplitPattern.allCases {
                XCTAssertEqual(pieces(p, text).joined(), text, "\(p) \(text.debugDescription)")
            }
        }
    }
}
