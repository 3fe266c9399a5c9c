// The dp x tp layout of the world: rank r has dpIndex = r / tp and tpIndex = r % tp, so a
// tensor-parallel group is a run of consecutive ranks (the scheduler keeps it in one node).

/// The layout of ranks and the sub-communicators it needs.
public struct Mesh: Sendable {
    public let dp: Int
    public let tp: Int
    public let rank: Int
    public var world: Int { dp * tp }
    public var dpIndex: Int { rank / tp }
    public var tpIndex: Int { rank % tp }

    public init(dp: Int, tp: Int, rank: Int) {
        precondition(dp >= 1 && tp >= 1 && rank >= 0 && rank < dp * tp, "mesh \(dp)x\(tp) has no rank \(rank)")
        self.dp = dp; self.tp = tp; self.rank = rank
    }
}

/// The communicators of one rank: the world, its tensor-parallel group and its data-parallel group.
public final class MeshComms: @unchecked Sendable {
    public let mesh: Mesh
    public let world: any Communicator
    /// Ranks with the same dpIndex (size tp), ordered by tpIndex.
    public let tp: any Communicator
    /// Ranks with the same tpIndex (size dp), ordered by dpIndex.
    public let dp: any Communicator

    /// Splits `world` (collective: every rank calls it with the same dp and tp).
    public init(world: any Communicator, dp: Int, tp: Int) throws {
        precondition(dp * tp == world.size, "mesh \(dp)x\(tp) does not match world size \(world.size)")
        let mesh = Mesh(dp: dp, tp: tp, rank: world.rank)
        self.mesh = mesh
        self.world = world
        self.tp = try world.split(color: mesh.dpIndex, key: mesh.tpIndex)
        self.dp = try world.split(color: mesh.tpIndex, key: mesh.dpIndex)
    }
}
