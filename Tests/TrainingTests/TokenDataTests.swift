import Foundation
import Training
import XCTest

final class TokenDataTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = temporaryDirectory() }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func assertDataError(
        _ path: String, format: String = "auto", vocab: Int = 256, contains: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try TokenData.load(path: path, format: format, vocabSize: vocab), file: file, line: line) {
            XCTAssertTrue("\($0)".hasPrefix("data.path \(path): "), "\($0)", file: file, line: line)
            XCTAssertTrue("\($0)".contains(contains), "\($0)", file: file, line: line)
        }
    }

    func testTextBytesAreTokens() throws {
        write("héllo", to: dir + "/t.txt")
        let d = try TokenData.load(path: dir + "/t.txt", format: "auto", vocabSize: 256)
        XCTAssertEqual(try d.ids(), [104, 0xC3, 0xA9, 108, 108, 111])
        XCTAssertEqual(d.format, "text")
    }

    func testBinRoundTripAndValidation() throws {
        try TokenData.writeBin([1, 500, 2], to: dir + "/a.bin")
        let d = try TokenData.load(path: dir + "/a.bin", format: "auto", vocabSize: 501)
        XCTAssertEqual(try d.ids(), [1, 500, 2])
        XCTAssertEqual(d.format, "bin")
        // Ids are checked as they are read, not when the file opens (a 4 GB shard opens in a page).
        let small = try TokenData.load(path: dir + "/a.bin", format: "auto", vocabSize: 500)
        XCTAssertEqual(try small.ids(0, count: 1), [1])
        XCTAssertThrowsError(try small.ids()) {
            XCTAssertTrue("\($0)".contains("token 500 at index 1 is >= model.vocabSize (500)"), "\($0)")
        }
        // Truncated: drop the last byte.
        let full = try Data(contentsOf: URL(fileURLWithPath: dir + "/a.bin"))
        try full.dropLast().write(to: URL(fileURLWithPath: dir + "/trunc.bin"))
        assertDataError(dir + "/trunc.bin", contains: "truncated or corrupt")
        // Bad magic.
        var bad = full
        bad[0] = 0x42
        try bad.write(to: URL(fileURLWithPath: dir + "/magic.bin"))
        assertDataError(dir + "/magic.bin", contains: "bad .bin header: magic")
        write("short", to: dir + "/short.bin")
        assertDataError(dir + "/short.bin", contains: "too short for an llm.c .bin header")
    }

    func testMissingEmptyAndDirectory() {
        assertDataError(dir + "/none.txt", contains: "file not found")
        write("", to: dir + "/empty.txt")
        assertDataError(dir + "/empty.txt", contains: "empty")
        assertDataError(dir, contains: "is a directory")
        write("abc", to: dir + "/v.txt")
        assertDataError(dir + "/v.txt", vocab: 100, contains: "set it to 256")
    }

    func testSamplerIsAPureFunctionOfStepAndNeverReadsTheHeldOutTail() throws {
        let text = String((0..<5000).map { Character(Unicode.Scalar(UInt8(97 + $0 % 26))) })
        let data = TokenData(path: "mem", format: "text", tokens: Array(text.utf8).map(UInt16.init))
        let s = try BatchSampler(data: data, seqLen: 16, seed: 3, valFraction: 0.1, needsEval: true)
        XCTAssertEqual(s.trainEnd, 4500)
        let a = try s.batch(step: 7, first: 0, count: 4), b = try s.batch(step: 7, first: 0, count: 4)
        XCTAssertEqual(a.inputs, b.inputs)
        XCTAssertNotEqual(a.inputs, try s.batch(step: 8, first: 0, count: 4).inputs)
        // A slice of the global batch is the same samples (rank r reads its slice of the same batch).
        XCTAssertEqual(Array(a.inputs[32..<64]), try s.batch(step: 7, first: 2, count: 2).inputs)
        // Targets are the inputs shifted by one.
        XCTAssertEqual(Array(a.inputs[1..<16]), Array(a.targets[0..<15]))
        for step in 0..<300 { for i in 0..<4 { XCTAssertLessThan(s.offset(step: step, index: i) + 16, 4500) } }
        XCTAssertEqual(s.evalWindowStart(0, of: 4), 4500)
        XCTAssertEqual(s.evalWindowStart(3, of: 4), 4500 + 3 * (500 - 17) / 4)
        let other = try BatchSampler(data: data, seqLen: 16, seed: 4, valFraction: 0.1, needsEval: true)
        XCTAssertNotEqual(try other.batch(step: 7, first: 0, count: 4).inputs, a.inputs, "the seed keys the draw")
    }

    func testDataTooShortForOneSequence() {
        let data = TokenData(path: "mem", format: "text", tokens: [UInt16](repeating: 1, count: 60))
        XCTAssertThrowsError(try BatchSampler(data: data, seqLen: 64, seed: 1, valFraction: 0, needsEval: false)) {
            XCTAssertTrue("\($0)".contains("shorter than one training sequence"), "\($0)")
        }
        let d2 = TokenData(path: "mem", format: "text", tokens: [UInt16](repeating: 1, count: 400))
        XCTAssertThrowsError(try BatchSampler(data: d2, seqLen: 64, seed: 1, valFraction: 0.05, needsEval: true)) {
            XCTAssertTrue("\($0)".contains("held-out tail"), "\($0)")
        }
        XCTAssertNoThrow(try BatchSampler(data: d2, seqLen: 64, seed: 1, valFraction: 0.05, needsEval: false))
    }

    func testUInt32BinAndACrashedWriterIsRefused() throws {
        try TokenData.writeBin([7, 70_000, 3], vocabSize: 100_000, to: dir + "/w.bin")
        let raw = try Data(contentsOf: URL(fileURLWithPath: dir + "/w.bin"))
        XCTAssertEqual(raw.count, 1024 + 3 * 4, "uint32 ids above a 65,536 vocabulary")
        XCTAssertEqual(raw.prefix(8), Data([0xa1, 0xd9, 0x34, 0x01, 7, 0, 0, 0]), "magic 20240801, version 7")
        XCTAssertEqual(
            try TokenData.load(path: dir + "/w.bin", format: "auto", vocabSize: 100_000).ids(), [7, 70_000, 3])
        // A writer that never finished leaves count 0 in the header: refused, not read as empty.
        let w = try TokenBinWriter(path: dir + "/cut.bin", vocabSize: 300)
        try w.append([1, 2, 3])
        try w.flush()
        assertDataError(dir + "/cut.bin", contains: "header says 0 tokens")
        var v2 = raw
        v2[4] = 2
        try v2.write(to: URL(fileURLWithPath: dir + "/v2.bin"))
        assertDataError(dir + "/v2.bin", contains: "unsupported .bin version 2")
    }

    /// A glob of shards reads as one stream: the same batches and eval windows as one file
    /// holding the same tokens, whatever the cut points.
    func testShardGlobReadsLikeOneFile() throws {
        let tokens = (0..<3000).map { ($0 * 7919) % 1000 }
        try TokenData.writeBin(tokens, to: dir + "/all.bin")
        try FileManager.default.createDirectory(atPath: dir + "/s", withIntermediateDirectories: true)
        let cuts = [0, 17, 1000, 1001, 2999, 3000]
        for k in 0..<(cuts.count - 1) {
            try TokenData.writeBin(Array(tokens[cuts[k]..<cuts[k + 1]]), to: dir + "/s/train_\(k).bin")
        }
        let one = try TokenData.load(path: dir + "/all.bin", format: "auto", vocabSize: 1000)
        let many = try TokenData.load(path: dir + "/s/train_*.bin", format: "auto", vocabSize: 1000)
        XCTAssertEqual(many.files.count, 5)
        XCTAssertEqual(many.count, 3000)
        XCTAssertEqual(try many.ids(), try one.ids())
        let a = try BatchSampler(data: one, seqLen: 64, seed: 5, valFraction: 0.1, needsEval: true)
        let b = try BatchSampler(data: many, seqLen: 64, seed: 5, valFraction: 0.1, needsEval: true)
        for step in 0..<20 {
            XCTAssertEqual(
                try a.batch(step: step, first: 0, count: 8).inputs, try b.batch(step: step, first: 0, count: 8).inputs)
        }
        XCTAssertEqual(
            try a.evalBatch(first: 0, count: 4, of: 4).targets, try b.evalBatch(first: 0, count: 4, of: 4).targets)
        assertDataError(dir + "/s/none_*.bin", contains: "no file matches the glob")
        write("text", to: dir + "/s/train_9.txt")
        assertDataError(dir + "/s/train_*", contains: "matches both .bin and text files")
    }

    /// data.valPath: every token of data.path trains; eval windows come from the other file.
    func testValPathHoldsOutAnotherFile() throws {
        try TokenData.writeBin((0..<500).map { $0 % 50 }, to: dir + "/train.bin")
        try TokenData.writeBin((0..<200).map { 50 + $0 % 50 }, to: dir + "/val.bin")
        let d = try TokenData.load(path: dir + "/train.bin", format: "auto", vocabSize: 100, valPath: dir + "/val.bin")
        let s = try BatchSampler(data: d, seqLen: 16, seed: 1, valFraction: 0.1, needsEval: true)
        XCTAssertEqual(s.trainEnd, 500, "valFraction is ignored when data.valPath is set")
        XCTAssertEqual(s.evalWindowStart(3, of: 4), 3 * (200 - 17) / 4)
        let eval = try s.evalBatch(first: 0, count: 4, of: 4)
        XCTAssertTrue(eval.inputs.allSatisfy { $0 >= 50 }, "eval reads the validation file")
        XCTAssertTrue(try s.batch(step: 3, first: 0, count: 8).inputs.allSatisfy { $0 < 50 })
        XCTAssertThrowsError(
            try TokenData.load(path: dir + "/train.bin", format: "auto", vocabSize: 100, valPath: dir + "/no.bin")
        ) { XCTAssertTrue("\($0)".hasPrefix("data.valPath \(self.dir)/no.bin: file not found"), "\($0)") }
        try TokenData.writeBin([1, 2, 3], to: dir + "/tiny.bin")
        let t = try TokenData.load(path: dir + "/train.bin", format: "auto", vocabSize: 100, valPath: dir + "/tiny.bin")
        XCTAssertThrowsError(try BatchSampler(data: t, seqLen: 16, seed: 1, valFraction: 0, needsEval: true)) {
            XCTAssertTrue("\($0)".contains("3 held-out tokens"), "\($0)")
        }
    }
}
