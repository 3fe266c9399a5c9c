// A trained model outside training: the job a checkpoint was trained with, and its weights read
// into a model share of any layout (the resharding reader: each rank reads the intersection of
// its ranges with every slice). For eval, sample and export.
import Checkpoint
import Model

extension ParameterStore {
    /// Views of this rank's pieces, as a checkpoint names them: the parameters, and with
    /// `moments` both AdamW moments (optim.m.*, optim.v.*), of the rows this rank holds them for.
    /// Primary copies write (for split moments: each dp rank its rows, tp rank 0 of a replicated tensor).
    public func shardViews(moments: Bool) -> [ShardView] {
        var views: [ShardView] = []
        for info in infos {
            views.append(
                ShardView(
                    name: info.name, globalShape: info.globalShape, ranges: globalRanges(info, rows: 0..<info.shape[0]),
                    data: params.base + info.offset, writes: info.isPrimaryCopy))
        }
        guard moments else { return views }
        let tpIndex = layout.mesh.tpIndex
        for (prefix, buf) in [("optim.m.", adamM), ("optim.v.", adamV)] {
            for info in infos {
                views.append(
                    ShardView(
                        name: prefix + info.name, globalShape: info.globalShape,
                        ranges: globalRanges(info, rows: info.momentRows), data: buf.base + info.momentOffset,
                        writes: info.holdsPrimaryRows(tpIndex: tpIndex)))
            }
        }
        return views
    }

    /// The global [start, end) per dimension of local rows `rows` of `info`.
    func globalRanges(_ info: ParameterInfo, rows: Range<Int>) -> [[Int]] {
        var ranges = info.globalShape.map { [0, $0] }
        if let d = info.shard.splitDim { ranges[d] = [info.sliceStart, info.sliceStart + info.shape[d]] }
        let rowStart = info.shard.splitDim == 0 ? info.sliceStart : 0
        ranges[0] = [rowStart + rows.lowerBound, rowStart + rows.upperBound]
        return ranges
    }
}

public enum CheckpointModel {
    /// The job checkpoint `dir` was trained with; keys it predates take their defaults.
    public static func job(_ m: Manifest, dir: String) throws -> Job {
        var job = Job()
        try job.apply(m.job, file: dir + "/manifest.json")
        return job
    }

    /// Experts per token for inference from a checkpoint written after `step` steps of `job`:
    /// `requested` (1...model.nExpert, else an error naming `option`), or by default the k its last
    /// step trained with (model.topK, or train.topKSchedule's k at that step).
    public static func expertsPerToken(_ requested: Int?, option: String, job: Job, step: Int) throws -> Int {
        guard let k = requested else { return job.trainedTopK(afterSteps: step) }
        guard k >= 1 && k <= job.model.nExpert else {
            throw CheckpointError(
                "\(option) \(k): the model has model.nExpert = \(job.model.nExpert) experts per MoE block; "
                    + "choose 1...\(job.model.nExpert)")
        }
        return k
    }

    /// Tensor `t` of checkpoint `dir`, whole, read from its slices into `data` (its element count).
    public static func loadWhole(
        _ t: TensorRecord, dir: String, manifest m: Manifest, into data: UnsafeMutablePointer<Float>
    ) throws {
        try CheckpointStore.load(
            dir: dir, manifest: m,
            views: [
                ShardView(
                    name: t.name, globalShape: t.shape, ranges: t.shape.map { [0, $0] }, data: data, writes: false)
            ])
    }

    /// The aux-loss-free selection biases a checkpoint holds (nil when it has none).
    public static func routerBias(dir: String, manifest m: Manifest) throws -> RouterBias? {
        guard let t = m.tensors.first(where: { $0.name == RouterBias.tensorName }), t.shape.count == 2 else {
            return nil
        }
        let b = RouterBias(layers: t.shape[0], experts: t.shape[1])
        try loadWhole(t, dir: dir, manifest: m, into: b.values.base)
        return b
    }

    /// Reads the checkpoint's weights into `store` (laid out for any mesh and placement).
    public static func loadWeights(dir: String, manifest m: Manifest, into store: ParameterStore) throws {
        try CheckpointStore.load(dir: dir, manifest: m, views: store.shardViews(moments: false))
    }
}
