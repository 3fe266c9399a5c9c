import Foundation
import Training

/// The jobs the layout and resume tests share: a tiny MoE model (4 heads so tp 2 splits them,
/// 4 experts, top-2), 20 steps, on a small repetitive text held in memory.
func layoutJob(dp: Int = 0, tp: Int = 1, placement: [[[Int]]]? = nil, steps: Int = 20) -> (Job, TokenData) {
    var job = Job()
    job.name = "layout"
    job.model = .init(
        vocabSize: 256, seqLen: 16, nLayer: 3, nEmbd: 32, nHead: 4, nExpert: 4, topK: 2, ffHidden: 24, moeEvery: 1)
    job.train.steps = steps
    job.train.batchSize = 6
    job.train.warmupSteps = 3
    job.train.lr = 1e-2
    job.train.minLr = 1e-3
    job.train.evalEvery = 10
    job.train.evalWindows = 5
    job.train.peakGflops = 50
    job.train.auxLossCoef = 0.05
    job.data.path = "mem"
    job.checkpoint.every = 0
    job.layout.dp = dp
    job.layout.tp = tp
    job.placement = placement
    var text = ""
    for i in 0..<400 {
        text += ["the cat sat on the mat. ", "a dog ran far away! ", "birds sing at dawn; "][i % 3] + String(i % 7)
    }
    return (job, TokenData(path: "mem", format: "text", tokens: Array(text.utf8).map(UInt16.init)))
}

/// `job` made Mixtral-shaped: rotary positions and SwiGLU experts.
func mixtralShaped(_ job: Job) -> Job {
    var j = job
    j.model.positions = "rope"
    j.model.ffn = "swiglu"
    return j
}
