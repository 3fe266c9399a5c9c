// Named parameters in contiguous buffers: parameters, gradients and each AdamW moment are one
// FloatBuffer each, and every named tensor this rank holds is a view (offset, local shape) into
// them. Each tensor declares its shard spec beside it: which dimension is split over the
// tensor-parallel group, and over which group its gradient is reduced. Gradient reduction,
// the norm for clipping and checkpoint I/O read the spec; nothing else hard-codes sharding.
// Matrices are row-major [out, in]; names match a PyTorch-style module tree (DESIGN.md).
import Comm
import Placement
import Tensor

/// Over which ranks a parameter's gradient is summed after backward.
public enum ReduceGroup: Equatable, Sendable {
    /// Replicated in the tp group (same tokens), different samples across dp: sum over dp.
    case dp
    /// Every rank computes it from a disjoint share of the tokens (the router): sum over the world.
    case world
    /// An expert on some ranks: summed over the ranks holding a replica of it (nothing when there
    /// is one). An expert on every rank is `.world`.
    case replicas(layer: Int, expert: Int, ranks: [Int])
}

/// How a parameter is laid out over ranks.
public struct ShardSpec: Equatable, Sendable {
    /// The dimension split over the tp group (0: rows, 1: columns), or nil when every rank
    /// holding the tensor holds all of it.
    public let splitDim: Int?
    public let reduce: ReduceGroup
    /// The AdamW moments are split by rows over the dp group (train.shardOptimizer, ZeRO-1): the
    /// gradient is reduce-scattered, each dp rank updates its rows, the parameter is all-gathered.
    public var momentsOverDP = false

    public init(splitDim: Int?, reduce: ReduceGroup, momentsOverDP: Bool = false) {
        self.splitDim = splitDim; self.reduce = reduce; self.momentsOverDP = momentsOverDP
    }

    public static let replicated = ShardSpec(splitDim: nil, reduce: .dp)
}

/// One named tensor's place in the contiguous buffers.
public struct ParameterInfo: Equatable, Sendable {
    public let name: String
    /// The shape of this rank's piece.
    public let shape: [Int]
    /// The shape of the whole tensor.
    public let globalShape: [Int]
    /// Where this rank's piece starts along `shard.splitDim` in the whole tensor.
    public let sliceStart: Int
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    public let shard: ShardSpec
    /// AdamW weight decay applies (matrices and embeddings: yes; norm weights: no).
    public let decay: Bool
    /// The optimizer updates it (false: SMoE-Dropout's fixed random router, model.router = random).
    public var trainable = true
    /// The initial standard deviation (0 means the tensor starts at ones: norm weights).
    public let initStd: Float
    /// Whether this rank's copy of these elements is the primary one: exactly one holder of each
    /// element (replicas over dp or tp, and replicated experts, hold identical copies) has it set,
    /// and only that copy counts in the global gradient norm and is written to checkpoints.
    public let isPrimaryCopy: Bool
    /// The local rows whose AdamW moments this rank holds (all rows unless `shard.momentsOverDP`),
    /// and where they start in the moment buffers. A 1-D tensor's rows are its elements.
    public let momentRows: Range<Int>
    public let momentOffset: Int
    /// Elements per local row.
    public var cols: Int { shape.count == 2 ? shape[1] : 1 }
    public var momentCount: Int { momentRows.count * cols }
    /// Each dp rank's share of the elements when the moments are split (reduce-scatter counts).
    public func dpChunkCounts(dp: Int) -> [Int] {
        (0..<dp).map { d in ParameterInfo.dpRows(shape[0], d, dp).count * cols }
    }
    /// Rows [d*R/dp, (d+1)*R/dp) of R: dp rank d's moment rows.
    public static func dpRows(_ rows: Int, _ d: Int, _ dp: Int) -> Range<Int> {
        (d * rows / dp)..<((d + 1) * rows / dp)
    }
    /// Whether this rank's moment rows (`momentRows`) are the primary copy of those elements: then
    /// it counts them in the global gradient norm and writes them to checkpoints, so that each
    /// element is counted and written once. Without ZeRO-1 that is `isPrimaryCopy`; with it, every
    /// tp rank holds other elements of a split tensor, and of a replicated one tp rank 0 counts.
    public func holdsPrimaryRows(tpIndex: Int) -> Bool {
        guard shard.momentsOverDP else { return isPrimaryCopy }
        return shard.splitDim != nil || tpIndex == 0
    }

