import Comm
import Foundation
import JSON
import Tensor
import Training
import XCTest

final class TrainerTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = temporaryDirectory() }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    static let env = RunEnvironment(blasCore: "test", blasThreads: 1, host: "test", cpu: "test")

    /// A small job on a repetitive text (learnable in a few dozen steps).
    func job(steps: Int = 40) -> (Job, TokenData) {
        var job = Job()
        job.name = "t"
        job.runsDir = dir + "/runs"
        job.model = .init(
            vocabSize: 256, seqLen: 16, nLayer: 1, nEmbd: 32, nHead: 2, nExpert: 3, topK: 2, ffHidden: 32, moeEvery: 1)
        job.train.steps = steps
        job.train.batchSize = 4
        job.train.warmupSteps = 5
        job.train.lr = 1e-2
        job.train.minLr = 1e-3
        job.train.evalEvery = 20
        job.train.evalWindows = 4
        job.train.peakGflops = 50
        job.data.path = "mem"
        let text = String(repeating: "the quick brown fox jumps over the lazy dog. ", count: 60)
        return (job, TokenData(path: "mem", format: "text", tokens: Array(text.utf8).map(UInt16.init)))
    }

    func train(_ job: Job, _ data: TokenData, log: Bool = false, stop: @escaping @Sendable () -> Bool = { false })
        throws -> TrainSummary
    {
        try LocalCommunicator.run(size: 1) { comm in
            let trainer = try Trainer(
                job: job, comm: comm, data: data, log: log ? try RunLog(job: job) : nil,
                environment: Self.env, say: { _ in })
            return try trainer.run(stopRequested: stop)
        }[0]
    }

    func testLossFallsAndEvalIsLogged() throws {
        let (j, d) = job()
        let s = try train(j, d)
        XCTAssertEqual(s.losses.count, 40)
        XCTAssertEqual(Double(s.losses[0]), 5.545, accuracy: 0.15, "initial loss is near ln 256")
        XCTAssertLessThan(s.losses.suffix(5).reduce(0, +) / 5, 2.5, "loss falls on a repetitive text: \(s.losses)")
        XCTAssertEqual(s.evals.map(\.step), [19, 39])
        XCTAssertLessThan(s.evals[1].loss, s.evals[0].loss + 0.5)
    }

    func testSameJobTwiceIsBitwiseIdentical() throws {
        let (j, d) = job(steps: 12)
        let a = try train(j, d), b = try train(j, d)
        XCTAssertEqual(a.losses.map(\.bitPattern), b.losses.map(\.bitPattern))
        var j2 = j
        j2.seed += 1
        XCTAssertNotEqual(try train(j2, d).losses.map(\.bitPattern), a.losses.map(\.bitPattern))
    }

    /// Work items are fixed by the shapes (Parallel.swift), so 2 threads give 1 thread's bits:
    /// losses and every parameter after 6 steps. The shapes make every kernel cut more than one
    /// item (N = 512 rows > Linear.rowGrain, C = 128 > Linear.weightRowGrain, 4 x 4 attention heads).
    func testTwoThreadsGiveOneThreadsBits() throws {
        var (j0, data) = job(steps: 6)
        j0.model = .init(
            vocabSize: 256, seqLen: 128, nLayer: 2, nEmbd: 128, nHead: 4, nExpert: 4, topK: 2, ffHidden: 64,
            moeEvery: 2)
        j0.train.gradClip = 0.5
        j0.train.evalEvery = 0
        let j = j0, d = data
        func run(threads: Int) throws -> ([UInt32], [UInt32]) {
            let saved = Parallel.threads
            Parallel.threads = threads
            defer { Parallel.threads = saved }
            return try LocalCommunicator.run(size: 1) { comm in
                let t = try Trainer(job: j, comm: comm, data: d, log: nil, environment: Self.env, say: { _ in })
                let s = try t.run()
                let p = t.model.store.params
                return (s.losses.map(\.bitPattern), (0..<p.count).map { p[$0].bitPattern })
            }[0]
        }
        let one = try run(threads: 1), two = try run(threads: 2)
        XCTAssertEqual(one.0.count, 6)
        XCTAssertEqual(one.0, two.0, "losses at 1 and 2 threads differ")
        XCTAssertTrue(one.1 == two.1, "parameters after 6 steps at 1 and 2 threads differ")
    }

    func testRunLogHoldsStartStepsEvalAndEnd() throws {
        let (j, d) = job(steps: 20)
        _ = try train(j, d, log: true)
        let lines = try String(contentsOfFile: j.runDirectory + "/log.jsonl", encoding: .utf8).split(separator: "\n")
        let events = try lines.map { try JSONValue.parse(String($0)) }
        XCTAssertEqual(events.first?["event"], "start")
        XCTAssertEqual(events.last?["event"], "end")
        XCTAssertEqual(events.last?["reason"], "completed")
        let steps = events.filter { $0["event"] == "step" }
        XCTAssertEqual(steps.map { $0["step"]?.intValue }, (0..<20).map { $0 })
        for key in [
            "loss", "auxLoss", "lr", "gradNorm", "tokensPerSec", "modelFlopsPerSec", "mfu", "expertLoad", "stepMs"
        ] {
            XCTAssertNotNil(steps[3][key], "step event lacks \(key)")
        }
        // Tokens per expert: one MoE block, 3 experts, every token routed to K = 2 of them.
        let load = steps[3]["expertLoad"]!.arrayValue!
        XCTAssertEqual(load.count, 1)
        XCTAssertEqual(load[0].arrayValue!.compactMap(\.intValue).reduce(0, +), 4 * 16 * 2)
        XCTAssertEqual(events.filter { $0["event"] == "eval" }.count, 1)
        let saved = try Job.load(path: j.runDirectory + "/job.json")
        XCTAssertEqual(saved, j, "job.json holds the resolved spec")
    }

    func testStopRequestEndsAfterTheCurrentStep() throws {
        let (j, d) = job(steps: 30)
        let s = try train(j, d, log: true, stop: { true })
        XCTAssertEqual(s.losses.count, 1)
        XCTAssertTrue(s.stoppedEarly)
        let last = try String(contentsOfFile: j.runDirectory + "/log.jsonl", encoding: .utf8).split(separator: "\n")
            .last!
        XCTAssertEqual(try JSONValue.parse(String(last))["reason"], "signal")
    }

    func testNonFiniteStepsAreSkippedThenStop() throws {
        var (j, d) = job(steps: 10)
        j.train.lr = 1e30
        j.train.minLr = 0
        j.train.warmupSteps = 0
        XCTAssertThrowsError(try train(j, d)) {
            XCTAssertTrue("\($0)".contains("3 consecutive non-finite steps"), "\($0)")
        }
    }
}

