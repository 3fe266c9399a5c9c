import Checkpoint
// `switchyard train JOB [--set k=v]...`: validate everything on every rank before any
// training, agree on failure, then run the step loop.
import Comm
import CommMPI
import Foundation
import Model
import Placement
import Tensor
import Training

enum TrainCommand {
    static func run(_ args: ParsedArgs) throws -> Int32 {
        let threads = Runtime.threadsPerRank(option: try args.positiveInt(.threads))
        Runtime.useThreads(threads)
        if args.flag(.printJob) && !args.flag(.check) { throw args.usageError("--print-job goes with --check") }
        return Runtime.withWorld { world in
            // Start-up's collectives run under the default deadline; the job's own from here on.
            try Runtime.armDeadlines(world, heartbeat: false)
            if args.flag(.check) { return try check(args, world: world) }
            guard let prepared = try prepare(args, world: world) else { return 1 }
            try Runtime.armDeadlines(world, prepared.job.timeouts, heartbeat: true)
            let choice: ResumeChoice =
                args.flag(.noResume) ? .none : (args.value(.resumeFrom).map { .from($0) } ?? .latest)
            if choice == .none && world.rank == 0 { moveCheckpointsAside(prepared.job) }
            var env = RunEnvironment(
                blasCore: BLAS.coreName, blasThreads: threads, host: Runtime.hostName, cpu: Runtime.cpuModel)
            env.blasCoreOverride = Runtime.blasCoreOverride
            let trainer = try Trainer(
                job: prepared.job, comm: world, data: prepared.data, log: prepared.log, environment: env,
                say: world.rank == 0 ? { say($0) } : { _ in })
            if let code = try resume(trainer, choice, world: world) { return code }
            installStopSignals()
            try train(trainer, world: world)
            return 0
        }
    }

    /// Loads and validates the job and its data on every rank without communicating; a failure
    /// anywhere stops every rank before the first collective, with one message (from the lowest
    /// failing rank). nil: stop (exit 1).
    static func prepare(_ args: ParsedArgs, world: MPICommunicator) throws -> (job: Job, data: TokenData, log: RunLog?)?
    {
        var prepared: (job: Job, data: TokenData, log: RunLog?)? = nil
        var failure: String? = nil
        do {
            let (job, data, _, _) = try validated(args, world: world)
            prepared = (job, data, world.rank == 0 ? try RunLog(job: job) : nil)
        } catch {
            failure = "\(error)"
        }
        return try Runtime.everyRankSucceeded(failure, world: world) ? prepared : nil
    }

    /// The job and data, checked against the world size and the node's memory; nothing written.
    static func validated(_ args: ParsedArgs, world: MPICommunicator) throws -> (
        Job, TokenData, (dp: Int, tp: Int, plan: PlacementPlan), MemoryEstimate
    ) {
        let job = try Job.load(path: args.positionals[0], overrides: args.all(.set))
        let data = try TokenData.load(
            path: job.data.path, format: job.data.format, vocabSize: job.model.vocabSize, valPath: job.data.valPath)
        if !job.data.tokenizer.isEmpty { _ = try TextCodec(job: job) }
        let layout = try Trainer.validate(job: job, data: data, world: world.size)
        let estimate = Trainer.memoryEstimate(
            job: job, world: world.size, tp: layout.tp, plan: layout.plan, threads: Parallel.threads)
        try Trainer.checkMemory(estimate, ranksOnNode: Runtime.ranksOnNode, available: NodeMemory.available())
        return (job, data, layout, estimate)
    }

    /// train --check: every check of start-up on every rank, agreed on; exit 0 and one line when
    /// all pass, else the error and exit 1.
    static func check(_ args: ParsedArgs, world: MPICommunicator) throws -> Int32 {
        var line: String? = nil, failure: String? = nil
        do {
            let (job, _, layout, estimate) = try validated(args, world: world)
            line =
                args.flag(.printJob)
                ? job.resolvedJSON.pretty : checkLine(job, layout: layout, estimate: estimate, world: world.size)
        } catch {
            failure = "\(error)"
        }
        let ok = try Runtime.everyRankSucceeded(failure, world: world)
        if ok, world.rank == 0, let line { say(line) }
        return ok ? 0 : 1
    }

