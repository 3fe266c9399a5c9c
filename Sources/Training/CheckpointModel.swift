// A trained model outside training: the job a checkpoint was trained with, and its weights read
// into a model share of any layout (the resharding reader: each rank reads the intersection of
// its ranges with every slice). For eval, sample and export.
import Checkpoint
import Model

extension ParameterStore {
    /// Views of this rank's pieces, as a checkpoint names them: the parameters, and with
    /// `moments` both AdamW moments (optim.m.*, optim.v.*). Primary copies write.
    public func shardViews(moments: Bool) -> [ShardView] {
        var views: [ShardView] = []
        let buffers = moments ? [("", params), ("optim.m.", adamM), ("optim.v.", adamV)] : [("", params)]
        for (prefix, buf) in buffers {
            for info in infos {
                var ranges = info.globalShape.map { [0, $0] }
                if let d = info.shard.splitDim { ranges[d] = [info.sliceStart, info.sliceStart + info.shape[d]] }
                views.append(
                    ShardView(
                        name: prefix + info.name, globalShape: info.globalShape, ranges: ranges,
                        data: buf.base + info.offset, writes: info.isPrimaryCopy))
            }
        }
        return views
    }
}

public enum CheckpointModel {
    /// The job checkpoint `dir` was trained with; keys it predates take their defaults.
    public static func job(_ m: Manifest, dir: String) throws -> Job {
        var job = Job()
        try job.apply(m.job, file: dir + "/manifest.json")
        return job
    }

    /// Reads the checkpoint's weights into `store` (laid out for any mesh and placement).
    public static func loadWeights(dir: String, manifest m: Manifest, into store: ParameterStore) throws {
        try CheckpointStore.load(dir: dir, manifest: m, views: store.shardViews(moments: false))
    }
}
