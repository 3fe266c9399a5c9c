// manifest.json: what a checkpoint holds and where. Written last by rank 0; a step directory
// without a valid manifest is not a checkpoint.
//   {"format": 2, "step": N, "adamStep": A, "job": {...}, "layout": {"world", "dp", "tp"},
//    "placement": [...], "createdAt": t,
//    "tensors": [{"name", "shape", "slices": [{"file", "key", "ranges": [[b, e], ...], "crc32c"}]}],
//    "manifestCrc32c": CRC32C of the text without this last field}
// `step` is the number of steps done (the next step to run); the data position and every random
// draw are functions of the step, so no iterator or RNG state is needed beyond it and the seed.
import JSON
import Placement

/// One piece of a tensor: which file and key hold it, and which global index range per dim.
public struct SliceRecord: Equatable, Sendable {
    public var file: String
    public var key: String
    public var ranges: [[Int]]  // per dimension [begin, end)
    public var crc32c: UInt32
    public init(file: String, key: String, ranges: [[Int]], crc32c: UInt32) {
        self.file = file; self.key = key; self.ranges = ranges; self.crc32c = crc32c
    }
    public var count: Int { ranges.reduce(1) { $0 * ($1[1] - $1[0]) } }
}

/// A whole tensor: its global shape and its slices.
public struct TensorRecord: Equatable, Sendable {
    public var name: String
    public var shape: [Int]
    public var slices: [SliceRecord]
    public init(name: String, shape: [Int], slices: [SliceRecord]) {
        self.name = name; self.shape = shape; self.slices = slices
    }
}

public struct Manifest: Equatable, Sendable {
    /// 2: the manifest ends with its own checksum (`manifestCrc32c`, CRC32C of the text with the
    /// field left out); 1: no checksum (still read).
    public static let formatVersion = 2
    public var step: Int
    public var adamStep: Int
    public var job: JSONValue
    public var world: Int, dp: Int, tp: Int
    public var placement: [[[Int]]]
    public var createdAt: Double
    public var tensors: [TensorRecord]

    public init(
        step: Int, adamStep: Int, job: JSONValue, world: Int, dp: Int, tp: Int, placement: [[[Int]]],
        createdAt: Double, tensors: [TensorRecord]
    ) {
        self.step = step; self.adamStep = adamStep; self.job = job; self.world = world; self.dp = dp; self.tp = tp
        self.placement = placement; self.createdAt = createdAt; self.tensors = tensors
    }

    /// The bytes of manifest.json: the compact JSON, its checksum appended as the last field.
    public var bytes: [UInt8] {
        var text = Array(json.compact.utf8)
        let crc = CRC32C.checksum(text)
        text.removeLast()  // the closing brace
        text += Array(",\"\(Manifest.checksumKey)\":\(crc)}".utf8)
        return text
    }

    static let checksumKey = "manifestCrc32c"

