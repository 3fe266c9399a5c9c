// supervise --min-ranks M: an elastic relaunch. Before each restart, every host of the command's
// hostfile is probed (the command's own mpirun options, `--host H -np 1 true`, within
// --probe-timeout); the hosts that answer go into <run>/supervise.hostfile, which replaces the
// command's hostfile, and -np shrinks to their slots. train's resharding resume does the rest:
// experts, heads and optimizer state follow the new world. Fewer than M ranks left: give up.
import Foundation

struct ElasticLaunch {
    let minRanks: Int
    let probeSeconds: Double

    /// A hostfile line: its host, its slots (1 when it names none) and the line as written.
    struct Host: Equatable {
        let name: String
        let slots: Int
        let line: String
    }

    /// What a relaunch runs, and on what.
    struct Plan {
        let command: [String]
        let world: Int
        let hosts: [String]
        let lost: [String]
    }

    /// Where the hostfile path and -np value sit in `command`, and where mpirun's options end
    /// (the program: the argument before `train`).
    static func positions(_ command: [String]) throws -> (hostfile: Int, np: Int?, program: Int) {
        guard let train = command.firstIndex(of: "train"), train >= 2 else {
            throw UsageError(
                message:
                    "supervise --min-ranks: the command must be mpirun ... --hostfile FILE ... switchyard train JOB",
                command: "supervise")
        }
        let program = train - 1
        func value(of flags: [String]) -> Int? {
            (0..<(program - 1)).first { flags.contains(command[$0]) }.map { $0 + 1 }
        }
        guard let hostfile = value(of: ["--hostfile", "-hostfile", "--machinefile", "-machinefile"]) else {
            throw UsageError(
                message: "supervise --min-ranks needs the mpirun command's --hostfile FILE (the nodes to choose from)",
                command: "supervise")
        }
        return (hostfile, value(of: ["-np", "--np", "-n", "-c"]), program)
    }

    /// The hosts of a hostfile (comments and blank lines skipped).
    static func hosts(_ path: String) throws -> [Host] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw UsageError(message: "supervise --min-ranks: cannot read the hostfile \(path)", command: "supervise")
        }
        return text.split(separator: "\n").compactMap { raw in
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let words = line.split(separator: " ")
            guard let name = words.first else { return nil }
            let slots = words.compactMap { w in w.hasPrefix("slots=") ? Int(w.dropFirst(6)) : nil }.first ?? 1
            return Host(name: String(name), slots: slots, line: String(line))
        }
    }

    /// The command for the hosts that answer now, or an error when fewer than minRanks ranks remain.
    func relaunch(_ command: [String], runDir: String) throws -> Plan {
        let at = try Self.positions(command)
        let all = try Self.hosts(command[at.hostfile])
        var alive: [Host] = []
        for h in all where answers(h.name, command, at) { alive.append(h) }
        let asked = at.np.flatMap { Int(command[$0]) } ?? all.reduce(0) { $0 + $1.slots }
        let world = min(asked, alive.reduce(0) { $0 + $1.slots })
        let lost = all.filter { !alive.contains($0) }.map(\.name)
        guard world >= minRanks else {
            throw SupervisionEnded(
                "\(world) rank(s) on the hosts that answer (\(alive.map(\.name).joined(separator: ", "))); "
                    + "lost: \(lost.joined(separator: ", ")); --min-ranks is \(minRanks)")
        }
        let file = runDir + "/supervise.hostfile"
        try (alive.map(\.line).joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        var next = command
        next[at.hostfile] = file
        if let np = at.np { next[np] = String(world) }
        return Plan(command: next, world: world, hosts: alive.map(\.name), lost: lost)
    }

    /// Whether `host` runs `true` through the command's own mpirun options within probeSeconds.
    func answers(_ host: String, _ command: [String], _ at: (hostfile: Int, np: Int?, program: Int)) -> Bool {
        var probe = [command[0]]
        var i = 1
        while i < at.program {
            if i == at.hostfile - 1 || i == (at.np ?? -9) - 1 {
                i += 2
                continue
            }
            probe.append(command[i])
            i += 1
        }
        probe += ["--host", host, "-np", "1", "true"]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = probe
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        let end = Date().addingTimeInterval(probeSeconds)
        while p.isRunning && Date() < end { Thread.sleep(forTimeInterval: 0.1) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            return false
        }
        return p.terminationStatus == 0
    }
}

/// Supervision cannot go on; the message says why.
struct SupervisionEnded: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
