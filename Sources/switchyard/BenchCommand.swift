// `switchyard bench`: this machine's single-rank sgemm peak and a job's training throughput,
// measured in one run, with MFU = model FLOP/s / that peak and a per-region time breakdown.
import Comm
import Foundation
import JSON
import Model
import Tensor
import Training

enum BenchCommand {
    static let spec = CommandSpec(
        name: "bench",
        summary: "Measure sgemm peak and a job's training throughput and MFU on this machine, in one run.",
        positionals: [("JOB", "job spec to train, e.g. jobs/small.json")],
        options: [
            OptionSpec(.steps, value: "N", "timed training steps after 2 warmup steps (default 10)"),
            OptionSpec(.threads, value: "N", "threads of the rank (default 1; OpenBLAS runs single-threaded)"),
            OptionSpec(.sgemmN, value: "N", "size of the square sgemm for the peak (default 2048)"),
            OptionSpec(.set, value: "KEY=VALUE", repeatable: true, "override a job key"),
            OptionSpec(
                .attention, value: "T,T,...",
                "instead of training, time the attention core alone at these sequence lengths"),
            OptionSpec(.attentionBatch, value: "B", "batch of the attention timing (default 4)"),
            OptionSpec(
                .gemm,
                "instead of training, time the job's matrix products (projections, experts, head; forward and "
                    + "both gradients) on CGemm and on OpenBLAS, alternated"),
            OptionSpec(.json, value: "FILE", "also write the figures to FILE as one JSON object"),
            OptionSpec(
                .checkpoints, value: "DIR",
                "also measure checkpoint saves, writing in DIR (use the disk your runs use)")
        ],
        details: """
            Runs as one plain process (no log, no run directory). Two training passes: one timed,
            one with per-region clocks for the breakdown. MFU = model FLOP/s / sgemm peak, with
            model FLOPs per token = 6 x active non-embedding parameters + 12 x L x (H x D) x T; it is
            also reported against the FMA peak (a loop of independent FMAs of the widest vectors the
            CPU has, 512-bit with AVX-512F, on as many threads): the physical limit.

            """
    ) { try run($0) }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        let steps = try args.positiveInt(.steps) ?? 10
        let threads = try args.positiveInt(.threads) ?? 1
        let n = try args.positiveInt(.sgemmN) ?? 2048
        BLAS.setThreads(threads)
        var job = try Job.load(path: args.positionals[0], overrides: args.all(.set))
        job.train.steps = steps + 2
        job.train.evalEvery = 0
        job.checkpoint.every = 0
        job.train.logEvery = Int.max / 2
        let data = try TokenData.load(
            path: job.data.path, format: job.data.format, vocabSize: job.model.vocabSize, valPath: job.data.valPath)
        let chosenBy = Runtime.blasCoreChosenBy
        say(
            "machine: \(Runtime.cpuModel), \(ProcessInfo.processInfo.activeProcessorCount) cores, "
                + "host \(Runtime.hostName)")
        say(
            "OpenBLAS core: \(BLAS.coreName) (chosen by \(chosenBy)), \(threads) thread(s), 1 rank; "
                + "kernels: \(Runtime.kernelTarget); matrix products: \(Runtime.gemmDescription)")
        say("command: switchyard " + CommandLine.arguments.dropFirst().joined(separator: " "))
        let (peak, fma) = measurePeaks(n: n, threads: threads, chosenBy: chosenBy)
        defer { writeRecord(args.value(.json)) }
        Runtime.useThreads(threads)
        if let list = args.value(.attention) {
            try attentionRows(args, list: list, job: job)
            return 0
        }
        if args.flag(.gemm) {
            gemmRows(job: job, fmaPeak: fma, repeats: 5)
            return 0
        }
        job.train.peakGflops = peak / 1e9
        let env = RunEnvironment(
            blasCore: BLAS.coreName, blasThreads: threads, host: Runtime.hostName, cpu: Runtime.cpuModel)
        let passes = try trainTwice(job: job, data: data, env: env)
        report(job: job, name: args.positionals[0], passes: passes, peak: peak, fmaPeak: fma)
        record.append(("trainingPeakRssMB", .number(ResidentMemory.peakMB)))
        if let dir = args.value(.checkpoints) {
            try checkpointBench(job: job, data: data, env: env, dir: dir + "/switchyard-bench-\(getpid())")
        }
        return 0
    }

    /// The sgemm peak (n x n) and the FMA peak on `threads` threads, printed and recorded.
    static func measurePeaks(n: Int, threads: Int, chosenBy: String) -> (sgemm: Double, fma: Double) {
        let peak = SgemmPeak.measure(n: n, seconds: 2.0)
        let fma = FMAPeak.measure(threads: threads, seconds: 1.0)
        record = [
            ("cpu", .string(Runtime.cpuModel)), ("cores", .integer(ProcessInfo.processInfo.activeProcessorCount)),
            ("blasCore", .string(BLAS.coreName)), ("blasCoreChosenBy", .string(chosenBy)),
            ("kernels", .string(Runtime.kernelTarget)), ("threads", .integer(threads)),
            ("sgemmPeakGflops", .number(peak / 1e9)), ("fmaPeakGflops", .number(fma / 1e9)),
            ("fmaBits", .integer(FMAPeak.bits)), ("gemm", .string(Gemm.engine.rawValue)),
            ("gemmBits", .integer(Gemm.engine == .own ? Gemm.kernelBits : 0))
        ]
        say(String(format: "sgemm peak (n = %d, %d thread(s), best of ~2 s): %.1f GFLOP/s", n, threads, peak / 1e9))
        say(
            String(
                format:
                    "FMA peak (independent %d-bit FMAs, %d thread(s), best of ~1 s): %.1f GFLOP/s; sgemm reaches %.2f "
                    + "of it", FMAPeak.bits, threads, fma / 1e9, peak / fma))
        return (peak, fma)
    }

    /// --attention: the attention core alone at each sequence length of `list`, reported and recorded.
    static func attentionRows(_ args: ParsedArgs, list: String, job: Job) throws {
        let lengths = list.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
        guard !lengths.isEmpty, lengths.count == list.split(separator: ",").count else {
            throw UsageError(
                message: "--attention takes positive sequence lengths separated by commas, got '\(list)'",
                command: "bench")
        }
        let b = try args.positiveInt(.attentionBatch) ?? 4
        let rows = attentionBench(job: job, lengths: lengths, batch: b, repeats: 3)
        reportAttention(rows, job: job, batch: b)
        record.append(
            (
                "attention",
                .array(
                    rows.map {
                        .object([
                            ("t", .integer($0.t)), ("batch", .integer(b)), ("forwardMs", .number($0.forwardMs)),
                            ("backwardMs", .number($0.backwardMs)), ("gflops", .number($0.gflops))
                        ])
                    })
            ))
    }

    /// What `--json` writes: the figures of this run, filled in as they are measured.
    nonisolated(unsafe) static var record: [(String, JSONValue)] = []

    static func writeRecord(_ path: String?) {
        guard let path else { return }
        record.append(("peakRssMB", .number(ResidentMemory.peakMB)))
        do {
            try JSONValue.object(record).pretty.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            FileHandle.standardError.write(Data("switchyard bench: cannot write --json \(path): \(error)\n".utf8))
        }
    }

    /// Step times of a timed pass and a profiled one (its warmup steps dropped), and the profile.
    struct Passes { let timed: [Double], profiled: [Double], regions: [Double] }

    static func trainTwice(job: Job, data: TokenData, env: RunEnvironment) throws -> Passes {
        try LocalCommunicator.run(size: 1) { comm -> Passes in
            // One model at a time, so that the peak resident memory is one training run's.
            let timedSteps = try {
                let timed = try Trainer(job: job, comm: comm, data: data, log: nil, environment: env, say: { _ in })
                _ = try timed.run()
                return Array(timed.stepSeconds.dropFirst(2))
            }()
            let profiled = try Trainer(job: job, comm: comm, data: data, log: nil, environment: env, say: { _ in })
            let profile = KernelProfile()
            profiled.model.profile = profile
            profiled.optimizer.profile = profile
            // Warmup steps (first-touch page faults of the activation buffers) are not profiled.
            profiled.onStepEnd = { if $0 == 1 { profile.reset() } }
            _ = try profiled.run()
            return Passes(
                timed: timedSteps, profiled: Array(profiled.stepSeconds.dropFirst(2)),
                regions: profile.seconds)
        }[0]
    }

    /// Prints throughput and MFU of the timed pass, and the profiled pass's time per region.
    static func report(job: Job, name: String, passes: Passes, peak: Double, fmaPeak: Double) {
        let fpt = job.model.flopsPerToken(seqLen: job.model.seqLen)
        let steps = passes.timed
        let tokens = Double(job.train.batchSize * job.model.seqLen)
        let meanStep = steps.reduce(0, +) / Double(steps.count)
        let tps = tokens / meanStep, mflops = tps * fpt
        say(
            "training \(name): "
                + String(
                    format: "%d tokens/step, %.2f MFLOP/token, %d timed steps (after 2 warmup)",
                    Int(tokens), fpt / 1e6, steps.count))
        say(
            String(
                format: "  step %.1f ms (min %.1f, max %.1f) | %.0f tokens/s | model %.1f GFLOP/s | MFU %.3f of sgemm, "
                    + "%.3f of FMA peak", meanStep * 1000, steps.min()! * 1000, steps.max()! * 1000, tps, mflops / 1e9,
                mflops / peak, mflops / fmaPeak))
        let total = passes.profiled.reduce(0, +), count = Double(passes.profiled.count)
        say(
            String(
                format: "where the time goes (profiled pass, %d steps after 2 warmup, %.1f ms/step):",
                passes.profiled.count, total * 1000 / count))
        func line(_ label: String, _ s: Double) {
            say("  " + pad(label, 44) + String(format: "%8.1f ms/step %6.1f%%", s * 1000 / count, 100 * s / total))
        }
        var split: [(String, JSONValue)] = []
        for r in ProfileRegion.allCases where r != .other && passes.regions[r.rawValue] != 0 {
            line(r.label, passes.regions[r.rawValue])
            split.append((r.label, .number(passes.regions[r.rawValue] * 1000 / count)))
        }
        line(ProfileRegion.other.label, total - passes.regions.reduce(0, +))
        split.append((ProfileRegion.other.label, .number((total - passes.regions.reduce(0, +)) * 1000 / count)))
        record += [
            ("job", .string(name)), ("tokensPerSec", .number(tps)), ("stepMs", .number(meanStep * 1000)),
            ("minStepMs", .number(steps.min()! * 1000)), ("modelGflops", .number(mflops / 1e9)),
            ("mfu", .number(mflops / peak)), ("mfuFma", .number(mflops / fmaPeak)),
            ("profiledMsPerStep", .object(split))
        ]
    }
}
