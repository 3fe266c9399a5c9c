// Reading cluster/*.json: every field required (but a node's `cores`, default one per slot),
// unknown fields are errors naming the file.
//   {"nodes": [{"name": "n0", "slots": 2, "memoryPerSlotGB": 12, "cores": 2}], "intraNodeGBps": 8,
//    "interNodeGBps": 1, "intraNodeLatencyUs": 2, "interNodeLatencyUs": 30, "gflopsPerSlot": 95}
import Foundation
import JSON

/// A problem with a cluster file: the file (and field) and what is wrong.
public struct ClusterFileError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let message: String
    public init(key: String, _ message: String) {
        self.key = key
        self.message = message
    }
    public var description: String { "\(key): \(message)" }
}

public enum ClusterFile {
    public static func load(path: String) throws -> Cluster {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterFileError(
                key: path, "cluster file not found or unreadable (see cluster/local.json for the format)")
        }
        let j: JSONValue
        do { j = try JSONValue.parse(bytes: Array(data)) } catch {
            throw ClusterFileError(key: path, "not valid JSON: \(error)")
        }
        guard case .object(let top) = j else { throw ClusterFileError(key: path, "the cluster must be a JSON object") }
        let known = [
            "nodes", "intraNodeGBps", "interNodeGBps", "intraNodeLatencyUs", "interNodeLatencyUs", "gflopsPerSlot"
        ]
        if let bad = top.first(where: { !known.contains($0.0) }) {
            throw ClusterFileError(
                key: "\(path): \(bad.0)", "unknown field; known fields: \(known.joined(separator: ", "))")
        }
        func number(_ k: String) throws -> Double {
            guard let v = j[k]?.doubleValue else {
                throw ClusterFileError(key: "\(path): \(k)", "missing or not a number")
            }
            return v
        }
        guard let nodesJ = j["nodes"]?.arrayValue else {
            throw ClusterFileError(key: "\(path): nodes", "missing or not a list")
        }
        let nodes = try nodesJ.enumerated().map { try node($1, at: $0, path: path) }
        let c = Cluster(
            nodes: nodes, intraNodeGBps: try number("intraNodeGBps"), interNodeGBps: try number("interNodeGBps"),
            intraNodeLatencyUs: try number("intraNodeLatencyUs"), interNodeLatencyUs: try number("interNodeLatencyUs"),
            gflopsPerSlot: try number("gflopsPerSlot"))
        do { try c.validate() } catch let e as PlacementError { throw ClusterFileError(key: path, e.message) }
        return c
    }

    /// nodes[i] of the file at `path`.
    static func node(_ n: JSONValue, at i: Int, path: String) throws -> ClusterNode {
        guard case .object(let fields) = n else {
            throw ClusterFileError(key: "\(path): nodes[\(i)]", "not an object")
        }
        if let bad = fields.first(where: { !["name", "slots", "memoryPerSlotGB", "cores"].contains($0.0) }) {
            throw ClusterFileError(
                key: "\(path): nodes[\(i)].\(bad.0)",
                "unknown field; known fields: name, slots, memoryPerSlotGB, cores")
        }
        guard let name = n["name"]?.stringValue, let slots = n["slots"]?.intValue,
            let mem = n["memoryPerSlotGB"]?.doubleValue
        else {
            throw ClusterFileError(
                key: "\(path): nodes[\(i)]", "needs name (string), slots (integer), memoryPerSlotGB (number)")
        }
        var cores: Int? = nil
        if let c = n["cores"] {
            guard let v = c.intValue else {
                throw ClusterFileError(key: "\(path): nodes[\(i)].cores", "not an integer")
            }
            cores = v
        }
        return ClusterNode(name: name, slots: slots, memoryPerSlotGB: mem, cores: cores)
    }
}
