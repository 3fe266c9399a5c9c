import Checkpoint
// `switchyard train JOB [--set k=v]...`: validate everything on every rank before any
// training, agree on failure, then run the step loop.
import Comm
import CommMPI
import Foundation
import Tensor
import Training

enum TrainCommand {
    static func run(_ args: ParsedArgs) -> Int32 {
        let threadsOption: Int?
        do { threadsOption = try args.positiveInt("--threads", command: "train") } catch let e as UsageError {
            return usage(e)
        } catch { return 1 }
        let threads = Runtime.blasThreads(option: threadsOption)
        BLAS.setThreads(threads)

        let world: MPICommunicator
        do { world = try MPICommunicator.initWorld() } catch {
            Runtime.printError("\(error)")
            return 1
        }
        // Validate on every rank without communicating; a failure anywhere stops every rank
        // before the first collective, with one message (from the lowest failing rank).
        var prepared: (job: Job, data: TokenData, log: RunLog?)? = nil
        var failure: String? = nil
        do {
            let job = try Job.load(path: args.positionals[0], overrides: args.all("--set"))
            let data = try TokenData.load(path: job.data.path, format: job.data.format, vocabSize: job.model.vocabSize)
            _ = try Trainer.validate(job: job, data: data, world: world.size)
            prepared = (job, data, world.rank == 0 ? try RunLog(job: job) : nil)
        } catch {
            failure = "\(error)"
        }
        let failedRanks: [Int64]
        do { failedRanks = try world.allgather([failure == nil ? 0 : 1]) } catch {
            Runtime.printError("\(error)", rank: world.rank, world: world.size)
            MPICommunicator.abortWorld(code: 1)
        }
        if let firstBad = failedRanks.firstIndex(of: 1) {
            if world.rank == firstBad, let failure {
                Runtime.printError(failure, rank: world.rank, world: world.size)
            }
            MPICommunicator.finalize()
            return 1
        }
        let job = prepared!.job
        let choice: ResumeChoice =
            args.flags.contains("--no-resume") ? .none : (args.value("--resume-from").map { .from($0) } ?? .latest)
        if choice == .none && world.rank == 0 {
            // Starting over never deletes work: earlier checkpoints are moved aside.
            let root = job.runDirectory + "/checkpoints"
            if let items = try? FileManager.default.contentsOfDirectory(atPath: root), !items.isEmpty {
                let aside = root + ".replaced-\(Int(Date().timeIntervalSince1970))"
                if (try? FileManager.default.moveItem(atPath: root, toPath: aside)) != nil {
                    say("switchyard: --no-resume: earlier checkpoints moved to \(aside)")
                }
            }
        }
        var env = RunEnvironment(
            blasCore: BLAS.coreName, blasThreads: threads, host: Runtime.hostName, cpu: Runtime.cpuModel)
        env.blasCoreOverride = Runtime.blasCoreOverride
        let trainer: Trainer
        do {
            trainer = try Trainer(
                job: prepared!.job, comm: world, data: prepared!.data, log: prepared!.log, environment: env,
                say: world.rank == 0 ? { say($0) } : { _ in })
        } catch {
            Runtime.printError("\(error)", rank: world.rank, world: world.size)
            MPICommunicator.abortWorld(code: 1)
        }
        // Resume: every rank reads the same checkpoint, so a problem with it (a job that changes
        // the architecture, a --resume-from that does not verify) is the same on every rank.
        do {
            if let info = try trainer.resume(choice) {
                trainer.resumeInfo = info
                for s in info.skipped where world.rank == 0 {
                    say(
                        "warning: checkpoint \(s.path) failed verification (\(s.problem)); falling back to the previous one"
                    )
                }
                if world.rank == 0 { say("switchyard: resumed from \(info.path) (step \(info.step))") }
                if info.step >= job.train.steps {
                    if world.rank == 0 {
                        say(
                            "switchyard: \(job.name) is already complete (\(info.step) of train.steps = \(job.train.steps)); raise train.steps to go on, or --no-resume to start over"
                        )
                    }
                    MPICommunicator.finalize()
                    return 0
                }
            }
        } catch let e as JobError {
            if world.rank == 0 { Runtime.printError("\(e)") }
            MPICommunicator.finalize()
            return 1
        } catch let e as CheckpointError {
            if world.rank == 0 { Runtime.printError("\(e)") }
            MPICommunicator.finalize()
            return 1
        } catch {
            Runtime.printError("\(error)", rank: world.rank, world: world.size)
            MPICommunicator.abortWorld(code: 1)
        }
        installStopSignals()
        do {
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
        } catch {
            Runtime.printError("\(error)", rank: world.rank, world: world.size)
            if world.size > 1 { MPICommunicator.abortWorld(code: 1) }
            MPICommunicator.finalize()
            return 1
        }
        MPICommunicator.finalize()
        return 0
    }
}

enum SelftestCommand {
    static func run(_ args: ParsedArgs) -> Int32 {
        let world: MPICommunicator
        do { world = try MPICommunicator.initWorld() } catch {
            Runtime.printError("\(error)")
            return 1
        }
        do {
            let failures = try CollectiveChecks.run(world)
            let all = try world.allgather([Int64(failures.count)])
            for f in failures { Runtime.printError(f, rank: world.rank, world: world.size) }
            if world.rank == 0 {
                let bad = all.reduce(0, +)
                print(
                    bad == 0
                        ? "selftest: collectives ok on \(world.size) rank(s) (allreduce, broadcast, allgather, alltoallv, split, point-to-point)"
                        : "selftest: \(bad) check(s) failed on \(world.size) rank(s)")
            }
            MPICommunicator.finalize()
            return all.reduce(0, +) == 0 ? 0 : 1
        } catch {
            Runtime.printError("\(error)", rank: world.rank, world: world.size)
            MPICommunicator.abortWorld(code: 1)
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
