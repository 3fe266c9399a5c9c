import Comm
import Training
import XCTest

@testable import Model

/// train.overlapReduce: the gradient sums started during backward, bucket by bucket, on worlds
/// that span nodes (here two nodes of thread ranks). Ranks that are threads sum at once when a
/// bucket starts, so any bucket missed, started twice, or started before its gradients are final
/// shows as different bits from the reduction after backward.
extension ParallelLayoutTests {
    func testOverlappedReductionGivesTheSameBits() throws {
        var mixed = layoutJob(dp: 2, tp: 2, placement: [[[0, 1], [2], [3], [0, 3]]], steps: 6)
        mixed.0.model.moeEvery = 2
        mixed.0.model.nLayer = 4
        var zero = layoutJob(dp: 2, tp: 2, steps: 6)
        zero.0.train.shardOptimizer = true
        var micro = layoutJob(dp: 2, steps: 6)
        micro.0.train.microBatches = 3
        micro.0.train.recompute = "block"
        let cases: [(String, Int, Job)] = [
            ("dp2 (experts split)", 2, layoutJob(dp: 2, steps: 6).0),
            ("dp2xtp2, dense blocks, replicated experts", 4, mixed.0), ("dp2xtp2 ZeRO-1", 4, zero.0),
            ("dp2, 3 micro-batches, block recompute", 2, micro.0)
        ]
        for (label, world, job) in cases {
            var overlapped = job
            overlapped.train.overlapReduce = true
            let data = layoutJob().1
            let nodes = (0..<world).map { $0 * 2 / world }
            let plain = try train(world: world, job, data, nodeOf: nodes)
            let o = try train(world: world, overlapped, data, nodeOf: nodes)
            XCTAssertEqual(o.losses.map(\.bitPattern), plain.losses.map(\.bitPattern), "\(label): losses")
            for (name, v) in plain.params {
                XCTAssertEqual(o.params[name]!.map(\.bitPattern), v.map(\.bitPattern), "\(label): \(name)")
            }
        }
    }

    /// The buckets cover the all-reduce ranges exactly once, in descending stage order, and each
    /// holds tensors of one stage (the half-block a backward stage finishes).
    func testGradientBucketsPartitionTheAllreduces() throws {
        let (start, data) = layoutJob(dp: 2, tp: 2, placement: [[[0, 1], [2], [3], [0, 3]]])
        var mutableJob = start
        mutableJob.model.moeEvery = 2
        let job = mutableJob
        let plans = try LocalCommunicator.run(size: 4) { comm -> ([GradientBucket], [Range<Int>], [ParameterInfo]) in
            let t = try Trainer(job: job, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
            let ranges = t.optimizer.reductions.compactMap { r -> Range<Int>? in
                if case .allreduce(_, let range) = r { return range }
                return nil
            }
            return (t.optimizer.buckets, ranges, t.model.store.infos)
        }
        for (rank, (buckets, ranges, infos)) in plans.enumerated() {
            let covered = buckets.flatMap { Array($0.range) }.sorted(), wanted = ranges.flatMap { Array($0) }.sorted()
            XCTAssertEqual(covered, wanted, "rank \(rank): the buckets are not the all-reduce ranges")
            XCTAssertEqual(buckets.map(\.stage), buckets.map(\.stage).sorted(by: >), "rank \(rank): stage order")
            for b in buckets {
                let stages = Set(
                    infos.filter { b.range.contains($0.offset) }.map {
                        ShardedAdamW.stage(of: $0.name, layers: job.model.nLayer)
                    })
                XCTAssertEqual(stages, [b.stage], "rank \(rank): bucket \(b.range) mixes stages")
            }
            XCTAssertEqual(Set(buckets.map(\.stage)).count, 2 * job.model.nLayer + 2, "rank \(rank): stages")
        }
    }
}
