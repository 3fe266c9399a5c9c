import Foundation
import JSON
import RunEvents
import TensorBoard
import XCTest

/// TensorBoard event files, checked against the format's definition: the masked CRC's closed
/// form, hand-encoded protobuf bytes, a round trip of a log's scalars, and damaged files.
final class TensorBoardTests: XCTestCase {
    var dir = ""
    override func setUp() {
        dir = NSTemporaryDirectory() + "tb-\(UUID().uuidString)"
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testMaskedCRCOfTheStandardCheckString() {
        // CRC32C("123456789") = 0xE3069283; masked: ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2^32.
        XCTAssertEqual(TFRecord.maskedCRC(Array("123456789".utf8)), 0xC78A_B0E5)
    }

    func testScalarEventBytesAreTheProtobufEncoding() throws {
        let got = EventProto.scalarEvent(wallTime: 1.5, step: 3, scalars: [Scalar("a", 2)])
        let value: [UInt8] = [0x0A, 0x01, 0x61, 0x15, 0x00, 0x00, 0x00, 0x40]  // tag "a", simple_value 2.0
        let summary: [UInt8] = [0x0A, UInt8(value.count)] + value  // repeated value = 1
        let want: [UInt8] =
            [0x09, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F]  // wall_time = 1 (double 1.5)
            + [0x10, 0x03]  // step = 2 (varint 3)
            + [0x2A, UInt8(summary.count)] + summary  // summary = 5
        XCTAssertEqual(got, want)
        let back = try EventProto.decode(got)
        XCTAssertEqual(back.step, 3)
        XCTAssertEqual(back.wallTime, 1.5)
        XCTAssertEqual(back.scalars, [Scalar("a", 2)])
    }

    /// A log's step, eval and checkpoint events come back as the scalars of their values and steps.
    func testALogsScalarsRoundTripThroughTheFile() throws {
        let events: [JSONValue] = [
            .event(.start, [.time: 100, .job: "t"]),
            .event(
                .step,
                [
                    .step: 0, .time: 101, .loss: 5.5, .auxLoss: 1.03, .zLoss: 0, .lr: 0.001, .gradNorm: 2.5,
                    .stepMs: 310, .tokensPerSec: 6600, .mfu: 0.16, .expertLoad: [[10, 30], [20, 20]],
                    .droppedTokens: [0, 4], .rankStepMs: [300, 310]
                ]),
            .event(.eval, [.step: 0, .time: 102, .valLoss: 2.84]),
            .event(.checkpoint, [.step: 1, .time: 103, .seconds: 0.04, .gbps: 1.08]),
            // As the trainer writes them in memory: the step a number, not an integer.
            .event(.eval, [.step: .number(7), .time: 104, .valLoss: 2.5])
        ]
        let w = try EventFileWriter(directory: dir, host: "h", time: 99)
        for e in events { w.append(logEvent: e) }
        w.flush()
        let read = try EventFile.read(w.path)
        XCTAssertEqual(read.count, 5, "the version event and four with scalars (start has none)")
        XCTAssertEqual(read[0].fileVersion, "brain.Event:2")
        let step = read[1]
        XCTAssertEqual(step.step, 0)
        XCTAssertEqual(step.wallTime, 101)
        let byTag = Dictionary(uniqueKeysWithValues: step.scalars.map { ($0.tag, $0.value) })
        XCTAssertEqual(byTag["train/loss"], 5.5)
        XCTAssertEqual(byTag["train/lr"], 0.001)
        XCTAssertEqual(byTag["perf/mfu"], 0.16)
        XCTAssertEqual(byTag["moe/block0/max_over_mean_load"], 1.5, "30 over a mean of 20")
        XCTAssertEqual(byTag["moe/block1/max_over_mean_load"], 1)
        XCTAssertEqual(byTag["moe/block1/dropped_tokens"], 4)
        XCTAssertEqual(byTag["ranks/rank1/step_ms"], 310)
        XCTAssertEqual(read[2].scalars, [Scalar("eval/val_loss", 2.84)])
        XCTAssertEqual(read[3].step, 1)
        XCTAssertEqual(read[3].scalars, [Scalar("checkpoint/seconds", 0.04), Scalar("checkpoint/GBps", 1.08)])
        XCTAssertEqual(read[4].step, 7)
        XCTAssertEqual(read[4].scalars, [Scalar("eval/val_loss", 2.5)])
        XCTAssertEqual(EventFile.files(in: dir), [w.path])
        XCTAssertTrue(w.path.hasSuffix("/events.out.tfevents.99.h.\(getpid())"))
    }

    /// A flipped byte or a cut end is found and named, never read as data.
    func testACorruptOrTruncatedFileIsDetected() throws {
        let w = try EventFileWriter(directory: dir, host: "h", time: 1)
        w.append(logEvent: .event(.eval, [.step: 4, .time: 2, .valLoss: 3.25]))
        w.flush()
        let good = try Data(contentsOf: URL(fileURLWithPath: w.path))
        XCTAssertEqual(try EventFile.read(w.path).count, 2)
        func expectError(_ bytes: Data, _ says: String, _ label: String) throws {
            let p = dir + "/bad"
            try bytes.write(to: URL(fileURLWithPath: p))
            XCTAssertThrowsError(try EventFile.read(p), label) {
                XCTAssertTrue("\($0)".contains(says), "\(label): \($0)")
            }
        }
        var flipped = good
        flipped[flipped.count - 8] ^= 0x01  // inside the last record's data
        try expectError(flipped, "data CRC mismatch", "a flipped data byte")
        var badLength = good
        badLength[0] ^= 0x40  // the first record's length
        try expectError(badLength, "length CRC mismatch", "a flipped length byte")
        try expectError(good.prefix(good.count - 3), "truncated", "a file cut short")
        try expectError(good.prefix(5), "truncated header", "a file cut inside a header")
    }
}
