import Comm
import Foundation
import Model
import Training
import XCTest

/// The correctness contract (DESIGN.md, "Parallel layout"): for the same global batch, seed and
/// step count, every layout gives the losses and final parameters of world size 1 up to float
/// reassociation, and the same layout run twice is bitwise identical. Ranks are threads here;
/// SwitchyardTests repeat a subset under real mpirun.
final class ParallelLayoutTests: XCTestCase {
    static let env = RunEnvironment(blasCore: "test", blasThreads: 1, host: "test", cpu: "test")

    struct Outcome { var losses: [Float]; var evals: [Double]; var params: [String: [Float]]; var drops: [Int] }

    /// Trains on `world` thread-ranks; returns rank 0's losses and every tensor assembled whole
    /// from the ranks' shards (checking that every copy of an element agrees bitwise).
    func train(world: Int, _ job: Job, _ data: TokenData, nodeOf: [Int]? = nil) throws -> Outcome {
        let per = try LocalCommunicator.run(size: world) { comm -> (TrainSummary, [(ParameterInfo, [Float])], [Int]) in
            let t = try Trainer(
                job: job, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in }, nodeOf: nodeOf)
            let s = try t.run()
            let st = t.model.store
            return (
                s,
                st.infos.map { ($0, Array(UnsafeBufferPointer(start: st.params.base + $0.offset, count: $0.count))) },
                s.finalStepDropped
            )
        }
        var params: [String: [Float]] = [:]
        var filled: [String: [Bool]] = [:]
        for (_, tensors, _) in per {
            for (info, values) in tensors {
                let total = info.globalShape.reduce(1, *)
                if params[info.name] == nil {
                    params[info.name] = Array(repeating: .nan, count: total);
                    filled[info.name] = Array(repeating: false, count: total)
                }
                for i in 0..<values.count {
                    let gi = info.globalIndex(i)
                    if filled[info.name]![gi] {
                        XCTAssertEqual(
                            params[info.name]![gi].bitPattern, values[i].bitPattern,
                            "copies of \(info.name)[\(gi)] disagree")
                    }
                    params[info.name]![gi] = values[i]
                    filled[info.name]![gi] = true
                }
            }
        }
        for (name, f) in filled { XCTAssertTrue(f.allSatisfy { $0 }, "no rank holds part of \(name)") }
        return Outcome(losses: per[0].0.losses, evals: per[0].0.evals.map { $0.loss }, params: params, drops: per[0].2)
    }

    func assertMatches(
        _ o: Outcome, _ ref: Outcome, _ label: String, lossTolerance: Double = 1e-5, parameterTolerance: Double = 2e-5
    ) {
        XCTAssertEqual(o.losses.count, ref.losses.count, label)
        var worstLoss = 0.0, worstParam = 0.0
        for (a, b) in zip(o.losses, ref.losses) { worstLoss = max(worstLoss, abs(Double(a - b)) / abs(Double(b))) }
        XCTAssertLessThan(worstLoss, lossTolerance, "\(label): per-step loss relative difference")
        XCTAssertEqual(Set(o.params.keys), Set(ref.params.keys), label)
        for (name, v) in ref.params {
            for (a, b) in zip(o.params[name]!, v) { worstParam = max(worstParam, abs(Double(a - b))) }
        }
        XCTAssertLessThan(worstParam, parameterTolerance, "\(label): final parameters")
        for (a, b) in zip(o.evals, ref.evals) { XCTAssertEqual(a, b, accuracy: 1e-5 * b, "\(label): eval loss") }
        print(
            "layout \(label): max relative loss difference \(worstLoss), max parameter difference \(worstParam) vs "
                + "world 1"
        )
    }

    func testEveryLayoutMatchesWorldOne() throws {
        let (j1, data) = layoutJob()
        let ref = try train(world: 1, j1, data)
        XCTAssertLessThan(ref.losses.last!, ref.losses.first! - 0.5, "the reference run learns")
        let cases: [(String, Int, Job)] = [
            ("dp2", 2, layoutJob(dp: 2).0),
            ("tp2", 2, layoutJob(dp: 1, tp: 2).0),
            ("dp2xtp2", 4, layoutJob(dp: 2, tp: 2).0),
            ("dp3 (4 experts on 3 ranks)", 3, layoutJob(dp: 3).0),
            ("world4 experts over 4 ranks", 4, layoutJob().0),
            ("dp2 replicated experts", 2, layoutJob(placement: [[[0, 1], [1], [0], [0, 1]]]).0),
            (
                "dp1xtp2 replicated, rank 1 holds all", 2,
                layoutJob(dp: 1, tp: 2, placement: [[[1], [0, 1], [1], [1]]]).0
            ),
            // Experts on every rank are reduced in place with the world's tensors (one run at tp 1).
            ("dp4, every expert on every rank", 4, layoutJob(placement: [Array(repeating: [0, 1, 2, 3], count: 4)]).0),
            (
                "dp2xtp2, experts on every rank and on two", 4,
                layoutJob(dp: 2, tp: 2, placement: [[[0, 1, 2, 3], [1, 2], [2], [0, 1, 2, 3]]]).0
            )
        ]
        for (label, world, j) in cases {
            assertMatches(try train(world: world, j, data), ref, label)
        }
        // Two nodes of two ranks: replicated experts serve their own node's tokens.
        assertMatches(
            try train(world: 4, layoutJob(placement: [[[0, 2], [1, 3], [0, 3], [1]]]).0, data, nodeOf: [0, 0, 1, 1]),
            ref,
            "world4 on 2 nodes, replicas serve their node")
        // Dense FFN blocks (moeEvery 2) under dp x tp.
        var dense1 = j1
        dense1.model.moeEvery = 2
        var dense4 = layoutJob(dp: 2, tp: 2).0
        dense4.model.moeEvery = 2
        assertMatches(try train(world: 4, dense4, data), try train(world: 1, dense1, data), "dp2xtp2 with dense blocks")
    }

    /// Rope positions and SwiGLU experts (Mixtral's shape) keep the contract: rope rotates each
    /// rank's own heads, w3 travels with w1 (experts over ranks, replicas, the dense FFN).
    func testMixtralShapedLayoutsMatchWorldOne() throws {
        let (j1, data) = layoutJob()
        let ref = try train(world: 1, mixtralShaped(j1), data)
        XCTAssertNil(ref.params["pos.weight"], "rope has no position table")
        XCTAssertNotNil(ref.params["layers.0.moe.experts.3.w3.weight"])
        XCTAssertLessThan(ref.losses.last!, ref.losses.first! - 0.5, "the reference run learns")
        let cases: [(String, Int, Job)] = [
            ("dp2", 2, layoutJob(dp: 2).0), ("tp2", 2, layoutJob(dp: 1, tp: 2).0),
            ("dp2xtp2", 4, layoutJob(dp: 2, tp: 2).0), ("ep4", 4, layoutJob().0),
            ("dp2 replicated experts", 2, layoutJob(placement: [[[0, 1], [1], [0], [0, 1]]]).0)
        ]
        for (label, world, j) in cases {
            assertMatches(try train(world: world, mixtralShaped(j), data), ref, "rope+swiglu \(label)")
        }
        var dense1 = mixtralShaped(j1), dense4 = mixtralShaped(layoutJob(dp: 2, tp: 2).0)
        dense1.model.moeEvery = 2
        dense4.model.moeEvery = 2
        assertMatches(try train(world: 4, dense4, data), try train(world: 1, dense1, data), "rope+swiglu dense dp2xtp2")
    }

    /// Shared experts (replicated like the dense FFN, reduced over dp) keep the contract.
    func testSharedExpertsLayoutsMatchWorldOne() throws {
        var (j1, data) = layoutJob()
        j1.model.nSharedExperts = 1
        let ref = try train(world: 1, mixtralShaped(j1), data)
        XCTAssertNotNil(ref.params["layers.2.moe.shared.0.w3.weight"])
        for (label, world, dp, tp) in [("dp2", 2, 2, 1), ("tp2", 2, 1, 2), ("dp2xtp2", 4, 2, 2), ("ep4", 4, 0, 1)] {
            var j = j1
            j.layout.dp = dp; j.layout.tp = tp
            assertMatches(try train(world: world, mixtralShaped(j), data), ref, "nSharedExperts 1 \(label)")
        }
    }

    /// Aux-loss-free balancing: the selection biases follow the global counts, so every layout
    /// gives world 1's run; under skewed routing without a balance loss they even the load out.
    func testRouterBiasLayoutsMatchWorldOneAndBalance() throws {
        var (j1, data) = layoutJob()
        j1.train.auxLossCoef = 0
        j1.train.routerBiasRate = 0.002
        let ref = try train(world: 1, j1, data)
        for (label, world, dp, tp) in [("dp2", 2, 2, 1), ("tp2", 2, 1, 2), ("dp2xtp2", 4, 2, 2), ("ep4", 4, 0, 1)] {
            var j = j1
            j.layout.dp = dp; j.layout.tp = tp
            // The bias moves by a whole step on the sign of an integer count difference: where
            // reassociation flips one top-k choice, a bias (and then the weights) part ways by
            // ~1e-5, and the losses by about as much (measured at dp2 x tp2: 7.5e-6 with OpenBLAS's
            // SkylakeX kernels on an Intel Xeon, 1.03e-5 with its Cooperlake kernels on an AMD EPYC).
            assertMatches(
                try train(world: world, j, data), ref, "routerBiasRate \(label)", lossTolerance: 3e-5,
                parameterTolerance: 1e-4)
        }
        func imbalance(rate: Double) throws -> Double {
            var j = layoutJob(steps: 40).0
            j.train.auxLossCoef = 0; j.train.routerSkew = 1.5; j.train.evalEvery = 0; j.train.routerBiasRate = rate
            let job = j, tokens = data
            return try LocalCommunicator.run(size: 1) { comm -> Double in
                let t = try Trainer(job: job, comm: comm, data: tokens, log: nil, environment: Self.env, say: { _ in })
                let c = try t.run().finalStepExpertCounts[0]
                return Double(c.max()!) / (Double(c.reduce(0, +)) / Double(c.count))
            }[0]
        }
        let without = try imbalance(rate: 0), with = try imbalance(rate: 0.01)
        XCTAssertLessThan(
            with, without, "max/mean expert load at the last step: \(with) with the bias, \(without) without")
        print("aux-loss-free balancing under routerSkew 1.5: max/mean load \(with) vs \(without) without")
    }

    /// Mixture-of-Head attention keeps the contract: every tp rank scores all heads from its
    /// replicated rows and gates its own, and the router's partial gradients sum over the world.
    func testMixtureOfHeadsLayoutsMatchWorldOne() throws {
        var (j1, data) = layoutJob()
        j1.model.attention = "moh"; j1.model.mohSharedHeads = 1; j1.model.mohActiveHeads = 2
        let ref = try train(world: 1, j1, data)
        XCTAssertNotNil(ref.params["layers.2.attn.router.weight"])
        XCTAssertLessThan(ref.losses.last!, ref.losses.first! - 0.5, "the MoH reference run learns")
        XCTAssertNotEqual(
            ref.losses.last!, try train(world: 1, layoutJob().0, data).losses.last!, "MoH changes the run")
        for (label, world, dp, tp) in [("dp2", 2, 2, 1), ("tp2", 2, 1, 2), ("dp2xtp2", 4, 2, 2), ("ep4", 4, 0, 1)] {
            var j = j1
            j.layout.dp = dp; j.layout.tp = tp
            assertMatches(try train(world: world, j, data), ref, "moh \(label)")
        }
        var noShared = j1
        noShared.model.mohSharedHeads = 0; noShared.model.mohActiveHeads = 3
        var noShared4 = noShared
        noShared4.layout.dp = 2; noShared4.layout.tp = 2
        assertMatches(
            try train(world: 4, noShared4, data), try train(world: 1, noShared, data), "moh no shared dp2xtp2")
    }

    /// SMoE-Dropout: the random router stays at its initial values (never trained), k grows with
    /// train.topKSchedule, and every layout gives world 1's run.
    func testRandomRouterWithTopKScheduleMatchesWorldOne() throws {
        var (j1, data) = layoutJob()
        j1.model.router = "random"; j1.model.topK = 1; j1.train.topKSchedule = "linear"; j1.train.auxLossCoef = 0
        let ref = try train(world: 1, j1, data)
        let initial = ParameterStore(config: j1.model)
        initial.initialize(seed: UInt64(j1.seed))
        func start(_ name: String) -> [Float] {
            let info = initial.info(name)!
            return Array(UnsafeBufferPointer(start: initial.params.base + info.offset, count: info.count))
        }
        for l in 0..<3 {
            let name = "layers.\(l).moe.router.weight"
            XCTAssertEqual(ref.params[name]!, start(name), "\(name) is never trained")
        }
        XCTAssertNotEqual(ref.params["layers.0.attn.wq.weight"]!, start("layers.0.attn.wq.weight"), "the rest trains")
        for (label, world, dp, tp) in [("dp2", 2, 2, 1), ("tp2", 2, 1, 2), ("dp2xtp2", 4, 2, 2), ("ep4", 4, 0, 1)] {
            var j = j1
            j.layout.dp = dp; j.layout.tp = tp
            assertMatches(try train(world: world, j, data), ref, "random router, linear topK \(label)")
        }
        // "linear" over 20 steps and 4 experts: k = 4 from step 15, so the last step sends every
        // token to every expert.
        let job = j1, tokens = data
        let last = try LocalCommunicator.run(size: 1) { comm -> [[Int]] in
            let t = try Trainer(job: job, comm: comm, data: tokens, log: nil, environment: Self.env, say: { _ in })
            return try t.run().finalStepExpertCounts
        }[0]
        XCTAssertEqual(last.map { $0.reduce(0, +) }, [384, 384, 384], "6 x 16 tokens x 4 experts per block")
    }

    /// The router z-loss keeps the contract: every layout gives world 1's run with it on.
    func testZLossLayoutsMatchWorldOne() throws {
        var (j1, data) = layoutJob()
        j1.train.zLossCoef = 0.05
        let ref = try train(world: 1, j1, data)
        let plain = try train(world: 1, layoutJob().0, data)
        XCTAssertNotEqual(ref.losses.last!, plain.losses.last!, "the z-loss changes the run")
        for (label, world, dp, tp) in [("dp2", 2, 2, 1), ("tp2", 2, 1, 2), ("dp2xtp2", 4, 2, 2), ("ep4", 4, 0, 1)] {
            var j = j1
            j.layout.dp = dp; j.layout.tp = tp
            assertMatches(try train(world: world, j, data), ref, "zLossCoef \(label)")
        }
    }

    /// Micro-batches: with auxLossCoef = 0 the objective is the mean loss over the step's tokens
    /// whatever M is, so M = 1, 2, 4 (and M = 2 at dp 2, and at dp 2 x tp 2) give world 1's losses
    /// up to reassociation. With a balance loss, M changes the objective (it is computed per
    /// micro-batch), so the losses part ways after the first update.
    func testMicroBatchesGiveTheSameLossesWithoutBalanceLoss() throws {
        var (j1, data) = layoutJob()
        j1.train.auxLossCoef = 0
        let ref = try train(world: 1, j1, data)
        for (label, world, dp, tp, micro) in [
            ("M2", 1, 1, 1, 2), ("M4", 1, 1, 1, 4), ("dp2 M2", 2, 2, 1, 2), ("dp2xtp2 M3", 4, 2, 2, 3)
        ] {
            var j = j1
            j.layout.dp = dp; j.layout.tp = tp; j.train.microBatches = micro
            assertMatches(try train(world: world, j, data), ref, "microBatches \(label)")
        }
        var withAux = layoutJob().0, withAux2 = withAux
        withAux2.train.microBatches = 2
        let a = try train(world: 1, withAux, data), b = try train(world: 1, withAux2, data)
        XCTAssertEqual(a.losses[0], b.losses[0], accuracy: 1e-6 * a.losses[0], "step 0 is before any update")
        XCTAssertNotEqual(a.losses.last!, b.losses.last!, "per-micro-batch balance loss is another objective")
        withAux.train.microBatches = 4
        withAux.layout.dp = 2
        XCTAssertThrowsError(try Trainer.validate(job: withAux, data: data, world: 2)) {
            XCTAssertTrue("\($0)".hasPrefix("train.microBatches:"), "\($0)")
            XCTAssertTrue("\($0)".contains("gives 3"), "\($0)")
        }
    }

    /// With a capacity limit, the same assignments are dropped whatever the layout (the rule itself
    /// is checked with identical routing in DispatchTests). Dropping is discontinuous in the router
    /// logits: once reassociation (dp sums gradients in another order) moves a near-tie assignment
    /// across an expert's capacity line, two layouts legitimately part ways. On an Intel Xeon
    /// (SkylakeX kernels) that happened at step 15 of 20, so this compares the first 10 steps.
    func testCapacityDropsAreLayoutIndependent() throws {
        var (j1, data) = layoutJob(steps: 10)
        j1.train.capacityFactor = 0.75
        let ref = try train(world: 1, j1, data)
        XCTAssertGreaterThan(ref.drops.reduce(0, +), 0, "capacity 0.75 drops some assignments")
        for (label, world, dp, tp) in [("dp2", 2, 2, 1), ("dp2xtp2", 4, 2, 2), ("dp3", 3, 3, 1)] {
            var j = j1
            j.layout.dp = dp; j.layout.tp = tp
            let o = try train(world: world, j, data)
            XCTAssertEqual(o.drops, ref.drops, "\(label): dropped assignments")
            assertMatches(o, ref, "capacity 0.75 \(label)")
        }
    }

    /// Recompute under dp2 x tp2 with replicated experts: the run of `none`, bit for bit.
    func testRecomputeTrainsBitwiseLikeNoneAtDp2xTp2() throws {
        var (j, data) = layoutJob(dp: 2, tp: 2, placement: [[[0, 1], [2], [3], [0, 3]]], steps: 8)
        j.model.moeEvery = 2
        j.model.nLayer = 4
        let none = try train(world: 4, j, data)
        for r in ["attention", "block"] {
            j.train.recompute = r
            let o = try train(world: 4, j, data)
            XCTAssertEqual(o.losses.map(\.bitPattern), none.losses.map(\.bitPattern), r)
            for (name, v) in none.params {
                XCTAssertEqual(o.params[name]!.map(\.bitPattern), v.map(\.bitPattern), name)
            }
        }
    }

    /// ZeRO-1 (train.shardOptimizer): moments split over dp, gradients reduce-scattered,
    /// parameters all-gathered; every layout still gives world 1's run, twice the same bits.
    func testShardedOptimizerMatchesWorldOne() throws {
        let (j1, data) = layoutJob()
        let ref = try train(world: 1, j1, data)
        func sharded(_ j: Job) -> Job {
            var s = j
            s.train.shardOptimizer = true
            return s
        }
        let cases: [(String, Int, Job)] = [
            ("dp2", 2, layoutJob(dp: 2).0), ("dp2xtp2", 4, layoutJob(dp: 2, tp: 2).0), ("dp3", 3, layoutJob(dp: 3).0),
            ("ep4 (dp4)", 4, layoutJob().0)
        ]
        for (label, world, j) in cases {
            assertMatches(try train(world: world, sharded(j), data), ref, "shardOptimizer \(label)")
        }
        let a = try train(world: 4, sharded(layoutJob(dp: 2, tp: 2).0), data)
        let b = try train(world: 4, sharded(layoutJob(dp: 2, tp: 2).0), data)
        XCTAssertEqual(a.losses.map(\.bitPattern), b.losses.map(\.bitPattern), "the same layout twice")
        // The moments really are split: dp 2 holds about half of the dense moments per rank.
        let splitJob = sharded(layoutJob(dp: 2).0)
        let split = try LocalCommunicator.run(size: 2) { comm -> (Int, Int) in
            let t = try Trainer(job: splitJob, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
            return (t.model.store.adamM.count, t.model.store.params.count)
        }
        let plain = try LocalCommunicator.run(size: 2) { comm -> Int in
            try Trainer(job: layoutJob(dp: 2).0, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
                .model.store.adamM.count
        }
        XCTAssertEqual(plain[0], split[0].1)
        XCTAssertLessThan(Double(split[0].0), 0.75 * Double(plain[0]), "moments per rank with shardOptimizer at dp 2")
    }

    func testSameLayoutTwiceIsBitwiseIdentical() throws {
        let (j, data) = layoutJob(dp: 2, tp: 2)
        let a = try train(world: 4, j, data), b = try train(world: 4, j, data)
        XCTAssertEqual(a.losses.map(\.bitPattern), b.losses.map(\.bitPattern))
        for (name, v) in a.params { XCTAssertEqual(v.map(\.bitPattern), b.params[name]!.map(\.bitPattern), name) }
    }

    func testBadLayoutsAreRejectedBeforeAnyCollective() {
        let (j, data) = layoutJob()
        func expect(_ world: Int, _ edit: (inout Job) -> Void, _ key: String, _ text: String) {
            var job = j
            edit(&job)
            XCTAssertThrowsError(try Trainer.validate(job: job, data: data, world: world)) {
                XCTAssertTrue("\($0)".hasPrefix(key + ":"), "\($0)")
                XCTAssertTrue("\($0)".contains(text), "\($0)")
            }
        }
        expect(4, { $0.layout.dp = 3 }, "layout", "dp 3 x tp 1 = 3 ranks, but the world has 4")
        expect(3, { $0.layout.tp = 2 }, "layout.tp", "does not divide the world size 3")
        expect(2, { $0.placement = [[[0], [2], [1], [0]]] }, "placement", "names rank 2, but the world has ranks 0..<2")
        expect(2, { $0.placement = [[[0], [1, 1], [1], [0]]] }, "placement", "listed twice on one rank")
        expect(2, { $0.placement = [[[0], [], [1], [0]]] }, "placement", "is on no rank")
        expect(2, { $0.placement = [[[0], [1]]] }, "placement", "lists 2 experts, the model has model.nExpert = 4")
        expect(
            8,
            {
                $0.layout.dp = 8; $0.train.batchSize = 6
            }, "train.batchSize", "cannot be split over 8")
        var bad = j
        bad.layout.tp = 3
        XCTAssertThrowsError(try bad.validate()) {
            XCTAssertTrue("\($0)".contains("layout.tp: 3 does not divide model.nHead = 4"), "\($0)")
        }
    }
}
