// The memory pre-check: before anything is allocated, the bytes the busiest rank needs
// (MemoryEstimate) times the ranks sharing a node, against what the node offers.
import Foundation
import JSON
import Model
import Placement

/// A job too big for the node's memory; the message names the estimate, the limit and what to change.
public struct MemoryError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// What a node offers: MemAvailable, and the cgroup's limit less its usage where one is set.
public enum NodeMemory {
    /// Bytes available to this process's cgroup on this node, and where the figure comes from.
    public static func available() -> (bytes: Double, source: String) {
        var best = (bytes: Double.infinity, source: "unknown")
        if let kb = field("MemAvailable:", in: "/proc/meminfo") { best = (kb * 1024, "MemAvailable") }
        let limits = [
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")
        ]
        for (limitPath, usagePath) in limits {
            guard let limit = number(limitPath), limit < 1e18 else { continue }
            let free = limit - (number(usagePath) ?? 0)
            if free < best.bytes { best = (free, "cgroup limit \(limitPath)") }
        }
        return best
    }

    static func number(_ path: String) -> Double? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            Double($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// The first number after `name` on its line of a /proc file ("MemAvailable:  123 kB" -> 123).
    public static func field(_ name: String, in path: String) -> Double? {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            return line.split(separator: " ").compactMap { Double($0) }.first
        }
        return nil
    }
}

extension Trainer {
    /// This job's estimate (the busiest rank) as the start event reports it.
    var memoryEstimateJSON: JSONValue {
        let e = Trainer.memoryEstimate(
            job: job, world: ctx.mesh.world, tp: ctx.mesh.tp, plan: ctx.plan, threads: env.blasThreads)
        return [
            "total": .number(e.totalBytes), "state": .number(e.stateBytes), "activations": .number(e.activationBytes),
            "checkpointSnapshot": .number(e.checkpointBytes), "runtime": .number(e.runtimeBytes)
        ]
    }

    /// The estimate of the rank that needs the most (ranks differ in their experts and batch rows).
    public static func memoryEstimate(job: Job, world: Int, tp: Int, plan: PlacementPlan, threads: Int)
        -> MemoryEstimate
    {
        let dp = world / tp
        var model = job.model
        model.topK = max(model.topK, job.topKSchedule.maxK)  // the MoE's buffers serve the most experts per token
        return (0..<world).map { rank -> MemoryEstimate in
            MemoryEstimate.perRank(
                config: model, world: world, tp: tp, plan: plan, rank: rank,
                maxBatch: Trainer.largestMicroBatch(job: job, dp: dp),
                threads: threads, checkpoints: job.checkpoint.every > 0,
                recompute: Recompute(rawValue: job.train.recompute) ?? .none,
                momentsOverDP: job.train.shardOptimizer ? dp : 1, overlapReduce: job.train.overlapReduce)
        }.max { $0.totalBytes < $1.totalBytes }!
    }

    /// Throws MemoryError when `ranksOnNode` ranks of this estimate exceed `available` bytes.
    public static func checkMemory(
        _ e: MemoryEstimate, ranksOnNode: Int, available: (bytes: Double, source: String)
    ) throws {
        let need = e.totalBytes * Double(ranksOnNode)
        guard need > available.bytes else { return }
        func gb(_ x: Double) -> String { String(format: "%.2f GB", x / 1e9) }
        throw MemoryError(
            description:
                "the job needs about \(gb(e.totalBytes)) per rank (parameters, gradients and AdamW moments "
                + "\(gb(e.stateBytes)), activations \(gb(e.activationBytes)), checkpoint snapshot "
                + "\(gb(e.checkpointBytes))) x \(ranksOnNode) rank(s) on this node = \(gb(need)), but the node "
                + "offers \(gb(available.bytes)) (\(available.source)); keep fewer activations "
                + "(train.recompute=block, train.microBatches=4), split the optimizer (train.shardOptimizer=true), "
                + "make the model smaller (model.nLayer, model.nEmbd, model.ffHidden, model.nExpert), the batch "
                + "smaller (train.batchSize, model.seqLen), or spread it over more ranks on more nodes (experts "
                + "split over ranks; layout.tp splits attention heads)")
    }
}
