// Command-line parsing shared by the subcommands: one spec per command holds its arguments, its
// options (required ones included), its help and its `run`; the spec drives both the parser and
// --help, so the help cannot list an option the parser does not take. Typed getters throw
// UsageError, which main.swift turns into exit 64 in one place.

/// A usage problem: exit 64 with the command's usage.
struct UsageError: Error {
    let message: String
    let command: String?
}

/// One option of a command.
struct OptionSpec {
    let names: [String]  // e.g. ["--set", "-s"]
    let valueName: String?  // nil for a flag
    let help: String
    let repeatable: Bool
    let required: Bool  // the parser refuses a command line without it
    init(_ names: [String], value: String? = nil, repeatable: Bool = false, required: Bool = false, _ help: String) {
        self.names = names
        self.valueName = value
        self.help = help
        self.repeatable = repeatable
        self.required = required
    }
    var canonicalName: String { names.first { $0.hasPrefix("--") } ?? names[0] }
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
    let run: @Sendable (ParsedArgs) throws -> Int32

    var usageLine: String {
        let opts = options.isEmpty ? "" : " [options]"
        return "switchyard \(name)\(opts)" + positionals.map { " \($0.name)" }.joined()
            + (takesCommand ? " -- COMMAND..." : "")
    }

    var help: String {
        var s = "\(summary)\n\nUSAGE: \(usageLine)\n"
        if !positionals.isEmpty {
            s += "\nARGUMENTS:\n"
            for p in positionals { s += "  " + pad(p.name, 24) + p.help + "\n" }
        }
        s += "\nOPTIONS:\n"
        for o in options + [OptionSpec(["-h", "--help"], "Show this help")] {
            let left = o.names.joined(separator: ", ") + (o.valueName.map { " " + $0 } ?? "")
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
    var positionals: [String] = []
    var values: [String: [String]] = [:]  // canonical option name -> values
    var flags: Set<String> = []
    var wantsHelp = false
    var rest: [String] = []  // the words after `--` (a command to run), for specs that take one

    func value(_ name: String) -> String? { values[name]?.last }
    func all(_ name: String) -> [String] { values[name] ?? [] }
}

/// Parses `args` (after the command name) against `spec`.
func parse(_ args: [String], _ spec: CommandSpec) throws -> ParsedArgs {
    var out = ParsedArgs(command: spec.name)
    var i = 0
    while i < args.count {
        let a = args[i]
        if a == "--" && spec.takesCommand {
            out.rest = Array(args[(i + 1)...])
            break
        }
        if a == "-h" || a == "--help" { out.wantsHelp = true; i += 1; continue }
        if a.hasPrefix("-") && a.count > 1 {
            var name = a, inline: String? = nil
            if let eq = a.firstIndex(of: "="), a.hasPrefix("--") {
                name = String(a[..<eq]); inline = String(a[a.index(after: eq)...])
            }
            guard let o = spec.options.first(where: { $0.names.contains(name) }) else {
                throw UsageError(message: "unknown option '\(name)'", command: spec.name)
            }
            let canonical = o.canonicalName
            if o.valueName != nil {
                let v: String
                if let inline {
                    v = inline
                } else {
                    guard i + 1 < args.count else {
                        throw UsageError(message: "option \(name) needs a value \(o.valueName!)", command: spec.name)
                    }
                    v = args[i + 1]; i += 1
                }
                if !o.repeatable && out.values[canonical] != nil {
                    throw UsageError(message: "option \(name) given twice", command: spec.name)
                }
                out.values[canonical, default: []].append(v)
            } else {
                if inline != nil { throw UsageError(message: "option \(name) takes no value", command: spec.name) }
                out.flags.insert(canonical)
            }
        } else {
            out.positionals.append(a)
        }
        i += 1
    }
    if out.wantsHelp { return out }
    if out.positionals.count < spec.positionals.count {
        let missing = spec.positionals[out.positionals.count].name
        throw UsageError(message: "missing argument \(missing)", command: spec.name)
    }
    if out.positionals.count > spec.positionals.count {
        throw UsageError(
            message: "unexpected argument '\(out.positionals[spec.positionals.count])'", command: spec.name)
    }
    if let o = spec.options.first(where: { $0.required && out.values[$0.canonicalName] == nil }) {
        throw UsageError(message: "\(spec.name) needs \(o.canonicalName) \(o.valueName ?? "")", command: spec.name)
    }
    return out
}

extension ParsedArgs {
    /// The value of a required option (the parser has checked that it is there).
    func required(_ name: String) -> String {
        guard let v = value(name) else { preconditionFailure("\(name) is not a required option of \(command)") }
        return v
    }

    /// The value of option `name` as a whole number >= 1, nil when absent; a usage error otherwise.
    func positiveInt(_ name: String) throws -> Int? {
        guard let s = value(name) else { return nil }
        guard let v = Int(s), v >= 1 else {
            throw UsageError(message: "\(name) needs a whole number >= 1, got '\(s)'", command: command)
        }
        return v
    }

    /// The value of option `name` as a finite number > 0, nil when absent; a usage error otherwise.
    func positiveDouble(_ name: String, what: String = "a number") throws -> Double? {
        guard let s = value(name) else { return nil }
        guard let v = Double(s), v.isFinite, v > 0 else {
            throw UsageError(message: "\(name) needs \(what) > 0, got '\(s)'", command: command)
        }
        return v
    }

    /// A usage error of this command.
    func usageError(_ message: String) -> UsageError { UsageError(message: message, command: command) }
}
