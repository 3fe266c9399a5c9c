import Foundation
import JSON
import Tokenizer
import XCTest

final class TokenizerTests: XCTestCase {
    /// A tokenizer.json of a BPE over the bytes a, b, c, space with the merges given ("a b" strings).
    func handMade(merges: [String], extraVocab: [String] = [], added: [(Int, String)] = [], ignoreMerges: Bool = false)
        -> JSONValue
    {
        var tokens = (0..<256).map { String(ByteLevel.symbols[$0]) }
        tokens += extraVocab
        let vocab = JSONValue.object(tokens.enumerated().map { ($0.element, .integer($0.offset)) })
        return [
            "added_tokens": .array(added.map { ["id": .integer($0.0), "content": .string($0.1), "special": true] }),
            "normalizer": .null,
            "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true],
            "decoder": ["type": "ByteLevel"],
            "model": [
                "type": "BPE", "vocab": vocab, "merges": .array(merges.map { .string($0) }),
                "ignore_merges": .bool(ignoreMerges)
            ]
        ]
    }

    func load(_ json: JSONValue) throws -> Tokenizer {
        let path = NSTemporaryDirectory() + "tok-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(json.compact.utf8).write(to: URL(fileURLWithPath: path))
        return try Tokenizer.load(path: path)
    }

    /// The lowest-ranked pair merges first, the leftmost of equals; merges never cross pieces.
    func testMergesApplyByRank() throws {
        // ids: a=97 b=98 c=99; 256 "bc", 257 "abc", 258 "ab"
        let t = try load(handMade(merges: ["b c", "a bc", "a b"], extraVocab: ["bc", "abc", "ab"]))
        XCTAssertEqual(try t.encode("abc"), [257], "b c (rank 0) first, then a bc")
        XCTAssertEqual(try t.encode("abab"), [258, 258])
        XCTAssertEqual(try t.encode("ab c"), [258, 32, 99], "pieces \"ab\" and \" c\": no merge across them")
    }

    func testAddedTokensAreCutOutFirstLongestMatch() throws {
        let t = try load(
            handMade(merges: [], added: [(300, "<|end|>"), (301, "<|endoftext|>")]))
        XCTAssertEqual(try t.encode("a<|endoftext|>b<|end|>"), [97, 301, 98, 300])
        XCTAssertEqual(t.decode([97, 301, 98]), "a<|endoftext|>b")
        XCTAssertEqual(t.id(of: "<|endoftext|>"), 301)
        XCTAssertEqual(t.vocabSize, 302)
    }

    func testIgnoreMergesTakesAWholePieceThatIsAToken() throws {
        // "abc" is a token but no merge path reaches it: Llama 3's ignore_merges uses it whole.
        let plain = try load(handMade(merges: ["a b"], extraVocab: ["ab", "abc"]))
        XCTAssertEqual(try plain.encode("abc"), [256, 99])
        let whole = try load(handMade(merges: ["a b"], extraVocab: ["ab", "abc"], ignoreMerges: true))
        XCTAssertEqual(try whole.encode("abc"), [257])
    }

    /// A trained tokenizer: bytes first, merges learned from the text, the special token last;
    /// it compresses its own text and decode(encode(x)) == x on any string.
    func testTrainedTokenizerRoundTripsAnyString() throws {
        var trainer = BPETrainer(vocabSize: 320)
        let corpus = (0..<200).map { "the quick brown fox \($0) jumps over the lazy dog's back; naïve café 日本\n" }
            .joined()
        trainer.add(corpus + "<|endoftext|>")
        let json = trainer.tokenizerJSON()
        XCTAssertEqual(json["model"]?["merges"]?.arrayValue?.count, 320 - 256 - 1)
        let t = try load(json)
        XCTAssertEqual(t.vocabSize, 320)
        XCTAssertEqual(t.id(of: "<|endoftext|>"), 319)
        let ids = try t.encode(corpus)
        XCTAssertLessThan(ids.count, corpus.utf8.count / 2, "merges learned from the text compress it")
        XCTAssertEqual(t.decode(ids), corpus)
        XCTAssertEqual(try t.encode(" the"), try t.encode(" the"), "cached pieces give the same ids")
        var rng = SystemRandomNumberGenerator()
        let alphabet = "the quick 0123 '\n\r\t\u{00A0}éü日本🙂!.,".map { String($0) } + ["<|endoftext|>"]
        for _ in 0..<500 {
            let s = (0..<Int.random(in: 0...60, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
                .joined()
            XCTAssertEqual(t.decode(try t.encode(s)), s, s.debugDescription)
        }
    }

    /// Training is deterministic: the same text gives the same file.
    func testTrainingIsDeterministic() {
        func train() -> String {
            var t = BPETrainer(vocabSize: 300)
            t.add("aaa bbb aaa ccc abab cdcd\n" + String(repeating: "hello world ", count: 9))
            return t.tokenizerJSON().compact
        }
        XCTAssertEqual(train(), train())
    }

    func testBadFilesNameTheField() throws {
        func refuses(_ json: JSONValue, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try load(json), line: line) {
                XCTAssertTrue("\($0)".contains(text), "\($0)", line: line)
            }
        }
        refuses(handMade(merges: ["a z"]), "model.merges[0]")
        refuses(handMade(merges: ["a"]), "is not a pair")
        var j = handMade(merges: [])
        j = replacing(j, "pre_tokenizer", ["type": "Whitespace"])
        refuses(j, "pre_tokenizer: type Whitespace is not supported")
        refuses(replacing(handMade(merges: []), "normalizer", ["type": "Lowercase"]), "normalizer: type Lowercase")
        let split: JSONValue = [
            "type": "Sequence",
            "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": "\\w+"], "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "use_regex": false]
            ]
        ]
        refuses(replacing(handMade(merges: []), "pre_tokenizer", split), "split pattern is not one Switchyard runs")
        XCTAssertThrowsError(try Tokenizer.load(path: "/nonexistent/tokenizer.json")) {
            XCTAssertTrue("\($0)".hasPrefix("/nonexistent/tokenizer.json: cannot read"), "\($0)")
        }
    }

    func replacing(_ j: JSONValue, _ key: String, _ v: JSONValue) -> JSONValue {
        guard case .object(let members) = j else { return j }
        return .object(members.map { $0.0 == key ? ($0.0, v) : $0 })
    }
}
