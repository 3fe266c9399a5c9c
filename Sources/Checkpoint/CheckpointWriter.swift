// Saving: snapshot the shards into host memory (the step loop's only stall), write this rank's
// safetensors file and a sidecar listing its slices on a background thread, then, at a step
// boundary when every rank is done, rank 0 commits: manifest.json written and fsynced into
// step-N.partial/, the directory renamed to step-N, the parent fsynced, LATEST replaced by
// rename. A crash at any point leaves the previous checkpoint valid; a .partial is never loaded.
// At most one save is in flight. `poll` is collective: every rank calls it at the same steps.
import Clock
import Comm
import Foundation
import JSON
import Synchronization
import Tensor

/// What a finished save reports (on every rank; bytes/seconds are this rank's).
public struct SaveResult: Sendable {
    public let step: Int
    public let path: String
    public let ok: Bool
    public let message: String
    /// Bytes written by all ranks, and the slowest rank's write time.
    public let bytes: Int
    public let writeSeconds: Double
    /// Seconds the step loop stood still for this save (snapshot + waiting), this rank.
    public let stallSeconds: Double
    public let removed: [String]
}

public final class CheckpointWriter: @unchecked Sendable {
    public let root: String
    let comm: any Communicator
    public let keep: Int
    public let keepEvery: Int

    private var pending: Pending?
    /// Retention deletes old checkpoints here, one at a time, off the step loop.
    private let deletions = DispatchQueue(label: "switchyard.checkpoint.retention")
    private var cleanedOnce = false
    /// The host buffer snapshots go into, kept between saves: a fresh 100 MB allocation would
    /// cost its page faults inside the step loop every time.
    private var snapshotBuffer: UnsafeMutablePointer<Float>?
    private var snapshotCapacity = 0

    final class Pending: @unchecked Sendable {
        let step: Int
        let partial: String
        let final: String
        let manifestBase: Manifest
        var error: String?
        var bytes = 0
        var seconds = 0.0
        var stall = 0.0
        let finished = DispatchSemaphore(value: 0)
        init(step: Int, partial: String, final: String, manifestBase: Manifest) {
            self.step = step; self.partial = partial; self.final = final; self.manifestBase = manifestBase
        }
    }

    public init(root: String, comm: any Communicator, keep: Int, keepEvery: Int) {
        self.root = root; self.comm = comm; self.keep = keep; self.keepEvery = keepEvery
    }

    /// Allocates (and touches) the snapshot buffer for `floats` values ahead of the first save,
    /// so that its page faults happen at start-up rather than inside a training step.
    public func reserve(floats: Int) {
        guard snapshotBuffer == nil || floats > snapshotCapacity else { return }
        precondition(pending == nil, "cannot grow the snapshot buffer during a save")
        snapshotBuffer?.deallocate()
        snapshotCapacity = max(floats, 1)
        // Aligned so that the file's data can go out with O_DIRECT straight from it.
        snapshotBuffer = UnsafeMutableRawPointer.allocate(
            byteCount: 4 * snapshotCapacity, alignment: SafeTensors.directAlignment
        ).bindMemory(to: Float.self, capacity: snapshotCapacity)
        snapshotBuffer!.initialize(repeating: 0, count: snapshotCapacity)
    }

    deinit {
        // A save in flight still reads the snapshot: wait for it before freeing.
        if let p = pending { p.finished.wait() }
        deletions.sync {}
        snapshotBuffer?.deallocate()
    }

    public var isSaving: Bool { pending != nil }

    static func fileName(_ rank: Int) -> String { String(format: "rank-%05d.safetensors", rank) }
    static func sidecarName(_ rank: Int) -> String { String(format: "rank-%05d.json", rank) }

    /// Starts a save of `views` as step `step`: snapshots the pieces this rank writes, returns,
    /// and writes them on a background thread. `manifest` carries everything but the tensors.
    /// Call only when no save is in flight (`poll(block: true)` first).
    public func start(step: Int, manifest: Manifest, views: [ShardView]) {
        precondition(pending == nil, "a checkpoint save is already in flight")
        let t0 = monotonicSeconds()
        let name = CheckpointStore.stepName(step)
        let partial = "\(root)/\(name).partial", final = "\(root)/\(name)"
        do {
            try FileManager.default.createDirectory(atPath: partial, withIntermediateDirectories: true)
        } catch {
            // Not thrown: every rank must reach the same collective `poll`, which then reports
            // the failure on all of them.
            let p = Pending(step: step, partial: partial, final: final, manifestBase: manifest)
            p.error = "\(partial): cannot create: \(error.localizedDescription)"
            p.finished.signal()
            pending = p
            return
        }
        if comm.rank == 0 { removeStalePartials(except: name + ".partial", includingDeletions: !cleanedOnce) }
        cleanedOnce = true
        // Snapshot: one host buffer for everything this rank writes.
        let mine = views.filter(\.writes)
        let total = mine.reduce(0) { $0 + $1.count }
        reserve(floats: total)
        let snapshot = snapshotBuffer!
        var sources: [(ShardView, Int)] = []
        var off = 0
        for v in mine {
            sources.append((v, off))
            off += v.count
        }
        let p = Pending(step: step, partial: partial, final: final, manifestBase: manifest)
        pending = p
        let rank = comm.rank
        let job = Snapshot(base: snapshot, sources: sources)
        // The background write starts at once and follows the copy view by view (job.copied),
        // so the file is mostly written when the copy ends.
        let thread = Thread {
            defer { p.finished.signal() }
            CheckpointWriter.write(job, rank: rank, partial: partial, into: p)
        }
        thread.start()
        CheckpointWriter.copy(job)
        p.stall = monotonicSeconds() - t0
    }

