// The heartbeat that lets a collective's deadline name the rank(s) it waits for: three thread
// ranks on loopback, each saying what it does; the blame must follow what the others said last.
import XCTest

@testable import Comm

final class HeartbeatTests: XCTestCase {
    /// Ranks 1 and 2 say `one` and `two` every 20 ms until `body` holds or 3 s pass.
    private func eventually(
        _ b: [Heartbeat], _ one: (Int, String?), _ two: (Int, String?), _ body: () -> Bool
    ) -> Bool {
        let until = Date().addingTimeInterval(3)
        while !body() && Date() < until {
            b[1].send(step: one.0, call: one.1)
            b[2].send(step: two.0, call: two.1)
            Thread.sleep(forTimeInterval: 0.02)
        }
        return body()
    }

    func testBlameFollowsWhatTheOtherRanksSaidLast() throws {
        let beats = try LocalCommunicator.run(size: 3) { try Heartbeat.connect($0, host: "node-a") }
        let b = try beats.map { try XCTUnwrap($0, "no heartbeat socket on loopback") }
        // Before anyone spoke, rank 0 waits for both others.
        let first = b[0].blame(step: 5)
        XCTAssertEqual(first.map(\.rank), [1, 2])
        XCTAssertTrue(first[0].seen.hasPrefix("rank 1 on node-a: no heartbeat in "), first[0].seen)
        XCTAssertTrue(first[0].seen.contains("since start-up"), first[0].seen)
        // Rank 1 waits in the same call; rank 2 computes: rank 2 is the one.
        let waiting = (5, Optional("MPI_Allreduce"))
        XCTAssertTrue(eventually(b, waiting, (5, nil)) { b[0].blame(step: 5).map(\.rank) == [2] })
        XCTAssertEqual(
            b[0].blame(step: 5).first?.seen,
            "rank 2 on node-a: alive at step 5 but in no collective "
                + "(still computing, or stuck)")
        // Rank 2 waits in a collective of an earlier step: still the one.
        XCTAssertTrue(
            eventually(b, waiting, (4, "MPI_Bcast")) {
                b[0].blame(step: 5).first?.seen.contains("waiting in MPI_Bcast at step 4") == true
            })
        // Everyone in a collective of this step: nobody to name.
        XCTAssertTrue(eventually(b, waiting, waiting) { b[0].blame(step: 5).isEmpty })
        // Rank 1's view: rank 0 never spoke. With rank 2 computing, rank 2 is named (a rank seen
        // alive outside a collective beats one never heard from); with rank 2 waiting, rank 0 is.
        XCTAssertTrue(eventually(b, waiting, (5, nil)) { b[1].blame(step: 5).map(\.rank) == [2] })
        XCTAssertTrue(eventually(b, waiting, waiting) { b[1].blame(step: 5).map(\.rank) == [0] })
        XCTAssertTrue(b[1].blame(step: 5).first?.seen.contains("since start-up") == true)
        // Rank 1 goes on talking, rank 2 falls silent: the silent one is named, and only it.
        let until = Date().addingTimeInterval(Heartbeat.silentSeconds + 0.5)
        while Date() < until {
            b[1].send(step: 5, call: "MPI_Allreduce")
            Thread.sleep(forTimeInterval: 0.1)
        }
        let silent = b[0].blame(step: 5)
        XCTAssertEqual(silent.map(\.rank), [2])
        XCTAssertTrue(silent.first?.seen.contains("no heartbeat for 2.") == true, silent.first?.seen ?? "")
    }

    func testADatagramOfAnotherJobOrForAnotherRankIsIgnored() {
        let bytes = Heartbeat.pack(nonce: 42, from: 3, to: 1, step: 77, call: "MPI_Alltoallv")
        XCTAssertEqual(bytes.count, Heartbeat.size)
        let got = Heartbeat.unpack(bytes, nonce: 42, to: 1)
        XCTAssertEqual(got?.0, 3)
        XCTAssertEqual(got?.1.step, 77)
        XCTAssertEqual(got?.1.call, "MPI_Alltoallv")
        XCTAssertNil(Heartbeat.unpack(bytes, nonce: 43, to: 1), "another job's nonce")
        XCTAssertNil(Heartbeat.unpack(bytes, nonce: 42, to: 2), "a datagram for another rank")
        var garbled = bytes
        garbled[0] ^= 1
        XCTAssertNil(Heartbeat.unpack(garbled, nonce: 42, to: 1), "a wrong magic")
        XCTAssertNil(Heartbeat.unpack(Array(bytes.prefix(20)), nonce: 42, to: 1), "a short datagram")
        let computing = Heartbeat.unpack(Heartbeat.pack(nonce: 1, from: 0, to: 0, step: -1, call: nil), nonce: 1, to: 0)
        XCTAssertNil(computing?.1.call)
        XCTAssertEqual(computing?.1.step, -1)
    }
}
