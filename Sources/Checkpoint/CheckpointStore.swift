// A run's checkpoint directory: listing, LATEST, verification (checksums and coverage) and
// loading any layout's shards from any other layout's slices (resharding is the same code path).
//   <root>/step-000001200/{manifest.json, rank-00000.safetensors, rank-00000.json, ...}
//   <root>/LATEST          name of the newest complete checkpoint (replaced atomically)
import Foundation
import JSON

/// One tensor piece a rank holds: the checkpoint's view of a parameter or AdamW moment shard.
public struct ShardView {
    public let name: String  // "layers.0.attn.wq.weight", "optim.m.<name>", ...
    public let globalShape: [Int]
    public let ranges: [[Int]]  // this rank's piece, per dim [begin, end)
    public let data: UnsafeMutablePointer<Float>
    /// This rank writes the piece (exactly one rank per element of every tensor).
    public let writes: Bool
    public init(name: String, globalShape: [Int], ranges: [[Int]], data: UnsafeMutablePointer<Float>, writes: Bool) {
        self.name = name; self.globalShape = globalShape; self.ranges = ranges; self.data = data; self.writes = writes
    }
    public var localShape: [Int] { ranges.map { $0[1] - $0[0] } }
    public var count: Int { localShape.reduce(1, *) }
}

public enum CheckpointStore {
    public static func stepName(_ step: Int) -> String { String(format: "step-%09d", step) }

    /// Complete checkpoints (a directory step-N with a manifest.json), newest first.
    public static func list(root: String) -> [(name: String, step: Int)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.compactMap { n -> (String, Int)? in
            guard n.hasPrefix("step-"), !n.hasSuffix(".partial"), let s = Int(n.dropFirst(5)),
                FileManager.default.fileExists(atPath: "\(root)/\(n)/manifest.json")
            else { return nil }
            return (n, s)
        }.sorted { $0.1 > $1.1 }
    }

    /// The checkpoint LATEST names, if it names an existing directory.
    public static func latest(root: String) -> String? {
        guard let s = try? String(contentsOfFile: root + "/LATEST", encoding: .utf8) else { return nil }
        let name = s.trimmingCharacters(in: .whitespacesAndNewlines)
        guard name.hasPrefix("step-"), !name.contains("/"),
            FileManager.default.fileExists(atPath: "\(root)/\(name)/manifest.json")
        else { return nil }
        return name
    }

    /// Candidates for resume, newest step first: every complete checkpoint. (A crash between a
    /// step directory's rename and LATEST's replacement leaves LATEST one behind; the newer,
    /// complete checkpoint is still the one to resume from.)
    public static func candidates(root: String) -> [String] {
        list(root: root).map(\.name)
    }

