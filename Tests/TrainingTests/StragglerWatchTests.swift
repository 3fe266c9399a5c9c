import Training
import XCTest

final class StragglerWatchTests: XCTestCase {
    /// Rank 2 computes 2x the others over a window of 4 steps: one finding at the window's end,
    /// with the ratio against the median of the other ranks; a window below the ratio finds nothing.
    func testFindsTheSlowRankOncePerWindow() {
        var w = StragglerWatch(window: 4, ratio: 1.5)
        var found: [Straggler] = []
        for step in 0..<8 {
            let slow = step < 4 ? 200.0 : 140.0
            if let s = w.add(step: step, computeMs: [100, 110, slow, 90]) { found.append(s) }
        }
        XCTAssertEqual(found.count, 1, "\(found)")
        XCTAssertEqual(found.first?.rank, 2)
        XCTAssertEqual(found.first?.othersMedianMs ?? 0, 100, accuracy: 1e-9)
        XCTAssertEqual(found.first?.ratio ?? 0, 2, accuracy: 1e-9)
        XCTAssertEqual(found.first.map { [$0.firstStep, $0.lastStep] }, [0, 3])
    }

    /// Two ranks: the slower one is compared with the other; off at ratio 0 and at one rank.
    func testTwoRanksOffSwitchAndOneRank() {
        var w = StragglerWatch(window: 2, ratio: 1.5)
        XCTAssertNil(w.add(step: 0, computeMs: [100, 160]))
        XCTAssertEqual(w.add(step: 1, computeMs: [100, 160])?.rank, 1)
        XCTAssertNil(w.add(step: 2, computeMs: [100, 140]))
        XCTAssertNil(w.add(step: 3, computeMs: [100, 140]), "1.4x is below the ratio")
        var off = StragglerWatch(window: 1, ratio: 0)
        XCTAssertNil(off.add(step: 0, computeMs: [1, 100]))
        var single = StragglerWatch(window: 1, ratio: 1.5)
        XCTAssertNil(single.add(step: 0, computeMs: [100]))
    }
}
