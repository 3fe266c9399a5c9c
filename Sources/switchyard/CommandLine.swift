// Command-line parsing shared by the subcommands: one spec per command holds its arguments, its
// options (required ones included), its help and its `run`; the spec drives both the parser and
// --help, so the help cannot list an option the parser does not take. Options are named by the
// `Option` enum (a misspelt name does not compile), and reading one a command does not declare
// stops at once (a programming error any test of that command finds). Typed getters throw
// UsageError, which main.swift turns into exit 64 in one place.

/// A usage problem: exit 64 with the command's usage.
struct UsageError: Error {
    let message: String
    let command: String?
}

/// Every option any command takes, by its long name.
enum Option: String, Sendable, CaseIterable {
    case attention = "--attention"
    case attentionBatch = "--attention-batch"
    case backoff = "--backoff"
    case check = "--check"
    case checkpoints = "--checkpoints"
    case cluster = "--cluster"
    case data = "--data"
    case eot = "--eot"
    case every = "--every"
    case follow = "--follow"
    case format = "--format"
    case gemm = "--gemm"
    case json = "--json"
    case load = "--load"
    case log = "--log"
    case maxRestarts = "--max-restarts"
    case metric = "--metric"
    case minRanks = "--min-ranks"
    case noResume = "--no-resume"
    case out = "--out"
    case printJob = "--print-job"
    case probeTimeout = "--probe-timeout"
    case prompt = "--prompt"
    case prompts = "--prompts"
    case resumeFrom = "--resume-from"
    case seed = "--seed"
    case seq = "--seq"
    case `set` = "--set"
    case sgemmN = "--sgemm-n"
    case shardTokens = "--shard-tokens"
    case skew = "--skew"
    case smooth = "--smooth"
    case special = "--special"
    case staleAfter = "--stale-after"
    case steps = "--steps"
    case temperature = "--temperature"
    case tensor = "--tensor"
    case textKey = "--text-key"
    case threads = "--threads"
    case tokenizer = "--tokenizer"
    case tokens = "--tokens"
    case topK = "--top-k"
    case topKExperts = "--top-k-experts"
    case topP = "--top-p"
    case vocab = "--vocab"
    case windows = "--windows"
    case world = "--world"
}

/// One option of a command.
struct OptionSpec {
    let option: Option
    let alias: String?  // a short name, e.g. "-f"
    let valueName: String?  // nil for a flag
    let help: String
    let repeatable: Bool
    let required: Bool  // the parser refuses a command line without it
    init(
        _ option: Option, alias: String? = nil, value: String? = nil, repeatable: Bool = false, required: Bool = false,
        _ help: String
    ) {
        self.option = option
        self.alias = alias
        self.valueName = value
        self.help = help
        self.repeatable = repeatable
        self.required = required
    }
    var names: [String] { [option.rawValue] + (alias.map { [$0] } ?? []) }
    var canonicalName: String { option.rawValue }
}

/// A subcommand: positional arguments, options, help text, and what it runs. `run` returns the
/// exit code; a UsageError it throws exits 64 with the usage, any other error exits 1.
struct CommandSpec: Sendable {
    let name: String
    let summary: String
    let positionals: [(name: String, help: String)]
    let options: [OptionSpec]
    let details: String
    var takesCommand = false  // `-- CMD...` ends the options; the words go to ParsedArgs.rest
    var variadic = false  // the last positional takes one or more words
    let run: @Sendable (ParsedArgs) throws -> Int32

    var usageLine: String {
        let opts = options.isEmpty ? "" : " [options]"
        return "switchyard \(name)\(opts)" + positionals.map { " \($0.name)" }.joined() + (variadic ? "..." : "")
            + (takesCommand ? " -- COMMAND..." : "")
    }

    var help: String {
        var s = "\(summary)\n\nUSAGE: \(usageLine)\n"
        if !positionals.isEmpty {
            s += "\nARGUMENTS:\n"
            for p in positionals { s += "  " + pad(p.name, 24) + p.help + "\n" }
        }
        s += "\nOPTIONS:\n"
        let lines = options.map { ($0.names.joined(separator: ", "), $0) } + [("-h, --help", nil)]
        for (names, o) in lines {
            guard let o else {
                s += "  " + pad(names, 24) + "Show this help\n"
                continue
            }
            let left = names + (o.valueName.map { " " + $0 } ?? "")
            s +=
                "  " + pad(left, 24) + o.help + (o.required ? " (required)" : "")
                + (o.repeatable ? " (repeatable)" : "") + "\n"
        }
        if !details.isEmpty { s += "\n" + details }
        return s
    }
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + "  " : s + String(repeating: " ", count: width - s.count)
}

