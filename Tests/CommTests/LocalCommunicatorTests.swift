import Comm
import XCTest

final class LocalCommunicatorTests: XCTestCase {
    /// The shared collective contract (rank-dependent inputs, closed-form results) at 1-4 ranks.
    func testCollectiveChecksPassAtOneToFourRanks() throws {
        for size in 1...4 {
            let failures = try LocalCommunicator.run(size: size) { try CollectiveChecks.run($0) }
            XCTAssertEqual(failures.flatMap { $0 }, [], "size \(size)")
            XCTAssertEqual(failures.count, size)
        }
    }

    /// reduceScatter leaves each rank its own chunk of the sum and NaN everywhere else, as MPI may
    /// leave anything there: a caller that reads another rank's chunk fails in-process too.
    func testReduceScatterPoisonsEverythingButTheRanksChunk() throws {
        let counts = [2, 0, 3]  // an empty chunk in the middle
        let got = try LocalCommunicator.run(size: 3) { comm -> [Float] in
            var xs = (0..<5).map { Float(10 * comm.rank + $0) }
            try xs.withUnsafeMutableBufferPointer { try comm.reduceScatter($0, counts: counts) }
            return xs
        }
        let sums: [Float] = (0..<5).map { i in Float((0..<3).map { 10 * $0 + i }.reduce(0, +)) }
        XCTAssertEqual(Array(got[0][0..<2]), Array(sums[0..<2]), "rank 0's chunk")
        XCTAssertTrue(got[0][2...].allSatisfy(\.isNaN), "rank 0 outside its chunk: \(got[0])")
        XCTAssertTrue(got[1].allSatisfy(\.isNaN), "rank 1 owns nothing: \(got[1])")
        XCTAssertTrue(got[2][0..<2].allSatisfy(\.isNaN), "rank 2 outside its chunk: \(got[2])")
        XCTAssertEqual(Array(got[2][2...]), Array(sums[2...]), "rank 2's chunk")
    }

    /// A failing rank makes the others' collectives throw instead of hanging, and the real
    /// error (not the echo) is what run() rethrows.
    func testFailingRankAbortsTheOthers() {
        struct Boom: Error {}
        let start = Date()
        XCTAssertThrowsError(
            try LocalCommunicator.run(size: 3) { comm -> Int in
                if comm.rank == 1 { throw Boom() }
                try comm.barrier()
                return 0
            }
        ) { XCTAssertTrue($0 is Boom, "got \($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    /// Mismatched sizes are reported, not silently misread.
    func testAlltoallvCountMismatchIsAnError() {
        XCTAssertThrowsError(
            try LocalCommunicator.run(size: 2) { comm -> [Float] in
                // Both ranks send 1 element to each other but rank 1 expects 2 from rank 0.
                try comm.alltoallv([1, 2], sendCounts: [1, 1], recvCounts: comm.rank == 1 ? [2, 1] : [1, 1])
            })
    }

    /// A point-to-point message of the wrong length is an error on the receiver; one that never
    /// comes is a timeout, not a hang.
    func testExchangeLengthMismatchAndMissingMessageAreErrors() {
        XCTAssertThrowsError(
            try LocalCommunicator.run(size: 2) { comm -> Int in
                let other = 1 - comm.rank
                let out: [Float] = [1, 2, 3]
                var into = [Float](repeating: 0, count: comm.rank == 1 ? 2 : 3)
                try out.withUnsafeBufferPointer { s in
                    try into.withUnsafeMutableBufferPointer { r in
                        try comm.exchange(
                            sends: [PeerBuffer(peer: other, buffer: s)],
                            receives: [PeerMutableBuffer(peer: other, buffer: r)])
                    }
                }
                return 0
            }
        ) { XCTAssertTrue("\($0)".contains("rank 0 sent 3 elements to rank 1, which expects 2"), "\($0)") }
        XCTAssertThrowsError(
            try LocalCommunicator.run(size: 2, timeout: 0.5) { comm -> Int in
                var into = [Float](repeating: 0, count: 1)
                if comm.rank == 0 {
                    try into.withUnsafeMutableBufferPointer {
                        try comm.exchange(sends: [], receives: [PeerMutableBuffer(peer: 1, buffer: $0)])
                    }
                }
                return 0
            }
        ) { XCTAssertTrue("\($0)".contains("waited more than 0 s for a message from rank 1"), "\($0)") }
        XCTAssertThrowsError(
            try LocalCommunicator.single().exchange(
                sends: [PeerBuffer<Float>](),
                receives: [PeerMutableBuffer(peer: 1, buffer: .init(start: nil, count: 0))])
        ) {
            XCTAssertTrue("\($0)".contains("peer 1 outside 0..<1"), "\($0)")
        }
    }

    /// The link probe measures something positive where ranks have peers of the asked kind, and
    /// reports 0 GB/s where none has (one node asked for other nodes); every rank gets the same.
    func testLinkProbeMeasuresPeersOnly() throws {
        let r = try LocalCommunicator.run(size: 2) { comm -> [Double] in
            [
                try LinkProbe.alltoallvGBps(comm, nodeOf: [0, 0], sameNode: true, floatsPerPeer: 1 << 14),
                try LinkProbe.alltoallvGBps(comm, nodeOf: [0, 0], sameNode: false, floatsPerPeer: 1 << 14),
                try LinkProbe.alltoallvGBps(comm, nodeOf: [0, 1], sameNode: false, floatsPerPeer: 1 << 14),
                try LinkProbe.alltoallvLatencyUs(comm, rounds: 20)
            ]
        }
        XCTAssertGreaterThan(r[0][0], 0)
        XCTAssertEqual(r[0][1], 0, "no rank has a peer on another node")
        XCTAssertGreaterThan(r[0][2], 0)
        XCTAssertGreaterThan(r[0][3], 0)
        XCTAssertEqual(r[0], r[1], "every rank reports the slowest rank's figures")
    }

    /// A rank that never arrives is a timeout error, not a hang.
    func testMissingRankTimesOut() {
        XCTAssertThrowsError(
            try LocalCommunicator.run(size: 2, timeout: 0.5) { comm -> Int in
                if comm.rank == 0 { try comm.barrier() }
                return comm.rank
            })
    }
}