    /// The element index in the whole (row-major) tensor of local element `i`.
    @inline(__always)
    public func globalIndex(_ i: Int) -> Int {
        guard let dim = shard.splitDim else { return i }
        if shape.count == 1 { return i + sliceStart }  // a split vector (the full q/k norm's weights)
        let cols = shape[shape.count - 1]
        let r = i / cols, c = i % cols
        return dim == 0 ? (r + sliceStart) * globalShape[1] + c : r * globalShape[1] + c + sliceStart
    }
}

/// Where this rank sits: its mesh position and the expert placement. World size 1 by default.
public struct ShardLayout: Sendable {
    public let mesh: Mesh
    public let plan: PlacementPlan
    /// AdamW moments of dp-replicated tensors split over dp (see ShardSpec.momentsOverDP).
    public let shardMoments: Bool
    public init(mesh: Mesh, plan: PlacementPlan, shardMoments: Bool = false) {
        self.mesh = mesh; self.plan = plan; self.shardMoments = shardMoments
    }

    public static func single(_ c: ModelConfig) -> ShardLayout {
        ShardLayout(
            mesh: Mesh(dp: 1, tp: 1, rank: 0),
            plan: .roundRobin(moeLayers: c.moeLayerCount, experts: c.nExpert, world: 1))
    }
}

/// The parameters one rank holds, in a fixed order, and the buffers behind them.
public final class ParameterStore: @unchecked Sendable {
    public let infos: [ParameterInfo]
    public let params: FloatBuffer
    public let grads: FloatBuffer
    public let adamM: FloatBuffer
    public let adamV: FloatBuffer
    public let layout: ShardLayout
    private let indexByName: [String: Int]

    public var count: Int { params.count }

    /// `zeroed: false` leaves params and both moments unwritten (not even paged in): for a caller
    /// that overwrites every element, as migration does. Gradients are zeroed unless `training`
    /// is false: an inference store (eval, sample) whose caller loads every parameter and never
    /// runs backward or the optimizer, so gradients and moments are never written or paged in
    /// (a 361 M-parameter model's sample no longer zeroes 4.3 GB it does not use).
    public init(config c: ModelConfig, layout: ShardLayout? = nil, zeroed: Bool = true, training: Bool = true) {
        let layout = layout ?? .single(c)
        self.layout = layout
        let infos = ParameterStore.tensors(config: c, layout: layout)
        let total = infos.last.map { $0.offset + $0.count } ?? 0
        let moments = infos.last.map { $0.momentOffset + $0.momentCount } ?? 0
        self.infos = infos
        var idx: [String: Int] = [:]
        for (i, info) in infos.enumerated() { idx[info.name] = i }
        indexByName = idx
        let zeroed = zeroed && training
        params = zeroed ? FloatBuffer(count: total) : FloatBuffer(uninitializedCount: total)
        grads = training ? FloatBuffer(count: total) : FloatBuffer(uninitializedCount: total)
        adamM = zeroed ? FloatBuffer(count: moments) : FloatBuffer(uninitializedCount: moments)
        adamV = zeroed ? FloatBuffer(count: moments) : FloatBuffer(uninitializedCount: moments)
    }

    /// Every tensor of the model at world 1, in buffer order, without allocating it (an import
    /// lays a checkpoint out from it).
    public static func worldOneTensors(config c: ModelConfig) -> [ParameterInfo] {
        tensors(config: c, layout: .single(c))
    }

