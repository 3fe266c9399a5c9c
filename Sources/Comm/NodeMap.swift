// NodeMap: which ranks share a machine. Ranks that report the same host name form a node;
// nodes are numbered in order of their lowest rank. Collective (one allgather).
import Foundation

public enum NodeMap {
    /// (node of every rank, node names in node order) for this rank's `host`.
    public static func byHost(_ comm: any Communicator, host: String) throws -> (nodeOf: [Int], names: [String]) {
        // Host names travel as 64 bytes (8 Int64s), NUL-padded; longer names are cut at 63.
        let utf8 = Array(host.utf8.prefix(63))
        let name = utf8 + [UInt8](repeating: 0, count: 64 - utf8.count)
        let packed = stride(from: 0, to: 64, by: 8).map { i in
            (0..<8).reduce(Int64(0)) { $0 | Int64(name[i + $1]) << (8 * $1) }
        }
        let all = try comm.allgather(packed)
        let names = (0..<comm.size).map { r -> String in
            let bytes = (0..<64).map { UInt8(truncatingIfNeeded: all[r * 8 + $0 / 8] >> (8 * ($0 % 8))) }
            return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        var nodeNames: [String] = []
        for n in names where !nodeNames.contains(n) { nodeNames.append(n) }
        return (names.map { nodeNames.firstIndex(of: $0)! }, nodeNames)
    }

    /// Cores of every node for ranks running `threadsPerRank` threads each: this machine's online
    /// processors / threads per rank, the least any rank of the node reports. Collective.
    public static func cores(_ comm: any Communicator, nodeOf: [Int], threadsPerRank: Int) throws -> [Int] {
        let mine = Int64(max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, threadsPerRank)))
        let all = try comm.allgather([mine])
        return (0...(nodeOf.max() ?? 0)).map { n in
            Int((0..<nodeOf.count).filter { nodeOf[$0] == n }.map { all[$0] }.min() ?? 1)
        }
    }
}
