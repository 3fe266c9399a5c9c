import Checkpoint
import Comm
import Foundation
import Model
import Training
import XCTest

/// Checkpoints in training: exact resume on the same layout, resharded resume on another,
/// fallback past a corrupt checkpoint, and the architecture check.
final class ResumeTests: XCTestCase {
    static let env = RunEnvironment(blasCore: "test", blasThreads: 1, host: "test", cpu: "test")
    var dir = ""
    override func setUp() { dir = temporaryDirectory() }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    struct Run { var summary: TrainSummary; var state: [String: [Float]]; var resumed: ResumeInfo? }

    /// Trains `job` on `world` thread-ranks (stopping after `stopAfter` steps of this run if set,
    /// as SIGTERM would), resuming per `choice`. Returns rank 0's summary and every tensor
    /// (parameters and AdamW moments) assembled whole.
    func run(_ job: Job, _ data: TokenData, world: Int, stopAfter: Int? = nil, choice: ResumeChoice = .latest) throws
        -> Run
    {
        let per = try LocalCommunicator.run(size: world) { comm -> (TrainSummary, [Piece], ResumeInfo?) in
            let t = try Trainer(job: job, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
            let info = try t.resume(choice)
            let calls = Counter()
            let s = try t.run(stopRequested: { calls.next() >= (stopAfter ?? Int.max) })
            return (
                s,
                t.shardViews().map {
                    Piece(
                        name: $0.name, globalShape: $0.globalShape, ranges: $0.ranges,
                        values: Array(UnsafeBufferPointer(start: $0.data, count: $0.count)))
                }, info
            )
        }
        var state: [String: [Float]] = [:]
        for (_, views, _) in per {
            for v in views {
                let values = v.values
                if state[v.name] == nil { state[v.name] = Array(repeating: .nan, count: v.globalShape.reduce(1, *)) }
                let cols = v.globalShape.last!, rows = v.ranges.count == 2 ? v.ranges[0] : [0, 1], vc = v.ranges.last!
                var i = 0
                for r in rows[0]..<rows[1] {
                    for c in vc[0]..<vc[1] { state[v.name]![r * cols + c] = values[i]; i += 1 }
                }
            }
        }
        return Run(summary: per[0].0, state: state, resumed: per[0].2)
    }

    func job(world: Int, dp: Int = 0, tp: Int = 1, run name: String) -> (Job, TokenData) {
        var (j, d) = layoutJob(dp: dp, tp: tp, steps: 40)
        j.runsDir = dir
        j.name = name
        j.checkpoint.every = 5
        j.train.evalEvery = 0
        return (j, d)
    }

    /// 40 steps straight vs 20, stop (SIGTERM's path: finish the step, save), resume to 40:
    /// steps 20-39 losses, final parameters and moments bitwise identical, with async saves every 5 steps.
    func testResumeIsBitwiseExactAtWorldOneTwoAndFour() throws {
        for (world, dp, tp) in [(1, 0, 1), (2, 0, 1), (4, 2, 2)] {
            let (straightJob, data) = job(world: world, dp: dp, tp: tp, run: "straight\(world)")
            let straight = try run(straightJob, data, world: world)
            let (j, _) = job(world: world, dp: dp, tp: tp, run: "stopped\(world)")
            let first = try run(j, data, world: world, stopAfter: 20)
            XCTAssertTrue(first.summary.stoppedEarly)
            XCTAssertEqual(first.summary.losses.count, 20)
            let second = try run(j, data, world: world)
            XCTAssertEqual(second.resumed?.step, 20, "world \(world) resumes at step 20")
            XCTAssertEqual(second.summary.firstStep, 20)
            XCTAssertEqual(
                second.summary.losses.map(\.bitPattern), Array(straight.summary.losses[20..<40]).map(\.bitPattern),
                "world \(world) losses")
            XCTAssertEqual(Set(second.state.keys), Set(straight.state.keys))
            for (name, v) in straight.state {
                XCTAssertEqual(second.state[name]!.map(\.bitPattern), v.map(\.bitPattern), "world \(world): \(name)")
            }
            XCTAssertTrue(straight.state.keys.contains("optim.v.head.weight"))
        }
    }

    /// `edit(job)` 40 steps straight vs 20, stop, resume to 40 at `world`: the resumed half's losses
    /// and the final state are the straight run's bits. Returns the straight run.
    func assertBitwiseResume(world: Int, _ prefix: String, _ edit: (Job) -> Job) throws -> Run {
        let (straightJob, data) = job(world: world, run: prefix + "-straight")
        let straight = try run(edit(straightJob), data, world: world)
        let j = edit(job(world: world, run: prefix + "-stopped").0)
        _ = try run(j, data, world: world, stopAfter: 20)
        let second = try run(j, data, world: world)
        XCTAssertEqual(second.resumed?.step, 20, prefix)
        XCTAssertEqual(
            second.summary.losses.map(\.bitPattern), Array(straight.summary.losses[20..<40]).map(\.bitPattern), prefix)
        for (name, v) in straight.state {
            XCTAssertEqual(second.state[name]!.map(\.bitPattern), v.map(\.bitPattern), "\(prefix): \(name)")
        }
        return straight
    }

    /// `edit`'s job trained at dp 2 x tp 2 for 20 steps, resumed at world 1 from that checkpoint:
    /// each resumed step's relative loss difference from `straight` (the world-2 run's steps 20-39).
    func reshardGaps(_ prefix: String, _ edit: (Job) -> Job, straight: Run) throws -> [Double] {
        let data = job(world: 2, run: prefix).1
        _ = try run(edit(job(world: 4, dp: 2, tp: 2, run: prefix + "-four").0), data, world: 4, stopAfter: 20)
        let resumed = try run(
            edit(job(world: 1, run: prefix + "-one").0), data, world: 1,
            choice: .from("\(dir)/\(prefix)-four/checkpoints/step-000000020"))
        XCTAssertEqual(resumed.summary.firstStep, 20, prefix)
        return zip(resumed.summary.losses, straight.summary.losses[20..<40]).map { abs(Double($0 - $1)) / Double($1) }
    }

    /// Mixtral-shaped (rope + SwiGLU): bitwise resume at world 2 (w3 and its moments saved and
    /// restored), and a resume of the world-4 checkpoint at world 1 within 1e-5.
    func testMixtralShapedResumeIsBitwiseAndReshards() throws {
        let straight = try assertBitwiseResume(world: 2, "mx", mixtralShaped)
        XCTAssertNotNil(straight.state["optim.m.layers.0.moe.experts.1.w3.weight"])
        let worst = try reshardGaps("mx", mixtralShaped, straight: straight).max()!
        XCTAssertLessThan(worst, 1e-5, "rope+swiglu 4 -> 1: max relative loss difference \(worst)")
    }

    /// The open families' attention (grouped-query heads, a head size not C / H, OLMoE's q/k norm
    /// split over tp as vectors, Qwen3's replicated per head) resumes bitwise, and a dp 2 x tp 2
    /// checkpoint resumes at world 1 within the layout tolerance.
    func testGroupedQueryAndQKNormResumeBitwiseAndReshard() throws {
        for qkNorm in ["full", "head"] {
            let family = { (j: Job) -> Job in
                var m = mixtralShaped(j)
                m.model.nKVHead = 2; m.model.headDim = 12; m.model.qkNorm = qkNorm; m.model.normTopK = false
                return m
            }
            let straight = try assertBitwiseResume(world: 2, "gq-\(qkNorm)", family)
            XCTAssertNotNil(straight.state["optim.m.layers.0.attn.qnorm.weight"])
            let gaps = try reshardGaps("gq-\(qkNorm)", family, straight: straight)
            // The first resumed step shows a misloaded tensor (>1e-3); later ones drift as any
            // two layouts do (measured: 1.3e-6 at step 20, up to 4.0e-5 by step 39 with the full
            // norm, whose row sums add over tp in another order; AMD EPYC).
            XCTAssertLessThan(gaps[0], 1e-5, "qkNorm \(qkNorm) dp2 x tp2 -> 1: first resumed step \(gaps[0])")
            XCTAssertLessThan(gaps.max()!, 1e-4, "qkNorm \(qkNorm) dp2 x tp2 -> 1: max relative loss difference")
        }
    }

    /// The selection biases are checkpointed: resume is bitwise (they steer routing).
    func testRouterBiasResumesBitwise() throws {
        let straight = try assertBitwiseResume(world: 2, "rb") {
            var j = $0
            j.train.routerBiasRate = 0.01
            j.train.auxLossCoef = 0
            return j
        }
        XCTAssertTrue(straight.state["router.selectionBias"]?.contains { $0 != 0 } ?? false, "biases moved and saved")
    }

    /// Mixture-of-Head attention (its head routers saved with their moments), SMoE-Dropout's
    /// random router with a topK schedule (k is a function of the step), a shared expert and the
    /// router z-loss, all in one job, resume bitwise.
    func testMixtureOfHeadsAndTopKScheduleResumeBitwise() throws {
        let straight = try assertBitwiseResume(world: 2, "moh") {
            var j = $0
            j.model.attention = "moh"; j.model.mohSharedHeads = 1; j.model.mohActiveHeads = 2
            j.model.router = "random"; j.model.topK = 1; j.train.topKSchedule = "0:1,15:2,30:3"
            j.model.nSharedExperts = 1; j.train.zLossCoef = 0.01  // and the other designs' state
            return j
        }
        XCTAssertNotNil(straight.state["optim.m.layers.1.attn.router.weight"])
        XCTAssertNotNil(straight.state["optim.v.layers.2.moe.shared.0.w1.weight"])
    }

    /// shardOptimizer: resume bitwise at dp 2; resharded within 1e-5 from sharded dp 4 to plain
    /// dp 2, from plain dp 2 to sharded dp 4, and from sharded dp 4 to sharded dp 2.
    func testShardedOptimizerResumesBitwiseAndReshards() throws {
        func sharded(_ j: Job, _ on: Bool = true) -> Job {
            var s = j
            s.train.shardOptimizer = on
            return s
        }
        let (refJob, data) = job(world: 1, run: "z-reference")
        let ref = try run(refJob, data, world: 1)
        _ = try assertBitwiseResume(world: 2, "z") { sharded($0) }
        func reshard(save: Int, saveOn: Bool, load: Int, loadOn: Bool, _ label: String) throws {
            _ = try run(sharded(job(world: save, run: "z-save-\(label)").0, saveOn), data, world: save, stopAfter: 20)
            let ckpt = "\(dir)/z-save-\(label)/checkpoints/step-000000020"
            let r = try run(
                sharded(job(world: load, run: "z-load-\(label)").0, loadOn), data, world: load, choice: .from(ckpt))
            XCTAssertEqual(r.summary.firstStep, 20, label)
            let worst = zip(r.summary.losses, ref.summary.losses[20..<40]).map { abs(Double($0 - $1)) / Double($1) }
                .max()!
            XCTAssertLessThan(worst, 1e-5, "\(label): max relative loss difference \(worst)")
            print("shardOptimizer resume \(label): max relative loss difference \(worst) vs world 1")
        }
        try reshard(save: 4, saveOn: true, load: 2, loadOn: false, "on-dp4-to-off-dp2")
        try reshard(save: 2, saveOn: false, load: 4, loadOn: true, "off-dp2-to-on-dp4")
        try reshard(save: 4, saveOn: true, load: 2, loadOn: true, "on-dp4-to-on-dp2")
    }

    /// Save at world 4 (tp 2, experts over 4 ranks), resume at world 1 and 2, and the reverse:
    /// the losses continue within 1e-4 of the uninterrupted run.
    func testReshardedResumeContinuesTheRun() throws {
        let (refJob, data) = job(world: 1, run: "reference")
        let ref = try run(refJob, data, world: 1)
        func resumeElsewhere(saveWorld: Int, saveDP: Int, saveTP: Int, loadWorld: Int, loadTP: Int, label: String)
            throws
        {
            let (saveJob, _) = job(world: saveWorld, dp: saveDP, tp: saveTP, run: "save-\(label)")
            _ = try run(saveJob, data, world: saveWorld, stopAfter: 20)
            var (loadJob, _) = job(world: loadWorld, tp: loadTP, run: "load-\(label)")
            loadJob.layout.dp = 0
            let ckpt = "\(dir)/save-\(label)/checkpoints/step-000000020"
            let resumed = try run(loadJob, data, world: loadWorld, choice: .from(ckpt))
            XCTAssertEqual(resumed.summary.firstStep, 20, label)
            var worst = 0.0
            for (a, b) in zip(resumed.summary.losses, ref.summary.losses[20..<40]) {
                worst = max(worst, abs(Double(a - b)) / Double(b))
            }
            XCTAssertEqual(resumed.summary.losses.count, 20, label)
            XCTAssertLessThan(worst, 1e-4, "\(label): max relative loss difference \(worst)")
            print("resharded resume \(label): max relative loss difference \(worst) vs the uninterrupted run")
        }
        try resumeElsewhere(saveWorld: 4, saveDP: 2, saveTP: 2, loadWorld: 1, loadTP: 1, label: "4to1")
        try resumeElsewhere(saveWorld: 4, saveDP: 2, saveTP: 2, loadWorld: 2, loadTP: 1, label: "4to2")
        try resumeElsewhere(saveWorld: 4, saveDP: 2, saveTP: 2, loadWorld: 2, loadTP: 2, label: "4to2tp")
        try resumeElsewhere(saveWorld: 1, saveDP: 0, saveTP: 1, loadWorld: 4, loadTP: 2, label: "1to4")
    }

    func testCorruptNewestCheckpointFallsBackToThePreviousOne() throws {
        let (j, data) = job(world: 1, run: "corrupt")
        _ = try run(j, data, world: 1, stopAfter: 20)
        let root = "\(dir)/corrupt/checkpoints"
        XCTAssertEqual(CheckpointStore.list(root: root).map(\.step), [20, 15, 10])
        let file = root + "/step-000000020/rank-00000.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: file))
        let r = try run(j, data, world: 1)
        XCTAssertEqual(r.resumed?.step, 15, "falls back to step 15")
        XCTAssertEqual(r.resumed?.skipped.count, 1)
        XCTAssertTrue(
            r.resumed?.skipped.first?.problem.contains("checksum mismatch") ?? false,
            "\(String(describing: r.resumed?.skipped))")
        // --resume-from a checkpoint that does not verify is an error, not a fallback.
        XCTAssertThrowsError(try run(j, data, world: 1, choice: .from(root + "/step-000000020"))) {
            XCTAssertTrue("\($0)".contains("does not verify"), "\($0)")
        }
    }

    func testJobThatChangesTheArchitectureIsAnErrorNamingTheField() throws {
        let (j, data) = job(world: 1, run: "arch")
        _ = try run(j, data, world: 1, stopAfter: 5)
        var changed = j
        changed.model.ffHidden = 32
        XCTAssertThrowsError(try run(changed, data, world: 1)) {
            XCTAssertTrue("\($0)".hasPrefix("model.ffHidden: the checkpoint"), "\($0)")
        }
    }
}

/// A copy of one rank's shard (name, global shape, its ranges, its values).
struct Piece: Sendable { let name: String; let globalShape: [Int]; let ranges: [[Int]]; let values: [Float] }

/// Counts calls (the stop-request closure is called once per step).
final class Counter: @unchecked Sendable {
    private var n = 0
    private let lock = NSLock()
    func next() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
}