    /// Every tensor this rank holds, in buffer order, with its shard spec.
    static func tensors(config c: ModelConfig, layout: ShardLayout) -> [ParameterInfo] {
        var list = TensorList(mesh: layout.mesh, shardMoments: layout.shardMoments)
        // Output projections (wo, w2) start scaled by 1/sqrt(2L) (GPT-2's residual scaling).
        let outStd = TensorList.std / Float(2 * c.nLayer).squareRoot()
        let C = c.nEmbd, F = c.ffHidden
        list.add("embed.weight", [c.vocabSize, C])
        if !c.usesRope { list.add("pos.weight", [c.seqLen, C]) }
        var moeIndex = 0
        for l in 0..<c.nLayer {
            let p = "layers.\(l)."
            list.add(p + "norm1.weight", [C], decay: false, initStd: 0)
            list.add(p + "attn.wq.weight", [c.qWidth, C], split: 0)
            list.add(p + "attn.wk.weight", [c.kvWidth, C], split: 0)
            list.add(p + "attn.wv.weight", [c.kvWidth, C], split: 0)
            list.add(p + "attn.wo.weight", [C, c.qWidth], split: 1, initStd: outStd)
            list.addQKNorm(config: c, prefix: p + "attn.")
            // MoH: every tp rank scores all heads from the same rows and backpropagates its own
            // heads' share, so the partial gradients sum over the world like the MoE router's.
            if c.usesMoH { list.add(p + "attn.router.weight", [c.headRouterRows, C], reduce: .world) }
            list.add(p + "norm2.weight", [C], decay: false, initStd: 0)
            if c.isMoE(l) {
                list.addMoE(config: c, block: l, moeLayer: moeIndex, plan: layout.plan, outStd: outStd)
                moeIndex += 1
            } else {
                for w in c.ffnMatrices {
                    list.add(
                        p + "ffn.\(w).weight", w == "w2" ? [C, F] : [F, C], initStd: w == "w2" ? outStd : TensorList.std
                    )
                }
            }
        }
        list.add("norm.weight", [C], decay: false, initStd: 0)
        list.add("head.weight", [c.vocabSize, C])
        return list.infos
    }

    /// The info of a named tensor this rank holds, or nil.
    /// Whether every parameter and both moments are finite (blocks of 1 << 16 as work items).
    public var stateIsFinite: Bool {
        let grain = 1 << 16, blocks = (count + grain - 1) / grain
        let ok = UnsafeMutableBufferPointer<Bool>.allocate(capacity: max(1, 3 * blocks))
        defer { ok.deallocate() }
        let buffers = [params, adamM, adamV]
        Parallel.forEach(3 * blocks) { item, _ in
            let b = buffers[item / blocks], start = (item % blocks) * grain
            var all = true
            // The moment buffers are shorter than params when split over dp.
            for i in start..<max(start, min(b.count, start + grain)) where !b.base[i].isFinite { all = false }
            ok[item] = all
        }
        return !ok.contains(false)
    }

    public func info(_ name: String) -> ParameterInfo? { indexByName[name].map { infos[$0] } }

    /// Pointer to a named tensor in `buffer` (params, grads, adamM or adamV). In a moment buffer
    /// it points at this rank's moment rows (all rows unless the moments are split over dp).
    public func pointer(_ name: String, in buffer: FloatBuffer) -> UnsafeMutablePointer<Float> {
        guard let i = indexByName[name] else { preconditionFailure("this rank holds no parameter named \(name)") }
        return buffer.base + (buffer === adamM || buffer === adamV ? infos[i].momentOffset : infos[i].offset)
    }

    /// Deterministic initialisation keyed by (seed, parameter name, element index in the whole
    /// tensor): N(0, initStd) for matrices and embeddings, ones for norm weights. A parameter
    /// gets the same values whatever the layout, the rank, or the order of initialisation.
    public func initialize(seed: UInt64) {
        for info in infos {
            let p = params.base + info.offset
            if info.initStd == 0 {
                for i in 0..<info.count { p[i] = 1 }
                continue
            }
            let key = CounterRNG.hash(seed, 0x494E4954 /* "INIT" */, CounterRNG.fnv1a(info.name))
            for i in 0..<info.count {
                p[i] =
                    info.initStd * CounterRNG.normal(CounterRNG.mix(key ^ CounterRNG.mix(UInt64(info.globalIndex(i)))))
            }
        }
        adamM.zero()
        adamV.zero()
        grads.zero()
    }
}

/// Tensors laid end to end in one buffer, each with its shard spec for this rank's mesh position.
struct TensorList {
    static let std: Float = 0.02
    let mesh: Mesh
    let shardMoments: Bool
    var infos: [ParameterInfo] = []
    var offset = 0, momentOffset = 0

