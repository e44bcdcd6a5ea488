// The bench model: SyncTalk_2D's unet_328 topology (audio mode "ave") with random
// weights, so inference cost, memory and batching can be measured without a trained
// checkpoint. Batch-norm is folded into conv biases, as in an exported checkpoint.
#include <cmath>
#include <vector>

#include "modelgen/lipsync_io.h"
#include "modelgen/model_builder.h"

namespace lipsync::modelgen {
namespace {

// Channel widths of the five encoder levels.
constexpr int64_t kWidths[5] = {32, 64, 128, 256, 512};
constexpr int64_t kExpansion = 2;
// Residual branches are scaled down so twenty-odd residual additions don't grow the
// activations geometrically (the trained net's batch-norm would do this).
constexpr float kResidualBranchGain = 0.5f;
const float kReluGain = std::sqrt(2.0f);  // He initialisation for convs followed by ReLU

class UnetBuilder {
 public:
  UnetBuilder(GraphBuilder& graph, uint64_t seed) : graph_(graph), rng_(seed) {}

  std::string Conv(const std::string& x, int64_t in_channels, int64_t out_channels, int64_t kernel,
                   int64_t stride, int64_t pad, int64_t groups, float gain, bool relu) {
    const int64_t fan_in = in_channels / groups * kernel * kernel;
    const float stddev = gain / std::sqrt(float(fan_in));
    std::vector<float> weights(size_t(out_channels * fan_in));
    for (float& w : weights) w = stddev * rng_.Next();
    std::vector<float> bias(size_t(out_channels), 0.0f);
    std::string w = graph_.AddFloatTensor(
        "conv_w", {out_channels, in_channels / groups, kernel, kernel}, weights);
    std::string b = graph_.AddFloatTensor("conv_b", {out_channels}, bias);
    std::string y = graph_.AddNode(
        "Conv", {x, w, b},
        {IntsAttr("kernel_shape", {kernel, kernel}), IntsAttr("strides", {stride, stride}),
         IntsAttr("pads", {pad, pad, pad, pad}), IntAttr("group", groups)});
    return relu ? graph_.AddNode("Relu", {y}) : y;
  }

  // MobileNetV2 block: 1x1 expand + ReLU, 3x3 depthwise (stride) + ReLU, 1x1 project.
  std::string InvertedResidual(const std::string& x, int64_t in_channels, int64_t out_channels,
                               int64_t stride, bool residual) {
    const int64_t hidden = in_channels * kExpansion;
    std::string y = Conv(x, in_channels, hidden, 1, 1, 0, 1, kReluGain, true);
    y = Conv(y, hidden, hidden, 3, stride, 1, hidden, kReluGain, true);
    y = Conv(y, hidden, out_channels, 1, 1, 0, 1, residual ? kResidualBranchGain : 1.0f, false);
    return residual ? graph_.AddNode("Add", {x, y}) : y;
  }

  std::string DoubleConvDw(const std::string& x, int64_t in_channels, int64_t out_channels,
                           int64_t stride) {
    std::string y = InvertedResidual(x, in_channels, out_channels, stride, false);
    return InvertedResidual(y, out_channels, out_channels, 1, true);
  }

  // x2 bilinear upsampling (align_corners, as torch's Upsample), concat with the skip.
  std::string Up(const std::string& x, const std::string& skip, int64_t in_channels,
                 int64_t out_channels) {
    std::string scales = graph_.AddFloatTensor("up_scales", {4}, {1.f, 1.f, 2.f, 2.f});
    std::string up =
        graph_.AddNode("Resize", {x, "", scales},
                       {StringAttr("mode", "linear"),
                        StringAttr("coordinate_transformation_mode", "align_corners")});
    std::string cat = graph_.AddNode("Concat", {up, skip}, {IntAttr("axis", 1)});
    return DoubleConvDw(cat, in_channels, out_channels, 1);
  }

  // [B,32,16,16] -> [B,512,10,10]; the last strided conv's padding of 3 makes 16 -> 10.
  std::string AudioBranch(const std::string& audio) {
    std::string a = InvertedResidual(audio, kWidths[0], kWidths[1], 1, false);
    a = InvertedResidual(a, kWidths[1], kWidths[2], 1, false);
    a = Conv(a, kWidths[2], kWidths[3], 3, 1, 1, 1, kReluGain, true);
    a = InvertedResidual(a, kWidths[3], kWidths[3], 1, true);
    a = Conv(a, kWidths[3], kWidths[4], 3, 2, 3, 1, kReluGain, true);
    a = InvertedResidual(a, kWidths[4], kWidths[4], 1, true);
    return InvertedResidual(a, kWidths[4], kWidths[4], 1, true);
  }

 private:
  GraphBuilder& graph_;
  SeededNormal rng_;
};

}  // namespace

Status WriteBenchModel(const std::string& path, uint64_t seed) {
  GraphBuilder graph("lipsync_bench_unet328");
  DeclareLipSyncIo(graph);
  UnetBuilder net(graph, seed);
  const auto& w = kWidths;

  // Encoder: 320 -> 160 -> 80 -> 40 -> 20 -> 10.
  std::string x1 = net.InvertedResidual(kVisualInputName, kVisualChannels, w[0], 1, false);
  std::string x2 = net.DoubleConvDw(x1, w[0], w[0], 2);
  std::string x3 = net.DoubleConvDw(x2, w[0], w[1], 2);
  std::string x4 = net.DoubleConvDw(x3, w[1], w[2], 2);
  std::string x5 = net.DoubleConvDw(x4, w[2], w[3], 2);
  std::string x6 = net.DoubleConvDw(x5, w[3], w[4], 2);

  std::string audio = net.AudioBranch(kAudioInputName);
  std::string fused = graph.AddNode("Concat", {x6, audio}, {IntAttr("axis", 1)});
  fused = net.DoubleConvDw(fused, w[4] * 2, w[4], 1);
  fused = net.DoubleConvDw(fused, w[4], w[3], 1);

  // Decoder: each stage doubles the size and halves the channels of the concat.
  std::string y = net.Up(fused, x5, w[4], w[3] / 2);  // 256+256 -> 128 @ 20
  y = net.Up(y, x4, w[3], w[2] / 2);                  // 128+128 -> 64 @ 40
  y = net.Up(y, x3, w[2], w[1] / 2);                  // 64+64 -> 32 @ 80
  y = net.Up(y, x2, w[1], w[0]);                      // 32+32 -> 32 @ 160
  y = net.Up(y, x1, w[1], w[0] / 2);                  // 32+32 -> 16 @ 320
  std::string logits = net.Conv(y, w[0] / 2, 3, 1, 1, 0, 1, 1.0f, false);
  graph.AddNode("Sigmoid", {logits}, {}, kFrameOutputName);
  return graph.Save(path);
}

}  // namespace lipsync::modelgen
