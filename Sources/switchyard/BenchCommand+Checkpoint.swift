// `switchyard bench --checkpoints`: checkpoint save throughput against an fsync'd plain write of
// the same bytes on the same disk, the step-loop stall of an async save, and training throughput
// over a window with saves against one without; all in one run.
import Checkpoint
import Clock
import Comm
import Foundation
import JSON
import Model
import RunEvents
import Tensor
import Training

extension BenchCommand {
    static func checkpointBench(job base: Job, data: TokenData, env: RunEnvironment, dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        say("== checkpoints (in \(dir))")
        try saveThroughput(job: base, data: data, env: env, dir: dir)
        try saveStall(job: base, data: data, env: env, dir: dir)
    }

    /// One save's timings: whole save, the plain writes of the same bytes (buffered; O_DIRECT where
    /// allowed), the snapshot, the background write.
    struct SaveRound { let save: Double, plain: Double, plainDirect: Double?, snapshot: Double, write: Double }

    /// Save throughput vs a plain write + fsync of the same number of bytes, alternating, 3 rounds each.
    static func saveThroughput(job base: Job, data: TokenData, env: RunEnvironment, dir: String) throws {
        var job = base
        job.runsDir = dir
        job.name = "ckpt-bench"
        job.checkpoint.every = 0
        let jobCopy = job
        let (bytes, rows) = try LocalCommunicator.run(size: 1) { comm -> (Int, [SaveRound]) in
            let t = try Trainer(job: jobCopy, comm: comm, data: data, log: nil, environment: env, say: { _ in })
            let views = t.shardViews()
            let bytes = views.reduce(0) { $0 + 4 * $1.count }
            var out: [SaveRound] = []
            // As in training: one writer whose snapshot buffer is allocated at start-up.
            let w = CheckpointWriter(root: dir + "/checkpoints", comm: comm, keep: 1, keepEvery: 0)
            w.reserve(floats: bytes / 4)
            for round in 0..<3 {
                let m = Manifest(
                    step: round + 1, adamStep: 0, job: jobCopy.resolvedJSON, world: 1, dp: 1, tp: 1, placement: [],
                    createdAt: 0, tensors: [])
                let t0 = monotonicSeconds()
                w.start(step: round + 1, manifest: m, views: views)
                let snapshot = monotonicSeconds() - t0
                let r = try w.poll(block: true)
                let save = monotonicSeconds() - t0
                let plain = try plainWrite(bytes: bytes, path: dir + "/plain.bin")!
                let plainDirect = try plainWrite(bytes: bytes, path: dir + "/plain.bin", direct: true)
                out.append(
                    SaveRound(
                        save: save, plain: plain, plainDirect: plainDirect, snapshot: snapshot,
                        write: r?.writeSeconds ?? 0))
            }
            return (bytes, out)
        }[0]
        reportSaveThroughput(bytes: bytes, rows: rows)
    }

    /// The save-throughput figures (best of the rounds) into the record and as lines.
    static func reportSaveThroughput(bytes: Int, rows: [SaveRound]) {
        let save = rows.map(\.save).min()!, plain = rows.map(\.plain).min()!
        let direct = rows.compactMap(\.plainDirect).min()
        let best = rows.min { $0.save < $1.save }!
        var fields: [(String, JSONValue)] = [
            ("bytes", .integer(bytes)), ("saveSeconds", .number(save)), ("plainWriteSeconds", .number(plain)),
            ("ratio", .number(plain / save))
        ]
        if let direct {
            fields += [("plainDirectWriteSeconds", .number(direct)), ("directRatio", .number(direct / save))]
        }
        record.append(("checkpoint", .object(fields)))
        let mb = Double(bytes) / 1e6, gb = Double(bytes) / 1e9
        say(
            String(format: "  save of %.1f MB (parameters + AdamW moments): %.3f s = %.2f GB/s; ", mb, save, gb / save)
                + String(
                    format: "plain write + fsync of the same bytes: %.3f s = %.2f GB/s; ratio %.2fx (best of 3 each)",
                    plain, gb / plain, plain / save))
        say(
            direct.map {
                String(
                    format: "    plain O_DIRECT write + fsync (as the save writes): %.3f s = %.2f GB/s; ratio %.2fx",
                    $0, gb / $0, $0 / save)
            } ?? "    plain O_DIRECT write: refused by this file system (the save writes buffered here too)")
        say(
            String(
                format: "    of which: snapshot %.0f ms (in the step loop; the write follows it), ",
                best.snapshot * 1000)
                + String(
                    format: "write + checksum + fsync %.0f ms (background, from the save's start), commit %.0f ms",
                    best.write * 1000, (best.save - best.write) * 1000))
    }

