// A placement's JSON form, written in one place: the job's `placement` key, the start and
// placement events, `plan --out` and the resolved job.json all use it.
import JSON

extension PlacementPlan {
    /// One list per MoE layer of each expert's ranks: [[[0], [1, 2], ...], ...].
    public var json: JSONValue { PlacementPlan.json(layers) }

    /// The JSON form of `layers[l][e]` = ranks holding expert e of MoE layer l.
    public static func json(_ layers: [[[Int]]]) -> JSONValue {
        .array(layers.map { .array($0.map { .array($0.map { .integer($0) }) }) })
    }
}
