import Comm
import Placement
import Training
import XCTest

@testable import Model

final class MemoryTests: XCTestCase {
    static let env = RunEnvironment(blasCore: "test", blasThreads: 1, host: "test", cpu: "test")

    /// The estimate's parameter share is each rank's real ParameterStore size, at world 1, dp 2
    /// (experts split over the ranks) and dp 2 x tp 2 (attention split too).
    func testEstimateCountsEachRanksParameters() throws {
        let cases: [(Int, Int, String)] = [
            (1, 1, "mha"), (2, 1, "mha"), (4, 2, "mha"), (1, 1, "moh"), (4, 2, "moh"), (1, 1, "head"), (4, 2, "head"),
            (4, 2, "full")
        ]
        for (world, tp, attention) in cases {
            var edited = layoutJob(tp: tp).0
            let data = layoutJob(tp: tp).1
            let moh = attention == "moh"
            if moh {  // Mixture-of-Head attention adds a head router per block
                edited.model.attention = "moh"; edited.model.mohSharedHeads = 1; edited.model.mohActiveHeads = 2
            } else if attention != "mha" {  // grouped-query heads of size 16 (not C / H) and a q/k norm
                edited.model.nKVHead = 2; edited.model.headDim = 16; edited.model.qkNorm = attention
                edited.model.positions = "rope"
            }
            let job = edited
            let counts = try LocalCommunicator.run(size: world) { comm -> Int in
                try Trainer(job: job, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
                    .model.store.count
            }
            let plan = try job.resolveLayout(world: world).plan
            for rank in 0..<world {
                let e = MemoryEstimate.perRank(
                    config: job.model, world: world, tp: tp, plan: plan, rank: rank, maxBatch: 3, threads: 1,
                    checkpoints: true)
                XCTAssertEqual(
                    Int(e.parameters), counts[rank], "world \(world) tp \(tp) \(attention) rank \(rank): parameters")
                XCTAssertEqual(e.stateBytes, 16 * e.parameters)
                XCTAssertEqual(e.checkpointBytes, 12 * e.parameters)
            }
        }
    }

    /// Dropless routing can send every token to one rank. A router skewed so that each token's two
    /// experts are 0 and 2, both on rank 0 of 2, makes rank 0 receive world x S x K rows per block
    /// (S = 48 rows per rank): the bound the estimate counts. The received-row buffers reach it and
    /// no more (GrowBuffer's quarter of headroom is capped there); rank 1 receives nothing.
    func testReceivedRowBuffersReachTheEstimatesBoundAndNoMore() throws {
        let job = Self.skewedJob(placement: nil)
        let sizes = try Self.bufferSizes(job) { s, _ in
            [s.exchange.expertWire_RC, s.xe, s.o, s.h, s.a, s.exchange.ownerSend_SC]
        }
        let c = job.model.nEmbd, f = job.model.ffHidden, bound = 2 * 48 * 2
        for (l, block) in sizes[0].enumerated() {
            XCTAssertEqual(
                block, [bound * c, bound * c, bound * c, bound * f, bound * f, 48 * 2 * c], "rank 0 block \(l)")
        }
        for (l, block) in sizes[1].enumerated() {
            XCTAssertEqual(Array(block.prefix(5)), [0, 0, 0, 0, 0], "rank 1 block \(l) received rows")
        }
        let plan = try job.resolveLayout(world: 2).plan
        let e = MemoryEstimate.perRank(
            config: job.model, world: 2, tp: 1, plan: plan, rank: 0, maxBatch: 3, threads: 1, checkpoints: false)
        // Counting received rows at the mean (S x K) instead would take this much off the estimate.
        let atMean = Double(job.model.nLayer) * Double(bound / 2) * Double(3 * c + 2 * f) * 4
        XCTAssertGreaterThan(e.activationBytes, atMean, "the estimate must count the received rows at the bound")
    }

    /// With every expert on both ranks (local layers) each rank serves only its own rows: the same
    /// skewed router fills xe and o with its S x K = 96 rows per block and no more (not world x S x K),
    /// the exchange's wire buffers (forward and backward) stay empty, and the estimate drops them.
    func testLocalLayersKeepOnlyTheirOwnRowsAndNoExchangeBuffers() throws {
        let job = Self.skewedJob(placement: [[[Int]]](repeating: [[0, 1], [0, 1], [0, 1], [0, 1]], count: 3))
        let sizes = try Self.bufferSizes(job) { s, sc in
            let wire = s.exchange, dWire = sc.exchange
            return [
                s.xe, s.o, wire.ownerSend_SC, wire.ownerReturn_SC, wire.expertWire_RC, dWire.dOwnerWire_SC,
                dWire.dExpertWire_RC
            ]
        }
        let c = job.model.nEmbd, own = 48 * 2
        for rank in 0..<2 {
            for (l, block) in sizes[rank].enumerated() {
                XCTAssertEqual(
                    block, [own * c, own * c, 0, 0, 0, 0, 0], "rank \(rank) block \(l): xe, o, exchange buffers")
            }
        }
        let plan = try job.resolveLayout(world: 2).plan
        let split = try layoutJob().0.resolveLayout(world: 2).plan
        func acts(_ p: PlacementPlan) -> Double {
            MemoryEstimate.perRank(
                config: job.model, world: 2, tp: 1, plan: p, rank: 0, maxBatch: 3, threads: 1, checkpoints: false
            ).activationBytes
        }
        // Rank 0 of the split plan holds 2 of the 4 experts and may receive world x S x K = 192 rows a
        // block; the local plan's bound is its own 96. Per block the split one also keeps send and
        // return (96 rows each) and the expert side; the backward set drops both wire buffers.
        let f = job.model.ffHidden, pre = job.model.ffnPreactWidth, layers = job.model.nLayer
        let splitBlock = 2 * own * c + 2 * own * (3 * c + f + pre), localBlock = own * (2 * c + f + pre)
        let splitBackward = own * c + 3 * (2 * own) * c, localBackward = 2 * own * c
        let floats = layers * (splitBlock - localBlock) + splitBackward - localBackward
        XCTAssertEqual(acts(split) - acts(plan), Double(4 * floats), "the estimate drops the exchange buffers")
    }

    /// layoutJob for 3 steps with a router skewed so that each token's two experts are 0 and 2.
    static func skewedJob(placement: [[[Int]]]?) -> Job {
        var job = layoutJob(placement: placement, steps: 3).0
        job.train.routerSkew = 60
        job.train.routerSkewStride = 2
        job.train.evalEvery = 0
        return job
    }

    /// Trains `job` on 2 ranks and returns, per rank and block, the sizes of the buffers `pick` names.
    static func bufferSizes(_ job: Job, _ pick: @escaping @Sendable (MoEState, MoEScratch) -> [GrowBuffer]) throws
        -> [[[Int]]]
    {
        let data = layoutJob().1
        return try LocalCommunicator.run(size: 2) { comm -> [[Int]] in
            let t = try Trainer(job: job, comm: comm, data: data, log: nil, environment: env, say: { _ in })
            _ = try t.run(stopRequested: { false })
            return t.model.blocks.map { b in b.moe.map { pick($0, t.model.scratch.moe).map(\.buffer.count) } ?? [] }
        }
    }

    /// train.overlapReduce adds the two-rank sums' copy of the gradients in flight: the rank's
    /// parameters' floats, once, whatever the threads.
    func testOverlapReduceCountsACopyOfTheGradients() throws {
        var (job, _) = layoutJob(dp: 2)
        let plan = try job.resolveLayout(world: 2).plan
        let plain = Trainer.memoryEstimate(job: job, world: 2, tp: 1, plan: plan, threads: 2)
        job.train.overlapReduce = true
        let overlapped = Trainer.memoryEstimate(job: job, world: 2, tp: 1, plan: plan, threads: 2)
        XCTAssertEqual(overlapped.totalBytes - plain.totalBytes, 4 * plain.parameters)
    }

    /// Activations grow linearly in T (the attention keeps no T x T matrix) and in the batch.
    func testActivationsAreLinearInSequenceLength() throws {
        var (job, _) = layoutJob()
        let plan = try job.resolveLayout(world: 1).plan
        func acts(t: Int, b: Int) -> Double {
            job.model.seqLen = t
            return MemoryEstimate.perRank(
                config: job.model, world: 1, tp: 1, plan: plan, rank: 0, maxBatch: b, threads: 1, checkpoints: false
            ).activationBytes
        }
        XCTAssertEqual(acts(t: 4096, b: 4) / acts(t: 1024, b: 4), 4, accuracy: 1e-9)
        XCTAssertEqual(acts(t: 1024, b: 8) / acts(t: 1024, b: 4), 2, accuracy: 1e-9)
    }

    /// Too big: one message with the estimate, the limit and its source, and what to change.
    func testCheckNamesEstimateLimitAndRemedies() throws {
        let e = MemoryEstimate(stateBytes: 4e9, activationBytes: 2e9, checkpointBytes: 3e9, parameters: 2.5e8)
        XCTAssertNoThrow(try Trainer.checkMemory(e, ranksOnNode: 2, available: (18.1e9, "MemAvailable")))
        XCTAssertThrowsError(try Trainer.checkMemory(e, ranksOnNode: 2, available: (17.9e9, "MemAvailable"))) {
            let m = "\($0)"
            for part in [
                "9.00 GB per rank", "x 2 rank(s)", "= 18.00 GB", "offers 17.90 GB (MemAvailable)",
                "model.nLayer", "layout.tp", "train.recompute=block", "train.shardOptimizer=true"
            ] {
                XCTAssertTrue(m.contains(part), "'\(m)' lacks '\(part)'")
            }
        }
    }
}