    /// The snapshot's copies, in order, in groups of views of about 8 MB, each group as work items
    /// of the rank's threads (one per view; disjoint destinations); `job.copied` follows them.
    static func copy(_ job: Snapshot) {
        let sources = job.sources, snapshot = job.base
        var g0 = 0
        while g0 < sources.count {
            var g1 = g0, bytes = 0
            while g1 < sources.count && (g1 == g0 || bytes < Snapshot.groupBytes) {
                bytes += 4 * sources[g1].0.count
                g1 += 1
            }
            let first = g0
            Parallel.forEach(g1 - g0) { i, _ in
                let v = sources[first + i]
                (snapshot + v.1).update(from: v.0.data, count: v.0.count)
            }
            job.copied.store(g1, ordering: .releasing)
            g0 = g1
        }
    }

    /// The background half of a save: this rank's safetensors file and its sidecar, timed; a
    /// failure is recorded in `p` for the collective `poll`.
    static func write(_ job: Snapshot, rank: Int, partial: String, into p: Pending) {
        let snapshot = job.base, sources = job.sources
        let w0 = monotonicSeconds()
        do {
            let file = CheckpointWriter.fileName(rank)
            let written = try SafeTensors.write(
                sources.map { SafeTensorSource(name: $0.0.name, shape: $0.0.localShape, data: snapshot + $0.1) },
                to: partial + "/" + file, maxRunBytes: Snapshot.groupBytes, direct: true,
                ready: { job.waitCopied(through: $0) })
            // The sidecar tells rank 0 which slices this file holds, with their checksums, in
            // the manifest's own form (Manifest.json / parseTensors).
            let records = zip(sources, written).map { src, w in
                TensorRecord(
                    name: src.0.name, shape: src.0.globalShape,
                    slices: [SliceRecord(file: file, key: w.0.name, ranges: src.0.ranges, crc32c: w.1)])
            }
            let side = Array((Manifest.json(records).compact + "\n").utf8)
            // Not fsynced: only rank 0's commit reads it, and the fsynced manifest then holds
            // the same facts; a crash before the commit discards the whole .partial anyway.
            try writeFile(side, to: partial + "/" + CheckpointWriter.sidecarName(rank), sync: false)
            p.bytes = written.last.map { $0.0.end } ?? 0
        } catch {
            p.error = "\(error)"
        }
        p.seconds = monotonicSeconds() - w0
    }

    /// Collective. Returns nil while some rank is still writing (unless `block`), else the
    /// outcome after rank 0 committed (or discarded) the save. No-op (nil) without a save.
    public func poll(block: Bool) throws -> SaveResult? {
        // A blocking poll's collectives wait for the slowest rank's disk: longer deadlines.
        block ? try comm.patiently { try pollPending(block: true) } : try pollPending(block: false)
    }

    func pollPending(block: Bool) throws -> SaveResult? {
        guard let p = pending else { return nil }
        let w0 = monotonicSeconds()
        // The semaphore is the only synchronisation with the writer thread: its fields are read
        // only after it has signalled (and the signal is put back for later polls).
        let finished =
            block
            ? {
                p.finished.wait(); return true
            }() : p.finished.wait(timeout: .now()) == .success
        if finished { p.finished.signal() }
        var state: [Int64] = [finished ? 0 : 1, finished && p.error != nil ? 1 : 0, finished ? Int64(p.bytes) : 0]
        try comm.allreduce(&state, op: .sum)
        if state[0] > 0 { return nil }
        var times = [p.seconds]
        try comm.allreduce(&times, op: .max)
        // Rank 0 commits or discards; everyone learns the outcome.
        var outcome: [Int64] = [0]
        var message = ""
        var removed: [String] = []
        if comm.rank == 0 {
            if state[1] > 0 {
                message =
                    "rank(s) failed to write step \(p.step): \(p.error ?? "see the other ranks' errors"); the "
                    + "previous checkpoint stays valid"
                try? FileManager.default.removeItem(atPath: p.partial)
            } else {
                do {
                    try commit(p)
                    outcome[0] = 1
                    removed = retention()
                } catch {
                    message = "\(error); the previous checkpoint stays valid"
                    try? FileManager.default.removeItem(atPath: p.partial)
                }
            }
        } else if let e = p.error {
            message = e
        }
        try comm.broadcast(&outcome, root: 0)
        if outcome[0] == 0 && message.isEmpty {
            message = "checkpoint step \(p.step) was not committed (see rank 0's error)"
        }
        pending = nil
        // The stall counts the snapshot and everything this call held the loop for, the commit included.
        return SaveResult(
            step: p.step, path: p.final, ok: outcome[0] == 1, message: message, bytes: Int(state[2]),
            writeSeconds: times[0], stallSeconds: p.stall + monotonicSeconds() - w0, removed: removed)
    }