    /// What `train --check` prints for a job that passed every check.
    static func checkLine(
        _ job: Job, layout: (dp: Int, tp: Int, plan: PlacementPlan), estimate e: MemoryEstimate, world: Int
    ) -> String {
        String(
            format: "switchyard: %@ is valid at world %d (dp %d x tp %d): %d parameters, about %.2f GB per rank "
                + "(state %.2f, activations %.2f, checkpoint snapshot %.2f); run directory %@",
            job.name as NSString, world, layout.dp, layout.tp, job.model.totalParams, e.totalBytes / 1e9,
            e.stateBytes / 1e9, e.activationBytes / 1e9, e.checkpointBytes / 1e9, job.runDirectory as NSString)
    }

    /// Starting over never deletes work: earlier checkpoints are moved aside.
    static func moveCheckpointsAside(_ job: Job) {
        let root = job.runDirectory + "/checkpoints"
        guard let items = try? FileManager.default.contentsOfDirectory(atPath: root), !items.isEmpty else { return }
        let aside = root + ".replaced-\(Int(Date().timeIntervalSince1970))"
        if (try? FileManager.default.moveItem(atPath: root, toPath: aside)) != nil {
            say("switchyard: --no-resume: earlier checkpoints moved to \(aside)")
        }
    }

    /// Resumes as `choice` says. Every rank reads the same checkpoint, so a problem with it (a job
    /// that changes the architecture, a --resume-from that does not verify) is the same on every
    /// rank. Returns the exit code when the run must not train (already complete, a bad checkpoint);
    /// any other error is this rank's and is thrown.
    static func resume(_ trainer: Trainer, _ choice: ResumeChoice, world: MPICommunicator) throws -> Int32? {
        let job = trainer.job
        do {
            guard let info = try trainer.resume(choice) else { return nil }
            trainer.resumeInfo = info
            let complete = info.step >= job.train.steps
            if world.rank == 0 {
                for s in info.skipped {
                    say(
                        "warning: checkpoint \(s.path) failed verification (\(s.problem)); "
                            + "falling back to the previous one")
                }
                say("switchyard: resumed from \(info.path) (step \(info.step))")
                if complete {
                    say(
                        "switchyard: \(job.name) is already complete "
                            + "(\(info.step) of train.steps = \(job.train.steps)); "
                            + "raise train.steps to go on, or --no-resume to start over")
                }
            }
            return complete ? 0 : nil
        } catch let e as JobError {
            if world.rank == 0 { Runtime.printError("\(e)") }
            return 1
        } catch let e as CheckpointError {
            if world.rank == 0 { Runtime.printError("\(e)") }
            return 1
        }
    }

    /// Runs the step loop; SIGINT/SIGTERM stop it after a step and a save.
    static func train(_ trainer: Trainer, world: MPICommunicator) throws {
        let summary = try trainer.run(stopRequested: { stopSignalCount > 0 })
        if world.rank == 0 {
            let last = summary.losses.last { !$0.isNaN } ?? .nan
            say(
                String(
                    format: "switchyard: done: steps %d-%d, final loss %.4f, %.0f tokens/s", summary.firstStep,
                    summary.firstStep + summary.losses.count - 1, last, summary.tokensPerSec)
                    + (summary.stoppedEarly ? " (stopped by signal)" : "")
                    + ". Log: \(trainer.job.runDirectory)/log.jsonl")
        }
    }
}

enum SelftestCommand {
    static func run(_ args: ParsedArgs) -> Int32 {
        Runtime.withWorld { world in
            let failures = try CollectiveChecks.run(world)
            let all = try world.allgather([Int64(failures.count)])
            for f in failures { Runtime.printError(f, rank: world.rank, world: world.size) }
            if world.rank == 0 {
                let bad = all.reduce(0, +)
                print(
                    bad == 0
                        ? "selftest: collectives ok on \(world.size) rank(s) (allreduce, broadcast, allgather, "
                            + "alltoallv, split, point-to-point)"
                        : "selftest: \(bad) check(s) failed on \(world.size) rank(s)")
            }
            return all.reduce(0, +) == 0 ? 0 : 1
        }
    }
}

/// Writes a line to stdout unbuffered, so progress shows at once under mpirun and in pipes.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

/// Prints a usage error with the command's usage and returns 64.
func usage(_ e: UsageError) -> Int32 {
    let spec = Commands.all.first { $0.name == e.command }
    var text = "switchyard: error: \(e.message)\n"
    if let spec {
        text += "USAGE: \(spec.usageLine)\nRun 'switchyard \(spec.name) --help' for the options.\n"
    } else {
        text += "USAGE: switchyard <command> [options]\nRun 'switchyard --help' for the commands.\n"
    }
    if Runtime.launchRank == 0 { FileHandle.standardError.write(Data(text.utf8)) }
    return 64
}
