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
            OptionSpec(["--cluster"], value: "FILE", "cluster description (required), e.g. cluster/local.json"),
            OptionSpec(["--world"], value: "N", "ranks (default: every slot of the cluster)"),
            OptionSpec(
                ["--skew"], value: "zipf:S", "routing load: Zipf with exponent S over the experts (default: uniform)"),
            OptionSpec(["--load"], value: "FILE", "routing load: JSON [[tokens per expert] per MoE layer]"),
            OptionSpec(["--out"], value: "FILE", "write the best placement (use: --set placement=\"$(cat FILE)\")")
        ],
        details:
            "A measured load: the `expertLoad` of a run's step event (e.g. jq -c 'select(.event==\"step\") | .expertLoad' runs/NAME/log.jsonl | tail -1).\nCluster files come from `switchyard calibrate` or are written by hand (cluster/local.json).\n"
    )

    static func run(_ args: ParsedArgs) -> Int32 {
        guard let clusterPath = args.value("--cluster") else {
            return usage(UsageError(message: "plan needs --cluster FILE", command: "plan"))
        }
        do {
            let job = try Job.load(path: args.positionals[0])
            let cluster = try ClusterFile.load(path: clusterPath)
            let world = try args.positiveInt("--world", command: "plan") ?? cluster.slots
            let m = job.model
            let moe = m.moeLayerCount
            guard moe > 0 else { throw JobError(key: "model.moeEvery", "the model has no MoE block: nothing to place") }
            let assignments = Double(job.train.batchSize * m.seqLen * m.topK)
            var load = [[Double]](
                repeating: [Double](repeating: assignments / Double(m.nExpert), count: m.nExpert), count: moe)
            if let s = args.value("--skew") {
                guard s.hasPrefix("zipf:"), let e = Double(s.dropFirst(5)), e >= 0 else {
                    return usage(UsageError(message: "--skew must look like zipf:1.2, got '\(s)'", command: "plan"))
                }
                let w = (0..<m.nExpert).map { 1 / pow(Double($0 + 1), e) }
                let z = w.reduce(0, +)
                load = Array(repeating: w.map { assignments * $0 / z }, count: moe)
            } else if let f = args.value("--load") {
                guard let d = FileManager.default.contents(atPath: f), let j = try? JSONValue.parse(bytes: Array(d)),
                    let rows = j.arrayValue?.map({ ($0.arrayValue ?? []).compactMap(\.doubleValue) })
                else {
                    throw JobError(key: f, "not a JSON list of per-layer token counts")
                }
                guard rows.count == moe, rows.allSatisfy({ $0.count == m.nExpert }) else {
                    throw JobError(
                        key: f,
                        "load for \(rows.count) layers x \(rows.first?.count ?? 0) experts, the model has \(moe) MoE layers x \(m.nExpert) experts"
                    )
                }
                load = rows
            }
            let nodeOf = try cluster.nodeOfRank(world: world)
            let minSlots = cluster.nodes.map(\.slots).min()!
            let total = Double(m.totalParams), experts = Double(moe * m.nExpert * 2 * m.nEmbd * m.ffHidden)
            let tokens = Double(job.train.batchSize * m.seqLen)
            let expertFlops = 6 * Double(moe * m.topK * 2 * m.nEmbd * m.ffHidden)
            var rows: [(tp: Int, dp: Int, seconds: Double, plan: PlacementPlan, pred: Prediction)] = []
            say(
                "plan for \(args.positionals[0]) on \(clusterPath): \(world) ranks, \(moe) MoE layers x \(m.nExpert) experts"
            )
            say(pad("layout", 14) + pad("predicted step", 18) + "note")
            for tp in (1...m.nHead) where m.nHead % tp == 0 && world % tp == 0 {
                let dp = world / tp
                guard tp <= minSlots else {
                    say(pad("dp\(dp) x tp\(tp)", 14) + pad("-", 18) + "tp group larger than a node"); continue
                }
                guard job.train.batchSize >= dp else {
                    say(pad("dp\(dp) x tp\(tp)", 14) + pad("-", 18) + "batch smaller than dp"); continue
                }
                // Dense parameters: attention split over tp, the rest replicated; each with 2 AdamW moments.
                let shape = MoEShape(
                    nEmbd: m.nEmbd, ffHidden: m.ffHidden, nExpert: m.nExpert, moeLayers: moe,
                    denseFlopsPerToken: m.flopsPerToken(seqLen: m.seqLen) - expertFlops,
                    baseBytesPerRank: 12
                        * (total - experts - Double(4 * m.nLayer * m.nEmbd * m.nEmbd) * Double(tp - 1) / Double(tp)))
                do {
                    let plan = try Planner.plan(load: load, shape: shape, cluster: cluster, world: world)
                    let pred = Planner.predict(
                        plan: plan, load: load, tokens: tokens, shape: shape, cluster: cluster, nodeOf: nodeOf)
                    // Two allreduces of the rows per block and step (forward, backward) inside each tp group.
                    let tpComm =
                        tp > 1
                        ? Double(2 * m.nLayer) * (tokens / Double(dp)) * Double(m.nEmbd) * 4
                            / (cluster.intraNodeGBps * 1e9) : 0
                    rows.append((tp, dp, pred.stepSeconds + tpComm, plan, pred))
                    say(
                        pad("dp\(dp) x tp\(tp)", 14)
                            + pad(String(format: "%.1f ms", (pred.stepSeconds + tpComm) * 1000), 18))
                } catch let e as PlacementError {
                    say(pad("dp\(dp) x tp\(tp)", 14) + pad("-", 18) + e.message)
                }
            }
            guard let best = rows.min(by: { $0.seconds < $1.seconds }) else {
                throw PlacementError("no layout fits this cluster (see the notes above)")
            }
            say("best: dp\(best.dp) x tp\(best.tp), predicted \(String(format: "%.1f", best.seconds * 1000)) ms/step")
            for (l, layer) in best.plan.layers.enumerated() {
                say("  MoE layer \(l):")
                for r in 0..<world {
                    let mine = layer.indices.filter { layer[$0].contains(r) }
                    let served = best.pred.layerRankLoad[l][r]
                    say(
                        "    rank \(r): experts \(mine.map { layer[$0].count > 1 ? "\($0)(1/\(layer[$0].count))" : "\($0)" }.joined(separator: " "))"
                            + String(format: "  predicted load %.0f tokens", served))
                }
            }
            say(
                "  memory per rank: "
                    + best.pred.rankBytes.map { String(format: "%.2f GB", $0 / 1e9) }.joined(separator: ", "))
            if let out = args.value("--out") {
                try Data((best.plan.json.compact + "\n").utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
                say("wrote \(out); use it with: --set layout.tp=\(best.tp) --set placement=\"$(cat \(out))\"")
            }
            return 0
        } catch let e as UsageError {
            return usage(e)
        } catch {
            Runtime.printError("\(error)")
            return 1
        }
    }
}