    /// CRC32C of a manifest's text with its trailing checksum field taken out (nil when the text
    /// does not end with one).
    static func checksum(withoutField text: [UInt8]) -> UInt32? {
        var end = text.count
        while end > 0, [UInt8(ascii: "\n"), UInt8(ascii: " "), UInt8(ascii: "\r")].contains(text[end - 1]) { end -= 1 }
        let marker = Array(",\"\(checksumKey)\":".utf8)
        guard end > 0, text[end - 1] == UInt8(ascii: "}") else { return nil }
        var i = end - 2
        while i >= 0, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[i]) { i -= 1 }
        let start = i - marker.count + 1
        guard start >= 0, Array(text[start...i]) == marker else { return nil }
        return CRC32C.checksum(Array(text[..<start]) + [UInt8(ascii: "}")])
    }

    public var json: JSONValue {
        [
            "format": .integer(Manifest.formatVersion), "step": .integer(step),
            "adamStep": .integer(adamStep), "createdAt": .number(createdAt), "job": job,
            "layout": ["world": .integer(world), "dp": .integer(dp), "tp": .integer(tp)],
            "placement": PlacementPlan.json(placement),
            "tensors": Manifest.json(tensors)
        ]
    }

    /// The JSON form of tensor records: the manifest's "tensors", and each rank's sidecar.
    static func json(_ tensors: [TensorRecord]) -> JSONValue {
        func ints(_ a: [Int]) -> JSONValue { .array(a.map { .integer($0) }) }
        return .array(
            tensors.map { t in
                [
                    "name": .string(t.name), "shape": ints(t.shape),
                    "slices": .array(
                        t.slices.map { s in
                            [
                                "file": .string(s.file), "key": .string(s.key), "ranges": .array(s.ranges.map(ints)),
                                "crc32c": .integer(Int(s.crc32c))
                            ]
                        })
                ]
            })
    }

    /// Parses and checks tensor records (the manifest's "tensors", or a sidecar's); `path` names
    /// the file in errors.
    static func parseTensors(_ value: JSONValue?, path: String) throws -> [TensorRecord] {
        func bad(_ m: String) -> CheckpointError { CheckpointError("\(path): \(m)") }
        func intList(_ v: JSONValue?, _ what: String) throws -> [Int] {
            guard let a = v?.arrayValue else { throw bad("bad \(what)") }
            return try a.map {
                guard let i = $0.intValue, i >= 0 else { throw bad("bad \(what)") }
                return i
            }
        }
        guard let tensorsJ = value?.arrayValue else { throw bad("missing 'tensors'") }
        var tensors: [TensorRecord] = []
        for t in tensorsJ {
            guard let name = t["name"]?.stringValue else { throw bad("a tensor without a name") }
            let shape = try intList(t["shape"], "shape of \(name)")
            guard let slicesJ = t["slices"]?.arrayValue else { throw bad("tensor \(name) has no slices") }
            var slices: [SliceRecord] = []
            for s in slicesJ {
                guard let file = s["file"]?.stringValue, let key = s["key"]?.stringValue,
                    !file.contains("/"), file.hasSuffix(".safetensors")
                else { throw bad("tensor \(name): bad slice file") }
                guard let rangesJ = s["ranges"]?.arrayValue, rangesJ.count == shape.count else {
                    throw bad("tensor \(name): slice ranges do not match its shape")
                }
                let ranges = try rangesJ.map { try intList($0, "ranges of \(name)") }
                for (d, r) in ranges.enumerated() where r.count != 2 || r[0] > r[1] || r[1] > shape[d] {
                    throw bad("tensor \(name): slice range \(r) outside dimension \(d) of size \(shape[d])")
                }
                guard let crc = s["crc32c"]?.intValue, crc >= 0, crc <= Int(UInt32.max) else {
                    throw bad("tensor \(name): bad crc32c")
                }
                slices.append(SliceRecord(file: file, key: key, ranges: ranges, crc32c: UInt32(crc)))
            }
            tensors.append(TensorRecord(name: name, shape: shape, slices: slices))
        }
        return tensors
    }

    /// Parses and checks a manifest; `path` names it in errors.
    public static func parse(_ text: [UInt8], path: String) throws -> Manifest {
        func bad(_ m: String) -> CheckpointError { CheckpointError("\(path): \(m)") }
        let j: JSONValue
        do { j = try JSONValue.parse(bytes: text) } catch {
            throw bad("not valid JSON (\(error)); the manifest is corrupt")
        }
        guard let format = j["format"]?.intValue else { throw bad("no format version") }
        guard format == formatVersion || format == 1 else {
            throw bad("format version \(format); this switchyard reads versions 1 and \(formatVersion)")
        }
        if format >= 2 {
            guard let stored = j["manifestCrc32c"]?.intValue else {
                throw bad(
                    "no manifestCrc32c (format \(format) manifests carry their checksum); the manifest is corrupt")
            }
            let crc = Manifest.checksum(withoutField: text)
            guard crc.map({ Int($0) == stored }) ?? false else {
                throw bad(
                    "checksum mismatch (crc32c \(crc.map(String.init) ?? "unreadable"), the manifest says \(stored)); "
                        + "the manifest is corrupt")
            }
        }
        func int(_ k: String, _ v: JSONValue? = nil) throws -> Int {
            guard let i = (v ?? j[k])?.intValue, i >= 0 else { throw bad("missing or bad '\(k)'") }
            return i
        }
        func intList(_ v: JSONValue?, _ what: String) throws -> [Int] {
            guard let a = v?.arrayValue else { throw bad("bad \(what)") }
            return try a.map {
                guard let i = $0.intValue, i >= 0 else { throw bad("bad \(what)") }; return i
            }
        }
        guard let job = j["job"], case .object = job else { throw bad("missing 'job'") }
        guard let layout = j["layout"] else { throw bad("missing 'layout'") }
        guard let placementJ = j["placement"]?.arrayValue else { throw bad("missing 'placement'") }
        let placement = try placementJ.map { layer in try (layer.arrayValue ?? []).map { try intList($0, "placement") }
        }
        let tensors = try parseTensors(j["tensors"], path: path)
        return Manifest(
            step: try int("step"), adamStep: try int("adamStep"), job: job,
            world: try int("world", layout["world"]), dp: try int("dp", layout["dp"]), tp: try int("tp", layout["tp"]),
            placement: placement, createdAt: j["createdAt"]?.doubleValue ?? 0, tensors: tensors)
    }
}
