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
        XCTAssertEqual(d.tokens, [104, 0xC3, 0xA9, 108, 108, 111])
        XCTAssertEqual(d.format, "text")
    }

    func testBinRoundTripAndValidation() throws {
        try TokenData.writeBin([1, 500, 2], to: dir + "/a.bin")
        let d = try TokenData.load(path: dir + "/a.bin", format: "auto", vocabSize: 501)
        XCTAssertEqual(d.tokens, [1, 500, 2])
        XCTAssertEqual(d.format, "bin")
        assertDataError(dir + "/a.bin", vocab: 500, contains: "token 500 at index 1 is >= model.vocabSize")
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
        let a = s.batch(step: 7, first: 0, count: 4), b = s.batch(step: 7, first: 0, count: 4)
        XCTAssertEqual(a.inputs, b.inputs)
        XCTAssertNotEqual(a.inputs, s.batch(step: 8, first: 0, count: 4).inputs)
        // A slice of the global batch is the same samples (rank r reads its slice of the same batch).
        XCTAssertEqual(Array(a.inputs[32..<64]), s.batch(step: 7, first: 2, count: 2).inputs)
        // Targets are the inputs shifted by one.
        XCTAssertEqual(Array(a.inputs[1..<16]), Array(a.targets[0..<15]))
        for step in 0..<300 { for i in 0..<4 { XCTAssertLessThan(s.offset(step: step, index: i) + 16, 4500) } }
        XCTAssertEqual(s.evalWindowStart(0, of: 4), 4500)
        XCTAssertEqual(s.evalWindowStart(3, of: 4), 4500 + 3 * (500 - 17) / 4)
        let other = try BatchSampler(data: data, seqLen: 16, seed: 4, valFraction: 0.1, needsEval: true)
        XCTAssertNotEqual(other.batch(step: 7, first: 0, count: 4).inputs, a.inputs, "the seed keys the draw")
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
}
