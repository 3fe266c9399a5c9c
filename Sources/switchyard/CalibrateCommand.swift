// `switchyard calibrate`: measure this launch's machines — sgemm rate per rank, alltoallv
// bandwidth and latency inside a node and across nodes — and write a cluster file for `plan`.
import Comm
import CommMPI
import Foundation
import JSON
import Tensor

enum CalibrateCommand {
    static let spec = CommandSpec(
        name: "calibrate",
        summary:
            "Measure sgemm rate (rank by rank), cores per node, alltoallv bandwidth and latency under mpirun;\nwrite "
            + "a cluster file.",
        positionals: [],
        options: [
            OptionSpec(.out, value: "FILE", required: true, "the cluster file to write, e.g. cluster/measured.json"),
            OptionSpec(.threads, value: "N", "BLAS threads per rank while measuring sgemm (default 1)")
        ],
        details:
            "Ranks with the same hostname form a node. Run it with the mpirun line (hosts, -np) you will train with.\n"
    ) { try run($0) }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        let out = args.required(.out)
        let threads = try args.positiveInt(.threads) ?? 1
        BLAS.setThreads(threads)
        return Runtime.withWorld { world in
            // Nodes: ranks with the same hostname.
            let (nodeOf, nodeNames) = try NodeMap.byHost(world, host: Runtime.hostName)

            let gflops = try slowestSgemmGflops(world)

            let measuredIntra = try LinkProbe.alltoallvGBps(world, nodeOf: nodeOf, sameNode: true)
            let measuredInter =
                nodeNames.count > 1 ? try LinkProbe.alltoallvGBps(world, nodeOf: nodeOf, sameNode: false) : 0
            // A link no two ranks use (one rank per node, or one node) cannot be measured; the
            // file gets the other link's figure, or 1000 GB/s (nothing will cross it in this layout).
            let intra = measuredIntra > 0 ? measuredIntra : (measuredInter > 0 ? measuredInter : 1000)
            let inter = measuredInter > 0 ? measuredInter : intra
            let latency = try LinkProbe.alltoallvLatencyUs(world)
            let cores = try NodeMap.cores(world, nodeOf: nodeOf, threadsPerRank: threads)

            if world.rank == 0 {
                let memGB = physicalMemoryGB()
                let nodes: [JSONValue] = nodeNames.enumerated().map { i, n in
                    let slots = nodeOf.filter { $0 == i }.count
                    return [
                        "name": .string(n), "slots": .number(Double(slots)),
                        "memoryPerSlotGB": .number((memGB / Double(slots) * 10).rounded() / 10),
                        "cores": .number(Double(cores[i]))
                    ]
                }
                let j: JSONValue = [
                    "nodes": .array(nodes), "intraNodeGBps": .number(intra), "interNodeGBps": .number(inter),
                    "intraNodeLatencyUs": .number(latency), "interNodeLatencyUs": .number(latency),
                    "gflopsPerSlot": .number(gflops)
                ]
                try Data(j.pretty.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
                say(
                    String(
                        format:
                            "calibrate: %d rank(s) on %d node(s); sgemm %.1f GFLOP/s per rank (slowest); alltoallv "
                            + "%.2f GB/s inside a node%@, %.2f GB/s across%@; latency %.1f us. Wrote %@",
                        world.size, nodeNames.count, gflops, intra,
                        (measuredIntra > 0 ? "" : " (not measured: no two ranks share a node)") as NSString,
                        inter, (measuredInter > 0 ? "" : " (not measured)") as NSString, latency, out as NSString))
            }
            return 0
        }
    }

    /// The slowest rank's sgemm rate on a core of its own (GFLOP/s, one decimal): the ranks
    /// measure one after another, so oversubscribed nodes do not halve it; sharing cores is the
    /// cost model's business (each node's `cores`).
    static func slowestSgemmGflops(_ world: MPICommunicator) throws -> Double {
        var mine = 0.0
        for r in 0..<world.size {
            try world.barrier()
            if r == world.rank { mine = SgemmPeak.measure(n: 1024, seconds: 0.5) / 1e9 }
        }
        var rate = [mine]
        try world.allreduce(&rate, op: .min)
        return (rate[0] * 10).rounded() / 10
    }

    static func physicalMemoryGB() -> Double { Double(ProcessInfo.processInfo.physicalMemory) / 1e9 }
}
