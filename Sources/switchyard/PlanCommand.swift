// `switchyard plan`: search the dp x tp layouts a cluster can hold and place experts with the
// scheduler's cost model; print every candidate's predicted step time and, for the best, a
// per-layer table; --out writes the placement for the job's `placement` key.
import Foundation
import JSON
import Model
import Placement
import Training

enum PlanCommand {
    static let spec = CommandSpec(
        name: "plan",
        summary: "Predict step times of the layouts a cluster can hold and place experts by load.",
        positionals: [("JOB", "job spec (JSON)")],
        options: [
            OptionSpec(.cluster, value: "FILE", required: true, "cluster description, e.g. cluster/local.json"),
            OptionSpec(.world, value: "N", "ranks (default: every slot of the cluster)"),
            OptionSpec(
                .skew, value: "zipf:S", "routing load: Zipf with exponent S over the experts (default: uniform)"),
            OptionSpec(.load, value: "FILE", "routing load: JSON [[tokens per expert] per MoE layer]"),
            OptionSpec(.out, value: "FILE", "write the best placement (use: --set placement=\"$(cat FILE)\")"),
            OptionSpec(
                .set, value: "KEY=VALUE", repeatable: true,
                "override a job key, e.g. --set train.recompute=block (the memory check counts it)")
        ],
        details: """
            A measured load: the `expertLoad` of a run's step event, e.g.
              jq -c 'select(.event=="step") | .expertLoad' runs/NAME/log.jsonl | tail -1
            Cluster files come from `switchyard calibrate` or are written by hand (cluster/local.json).

            """
    ) { try run($0) }

    /// One layout the cluster can hold, with its placement and prediction.
    struct Candidate { let tp: Int, dp: Int, seconds: Double, plan: PlacementPlan, pred: Prediction }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        let clusterPath = args.required(.cluster)
        let job = try Job.load(path: args.positionals[0], overrides: args.all(.set))
        let cluster = try ClusterFile.load(path: clusterPath)
        let world = try args.positiveInt(.world) ?? cluster.slots
        let m = job.model
        guard m.moeLayerCount > 0 else {
            throw JobError(key: "model.moeEvery", "the model has no MoE block: nothing to place")
        }
        let load = try routingLoad(args, job: job)
        say(
            "plan for \(args.positionals[0]) on \(clusterPath): \(world) ranks, \(m.moeLayerCount) MoE layers x "
                + "\(m.nExpert) experts")
        say(pad("layout", 14) + pad("predicted step", 18) + "note")
        let rows = try candidates(job: job, load: load, cluster: cluster, world: world)
        guard let best = rows.min(by: { $0.seconds < $1.seconds }) else {
            throw PlacementError("no layout fits this cluster (see the notes above)")
        }
        printBest(best, world: world)
        if let out = args.value(.out) {
            try Data((best.plan.json.compact + "\n").utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
            say("wrote \(out); use it with: --set layout.tp=\(best.tp) --set placement=\"$(cat \(out))\"")
        }
        return 0
    }

    /// Tokens per expert per MoE layer and step: uniform, Zipf (--skew) or a measured load (--load).
    static func routingLoad(_ args: ParsedArgs, job: Job) throws -> [[Double]] {
        let m = job.model, moe = m.moeLayerCount
        let assignments = Double(job.train.batchSize * m.seqLen * m.topK)
        if let s = args.value(.skew) {
            guard s.hasPrefix("zipf:"), let e = Double(s.dropFirst(5)), e >= 0 else {
                throw args.usageError("--skew must look like zipf:1.2, got '\(s)'")
            }
            let w = (0..<m.nExpert).map { 1 / pow(Double($0 + 1), e) }
            let z = w.reduce(0, +)
            return Array(repeating: w.map { assignments * $0 / z }, count: moe)
        }
        guard let f = args.value(.load) else {
            return Array(repeating: Array(repeating: assignments / Double(m.nExpert), count: m.nExpert), count: moe)
        }
        guard let d = FileManager.default.contents(atPath: f), let j = try? JSONValue.parse(bytes: Array(d)),
            let rows = j.arrayValue?.map({ ($0.arrayValue ?? []).compactMap(\.doubleValue) })
        else {
            throw JobError(key: f, "not a JSON list of per-layer token counts")
        }
        guard rows.count == moe, rows.allSatisfy({ $0.count == m.nExpert }) else {
            throw JobError(
                key: f,
                "load for \(rows.count) layers x \(rows.first?.count ?? 0) experts, the model has \(moe) MoE layers "
                    + "x \(m.nExpert) experts")
        }
        return rows
    }

