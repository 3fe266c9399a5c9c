// switchyard: the one executable. Checks that the CPU runs its kernels, picks the BLAS core (may
// re-exec), parses the command line, and runs the subcommand its spec names. Exit codes: 0 success,
// 1 failure, 64 usage error.
import Foundation

Runtime.checkKernelCPU()
Runtime.chooseBLASCore()

func dispatch(_ argv: [String]) -> Int32 {
    switch argv.first {
    case nil:
        print(Commands.topHelp, terminator: "")
        return 64
    case "-h", "--help":
        print(Commands.topHelp, terminator: "")
        return 0
    case "--version":
        print(Commands.version)
        return 0
    case "help" where argv.count == 1 || argv[1] == "-h" || argv[1] == "--help":
        print(Commands.topHelp, terminator: "")
        return 0
    default:
        let isHelp = argv[0] == "help"
        let name = isHelp ? argv[1] : argv[0]
        guard let spec = Commands.all.first(where: { $0.name == name }) else {
            return usage(UsageError(message: "unknown command '\(name)'", command: nil))
        }
        do {
            let args = try parse(isHelp ? ["--help"] : Array(argv.dropFirst()), spec)
            if args.wantsHelp {
                print(spec.help, terminator: "")
                return 0
            }
            return try spec.run(args)
        } catch let e as UsageError {
            return usage(e)
        } catch {
            Runtime.printError("\(error)")
            return 1
        }
    }
}

exit(dispatch(Array(CommandLine.arguments.dropFirst())))
