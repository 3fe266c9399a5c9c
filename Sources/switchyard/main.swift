// switchyard: the one executable. Picks the BLAS core (may re-exec), parses the command line,
// and dispatches to a subcommand. Exit codes: 0 success, 1 failure, 64 usage error.
import Foundation

Runtime.chooseBLASCore()

func dispatch(_ argv: [String]) -> Int32 {
    guard let first = argv.first else {
        print(Commands.topHelp, terminator: "")
        return 64
    }
    switch first {
    case "-h", "--help":
        print(Commands.topHelp, terminator: "")
        return 0
    case "--version":
        print(Commands.version)
        return 0
    case "help":
        guard argv.count > 1, argv[1] != "-h", argv[1] != "--help" else {
            print(Commands.topHelp, terminator: ""); return 0
        }
        guard let spec = Commands.all.first(where: { $0.name == argv[1] }) else {
            return usage(UsageError(message: "unknown command '\(argv[1])'", command: nil))
        }
        print(spec.help, terminator: "")
        return 0
    default:
        guard let spec = Commands.all.first(where: { $0.name == first }) else {
            return usage(UsageError(message: "unknown command '\(first)'", command: nil))
        }
        let args: ParsedArgs
        do { args = try parse(Array(argv.dropFirst()), spec) } catch let e as UsageError {
            return usage(e)
        } catch {
            return usage(UsageError(message: "\(error)", command: spec.name))
        }
        if args.wantsHelp { print(spec.help, terminator: ""); return 0 }
        switch spec.name {
        case "train": return TrainCommand.run(args)
        case "selftest": return SelftestCommand.run(args)
        case "bench": return BenchCommand.run(args)
        case "ckpt": return CkptCommand.run(args)
        case "eval": return EvalCommand.run(args)
        case "tail": return MonitorCommands.runTail(args)
        case "status": return MonitorCommands.runStatus(args)
        case "plot": return MonitorCommands.runPlot(args)
        case "plan": return PlanCommand.run(args)
        case "calibrate": return CalibrateCommand.run(args)
        default: preconditionFailure("command \(spec.name) has no handler")
        }
    }
}

exit(dispatch(Array(CommandLine.arguments.dropFirst())))
