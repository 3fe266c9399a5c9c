import Foundation
import JSON
import XCTest

/// `tokenizer train`, `data prepare` and a job with data.tokenizer through the binary: shards
/// train like the single file of the same tokens, sample and eval speak text, and bad inputs
/// get one line naming them.
final class TokenizerCLITests: XCTestCase {
    func prepare(_ ws: Workspace) throws -> String {
        let tok = ws.dir + "/tok.json"
        let t = try Harness.switchyard(["tokenizer", "train", ws.corpus, "--vocab", "300", "--out", tok])
        XCTAssertEqual(t.status, 0, t.stderr)
        XCTAssertTrue(t.stdout.contains("vocabulary 300"), t.stdout)
        let again = try Harness.switchyard(["tokenizer", "train", ws.corpus, "--vocab", "300", "--out", tok])
        XCTAssertEqual(again.status, 1, "an existing tokenizer is never overwritten")
        for (out, shard) in [("one.bin", []), ("s.bin", ["--shard-tokens", "2000"])] {
            let p = try Harness.switchyard(
                ["data", "prepare", "--tokenizer", tok, ws.corpus, "--out", ws.dir + "/" + out] + shard)
            XCTAssertEqual(p.status, 0, p.stderr)
        }
        return tok
    }

    func testShardsTrainLikeOneFileAndSampleSpeaksText() throws {
        let ws = Workspace()
        let tok = try prepare(ws)
        let shards = try FileManager.default.contentsOfDirectory(atPath: ws.dir).filter { $0.hasPrefix("s_") }
        XCTAssertGreaterThan(shards.count, 1, "--shard-tokens 2000 cuts the corpus into files")
        func train(_ name: String, _ data: String) throws -> [UInt32] {
            let r = try Harness.switchyard(
                ws.tinyArgs(
                    steps: 12,
                    extra: HFExportTests.mixtral + [
                        "--set", "name=\(name)", "--set", "data.path=\(data)", "--set", "data.tokenizer=\(tok)",
                        "--set", "model.vocabSize=300"
                    ]), cwd: ws.dir)
            XCTAssertEqual(r.status, 0, r.stderr)
            return try ws.lossBits(run: name)
        }
        let one = try train("one", ws.dir + "/one.bin"), many = try train("many", ws.dir + "/s_*.bin")
        XCTAssertFalse(one.isEmpty)
        XCTAssertEqual(one, many, "a glob of shards gives the losses of one file with the same tokens")

        let s = try Harness.switchyard(
            ["sample", ws.dir + "/runs/one", "--prompt", "The quick", "--tokens", "20", "--temperature", "0"])
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertGreaterThan(s.stdout.count, 20, "20 BPE tokens decode to more than 20 characters: \(s.stdout)")
        let e = try Harness.switchyard(["eval", ws.dir + "/runs/one", "--data", ws.corpus, "--windows", "4", "--json"])
        XCTAssertEqual(e.status, 0, e.stderr)
        let b = try Harness.switchyard(
            ["eval", ws.dir + "/runs/one", "--data", ws.dir + "/one.bin", "--windows", "4", "--json"])
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertNotNil(try JSONValue.parse(e.stdout)["meanLoss"]?.doubleValue)
    }

    func testBadTokenizerAndDataInputsAreOneLine() throws {
        let ws = Workspace()
        let tok = try prepare(ws)
        let bad = ws.write("bad.json", #"{"model": {"type": "Unigram", "vocab": []}}"#)
        let r = try Harness.switchyard(["data", "prepare", "--tokenizer", bad, ws.corpus, "--out", ws.dir + "/x.bin"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("bad.json: model.type"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        let lines = ws.write("docs.jsonl", "{\"text\": \"fine\"}\nnot json\n")
        let j = try Harness.switchyard(["data", "prepare", "--tokenizer", tok, lines, "--out", ws.dir + "/j.bin"])
        XCTAssertEqual(j.status, 1)
        XCTAssertTrue(j.stderr.contains("docs.jsonl: line 2 is not JSON"), j.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: ws.dir + "/j.bin.partial"), "no partial file left")
        XCTAssertFalse(FileManager.default.fileExists(atPath: ws.dir + "/j.bin"))
        // A model smaller than the tokenizer's vocabulary is refused before training.
        let small = try Harness.switchyard(
            ws.tinyArgs(steps: 2, extra: ["--set", "data.path=\(ws.dir)/one.bin", "--set", "data.tokenizer=\(tok)"]),
            cwd: ws.dir)
        XCTAssertEqual(small.status, 1)
        XCTAssertTrue(small.stderr.contains("has 300 ids but model.vocabSize is 256"), small.stderr)
        // A token model without a tokenizer cannot sample text: the error says what to pass.
        let plain = try Harness.switchyard(
            ws.tinyArgs(
                steps: 2, extra: ["--set", "data.path=\(ws.dir)/one.bin", "--set", "model.vocabSize=300"]), cwd: ws.dir)
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let s = try Harness.switchyard(["sample", ws.dir + "/runs/tiny", "--prompt", "The"])
        XCTAssertEqual(s.status, 1)
        XCTAssertTrue(s.stderr.contains("--set data.tokenizer=FILE"), s.stderr)
        let fixed = try Harness.switchyard(
            ["sample", ws.dir + "/runs/tiny", "--prompt", "The", "--tokens", "4", "--set", "data.tokenizer=\(tok)"])
        XCTAssertEqual(fixed.status, 0, fixed.stderr)
    }
}
