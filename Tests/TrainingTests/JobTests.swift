import Foundation
import JSON
import Training
import XCTest

/// A fresh temporary directory per test, removed at the end.
func temporaryDirectory() -> String {
    let dir = NSTemporaryDirectory() + "switchyard-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func write(_ text: String, to path: String) { try! Data(text.utf8).write(to: URL(fileURLWithPath: path)) }

final class JobTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = temporaryDirectory() }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func load(_ json: String, _ overrides: [String] = []) throws -> Job {
        write(json, to: dir + "/job.json")
        return try Job.load(path: dir + "/job.json", overrides: overrides)
    }

    func assertJobError(
        _ json: String, _ overrides: [String] = [], key: String, contains: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try load(json, overrides), file: file, line: line) { e in
            guard let je = e as? JobError else { return XCTFail("not a JobError: \(e)", file: file, line: line) }
            XCTAssertEqual(je.key, key, "\(je)", file: file, line: line)
            XCTAssertTrue(je.message.contains(contains), "\(je)", file: file, line: line)
        }
    }

    func testFileOverridesDefaultsAndSetOverridesFile() throws {
        let job = try load(
            #"{"name": "a", "model": {"nLayer": 3}, "data": {"path": "x.txt"}, "train": {"lr": 0.01}}"#,
            ["train.lr=0.02", "model.nHead=2", "data.path=y.txt"])
        XCTAssertEqual(job.name, "a")
        XCTAssertEqual(job.model.nLayer, 3)
        XCTAssertEqual(job.model.nHead, 2)
        XCTAssertEqual(job.train.lr, 0.02)
        XCTAssertEqual(job.data.path, "y.txt")
        XCTAssertEqual(job.train.steps, Job().train.steps, "unset keys keep their defaults")
    }

    func testResolvedJSONRoundTrips() throws {
        var job = Job()
        job.data.path = "d.txt"; job.train.lr = 0.0123; job.model.topK = 1
        write(job.resolvedJSON.pretty, to: dir + "/r.json")
        XCTAssertEqual(try Job.load(path: dir + "/r.json"), job)
        XCTAssertEqual(job.resolvedJSON["model"]?["topK"], 1)
    }

    func testErrorsNameTheKey() {
        let base = #""data": {"path": "x.txt"}"#
        assertJobError("{\(base), \"train\": {\"lrr\": 1}}", key: "train.lrr", contains: "unknown key")
        assertJobError("{\(base), \"bogus\": 1}", key: "bogus", contains: "known keys")
        assertJobError(
            "{\(base), \"train\": {\"steps\": \"ten\"}}", key: "train.steps", contains: "expected integer, got a string"
        )
        assertJobError(
            "{\(base), \"train\": {\"steps\": 1.5}}", key: "train.steps", contains: "expected integer, got a number")
        assertJobError(
            "{\(base), \"train\": {\"steps\": 300.0}}", key: "train.steps",
            contains: "expected integer, got a number (300.0)")
        assertJobError(
            "{\(base), \"train\": {\"steps\": 3e2}}", key: "train.steps", contains: "expected integer, got a number")
        assertJobError("{\(base), \"model\": 3}", key: "model", contains: "unknown key")
        assertJobError(
            "{\(base), \"model\": {\"nEmbd\": 30, \"nHead\": 4}}", key: "model.nEmbd",
            contains: "not divisible by model.nHead")
        assertJobError(
            "{\(base), \"model\": {\"nExpert\": 2, \"topK\": 3}}", key: "model.topK", contains: "exceeds model.nExpert")
        assertJobError("{\(base), \"model\": {\"topK\": 0}}", key: "model.topK", contains: ">= 1")
        // Found by ops/fuzz.py: nLayer = 2^63 - 1 passed validation and crashed counting its MoE blocks.
        assertJobError(
            "{\(base), \"model\": {\"nLayer\": 9223372036854775807}}", key: "model.nLayer", contains: "1...65536")
        assertJobError(
            "{\(base), \"model\": {\"nLayer\": 4096, \"nExpert\": 4096}}", key: "model.nExpert",
            contains: "expert placements")
        assertJobError("{\(base), \"train\": {\"steps\": 9223372036854775807}}", key: "train.steps", contains: "1...")
        assertJobError(
            "{\(base), \"model\": {\"nExpert\": 1, \"topK\": 2}}", key: "model.topK", contains: "exceeds model.nExpert")
        assertJobError("{\(base), \"train\": {\"minLr\": 1}}", key: "train.minLr", contains: "train.lr")
        assertJobError("{\(base), \"name\": \"../x\"}", key: "name", contains: "folder")
        assertJobError("{}", key: "data.path", contains: "required")
        assertJobError(
            "{\(base)}", ["train.routerSkewStride=3"], key: "train.routerSkewStride",
            contains: "divide model.nExpert = 4")
        assertJobError("{\(base)}", ["train.steps"], key: "--set", contains: "key=value")
        assertJobError("{\(base)}", ["train.stepz=3"], key: "train.stepz", contains: "unknown key in --set")
        assertJobError("{\(base)}", ["train.steps=abc"], key: "train.steps", contains: "not a number")
        assertJobError("{\(base)}", ["train.steps=2.5"], key: "train.steps", contains: "expected integer")
        assertJobError("{\(base)}", ["train.steps=300.0"], key: "train.steps", contains: "got a number (300.0)")
        XCTAssertEqual(try load("{\(base)}", ["train.steps=300", "train.lr=1"]).train.steps, 300)
    }

    /// train.topKSchedule: k by step, and the errors that name it; the MoH and router keys.
    func testTopKScheduleAndSparseDesignKeys() throws {
        let base = #""data": {"path": "x.txt"}, "model": {"nExpert": 4, "topK": 1}, "train": {"steps": 20}"#
        let linear = try load("{\(base)}", ["train.topKSchedule=linear"]).topKSchedule
        XCTAssertEqual([0, 4, 5, 9, 10, 14, 15, 19].map(linear.k), [1, 1, 2, 2, 3, 3, 4, 4], "4 stages of 5 steps")
        XCTAssertEqual(linear.maxK, 4)
        let listed = try load("{\(base)}", ["train.topKSchedule=0:2, 7:3"]).topKSchedule
        XCTAssertEqual([0, 6, 7, 19].map(listed.k), [2, 2, 3, 3])
        XCTAssertEqual(try load("{\(base)}").topKSchedule.k(at: 19), 1, "no schedule: model.topK")
        XCTAssertFalse(try load("{\(base)}").topKSchedule.isActive)
        for (value, says) in [
            ("fast", "not STEP:K"), ("0:1,3", "not STEP:K"), ("1:2", "start at step 0"), ("0:1,5:2,5:3", "increase"),
            ("0:5", "1...model.nExpert (4)"), ("0:0", "1...model.nExpert")
        ] {
            assertJobError("{\(base)}", ["train.topKSchedule=\(value)"], key: "train.topKSchedule", contains: says)
        }
        assertJobError("{\(base)}", ["model.router=frozen"], key: "model.router", contains: "learned")
        assertJobError("{\(base)}", ["model.attention=gqa"], key: "model.attention", contains: "moh")
        assertJobError("{\(base)}", ["model.mohActiveHeads=2"], key: "model.attention", contains: "set it to")
        let moh = ["model.attention=moh", "model.nHead=4", "model.nEmbd=64"]
        // model.attention = moh alone is a valid job: half the routed heads are active.
        let alone = try load("{\(base)}", moh)
        XCTAssertEqual(alone.model.activeRoutedHeads, 2, "half of 4 routed heads")
        XCTAssertEqual(try load("{\(base)}", moh + ["model.mohSharedHeads=3"]).model.activeRoutedHeads, 1)
        assertJobError("{\(base)}", moh + ["model.mohActiveHeads=-1"], key: "model.mohActiveHeads", contains: "1...4")
        assertJobError("{\(base)}", moh + ["model.mohActiveHeads=5"], key: "model.mohActiveHeads", contains: "1...4")
        assertJobError(
            "{\(base)}", moh + ["model.mohSharedHeads=4"], key: "model.mohSharedHeads", contains: "0..<model.nHead")
        assertJobError(
            "{\(base)}", moh + ["model.mohSharedHeads=1", "model.mohActiveHeads=4"], key: "model.mohActiveHeads",
            contains: "1...3")
        let ok = try load("{\(base)}", moh + ["model.mohSharedHeads=1", "model.mohActiveHeads=2"])
        XCTAssertEqual(ok.model.headRouterRows, 6, "4 head scores and 2 mix logits")
    }

    func testMissingFileAndBadJSON() {
        XCTAssertThrowsError(try Job.load(path: dir + "/nope.json")) {
            XCTAssertTrue("\($0)".contains("job file not found"), "\($0)")
        }
        write("{\n  \"name\": \"a\",\n  \"seed\" 1\n}", to: dir + "/bad.json")
        XCTAssertThrowsError(try Job.load(path: dir + "/bad.json")) {
            XCTAssertTrue("\($0)".contains("not valid JSON: line 3, column 10"), "\($0)")
        }
        write("[1]", to: dir + "/arr.json")
        XCTAssertThrowsError(try Job.load(path: dir + "/arr.json")) {
            XCTAssertTrue("\($0)".contains("must be a JSON object"), "\($0)")
        }
    }

    func testShippedJobFilesLoad() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        for name in ["tiny", "small", "fortunes-mixtral", "fortunes-bpe", "medium", "wide-batch"] {
            let job = try Job.load(path: "\(root)/jobs/\(name).json")
            XCTAssertEqual(job.name, name)
        }
        let small = try Job.load(path: "\(root)/jobs/small.json")
        XCTAssertEqual(
            [
                small.model.nLayer, small.model.nEmbd, small.model.nHead, small.model.ffHidden, small.model.nExpert,
                small.model.topK, small.model.seqLen, small.train.batchSize
            ], [4, 256, 8, 512, 8, 2, 256, 8])
    }
}