    /// Rank 0: merge the sidecars into manifest.json, then rename and publish.
    func commit(_ p: Pending) throws {
        var manifest = p.manifestBase
        var tensors: [String: TensorRecord] = [:]
        var order: [String] = []
        for r in 0..<comm.size {
            let path = p.partial + "/" + CheckpointWriter.sidecarName(r)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CheckpointError("\(path): missing sidecar")
            }
            let records: [TensorRecord]
            do { records = try Manifest.parseTensors(try JSONValue.parse(bytes: Array(data)), path: path) } catch {
                throw CheckpointError("\(path): bad sidecar (\(error))")
            }
            for t in records {
                if tensors[t.name] == nil {
                    tensors[t.name] = TensorRecord(name: t.name, shape: t.shape, slices: [])
                    order.append(t.name)
                }
                tensors[t.name]!.slices += t.slices
            }
        }
        manifest.tensors = order.map { tensors[$0]! }
        try writeFileSynced(manifest.bytes, to: p.partial + "/manifest.json")
        try? FileManager.default.removeItem(atPath: p.final)  // a leftover from an aborted commit
        guard rename(p.partial, p.final) == 0 else {
            throw CheckpointError("\(p.final): cannot rename from .partial: \(String(cString: strerror(errno)))")
        }
        try fsyncDirectory(root)
        let name = (p.final as NSString).lastPathComponent
        try writeFileSynced(Array((name + "\n").utf8), to: root + "/LATEST.tmp")
        guard rename(root + "/LATEST.tmp", root + "/LATEST") == 0 else {
            throw CheckpointError("\(root)/LATEST: cannot replace: \(String(cString: strerror(errno)))")
        }
        try fsyncDirectory(root)
    }

    /// Keeps the newest `keep` checkpoints and every `keepEvery`-th step; the others are removed
    /// on a background queue (deleting 100 MB of files must not hold the step loop). Each is first
    /// renamed to a .partial name, so a half-deleted directory is never taken for a checkpoint.
    func retention() -> [String] {
        let all = CheckpointStore.list(root: root)
        var removed: [String] = []
        for (i, c) in all.enumerated() where i >= keep && !(keepEvery > 0 && c.step % keepEvery == 0) {
            let doomed = root + "/" + c.name + ".deleting.partial"
            if rename(root + "/" + c.name, doomed) == 0 {
                removed.append(c.name)
                deletions.async { try? FileManager.default.removeItem(atPath: doomed) }
            }
        }
        return removed
    }

    /// Removes leftovers of interrupted saves; at a run's first save also the leftovers of
    /// interrupted retention (later ones may still be in this run's deletion queue).
    func removeStalePartials(except keepName: String, includingDeletions: Bool) {
        for n in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        where n.hasSuffix(".partial") && n != keepName && (includingDeletions || !n.hasSuffix(".deleting.partial")) {
            try? FileManager.default.removeItem(atPath: root + "/" + n)
        }
    }
}

/// The host copy a background save writes from (owned by the writing thread once started).
final class Snapshot: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
    let sources: [(ShardView, Int)]
    /// Views 0..<copied are in the buffer (the step loop copies in order; the writer follows).
    let copied = Atomic<Int>(0)
    /// Bytes per copy group and per write call, so that writing follows copying closely.
    static let groupBytes = 8 << 20
    init(base: UnsafeMutablePointer<Float>, sources: [(ShardView, Int)]) { self.base = base; self.sources = sources }

    /// Blocks until view `i` has been copied.
    func waitCopied(through i: Int) {
        while copied.load(ordering: .acquiring) <= i { usleep(50) }
    }
}

/// Writes `bytes` to `path` (truncating) and fsyncs it.
func writeFileSynced(_ bytes: [UInt8], to path: String) throws { try writeFile(bytes, to: path, sync: true) }

func writeFile(_ bytes: [UInt8], to path: String, sync: Bool) throws {
    try bytes.withUnsafeBytes {
        _ = try SafeTensors.writeBytes($0.baseAddress!, count: $0.count, to: path, direct: false, sync: sync)
    }
}

/// fsyncs a directory so that renames inside it survive a crash.
func fsyncDirectory(_ path: String) throws {
    let fd = open(path, O_RDONLY | O_DIRECTORY)
    guard fd >= 0 else { throw CheckpointError("\(path): cannot open directory: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw CheckpointError("\(path): fsync failed: \(String(cString: strerror(errno)))") }
}
