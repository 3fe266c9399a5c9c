// Checkpoints in the step loop: the shard views of this rank's parameters and AdamW moments,
// resume (newest checkpoint that verifies, any layout), and the save calls.
import Checkpoint
import Comm
import Foundation
import JSON
import Model
import RunEvents

/// Where `train` resumes from.
public enum ResumeChoice: Sendable, Equatable {
    case latest  // the run's newest checkpoint that verifies, if any
    case none  // start at step 0
    case from(String)  // this checkpoint directory (an error if it does not verify)
}

/// What resume found, for the log.
public struct ResumeInfo: Sendable {
    public let path: String
    public let step: Int
    public let skipped: [(path: String, problem: String)]
}

extension Trainer {
    public var checkpointRoot: String { job.runDirectory + "/checkpoints" }

    /// This rank's parameters and both AdamW moments as checkpoint views (global names and ranges).
    public func shardViews() -> [ShardView] {
        guard let b = optimizer.routerBias else { return model.store.shardViews(moments: true) }
        return model.store.shardViews(moments: true) + [
            ShardView(
                name: RouterBias.tensorName, globalShape: [b.layers, b.experts],
                ranges: [[0, b.layers], [0, b.experts]],
                data: b.values.base, writes: ctx.mesh.rank == 0)
        ]
    }

    /// Loads the checkpoint to resume from (collective: every rank verifies a share of the files
    /// and all agree). A checkpoint that fails verification is skipped with a warning for the
    /// previous one. Returns nil when starting fresh.
    public func resume(_ choice: ResumeChoice) throws -> ResumeInfo? {
        let dirs: [String]
        switch choice {
        case .none: return nil
        case .from(let d): dirs = [d]
        case .latest: dirs = CheckpointStore.candidates(root: checkpointRoot).map { checkpointRoot + "/" + $0 }
        }
        let world = ctx.comms.world
        var skipped: [(String, String)] = []
        for dir in dirs {
            // Each rank checks the files i % world == rank; the verdict is shared.
            var problems: [String] = []
            if let m = try? CheckpointStore.readManifest(dir: dir) {
                let files = Array(Set(m.tensors.flatMap { $0.slices.map(\.file) })).sorted()
                let mine = Set(files.enumerated().filter { $0.offset % world.size == world.rank }.map(\.element))
                problems = CheckpointStore.verify(dir: dir, files: mine)
            } else {
                problems = CheckpointStore.verify(dir: dir, files: [])
            }
            var bad: [Int64] = [problems.isEmpty ? 0 : 1]
            try world.allreduce(&bad, op: .sum)
            if bad[0] > 0 {
                let reason = problems.first ?? "another rank found a problem"
                skipped.append((dir, reason))
                if case .from = choice { throw CheckpointError("\(dir) does not verify: \(reason)") }
                continue
            }
            let manifest = try CheckpointStore.readManifest(dir: dir)
            try checkArchitecture(manifest, dir: dir)
            // A checkpoint saved without aux-loss-free balancing starts its biases at zero, and an
            // imported one (ckpt import) its AdamW moments; a missing parameter is an error.
            let saved = Set(manifest.tensors.map(\.name)), views = shardViews()
            if let missing = views.first(where: { !saved.contains($0.name) && !Self.mayBeAbsent($0.name) }) {
                throw CheckpointError("\(dir): the checkpoint has no tensor \(missing.name)")
            }
            try CheckpointStore.load(dir: dir, manifest: manifest, views: views.filter { saved.contains($0.name) })
            startStep = manifest.step
            optimizer.updates = manifest.adamStep
            return ResumeInfo(path: dir, step: manifest.step, skipped: skipped)
        }
        if !skipped.isEmpty {
            throw CheckpointError(
                "no checkpoint in \(checkpointRoot) verifies "
                    + "(\(skipped.map { "\($0.0): \($0.1)" }.joined(separator: "; "))); use --no-resume to start "
                    + "over (the old checkpoints are kept aside)"
            )
        }
        return nil
    }

    /// Tensors a checkpoint may lack, which then start at zero: AdamW moments, router biases.
    static func mayBeAbsent(_ name: String) -> Bool { name.hasPrefix("optim.") || name == "router.selectionBias" }

