// LinkProbe: measured alltoallv bandwidth and latency of a group, for the scheduler's cost
// model (`switchyard calibrate` writes them to a cluster file; a run with re-placement measures
// them at start). Collective: every rank of the group must call the same probe.
import Clock

public enum LinkProbe {
    /// GB/s the slowest rank sends in an alltoallv of `floatsPerPeer` floats to every peer that is
    /// on the same node (`sameNode`) or on another node (`!sameNode`): the best of 5 timed rounds
    /// after one warm-up. 0 when no rank has such a peer. `nodeOf[r]` is rank r's node.
    public static func alltoallvGBps(
        _ comm: any Communicator, nodeOf: [Int], sameNode: Bool, floatsPerPeer: Int = 1 << 20
    ) throws -> Double {
        let n = comm.size, me = comm.rank
        func peer(_ r: Int) -> Bool { r != me && ((nodeOf[r] == nodeOf[me]) == sameNode) }
        let counts = (0..<n).map { peer($0) ? floatsPerPeer : 0 }
        let send = [Float](repeating: 1, count: counts.reduce(0, +))
        _ = try comm.alltoallv(send, sendCounts: counts, recvCounts: counts)
        var best = Double.infinity
        for _ in 0..<5 {
            try comm.barrier()
            let t0 = monotonicSeconds()
            _ = try comm.alltoallv(send, sendCounts: counts, recvCounts: counts)
            var t = [monotonicSeconds() - t0]
            try comm.allreduce(&t, op: .max)
            best = min(best, t[0])
        }
        // The slowest rank's rate; a rank with nothing to send reports no limit.
        let bytes = Double(counts.reduce(0, +) * 4)
        var rate = [bytes > 0 ? bytes / best / 1e9 : Double.greatestFiniteMagnitude]
        try comm.allreduce(&rate, op: .min)
        let gbps = rate[0] == Double.greatestFiniteMagnitude ? 0 : rate[0]
        return (gbps * 100).rounded() / 100
    }

    /// Mean microseconds of a one-float alltoallv over the group (the slowest rank's mean).
    public static func alltoallvLatencyUs(_ comm: any Communicator, rounds: Int = 200) throws -> Double {
        let counts = [Int](repeating: 1, count: comm.size)
        let send = [Float](repeating: 0, count: comm.size)
        try comm.barrier()
        let t0 = monotonicSeconds()
        for _ in 0..<rounds { _ = try comm.alltoallv(send, sendCounts: counts, recvCounts: counts) }
        var t = [(monotonicSeconds() - t0) / Double(rounds) * 1e6]
        try comm.allreduce(&t, op: .max)
        return (t[0] * 10).rounded() / 10
    }

}
