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
        summary: "Measure sgemm rate, alltoallv bandwidth and latency under mpirun; write a cluster file.",
        positionals: [],
        options: [
            OptionSpec(["--out"], value: "FILE", "the cluster file to write (required), e.g. cluster/measured.json"),
            OptionSpec(["--threads"], value: "N", "BLAS threads per rank while measuring sgemm (default 1)"),
        ],
        details: "Ranks with the same hostname form a node. Run it with the mpirun line (hosts, -np) you will train with.\n")

    static func run(_ args: ParsedArgs) -> Int32 {
        guard let out = args.value("--out") else { return usage(UsageError(message: "calibrate needs --out FILE", command: "calibrate")) }
        let threads: Int
        do { threads = try args.positiveInt("--threads", command: "calibrate") ?? 1 } catch let e as UsageError { return usage(e) } catch { return 1 }
        BLAS.setThreads(threads)
        let world: MPICommunicator
        do { world = try MPICommunicator.initWorld() } catch { Runtime.printError("\(error)"); return 1 }
        do {
            // Nodes: ranks with the same hostname.
            let name = Array(Runtime.hostName.utf8.prefix(63)) + [UInt8](repeating: 0, count: 64 - min(63, Runtime.hostName.utf8.count))
            let packed = stride(from: 0, to: 64, by: 8).map { i in (0..<8).reduce(Int64(0)) { $0 | Int64(name[i + $1]) << (8 * $1) } }
            let all = try world.allgather(packed)
            let names = (0..<world.size).map { r -> String in
                let bytes = (0..<64).map { UInt8(truncatingIfNeeded: all[r * 8 + $0 / 8] >> (8 * ($0 % 8))) }
                return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            var nodeNames: [String] = []
            for n in names where !nodeNames.contains(n) { nodeNames.append(n) }
            let nodeOf = names.map { nodeNames.firstIndex(of: $0)! }

            // The slowest rank's sgemm rate (min = -max of negatives).
            var negRate = [-SgemmPeak.measure(n: 1024, seconds: 1.0) / 1e9]
            try world.allreduce(&negRate, op: .max)
            let gflops = (-negRate[0] * 10).rounded() / 10

            let intra = try bandwidth(world, nodeOf: nodeOf, sameNode: true)
            let inter = nodeNames.count > 1 ? try bandwidth(world, nodeOf: nodeOf, sameNode: false) : intra
            let latency = try latencyUs(world)

            if world.rank == 0 {
                let memGB = physicalMemoryGB()
                let nodes: [JSONValue] = nodeNames.enumerated().map { i, n in
                    let slots = nodeOf.filter { $0 == i }.count
                    return ["name": .string(n), "slots": .number(Double(slots)), "memoryPerSlotGB": .number((memGB / Double(slots) * 10).rounded() / 10)]
                }
                let j: JSONValue = ["nodes": .array(nodes), "intraNodeGBps": .number(intra.gbps), "interNodeGBps": .number(inter.gbps),
                                    "intraNodeLatencyUs": .number(latency), "interNodeLatencyUs": .number(nodeNames.count > 1 ? inter.latencyUs : latency),
                                    "gflopsPerSlot": .number(gflops)]
                try Data(j.pretty.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
                say(String(format: "calibrate: %d rank(s) on %d node(s); sgemm %.1f GFLOP/s per rank (slowest); alltoallv %.2f GB/s inside a node, %.2f GB/s across; latency %.1f us. Wrote %@",
                           world.size, nodeNames.count, gflops, intra.gbps, inter.gbps, latency, out as NSString))
            }
            MPICommunicator.finalize()
            return 0
        } catch {
            Runtime.printError("\(error)", rank: world.rank, world: world.size)
            MPICommunicator.abortWorld(code: 1)
        }
    }

    /// Bytes per second each rank moves to the others (same node, or other nodes only) in an alltoallv.
    static func bandwidth(_ comm: any Communicator, nodeOf: [Int], sameNode: Bool) throws -> (gbps: Double, latencyUs: Double) {
        let n = comm.size, me = comm.rank
        let per = 1 << 20   // floats per destination (4 MB)
        let dests = (0..<n).map { d in d != me && ((nodeOf[d] == nodeOf[me]) == sameNode) }
        let counts = dests.map { $0 ? per : 0 }
        var recvCounts = [Int](repeating: 0, count: n)
        for s in 0..<n where s != me && ((nodeOf[s] == nodeOf[me]) == sameNode) { recvCounts[s] = per }
        let send = [Float](repeating: 1, count: counts.reduce(0, +))
        _ = try comm.alltoallv(send, sendCounts: counts, recvCounts: recvCounts)
        var best = Double.infinity
        for _ in 0..<5 {
            try comm.barrier()
            let t0 = monotonicSeconds()
            _ = try comm.alltoallv(send, sendCounts: counts, recvCounts: recvCounts)
            var t = [monotonicSeconds() - t0]
            try comm.allreduce(&t, op: .max)
            best = min(best, t[0])
        }
        // The slowest rank's rate; a rank with nothing to send reports no limit.
        let bytes = Double(counts.reduce(0, +) * 4)
        var negRate = [bytes > 0 ? -(bytes / best / 1e9) : -Double.greatestFiniteMagnitude]
        try comm.allreduce(&negRate, op: .max)
        let gbps = negRate[0] == -Double.greatestFiniteMagnitude ? 0 : -negRate[0]
        return ((gbps * 100).rounded() / 100, 0)
    }

    /// Mean microseconds of a one-float alltoallv over the world.
    static func latencyUs(_ comm: any Communicator) throws -> Double {
        let counts = [Int](repeating: 1, count: comm.size)
        let send = [Float](repeating: 0, count: comm.size)
        try comm.barrier()
        let t0 = monotonicSeconds()
        for _ in 0..<200 { _ = try comm.alltoallv(send, sendCounts: counts, recvCounts: counts) }
        var t = [(monotonicSeconds() - t0) / 200 * 1e6]
        try comm.allreduce(&t, op: .max)
        return (t[0] * 10).rounded() / 10
    }

    static func physicalMemoryGB() -> Double { Double(ProcessInfo.processInfo.physicalMemory) / 1e9 }
}