    /// The architecture comes from the checkpoint: a job that changes a shape is an error naming
    /// the field (a rope model's seqLen is no shape: it may change, to fine-tune at another length).
    func checkArchitecture(_ m: Manifest, dir: String) throws {
        // Keys a checkpoint predates (model.positions, model.ffn, ...) take their defaults.
        let saved = try CheckpointModel.job(m, dir: dir)
        let mine = job.resolvedJSON["model"], theirs = saved.resolvedJSON["model"]
        guard case .object(let fields)? = mine else { return }
        let ropeBoth = job.model.usesRope && saved.model.usesRope
        for (k, v) in fields where theirs?[k] != v && !(ropeBoth && k == "seqLen") {
            throw JobError(
                key: "model.\(k)",
                "the checkpoint \(dir) was trained with model.\(k) = \(theirs?[k]?.compact ?? "?"), the job "
                    + "says \(v.compact); the architecture comes from the checkpoint: restore model.\(k), or start a "
                    + "new run (--no-resume or another name)"
            )
        }
    }

    /// Sizes the writer's snapshot buffer for `store`: the primary copies of the parameters and of
    /// both AdamW moments (what a checkpoint holds).
    func reserveSnapshot(for store: ParameterStore) {
        let bias = optimizer.routerBias.map { $0.layers * $0.experts } ?? 0
        writer?.reserve(floats: store.shardViews(moments: true).filter(\.writes).reduce(bias) { $0 + $1.count })
    }

    /// Starts an asynchronous save of the state after `steps` steps.
    /// Collective: a save where any rank holds a non-finite parameter or moment is skipped on
    /// every rank (a warning event; the previous checkpoint stays the newest).
    func startSave(steps: Int) throws {
        guard let w = writer else { return }
        var bad = [model.store.stateIsFinite ? 0.0 : 1.0]
        try ctx.allreduceWorld(&bad)
        guard bad[0] == 0 else {
            let message =
                "checkpoint after step \(steps - 1) not written: \(Int(bad[0])) rank(s) hold non-finite parameters "
                + "or AdamW moments; the previous checkpoint stays the newest"
            log?.write(
                .event(
                    .warning,
                    [
                        .step: .number(Double(steps - 1)), .time: .number(unixTime()),
                        .kind: "nonFiniteState", .message: .string(message)
                    ]))
            say("warning: " + message)
            return
        }
        let m = Manifest(
            step: steps, adamStep: optimizer.updates, job: job.resolvedJSON, world: ctx.mesh.world, dp: ctx.mesh.dp,
            tp: ctx.mesh.tp, placement: ctx.plan.layers, createdAt: Date().timeIntervalSince1970, tensors: [])
        w.start(step: steps, manifest: m, views: shardViews())
    }

    /// Finishes a pending save if every rank is done (or waits, with `block`); logs it.
    /// Throws CheckpointSaveFailed when a failed save must stop training (checkpoint.onError = stop).
    func pollSave(block: Bool) throws {
        guard let w = writer, let r = try w.poll(block: block) else { return }
        if r.ok {
            let gbps = r.writeSeconds > 0 ? Double(r.bytes) / r.writeSeconds / 1e9 : 0
            log?.write(
                .event(
                    .checkpoint,
                    [
                        .step: .number(Double(r.step)), .time: .number(unixTime()),
                        .path: .string(r.path), .bytes: .number(Double(r.bytes)), .seconds: .number(r.writeSeconds),
                        .gbps: .number(gbps), .stallMs: .number(r.stallSeconds * 1000),
                        .removed: .array(r.removed.map { .string($0) })
                    ]))
            say(
                String(
                    format: "checkpoint step %d: %.1f MB in %.2f s (%.2f GB/s), loop stalled %.1f ms -> %@",
                    r.step, Double(r.bytes) / 1e6, r.writeSeconds, gbps, r.stallSeconds * 1000, r.path as NSString))
            return
        }
        log?.write(
            .event(
                job.checkpoint.onError == "stop" ? .error : .warning,
                [
                    .step: .number(Double(r.step)), .time: .number(unixTime()),
                    .message: .string("checkpoint failed: \(r.message)")
                ]))
        say("warning: checkpoint step \(r.step) failed: \(r.message)")
        if job.checkpoint.onError == "stop" { throw CheckpointSaveFailed() }
    }
}