    /// Training with an async save every 4 steps vs none, same steps, interleaved order.
    static func saveStall(job base: Job, data: TokenData, env: RunEnvironment, dir: String) throws {
        var withSaves = base
        withSaves.runsDir = dir
        withSaves.train.steps = 14
        withSaves.train.evalEvery = 0
        withSaves.checkpoint.every = 4
        withSaves.checkpoint.keep = 1
        var without = withSaves
        without.checkpoint.every = 0
        // Alternate the two configurations twice so that drift on a noisy machine hits both.
        let (none1, _) = try stepTimes(without, name: "no-saves-1", data: data, env: env)
        let (saving1, stalls1) = try stepTimes(withSaves, name: "saves-1", data: data, env: env)
        let (none2, _) = try stepTimes(without, name: "no-saves-2", data: data, env: env)
        let (saving2, stalls2) = try stepTimes(withSaves, name: "saves-2", data: data, env: env)
        let none = none1 + none2, saving = saving1 + saving2
        let stalls = Array(stalls1.dropLast()) + Array(stalls2.dropLast())
        let meanNone = none.reduce(0, +) / Double(none.count), meanSaving = saving.reduce(0, +) / Double(saving.count)
        let stall = stalls.isEmpty ? 0 : stalls.reduce(0, +) / Double(stalls.count)
        say(
            String(
                format:
                    "  async save stall in the step loop: %.1f ms mean over %d mid-run saves = %.1f%% of a %.0f ms "
                    + "step",
                stall, stalls.count, 100 * stall / (meanNone * 1000), meanNone * 1000))
        say(
            "  throughput with a save every 4 steps vs none (steps 2-13, two runs each, alternated): "
                + String(
                    format: "%.3fx (%.0f vs %.0f ms/step)", meanNone / meanSaving, meanSaving * 1000, meanNone * 1000))
    }

    /// Step times after 2 warmup steps of a run of `job` named `name`, and its saves' loop stalls (ms).
    static func stepTimes(_ job: Job, name: String, data: TokenData, env: RunEnvironment) throws -> ([Double], [Double])
    {
        var j = job
        j.name = name
        let jj = j
        return try LocalCommunicator.run(size: 1) { comm -> ([Double], [Double]) in
            let log = try RunLog(job: jj)
            let t = try Trainer(job: jj, comm: comm, data: data, log: log, environment: env, say: { _ in })
            _ = try t.run()
            let text = try String(contentsOfFile: log.path, encoding: .utf8)
            let stalls = text.split(separator: "\n").compactMap { line -> Double? in
                guard let e = try? JSONValue.parse(String(line)), e.eventKind == .checkpoint else { return nil }
                return e[.stallMs]?.doubleValue
            }
            return (Array(t.stepSeconds.dropFirst(2)), stalls)
        }[0]
    }

    /// Seconds to write `bytes` bytes to `path` and fsync (one buffer, large writes). `direct`:
    /// with O_DIRECT, as the save does (the last partial block buffered); nil where refused.
    static func plainWrite(bytes: Int, path: String, direct: Bool = false) throws -> Double? {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: SafeTensors.directAlignment)
        defer { buf.deallocate() }
        memset(buf, 0x5A, bytes)
        defer { unlink(path) }
        let t0 = monotonicSeconds()
        let wentDirect = try SafeTensors.writeBytes(buf, count: bytes, to: path, direct: direct)
        let seconds = monotonicSeconds() - t0
        return direct && !wentDirect ? nil : seconds
    }
}
