// The subcommands and the top-level help.
import JSON
import Training

enum Commands {
    static let train = CommandSpec(
        name: "train",
        summary: "Train a job as a plain process or under mpirun -np N; resumes from the run's newest checkpoint.",
        positionals: [("JOB", "job spec (JSON), e.g. jobs/tiny.json")],
        options: [
            OptionSpec(.set, value: "KEY=VALUE", repeatable: true, "override a job key, e.g. --set train.steps=50"),
            OptionSpec(
                .threads, value: "N",
                "threads per rank, OpenBLAS single-threaded inside each; the losses do not depend on N "
                    + "(default: $OPENBLAS_NUM_THREADS, else cores / ranks on this node)"),
            OptionSpec(
                .noResume, "start at step 0 even if the run has checkpoints (they are moved aside, not deleted)"),
            OptionSpec(.resumeFrom, value: "DIR", "resume from this checkpoint directory (any layout)"),
            OptionSpec(
                .check,
                "validate the job, its data, the layout at this world size and the memory estimate; print the "
                    + "estimate and exit (nothing written)"),
            OptionSpec(
                .printJob,
                "with --check: print the resolved job (every key, defaults filled in) as JSON instead of the "
                    + "estimate, for tools that must run what train would")
        ],
        details: jobKeysHelp + """

            Under mpirun -np N the world is layout.dp x layout.tp ranks: the global batch is split
            over dp groups, attention heads over the tp ranks of a group, experts over all ranks
            (placement). The run directory <runsDir>/<name> gets job.json (the resolved spec) and
            log.jsonl (one JSON event per line: start, step, eval, checkpoint, placement, warning,
            error, end). SIGINT/SIGTERM/SIGUSR1 finish the current step, save a checkpoint and stop
            (exit 0). Under mpirun send SIGUSR1 to mpirun (it forwards it to every rank): on SIGTERM
            or SIGINT mpirun gives the ranks about a second before it kills them.
            `train` resumes from the run's newest checkpoint that verifies
            (runs/<name>/checkpoints/LATEST), at any world size or layout; the architecture comes
            from the checkpoint.

            Exit codes: 0 success, 1 failure (bad job, data or a training error), 64 usage error.

            """
    ) { try TrainCommand.run($0) }

    static let selftest = CommandSpec(
        name: "selftest",
        summary:
            "Check this launch's MPI collectives (allreduce, broadcast, allgather, alltoallv, split, "
            + "point-to-point)\nagainst closed-form results; run it under mpirun -np N on the nodes you will "
            + "train on.",
        positionals: [],
        options: [],
        details: "Exit codes: 0 all checks passed, 1 a check failed, 64 usage error.\n"
    ) { SelftestCommand.run($0) }

    static let all = [
        train, selftest, CkptCommand.spec, EvalCommand.spec, SampleCommand.spec, MonitorCommands.tail,
        MonitorCommands.status,
        MonitorCommands.plot, TensorBoardCommand.spec, PlanCommand.spec, CalibrateCommand.spec, BenchCommand.spec,
        SuperviseCommand.spec, TokenizerCommand.spec, DataCommand.spec
    ]

    static var jobKeysHelp: String {
        let defaults = Job().resolvedJSON
        var s = "JOB KEYS (set in the job file, or with --set; defaults shown):\n"
        for f in Job.fields {
            var v: JSONValue? = defaults
            for part in f.key.split(separator: ".") { v = v?[String(part)] }
            s += "  " + pad("\(f.key) = \(v?.compact ?? "?")", 34) + f.doc + "\n"
        }
        return s
    }

    static let topHelp: String = {
        var s = """
            switchyard: trains mixture-of-experts transformer language models on CPU nodes under mpirun.

            USAGE: switchyard <command> [options]

            COMMANDS:

            """
        for c in all { s += "  " + pad(c.name, 12) + c.summary.split(separator: "\n")[0] + "\n" }
        s += "  " + pad("help", 12) + "Show help for a command: switchyard help <command>\n"
        s += """

            OPTIONS:
              -h, --help  Show this help
              --version   Print the version

            Run 'switchyard <command> --help' for a command's options.
            Exit codes: 0 success, 1 failure, 64 usage error.

            """
        return s
    }()

    static var version: String { "switchyard 0.1.0 (kernels compiled for \(Runtime.kernelTarget))" }
}