    /// A tensor of global shape `global`, split over tp along `split` (nil: replicated). Its
    /// primary copy is on dp group 0's tp ranks for a split tensor, on rank 0 for a replicated
    /// one, unless `isPrimaryCopy` says otherwise.
    mutating func add(
        _ name: String, _ global: [Int], split: Int? = nil, reduce: ReduceGroup = .dp, decay: Bool = true,
        initStd: Float = TensorList.std, isPrimaryCopy: Bool? = nil, trainable: Bool = true
    ) {
        var shape = global, start = 0
        if let d = split {
            shape[d] = global[d] / mesh.tp
            start = mesh.tpIndex * shape[d]
        }
        let primary = isPrimaryCopy ?? (split == nil ? mesh.rank == 0 : mesh.dpIndex == 0)
        // ZeRO-1: the moments of a tensor replicated over dp are split by rows over the dp group.
        let overDP = shardMoments && reduce == .dp && mesh.dp > 1
        let rows = overDP ? ParameterInfo.dpRows(shape[0], mesh.dpIndex, mesh.dp) : 0..<shape[0]
        var info = ParameterInfo(
            name: name, shape: shape, globalShape: global, sliceStart: start, offset: offset,
            shard: ShardSpec(splitDim: split, reduce: reduce, momentsOverDP: overDP), decay: decay, initStd: initStd,
            isPrimaryCopy: primary, momentRows: rows, momentOffset: momentOffset)
        info.trainable = trainable
        infos.append(info)
        offset += info.count
        momentOffset += info.momentCount
    }
}

extension TensorList {
    /// MoE block `block` (MoE layer `moeLayer`): its router, shared experts and the routed experts
    /// `plan` puts on this rank, each reduced over the world (on every rank) or its replicas.
    mutating func addMoE(config c: ModelConfig, block l: Int, moeLayer: Int, plan: PlacementPlan, outStd: Float) {
        let p = "layers.\(l).", C = c.nEmbd, F = c.ffHidden
        add(p + "moe.router.weight", [c.nExpert, C], reduce: .world, trainable: !c.usesRandomRouter)
        for s in 0..<c.nSharedExperts {
            for w in c.ffnMatrices {
                add(
                    p + "moe.shared.\(s).\(w).weight", w == "w2" ? [C, F] : [F, C],
                    initStd: w == "w2" ? outStd : Self.std)
            }
        }
        for e in plan.localExperts(layer: moeLayer, rank: mesh.rank) {
            let ranks = plan.layers[moeLayer][e]
            let first = ranks.min() == mesh.rank
            // An expert on every rank is data parallel: summed over the world in place, with
            // the other tensors of its run (see ShardedAdamW.reduceGradients).
            let red: ReduceGroup =
                ranks.count == mesh.world
                ? .world : .replicas(layer: moeLayer, expert: e, ranks: ranks)
            for w in c.ffnMatrices {
                add(
                    ModelConfig.expertWeight(block: l, expert: e, matrix: w), w == "w2" ? [C, F] : [F, C],
                    reduce: red,
                    initStd: w == "w2" ? outStd : Self.std, isPrimaryCopy: first)
            }
        }
    }
}

extension TensorList {
    /// The q/k norm weights of one block (model.qkNorm): per head, [D] each, replicated, every
    /// tp rank adding its own heads' share of the gradient (so summed over the world, as the
    /// MoH router); over the whole projection, [H*D] and [G*D], split by rows with wq and wk.
    mutating func addQKNorm(config c: ModelConfig, prefix p: String) {
        switch c.qkNorm {
        case "head":
            add(p + "qnorm.weight", [c.headSize], reduce: .world, decay: false, initStd: 0)
            add(p + "knorm.weight", [c.headSize], reduce: .world, decay: false, initStd: 0)
        case "full":
            add(p + "qnorm.weight", [c.qWidth], split: 0, decay: false, initStd: 0)
            add(p + "knorm.weight", [c.kvWidth], split: 0, decay: false, initStd: 0)
        default: break
        }
    }
}
