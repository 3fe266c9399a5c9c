import Foundation
import JSON
import XCTest

/// `switchyard sample` through the binary: the same greedy tokens at np 1, np 2 (experts split
/// over dp 2) and np 4 (tp 2 x dp 2), seeded determinism, batches of prompts (split over the dp
/// groups under mpirun), the learned positions' limit, and clear errors.
final class SampleCLITests: XCTestCase {
    func testGreedyTokensAreTheSameAtOneTwoAndFourRanks() throws {
        let ws = Workspace()
        let train = try Harness.switchyard(ws.tinyArgs(steps: 60, extra: HFExportTests.mixtral), cwd: ws.dir)
        XCTAssertEqual(train.status, 0, train.stderr)
        let run = ws.dir + "/runs/tiny"
        let args = ["sample", run, "--prompt", "A journey", "--tokens", "48", "--temperature", "0", "--threads", "1"]
        let one = try Harness.switchyard(args)
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(one.stdoutBytes.count, 49, "48 bytes and a newline: \(one.stdout)")
        XCTAssertTrue(one.stderr.contains("tokens/s"), one.stderr)
        let two = try Harness.mpi(2, args)
        XCTAssertEqual(two.status, 0, two.stderr)
        XCTAssertTrue(two.stderr.contains("world 2 (dp 2 x tp 1)"), two.stderr)
        let four = try Harness.mpi(4, args + ["--set", "layout.tp=2"])
        XCTAssertEqual(four.status, 0, four.stderr)
        XCTAssertTrue(four.stderr.contains("world 4 (dp 2 x tp 2)"), four.stderr)
        XCTAssertEqual(two.stdoutBytes, one.stdoutBytes, "np 2 vs np 1")
        XCTAssertEqual(four.stdoutBytes, one.stdoutBytes, "np 4 (tp 2) vs np 1")
        print("greedy continuation of 'A journey' at np 1, 2, 4: \(one.stdout)")

        // Seeded draws: the same seed, the same text; at np 2 too.
        let drawn = ["sample", run, "--prompt", "All", "--tokens", "40", "--seed", "7", "--top-k", "20"]
        let a = try Harness.switchyard(drawn), b = try Harness.switchyard(drawn), c = try Harness.mpi(2, drawn)
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(a.stdoutBytes, b.stdoutBytes)
        XCTAssertEqual(a.stdoutBytes, c.stdoutBytes, "np 2 draws the same tokens")
        let other = try Harness.switchyard(drawn.dropLast(4) + ["--seed", "8", "--top-k", "20"])
        XCTAssertNotEqual(a.stdoutBytes, other.stdoutBytes, "another seed, other text")

        // A batch of prompts: one JSON line each; greedy, each equals its prompt sampled alone.
        let file = ws.write("prompts.txt", "A journey\nThe quick brown\nAll that\n")
        let batch = try Harness.switchyard([
            "sample", run, "--prompts", file, "--tokens", "48", "--temperature", "0", "--threads", "1"
        ])
        XCTAssertEqual(batch.status, 0, batch.stderr)
        let lines = batch.stdout.split(separator: "\n").map { try? JSONValue.parse(String($0)) }
        XCTAssertEqual(lines.count, 3)
        XCTAssertEqual(lines[0]?["prompt"]?.stringValue, "A journey")
        XCTAssertEqual((lines[0]?["continuation"]?.stringValue ?? "") + "\n", one.stdout)
        // Under mpirun the prompts are split over the dp groups (2 + 1 at dp 2; one group idle at
        // dp 4): the same tokens as world 1.
        let batchArgs = ["sample", run, "--prompts", file, "--tokens", "48", "--temperature", "0", "--threads", "1"]
        for np in [2, 4] {
            let split = try Harness.mpi(np, batchArgs)
            XCTAssertEqual(split.status, 0, split.stderr)
            XCTAssertTrue(split.stderr.contains("prompts split over the dp groups"), split.stderr)
            XCTAssertEqual(split.stdout, batch.stdout, "np \(np): prompts split over dp \(np)")
        }
    }

    func testLearnedPositionsStopAtSeqLenAndErrorsAreClear() throws {
        let ws = Workspace()
        XCTAssertEqual(try Harness.switchyard(ws.tinyArgs(steps: 5), cwd: ws.dir).status, 0)
        let run = ws.dir + "/runs/tiny"
        let r = try Harness.switchyard(["sample", run, "--prompt", "The quick", "--tokens", "500"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdoutBytes.count, 64 - 9 + 1, "stops at seqLen 64 after a 9-byte prompt")
        XCTAssertTrue(r.stderr.contains("generation stops at model.seqLen = 64"), r.stderr)
        let long = String(repeating: "x", count: 64)
        let tooLong = try Harness.switchyard(["sample", run, "--prompt", long])
        XCTAssertEqual(tooLong.status, 1)
        XCTAssertTrue(tooLong.stderr.contains("shorten the prompt"), tooLong.stderr)
        XCTAssertEqual(try Harness.switchyard(["sample", run]).status, 64, "no prompt")
        XCTAssertEqual(try Harness.switchyard(["sample", run, "--prompt", "a", "--temperature", "-1"]).status, 64)
        XCTAssertEqual(try Harness.switchyard(["sample", run, "--prompt", "a", "--set", "model.nLayer=3"]).status, 64)
        let missing = try Harness.switchyard(["sample", ws.dir + "/nope", "--prompt", "a"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1, missing.stderr)
        let mpiBad = try Harness.mpi(2, ["sample", run, "--prompt", "a", "--set", "layout.tp=3"])
        XCTAssertEqual(mpiBad.status, 1)
        XCTAssertTrue(mpiBad.stderr.contains("layout.tp"), mpiBad.stderr)
    }
}
