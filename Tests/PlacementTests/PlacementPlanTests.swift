import Placement
import XCTest

final class PlacementPlanTests: XCTestCase {
    func testRoundRobinPlacesEveryExpertOnce() throws {
        let p = PlacementPlan.roundRobin(moeLayers: 2, experts: 5, world: 3)
        XCTAssertEqual(p.layers[1], [[0], [1], [2], [0], [1]])
        XCTAssertEqual(p.localExperts(layer: 0, rank: 0), [0, 3])
        XCTAssertEqual(p.localExperts(layer: 0, rank: 2), [2])
        XCTAssertNoThrow(try p.validate(moeLayers: 2, experts: 5, world: 3))
        // More ranks than experts: some ranks hold none.
        let q = PlacementPlan.roundRobin(moeLayers: 1, experts: 2, world: 4)
        XCTAssertEqual(q.localExperts(layer: 0, rank: 3), [])
    }

    func testReplicasSplitTokensByIndex() {
        let p = PlacementPlan(layers: [[[0], [1, 3], [2]]])
        XCTAssertEqual((0..<6).map { p.rank(layer: 0, expert: 1, token: $0) }, [1, 3, 1, 3, 1, 3])
        XCTAssertEqual(p.rank(layer: 0, expert: 0, token: 5), 0)
    }

    func testValidationNamesTheProblem() {
        func expect(
            _ layers: [[[Int]]], _ text: String, world: Int = 2, file: StaticString = #filePath, line: UInt = #line
        ) {
            XCTAssertThrowsError(
                try PlacementPlan(layers: layers).validate(moeLayers: 1, experts: 3, world: world), file: file,
                line: line
            ) {
                XCTAssertTrue("\($0)".hasPrefix("placement: "), "\($0)", file: file, line: line)
                XCTAssertTrue("\($0)".contains(text), "\($0)", file: file, line: line)
            }
        }
        expect([[[0], [1], [2]]], "names rank 2, but the world has ranks 0..<2")
        expect([[[0], [1, 1], [0]]], "listed twice on one rank")
        expect([[[0], [], [1]]], "expert 1 of MoE layer 0 is on no rank")
        expect([[[0], [1]]], "lists 2 experts, the model has model.nExpert = 3")
        expect([[[0], [1], [0]], [[0], [1], [0]]], "has 2 MoE layers, the model has 1")
        expect([[[0], [-1], [0]]], "names rank -1")
    }
}