/// Parsed arguments of one command.
struct ParsedArgs: Sendable {
    let command: String
    /// The options the command declares: reading any other is a programming error.
    let declared: Set<Option>
    var positionals: [String] = []
    var values: [Option: [String]] = [:]
    var flags: Set<Option> = []
    var wantsHelp = false
    var rest: [String] = []  // the words after `--` (a command to run), for specs that take one

    init(command: String, declared: Set<Option>) {
        self.command = command
        self.declared = declared
    }

    func value(_ o: Option) -> String? { checked(o).values[o]?.last }
    func all(_ o: Option) -> [String] { checked(o).values[o] ?? [] }
    func flag(_ o: Option) -> Bool { checked(o).flags.contains(o) }

    /// Self, after checking that the command declares `o`.
    private func checked(_ o: Option) -> ParsedArgs {
        precondition(declared.contains(o), "\(command) reads \(o.rawValue), which its spec does not declare")
        return self
    }
}

/// Parses `args` (after the command name) against `spec`.
func parse(_ args: [String], _ spec: CommandSpec) throws -> ParsedArgs {
    var out = ParsedArgs(command: spec.name, declared: Set(spec.options.map(\.option)))
    var i = 0
    while i < args.count {
        let a = args[i]
        if a == "--" && spec.takesCommand {
            out.rest = Array(args[(i + 1)...])
            break
        }
        if a == "-h" || a == "--help" {
            out.wantsHelp = true
        } else if a.hasPrefix("-") && a.count > 1 {
            try parseOption(args, at: &i, spec, into: &out)
        } else {
            out.positionals.append(a)
        }
        i += 1
    }
    if !out.wantsHelp { try checkComplete(out, spec) }
    return out
}

/// The option at args[i] (`--name value`, `--name=value` or a flag) into `out`; i moves past its value.
private func parseOption(_ args: [String], at i: inout Int, _ spec: CommandSpec, into out: inout ParsedArgs) throws {
    let a = args[i]
    var name = a, inline: String? = nil
    if let eq = a.firstIndex(of: "="), a.hasPrefix("--") {
        name = String(a[..<eq]); inline = String(a[a.index(after: eq)...])
    }
    guard let o = spec.options.first(where: { $0.names.contains(name) }) else {
        throw UsageError(message: "unknown option '\(name)'", command: spec.name)
    }
    guard o.valueName != nil else {
        if inline != nil { throw UsageError(message: "option \(name) takes no value", command: spec.name) }
        out.flags.insert(o.option)
        return
    }
    let v: String
    if let inline {
        v = inline
    } else {
        guard i + 1 < args.count else {
            throw UsageError(message: "option \(name) needs a value \(o.valueName!)", command: spec.name)
        }
        v = args[i + 1]; i += 1
    }
    if !o.repeatable && out.values[o.option] != nil {
        throw UsageError(message: "option \(name) given twice", command: spec.name)
    }
    out.values[o.option, default: []].append(v)
}

/// The positional arguments the spec wants, and its required options.
private func checkComplete(_ out: ParsedArgs, _ spec: CommandSpec) throws {
    if out.positionals.count < spec.positionals.count {
        let missing = spec.positionals[out.positionals.count].name
        throw UsageError(message: "missing argument \(missing)", command: spec.name)
    }
    if out.positionals.count > spec.positionals.count && !spec.variadic {
        throw UsageError(
            message: "unexpected argument '\(out.positionals[spec.positionals.count])'", command: spec.name)
    }
    if let o = spec.options.first(where: { $0.required && out.values[$0.option] == nil }) {
        throw UsageError(message: "\(spec.name) needs \(o.canonicalName) \(o.valueName ?? "")", command: spec.name)
    }
}

extension ParsedArgs {
    /// The value of a required option (the parser has checked that it is there).
    func required(_ o: Option) -> String {
        guard let v = value(o) else { preconditionFailure("\(o.rawValue) is not a required option of \(command)") }
        return v
    }

    /// The value of option `name` as a whole number >= 1, nil when absent; a usage error otherwise.
    func positiveInt(_ o: Option) throws -> Int? {
        guard let s = value(o) else { return nil }
        let name = o.rawValue
        guard let v = Int(s), v >= 1 else {
            throw UsageError(message: "\(name) needs a whole number >= 1, got '\(s)'", command: command)
        }
        return v
    }

    /// The value of option `name` as a finite number > 0, nil when absent; a usage error otherwise.
    func positiveDouble(_ o: Option, what: String = "a number") throws -> Double? {
        guard let s = value(o) else { return nil }
        let name = o.rawValue
        guard let v = Double(s), v.isFinite, v > 0 else {
            throw UsageError(message: "\(name) needs \(what) > 0, got '\(s)'", command: command)
        }
        return v
    }

    /// A usage error of this command.
    func usageError(_ message: String) -> UsageError { UsageError(message: message, command: command) }
}
