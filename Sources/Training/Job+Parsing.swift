// Reading a job: JSON file -> defaults overridden key by key -> `--set` overrides -> validate.
// Every error names the file or key and says what to do.
import Foundation
import JSON
import Placement

extension Job {
    /// Loads `path`, applies `overrides` ("key=value"), validates. Errors name the file or key.
    public static func load(path: String, overrides: [String] = []) throws -> Job {
        guard FileManager.default.fileExists(atPath: path) else {
            throw JobError(key: path, "job file not found (give the path to a job JSON, e.g. jobs/tiny.json)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw JobError(key: path, "cannot read the job file (check its permissions)")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(bytes: Array(data)) } catch let e as JSONParseError {
            throw JobError(key: path, "not valid JSON: \(e)")
        }
        var job = Job()
        try job.apply(json, file: path)
        for o in overrides { try job.applyOverride(o) }
        try job.validate()
        return job
    }

    /// Overrides defaults with a parsed job document (an object, sections nested).
    public mutating func apply(_ json: JSONValue, file: String) throws {
        guard case .object = json else {
            throw JobError(key: file, "the job must be a JSON object, got \(json.typeName)")
        }
        try apply(json, prefix: "", file: file)
    }

    mutating func apply(_ json: JSONValue, prefix: String, file: String) throws {
        guard case .object(let members) = json else { return }
        for (k, v) in members {
            let key = prefix + k
            if let field = Job.fields.first(where: { $0.key == key }) {
                try set(field, v, source: "\(file)")
            } else if case .object = v, Job.fields.contains(where: { $0.key.hasPrefix(key + ".") }) {
                try apply(v, prefix: key + ".", file: file)
            } else {
                throw JobError(key: key, "unknown key in \(file); \(Job.suggestion(for: key))")
            }
        }
    }

    /// Applies one `key=value` override; the value is read as the key's type.
    public mutating func applyOverride(_ text: String) throws {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
            throw JobError(key: "--set", "'\(text)' must look like key=value, e.g. train.steps=100")
        }
        let key = String(text[..<eq]), raw = String(text[text.index(after: eq)...])
        guard let field = Job.fields.first(where: { $0.key == key }) else {
            throw JobError(key: key, "unknown key in --set; \(Job.suggestion(for: key))")
        }
        let value: JSONValue
        switch field.ref {
        case .placement:
            do { value = try JSONValue.parse(raw) } catch {
                throw JobError(key: key, "--set value is not JSON: \(error); e.g. --set 'placement=[[0],[1],[0,1]]'")
            }
        case .string: value = .string(raw)
        case .bool:
            guard raw == "true" || raw == "false" else {
                throw JobError(key: key, "--set value '\(raw)' must be true or false")
            }
            value = .bool(raw == "true")
        case .int where Int(raw) != nil: value = .integer(Int(raw)!)
        case .int, .double:
            guard let d = Double(raw), d.isFinite else {
                throw JobError(key: key, "--set value '\(raw)' is not a number (expected \(field.typeName))")
            }
            value = .number(d)
        }
        try set(field, value, source: "--set")
    }

    mutating func set(_ field: JobField, _ v: JSONValue, source: String) throws {
        func wrongType() -> JobError {
            JobError(key: field.key, "expected \(field.typeName), got \(v.typeName) (in \(source))")
        }
        switch field.ref {
        case .int(let kp):
            guard let i = v.intValue else { throw wrongType() }
            self[keyPath: kp] = i
        case .double(let kp):
            guard let d = v.doubleValue else { throw wrongType() }
            self[keyPath: kp] = d
        case .string(let kp):
            guard let s = v.stringValue else { throw wrongType() }
            self[keyPath: kp] = s
        case .bool(let kp):
            guard let b = v.boolValue else { throw wrongType() }
            self[keyPath: kp] = b
        case .placement:
            placement = try Job.parsePlacement(v, source: source)
        }
    }

    /// [[r, ...] per expert] (all MoE layers) or [[[r, ...] per expert] per MoE layer]; null clears.
    static func parsePlacement(_ v: JSONValue, source: String) throws -> [[[Int]]]? {
        if v == .null { return nil }
        func fail(_ m: String) -> JobError {
            JobError(key: "placement", "\(m) (in \(source)); e.g. [[0], [1], [0, 1]]: expert 2 on ranks 0 and 1")
        }
        func ranks(_ x: JSONValue) throws -> [Int] {
            guard let a = x.arrayValue else { throw fail("each expert needs a list of ranks, got \(x.typeName)") }
            return try a.map {
                guard let i = $0.intValue else { throw fail("ranks are integers, got \($0.typeName)") }; return i
            }
        }
        guard let top = v.arrayValue, !top.isEmpty else { throw fail("expected a non-empty list") }
        let isLayered = top.allSatisfy { $0.arrayValue?.first?.arrayValue != nil }
        if isLayered {
            return try top.map { layer in try (layer.arrayValue ?? []).map(ranks) }
        }
        return [try top.map(ranks)]
    }

    static func suggestion(for key: String) -> String {
        let section = key.split(separator: ".").dropLast().joined(separator: ".")
        let near = fields.map(\.key).filter { section.isEmpty ? !$0.contains(".") : $0.hasPrefix(section + ".") }
        let known = near.isEmpty ? fields.map(\.key) : near
        return "known keys\(section.isEmpty ? "" : " under \(section)"): \(known.joined(separator: ", "))"
    }

    /// The resolved job as JSON, sections nested, in `fields` order: what job.json holds.
    public var resolvedJSON: JSONValue {
        var root: [(String, JSONValue)] = []
        func insert(_ path: ArraySlice<Substring>, _ v: JSONValue, into members: inout [(String, JSONValue)]) {
            let head = String(path.first!)
            if path.count == 1 { members.append((head, v)); return }
            var sub: [(String, JSONValue)] = []
            if let i = members.firstIndex(where: { $0.0 == head }), case .object(let m) = members[i].1 {
                sub = m
                insert(path.dropFirst(), v, into: &sub)
                members[i].1 = .object(sub)
            } else {
                insert(path.dropFirst(), v, into: &sub)
                members.append((head, .object(sub)))
            }
        }
        for f in Job.fields {
            let v: JSONValue
            switch f.ref {
            case .int(let kp): v = .integer(self[keyPath: kp])
            case .double(let kp): v = .number(self[keyPath: kp])
            case .string(let kp): v = .string(self[keyPath: kp])
            case .bool(let kp): v = .bool(self[keyPath: kp])
            case .placement:
                v = placement.map { PlacementPlan.json($0) } ?? .null
            }
            insert(f.key.split(separator: ".")[...], v, into: &root)
        }
        return .object(root)
    }
}