    /// Every dp x tp layout of `world` ranks: placed and predicted, or a line saying why not.
    static func candidates(job: Job, load: [[Double]], cluster: Cluster, world: Int) throws -> [Candidate] {
        let m = job.model
        let nodeOf = try cluster.nodeOfRank(world: world)
        let minSlots = cluster.nodes.map(\.slots).min()!
        let total = Double(m.totalParams),
            experts = Double(m.moeLayerCount * m.nExpert * m.ffnMatrices.count * m.nEmbd * m.ffHidden)
        let tokens = Double(job.train.batchSize * m.seqLen)
        let slotBytes = cluster.nodes.map(\.memoryPerSlotGB).min()! * 1e9
        var rows: [Candidate] = []
        for tp in (1...m.nHead) where m.nHead % tp == 0 && world % tp == 0 {
            let dp = world / tp, label = pad("dp\(dp) x tp\(tp)", 14)
            guard tp <= minSlots else { say(label + pad("-", 18) + "tp group larger than a node"); continue }
            guard job.train.batchSize >= dp else { say(label + pad("-", 18) + "batch smaller than dp"); continue }
            guard job.train.batchSize / dp >= job.train.microBatches else {
                say(label + pad("-", 18) + "fewer sequences per dp group than train.microBatches"); continue
            }
            // Dense parameters: attention split over tp, the rest replicated; each with 2 AdamW moments.
            let attention = Double(4 * m.nLayer * m.nEmbd * m.nEmbd) * Double(tp - 1) / Double(tp)
            let shape = m.moeShape(baseBytesPerRank: 12 * (total - experts - attention))
            do {
                let plan = try Planner.plan(load: load, shape: shape, cluster: cluster, world: world)
                let pred = Planner.predict(
                    plan: plan, load: load, tokens: tokens, shape: shape, cluster: cluster, nodeOf: nodeOf)
                let comm = denseCommSeconds(
                    job: job, tp: tp, dp: dp, denseFloats: total - experts - attention, cluster: cluster,
                    nodeOf: nodeOf)
                // The whole rank: parameters, gradients, moments, activations, snapshot (the busiest rank).
                let need = Trainer.memoryEstimate(job: job, world: world, tp: tp, plan: plan, threads: 1).totalBytes
                guard need <= slotBytes else {
                    say(
                        label + pad("-", 18)
                            + String(
                                format: "needs %.2f GB per rank, a slot has %.2f GB (train.recompute, "
                                    + "train.microBatches or a larger tp lower it)", need / 1e9, slotBytes / 1e9))
                    continue
                }
                let seconds = pred.stepSeconds + comm
                rows.append(Candidate(tp: tp, dp: dp, seconds: seconds, plan: plan, pred: pred))
                say(
                    label + pad(String(format: "%.1f ms", seconds * 1000), 18)
                        + String(
                            format: "memory %.2f of %.2f GB per rank (headroom %.2f GB)", need / 1e9, slotBytes / 1e9,
                            (slotBytes - need) / 1e9))
            } catch let e as PlacementError {
                say(label + pad("-", 18) + e.message)
            }
        }
        return rows
    }

    /// Communication outside the MoE layers: two allreduces of the rows per block and step (forward,
    /// backward) inside each tp group, and the dense gradients' sum over dp.
    static func denseCommSeconds(
        job: Job, tp: Int, dp: Int, denseFloats: Double, cluster: Cluster, nodeOf: [Int]
    ) -> Double {
        let m = job.model, tokens = Double(job.train.batchSize * m.seqLen)
        let rowBytes = (tokens / Double(dp)) * Double(m.nEmbd) * 4
        let tpComm = tp > 1 ? Double(2 * m.nLayer) * rowBytes / (cluster.intraNodeGBps * 1e9) : 0
        return tpComm + denseGradientSeconds(floats: denseFloats, dp: dp, cluster: cluster, nodeOf: nodeOf)
    }

    /// The sum of a rank's dense gradients (`floats`: all but experts and its tp share of attention)
    /// over its dp group, after backward, as a ring (tp groups stay inside a node, so dp groups span
    /// nodes when the world does). Experts replicated on several ranks are Planner.predict's to
    /// count. Not overlapped: train.overlapReduce hides part of it, which this does not model.
    static func denseGradientSeconds(floats: Double, dp: Int, cluster: Cluster, nodeOf: [Int]) -> Double {
        guard dp > 1 else { return 0 }
        return Planner.ringAllreduceSeconds(
            units: floats, bytesPerUnit: 4, ranks: dp, cluster: cluster, spansNodes: Set(nodeOf).count > 1)
    }

    /// The best layout's per-layer placement and predicted load per rank, and memory per rank.
    static func printBest(_ best: Candidate, world: Int) {
        say("best: dp\(best.dp) x tp\(best.tp), predicted \(String(format: "%.1f", best.seconds * 1000)) ms/step")
        for (l, layer) in best.plan.layers.enumerated() {
            say("  MoE layer \(l):")
            for r in 0..<world {
                let mine = layer.indices.filter { layer[$0].contains(r) }
                let names = mine.map { layer[$0].count > 1 ? "\($0)(1/\(layer[$0].count))" : "\($0)" }
                say(
                    "    rank \(r): experts \(names.joined(separator: " "))"
                        + String(format: "  predicted load %.0f tokens", best.pred.layerRankLoad[l][r]))
            }
        }
        say(
            "  parameters, gradients and moments per rank (the planner's limit): "
                + best.pred.rankBytes.map { String(format: "%.2f GB", $0 / 1e9) }.joined(separator: ", "))
    }
}
