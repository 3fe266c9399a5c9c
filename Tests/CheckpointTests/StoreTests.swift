import Checkpoint
import Comm
import Foundation
import JSON
import XCTest

/// Saving from one layout and loading into another; verification; the atomic protocol.
final class StoreTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = tempDir() }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A [6, 4] matrix whose element (r, c) is 10r + c, and a [5] vector.
    static func matrix(_ r: Int, _ c: Int) -> Float { Float(10 * r + c) }

    /// Saves step `step` from `world` thread-ranks: the matrix split by rows, or by columns when
    /// `byColumns`, and the vector written by rank 0 only.
    func save(world: Int, step: Int, byColumns: Bool = false, keep: Int = 3) throws {
        let root = dir + "/checkpoints", d = dir
        _ = try LocalCommunicator.run(size: world) { comm -> Int in
            let r = comm.rank
            let rows = byColumns ? [0, 6] : [r * 6 / world, (r + 1) * 6 / world]
            let cols = byColumns ? [r * 4 / world, (r + 1) * 4 / world] : [0, 4]
            let m = UnsafeMutablePointer<Float>.allocate(capacity: 24),
                v = UnsafeMutablePointer<Float>.allocate(capacity: 5)
            defer { m.deallocate(); v.deallocate() }
            var i = 0
            for row in rows[0]..<rows[1] {
                for col in cols[0]..<cols[1] { m[i] = StoreTests.matrix(row, col) + Float(step); i += 1 }
            }
            for j in 0..<5 { v[j] = Float(j) }
            let views = [
                ShardView(name: "m", globalShape: [6, 4], ranges: [rows, cols], data: m, writes: true),
                ShardView(name: "v", globalShape: [5], ranges: [[0, 5]], data: v, writes: r == 0)
            ]
            let w = CheckpointWriter(root: root, comm: comm, keep: keep, keepEvery: 0)
            let manifest = Manifest(
                step: step, adamStep: step, job: ["name": .string(d)], world: world, dp: world, tp: 1,
                placement: [], createdAt: 0, tensors: [])
            w.start(step: step, manifest: manifest, views: views)
            var result: SaveResult? = nil
            while result == nil { result = try w.poll(block: false) }
            XCTAssertTrue(result!.ok, result!.message)
            return 0
        }
    }

    /// Loads the matrix into `world` ranks with the given split; returns each rank's piece.
    func load(world: Int, byColumns: Bool) throws -> [[Float]] {
        let root = dir + "/checkpoints"
        let name = CheckpointStore.latest(root: root)!
        let manifest = try CheckpointStore.readManifest(dir: root + "/" + name)
        return try (0..<world).map { r in
            let rows = byColumns ? [0, 6] : [r * 6 / world, (r + 1) * 6 / world]
            let cols = byColumns ? [r * 4 / world, (r + 1) * 4 / world] : [0, 4]
            let n = (rows[1] - rows[0]) * (cols[1] - cols[0])
            let m = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { m.deallocate() }
            try CheckpointStore.load(
                dir: root + "/" + name, manifest: manifest,
                views: [ShardView(name: "m", globalShape: [6, 4], ranges: [rows, cols], data: m, writes: false)])
            return Array(UnsafeBufferPointer(start: m, count: n))
        }
    }

    func expected(world: Int, byColumns: Bool, step: Int) -> [[Float]] {
        (0..<world).map { r in
            let rows = byColumns ? 0..<6 : (r * 6 / world)..<((r + 1) * 6 / world)
            let cols = byColumns ? (r * 4 / world)..<((r + 1) * 4 / world) : 0..<4
            return rows.flatMap { row in cols.map { StoreTests.matrix(row, $0) + Float(step) } }
        }
    }

    func testSaveVerifyAndReshardAcrossLayouts() throws {
        try save(world: 3, step: 5)
        let root = dir + "/checkpoints"
        XCTAssertEqual(CheckpointStore.latest(root: root), "step-000000005")
        XCTAssertEqual(CheckpointStore.verify(dir: root + "/step-000000005"), [])
        let m = try CheckpointStore.readManifest(dir: root + "/step-000000005")
        XCTAssertEqual(m.tensors.first { $0.name == "m" }?.slices.count, 3)
        XCTAssertEqual(m.tensors.first { $0.name == "v" }?.slices.count, 1, "a replicated tensor is written once")
        // Rows written by 3 ranks, read by 2 ranks split by columns, by 4 by rows, and by 1.
        XCTAssertEqual(try load(world: 2, byColumns: true), expected(world: 2, byColumns: true, step: 5))
        XCTAssertEqual(try load(world: 4, byColumns: false), expected(world: 4, byColumns: false, step: 5))
        XCTAssertEqual(try load(world: 1, byColumns: false), expected(world: 1, byColumns: false, step: 5))
        // Columns written by 2 ranks, read back by rows.
        try save(world: 2, step: 6, byColumns: true)
        XCTAssertEqual(try load(world: 3, byColumns: false), expected(world: 3, byColumns: false, step: 6))
    }

    func testFlippedByteFailsVerificationNamingTheTensor() throws {
        try save(world: 2, step: 1)
        let file = dir + "/checkpoints/step-000000001/rank-00001.safetensors"
        var data = try Data(contentsOf: URL(fileURLWithPath: file))
        data[data.count - 5] ^= 0x01
        try data.write(to: URL(fileURLWithPath: file))
        let problems = CheckpointStore.verify(dir: dir + "/checkpoints/step-000000001")
        XCTAssertEqual(problems.count, 1, "\(problems)")
        XCTAssertTrue(problems[0].contains("rank-00001.safetensors: tensor m: checksum mismatch"), problems[0])
    }

    func testRetentionAndLatest() throws {
        for step in [1, 2, 3, 4, 5] { try save(world: 1, step: step, keep: 2) }
        let root = dir + "/checkpoints"
        XCTAssertEqual(CheckpointStore.list(root: root).map(\.step), [5, 4])
        XCTAssertEqual(CheckpointStore.latest(root: root), "step-000000005")
        XCTAssertEqual(CheckpointStore.candidates(root: root), ["step-000000005", "step-000000004"])
        // A leftover .partial (a crash mid-save) is never a candidate and is removed by the next save.
        try FileManager.default.createDirectory(
            atPath: root + "/step-000000009.partial", withIntermediateDirectories: true)
        XCTAssertEqual(CheckpointStore.candidates(root: root), ["step-000000005", "step-000000004"])
        try save(world: 1, step: 6, keep: 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/step-000000009.partial"))
        // A crash between a step directory's rename and LATEST's replacement leaves LATEST one
        // behind: resume still takes the newest complete checkpoint.
        try Data("step-000000005\n".utf8).write(to: URL(fileURLWithPath: root + "/LATEST"))
        XCTAssertEqual(CheckpointStore.latest(root: root), "step-000000005")
        XCTAssertEqual(CheckpointStore.candidates(root: root).first, "step-000000006")
    }
}

final class WriterFailureTests: XCTestCase {
    /// A save that cannot even create its directory fails the same way on every rank (no hang),
    /// and says why.
    func testUncreatableDirectoryFailsOnEveryRank() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data("not a directory".utf8).write(to: URL(fileURLWithPath: dir + "/checkpoints"))
        let results = try LocalCommunicator.run(size: 2, timeout: 20) { comm -> String in
            let v = UnsafeMutablePointer<Float>.allocate(capacity: 4)
            defer { v.deallocate() }
            v.initialize(repeating: 1, count: 4)
            let w = CheckpointWriter(root: dir + "/checkpoints", comm: comm, keep: 1, keepEvery: 0)
            let m = Manifest(
                step: 1, adamStep: 1, job: [:], world: 2, dp: 2, tp: 1, placement: [], createdAt: 0, tensors: [])
            w.start(
                step: 1, manifest: m,
                views: [ShardView(name: "v", globalShape: [4], ranges: [[0, 4]], data: v, writes: comm.rank == 0)])
            let r = try w.poll(block: true)!
            return r.ok ? "ok" : r.message
        }
        for m in results { XCTAssertTrue(m.contains("cannot create") || m.contains("failed to write"), m) }
    }
}