extension TrainerTests {
    /// A parameter turned NaN after step 1: the saves after steps 1 and 3 are skipped with a
    /// warning and no checkpoint is ever written from the poisoned state.
    func testNoCheckpointFromNonFiniteState() throws {
        var (job, data) = job(steps: 4)
        job.checkpoint.every = 2
        job.train.evalEvery = 0
        let j = job, d = data
        _ = try LocalCommunicator.run(size: 1) { comm in
            let t = try Trainer(
                job: j, comm: comm, data: d, log: try RunLog(job: j), environment: TrainerTests.env, say: { _ in })
            t.onStepEnd = { if $0 == 1 { t.model.store.params[5] = .nan } }
            _ = try t.run()
        }
        let log = try String(contentsOfFile: job.runDirectory + "/log.jsonl", encoding: .utf8)
        XCTAssertEqual(log.components(separatedBy: "\"kind\":\"nonFiniteState\"").count - 1, 2, log)
        XCTAssertFalse(log.contains("\"event\":\"checkpoint\""), "a checkpoint was written:\n\(log)")
        let saved = (try? FileManager.default.contentsOfDirectory(atPath: job.runDirectory + "/checkpoints")) ?? []
        XCTAssertFalse(saved.contains { $0.hasPrefix("step-") }, "\(saved)")
    }
}