    public static func readManifest(dir: String) throws -> Manifest {
        let path = dir + "/manifest.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError("\(path): cannot read the manifest")
        }
        return try Manifest.parse(Array(data), path: path)
    }

    /// Checks every slice of `files` (all when nil): the file's header, the slice's key and size,
    /// its checksum; and coverage: every element of every tensor in exactly one slice.
    /// Returns the problems found (empty: the checkpoint verifies), each naming file and tensor.
    public static func verify(dir: String, files: Set<String>? = nil) -> [String] {
        let manifest: Manifest
        do { manifest = try readManifest(dir: dir) } catch { return ["\(error)"] }
        var problems: [String] = []
        var opened: [String: SafeTensorsFile] = [:]
        var unreadable: Set<String> = []
        for t in manifest.tensors {
            let total = t.shape.reduce(1, *)
            let covered = t.slices.reduce(0) { $0 + $1.count }
            if covered != total { problems.append("tensor \(t.name): slices cover \(covered) of \(total) elements") }
            for i in 0..<t.slices.count {
                for j in (i + 1)..<t.slices.count where overlaps(t.slices[i].ranges, t.slices[j].ranges) {
                    problems.append("tensor \(t.name): slices in \(t.slices[i].file) and \(t.slices[j].file) overlap")
                }
            }
            for s in t.slices where files == nil || files!.contains(s.file) {
                if unreadable.contains(s.file) { continue }
                let path = dir + "/" + s.file
                let f: SafeTensorsFile
                if let o = opened[s.file] {
                    f = o
                } else {
                    do { f = try SafeTensorsFile(path: path); opened[s.file] = f } catch {
                        problems.append("\(error)"); unreadable.insert(s.file); continue
                    }
                }
                guard let e = f.entries[s.key] else {
                    problems.append("\(path): tensor \(t.name): no key \(s.key)"); continue
                }
                if e.shape.reduce(1, *) != s.count {
                    problems.append("\(path): tensor \(t.name): \(e.shape) does not match its slice \(s.ranges)");
                    continue
                }
                do {
                    let crc = try f.checksum(s.key)
                    if crc != s.crc32c {
                        problems.append(
                            "\(path): tensor \(t.name): checksum mismatch (crc32c \(crc), manifest "
                                + "says \(s.crc32c)); the file is corrupt"
                        )
                    }
                } catch { problems.append("\(error)") }
            }
        }
        return problems
    }

    static func overlaps(_ a: [[Int]], _ b: [[Int]]) -> Bool {
        zip(a, b).allSatisfy { max($0[0], $1[0]) < min($0[1], $1[1]) }
    }

    /// Fills every view from the checkpoint in `dir`, whatever layout wrote it: each view reads
    /// the intersection of its ranges with every slice of its tensor.
    public static func load(dir: String, manifest: Manifest, views: [ShardView]) throws {
        var byName: [String: TensorRecord] = [:]
        for t in manifest.tensors { byName[t.name] = t }
        var opened: [String: SafeTensorsFile] = [:]
        func file(_ name: String) throws -> SafeTensorsFile {
            if let f = opened[name] { return f }
            let f = try SafeTensorsFile(path: dir + "/" + name)
            opened[name] = f
            return f
        }
        for v in views {
            guard let t = byName[v.name] else {
                throw CheckpointError("\(dir): the checkpoint has no tensor \(v.name)")
            }
            guard t.shape == v.globalShape else {
                throw CheckpointError(
                    "\(dir): tensor \(v.name) has shape \(t.shape) in the checkpoint, the model needs \(v.globalShape)")
            }
            var filled = 0
            for s in t.slices {
                let inter = zip(s.ranges, v.ranges).map { [max($0[0], $1[0]), min($0[1], $1[1])] }
                if inter.contains(where: { $0[0] >= $0[1] }) { continue }
                let f = try file(s.file)
                // As 2-D: rows x columns (a 1-D tensor is one row).
                let sr = s.ranges.count == 2 ? s.ranges[0] : [0, 1], sc = s.ranges.last!
                let vr = v.ranges.count == 2 ? v.ranges[0] : [0, 1], vc = v.ranges.last!
                let ir = inter.count == 2 ? inter[0] : [0, 1], ic = inter.last!
                let sw = sc[1] - sc[0], vw = vc[1] - vc[0], w = ic[1] - ic[0]
                if w == sw && w == vw {
                    try f.read(
                        s.key, first: (ir[0] - sr[0]) * sw, count: (ir[1] - ir[0]) * w,
                        into: v.data + (ir[0] - vr[0]) * vw)
                } else {
                    for r in ir[0]..<ir[1] {
                        try f.read(
                            s.key, first: (r - sr[0]) * sw + (ic[0] - sc[0]), count: w,
                            into: v.data + (r - vr[0]) * vw + (ic[0] - vc[0]))
                    }
                }
                filled += (ir[1] - ir[0]) * w
            }
            guard filled == v.count else {
                throw CheckpointError(
                    "\(dir): tensor \(v.name): the slices cover \(filled) of the \(v.count) elements this rank needs")
            }
        }
    }
}
