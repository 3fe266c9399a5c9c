import Training
import XCTest

/// The layout contract for the open MoE families' attention options (ParallelLayoutTests holds
/// the helpers and the other designs).
extension ParallelLayoutTests {
    /// The open families' attention keeps the contract: grouped-query heads split over tp with
    /// their query heads, a head size other than C / H, Qwen3's per-head q/k norm (its weight's
    /// gradient summed over the world) and OLMoE's whole-projection norm (row sums over tp).
    func testGroupedQueryAndQKNormLayoutsMatchWorldOne() throws {
        for (qkNorm, headDim) in [("head", 16), ("full", 0)] {
            var (j1, data) = layoutJob()
            j1 = mixtralShaped(j1)
            j1.model.nKVHead = 2; j1.model.qkNorm = qkNorm; j1.model.headDim = headDim
            j1.model.normTopK = qkNorm == "head"; j1.model.rmsNormEps = 1e-6
            let ref = try train(world: 1, j1, data)
            XCTAssertNotNil(ref.params["layers.0.attn.qnorm.weight"])
            XCTAssertLessThan(ref.losses.last!, ref.losses.first! - 0.5, "the reference run learns")
            for (label, world, dp, tp) in [("tp2", 2, 1, 2), ("dp2xtp2", 4, 2, 2), ("ep4", 4, 0, 1)] {
                var j = j1
                j.layout.dp = dp; j.layout.tp = tp
                // Per-head norm, D 16: one step (15 of 20) differs by 1.2e-5 at every layout, the
                // steps around it by <= 2e-6: a top-k choice that reassociation flips at a near-tie,
                // as in testRouterBiasLayoutsMatchWorldOneAndBalance (AMD EPYC, OpenBLAS Haswell).
                assertMatches(
                    try train(world: world, j, data), ref, "GQA G2 qkNorm \(qkNorm) D\(j.model.headSize) \(label)",
                    lossTolerance: 3e-5)
            }
            var tp4 = j1
            tp4.layout.tp = 4
            XCTAssertThrowsError(try tp4.validate()) {
                XCTAssertTrue("\($0)".contains("does not divide model.nKVHead = 2"), "\($0)")
            }
        }
    }
}
