// Model cold start, side by side in one run, on the unet_328-sized bench model.
//
//   model_cold_start_bench [--dir /tmp/model_cold_start_bench] [--rounds 5]
//                          [--batch 4] [--runs 3] [--skip-shared]
//
// Part 1, the optimized-graph cache (inference/model_cache.h): OnnxModel::Load without
// the cache and with it (a hit), interleaved for --rounds; session creation and the
// warm-up Run reported apart, plus the first load that fills the cache (a miss) and
// the largest difference between the two sessions' outputs.
//
// Part 2, one shared session per architecture: the bench model with every float
// initializer turned into a graph input (libonnx), so one session serves every tenant
// of that architecture with the tenant's weights fed to each Run. Two tenants with
// different weights (seeds 1 and 2): each one's output from the shared session
// against its own session (max abs difference), Run time at batch 1 and --batch
// (weights fed vs baked, interleaved --runs times, medians), memory (heap bytes) and
// the per-tenant "load" of each approach.
//
// Part 3, ORT's per-session CPU arena vs the runtime's shared one (inference/
// ort_runtime.h): heap bytes each of three sessions adds after one Run, and the first
// Run's time. Progress goes to stderr, tables to stdout.
// Not run by ctest.
#include <malloc.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/flags.h"
#include "inference/model_cache.h"
#include "inference/onnx_model.h"
#include "inference/ort_runtime.h"
#include "modelgen/model_builder.h"

namespace {

using namespace lipsync;
namespace inf = lipsync::inference;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

int64_t HeapBytes() {
  struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
}

struct Series {
  std::vector<double> values;
  void Add(double v) { values.push_back(v); }
  double Median() const {
    std::vector<double> v = values;
    std::sort(v.begin(), v.end());
    if (v.empty()) return 0;
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  }
  double Min() const {
    return values.empty() ? 0 : *std::min_element(values.begin(), values.end());
  }
  double Max() const {
    return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
  }
};

double MaxAbsDiff(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return INFINITY;
  const auto* x = reinterpret_cast<const float*>(a.data());
  const auto* y = reinterpret_cast<const float*>(b.data());
  double worst = 0;
  for (size_t i = 0; i < a.size() / sizeof(float); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(x[i] - y[i])));
  }
  return worst;
}

struct Inputs {
  int batch = 1;
  std::vector<float> visual, audio;
};

Inputs RandomInputs(int batch, uint32_t seed) {
  Inputs in;
  in.batch = batch;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  in.visual.resize(static_cast<size_t>(batch) * modelgen::kVisualChannels * modelgen::kFrameSize *
                   modelgen::kFrameSize);
  in.audio.resize(static_cast<size_t>(batch) * modelgen::kAudioChannels * modelgen::kAudioHeight *
                  modelgen::kAudioWidth);
  for (auto& v : in.visual) v = u(rng);
  for (auto& v : in.audio) v = u(rng);
  return in;
}

// ------------------------------------------------------------------ part 1: cache

int RunCachePart(const std::string& model_path, const std::string& cache_dir, int rounds) {
  inf::ModelFiles files{model_path, ""};
  std::error_code ec;
  fs::remove_all(cache_dir, ec);
  inf::ModelCache cache(cache_dir);

  std::fprintf(stderr, "cache: first load (fills the cache)...\n");
  auto t = Clock::now();
  auto first = inf::OnnxModel::Load(files, -1, &cache);
  const double miss_ms = MsSince(t);
  if (!first.ok()) {
    std::fprintf(stderr, "load failed: %s\n", first.status().ToString().c_str());
    return 1;
  }
  const double miss_create = (*first)->session_create_ms();
  first->reset();

  Series plain_create, plain_total, cached_create, cached_total;
  int64_t plain_bytes = 0, cached_bytes = 0;
  double max_diff = 0;
  const Inputs in = RandomInputs(1, 7);
  for (int r = 0; r < rounds; ++r) {
    std::fprintf(stderr, "cache: round %d/%d\n", r + 1, rounds);
    t = Clock::now();
    auto plain = inf::OnnxModel::Load(files, -1, nullptr);
    plain_total.Add(MsSince(t));
    t = Clock::now();
    auto cached = inf::OnnxModel::Load(files, -1, &cache);
    cached_total.Add(MsSince(t));
    if (!plain.ok() || !cached.ok()) {
      std::fprintf(stderr, "load failed\n");
      return 1;
    }
    plain_create.Add((*plain)->session_create_ms());
    cached_create.Add((*cached)->session_create_ms());
    plain_bytes = (*plain)->memory_bytes();
    cached_bytes = (*cached)->memory_bytes();
    if (r == 0) {
      std::string a, b;
      if (!(*plain)
               ->Run(1, in.visual.data(), in.audio.data(), inf::OutputFormat::kFloat32, &a)
               .ok() ||
          !(*cached)
               ->Run(1, in.visual.data(), in.audio.data(), inf::OutputFormat::kFloat32, &b)
               .ok()) {
        std::fprintf(stderr, "run failed\n");
        return 1;
      }
      max_diff = MaxAbsDiff(a, b);
    }
  }
  std::printf(
      "\n### Session creation, optimized-graph cache off vs on (%d rounds, interleaved)\n\n",
      rounds);
  std::printf(
      "| load | session creation ms (median, min-max) | Load incl. warm-up ms (median) |\n");
  std::printf("| --- | ---: | ---: |\n");
  std::printf("| no cache (source model, ORT_ENABLE_ALL) | %.1f (%.1f-%.1f) | %.1f |\n",
              plain_create.Median(), plain_create.Min(), plain_create.Max(), plain_total.Median());
  std::printf("| cache hit (verified entry, ORT_DISABLE_ALL) | %.1f (%.1f-%.1f) | %.1f |\n",
              cached_create.Median(), cached_create.Min(), cached_create.Max(),
              cached_total.Median());
  std::printf("| first load, cache miss (hash + optimize + save) | %.1f | %.1f |\n", miss_create,
              miss_ms);
  std::printf(
      "\nsession creation hit/plain = %.2f; outputs max |diff| = %g; footprint %lld vs "
      "%lld bytes; cache hits %lld, writes %lld, entry %lld bytes\n",
      cached_create.Median() / std::max(plain_create.Median(), 1e-9), max_diff,
      static_cast<long long>(plain_bytes), static_cast<long long>(cached_bytes),
      static_cast<long long>(cache.hits()), static_cast<long long>(cache.writes()),
      static_cast<long long>(
          fs::file_size(cache.EntryPath(*cache.KeyFor(model_path, "CPUExecutionProvider")), ec)));
  return 0;
}

// -------------------------------------------------------- part 2: shared session

// One tenant's weights: every float initializer of its model, in graph order.
struct TenantWeights {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::vector<float>> data;
  int64_t bytes = 0;
};

bool ParseModel(const std::string& path, onnx::ModelProto* model) {
  std::ifstream in(path, std::ios::binary);
  return in && model->ParseFromIstream(&in);
}

bool IsWeight(const onnx::TensorProto& t) {
  return t.data_type() == onnx::TensorProto::FLOAT &&
         t.data_location() == onnx::TensorProto::DEFAULT;
}

TenantWeights ExtractWeights(const onnx::ModelProto& model) {
  TenantWeights w;
  for (const auto& t : model.graph().initializer()) {
    if (!IsWeight(t)) continue;
    w.names.push_back(t.name());
    w.shapes.emplace_back(t.dims().begin(), t.dims().end());
    std::vector<float> values;
    if (!t.raw_data().empty()) {
      values.resize(t.raw_data().size() / sizeof(float));
      std::memcpy(values.data(), t.raw_data().data(), values.size() * sizeof(float));
    } else {
      values.assign(t.float_data().begin(), t.float_data().end());
    }
    w.bytes += static_cast<int64_t>(values.size() * sizeof(float));
    w.data.push_back(std::move(values));
  }
  return w;
}

// The architecture: the model with its float initializers removed and declared as
// graph inputs instead (same names, so a tenant's weights bind by name).
std::string WeightsAsInputs(onnx::ModelProto model) {
  auto* graph = model.mutable_graph();
  google::protobuf::RepeatedPtrField<onnx::TensorProto> kept;
  for (auto& t : *graph->mutable_initializer()) {
    if (!IsWeight(t)) {
      *kept.Add() = t;
      continue;
    }
    auto* input = graph->add_input();
    input->set_name(t.name());
    auto* tensor = input->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : t.dims()) tensor->mutable_shape()->add_dim()->set_dim_value(d);
  }
  graph->mutable_initializer()->Swap(&kept);
  std::string bytes;
  model.SerializeToString(&bytes);
  return bytes;
}

class SharedSession {
 public:
  explicit SharedSession(const std::string& graph) {
    auto* rt = inf::OrtRuntime::Get();
    Ort::SessionOptions so = rt->MakeSessionOptions();
    session_ = std::make_unique<Ort::Session>(rt->env(), graph.data(), graph.size(), so);
  }
  // Runs `in` with `w` fed as inputs; float32 output.
  std::string Run(const Inputs& in, TenantWeights& w) {
    std::vector<const char*> names{"input", "audio"};
    std::vector<Ort::Value> values;
    const std::array<int64_t, 4> vd{in.batch, modelgen::kVisualChannels, modelgen::kFrameSize,
                                    modelgen::kFrameSize};
    const std::array<int64_t, 4> ad{in.batch, modelgen::kAudioChannels, modelgen::kAudioHeight,
                                    modelgen::kAudioWidth};
    values.push_back(Ort::Value::CreateTensor<float>(mem_, const_cast<float*>(in.visual.data()),
                                                     in.visual.size(), vd.data(), vd.size()));
    values.push_back(Ort::Value::CreateTensor<float>(mem_, const_cast<float*>(in.audio.data()),
                                                     in.audio.size(), ad.data(), ad.size()));
    for (size_t i = 0; i < w.names.size(); ++i) {
      names.push_back(w.names[i].c_str());
      values.push_back(Ort::Value::CreateTensor<float>(mem_, w.data[i].data(), w.data[i].size(),
                                                       w.shapes[i].data(), w.shapes[i].size()));
    }
    const char* out_name = "output";
    auto out = session_->Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(),
                             &out_name, 1);
    const float* p = out[0].GetTensorData<float>();
    return std::string(reinterpret_cast<const char*>(p),
                       out[0].GetTensorTypeAndShapeInfo().GetElementCount() * sizeof(float));
  }

 private:
  std::unique_ptr<Ort::Session> session_;
  Ort::MemoryInfo mem_ = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
};

int RunSharedPart(const std::string& dir, int batch, int runs) {
  const std::string paths[2] = {dir + "/tenant_a.onnx", dir + "/tenant_b.onnx"};
  for (int i = 0; i < 2; ++i) {
    if (!fs::exists(paths[i]) && !modelgen::WriteBenchModel(paths[i], 1 + i).ok()) return 1;
  }
  std::fprintf(stderr, "shared: per-tenant sessions...\n");
  std::shared_ptr<inf::OnnxModel> own[2];
  double own_load_ms[2];
  int64_t own_bytes[2];
  for (int i = 0; i < 2; ++i) {
    auto t = Clock::now();
    auto m = inf::OnnxModel::Load({paths[i], ""}, -1, nullptr);
    own_load_ms[i] = MsSince(t);
    if (!m.ok()) return 1;
    own[i] = *m;
    own_bytes[i] = own[i]->memory_bytes();
  }
  std::fprintf(stderr, "shared: weights-as-inputs graph and tenant weights...\n");
  TenantWeights weights[2];
  double weights_ms[2];
  std::string graphs[2];
  for (int i = 0; i < 2; ++i) {
    auto t = Clock::now();
    onnx::ModelProto proto;
    if (!ParseModel(paths[i], &proto)) return 1;
    weights[i] = ExtractWeights(proto);
    weights_ms[i] = MsSince(t);
    graphs[i] = WeightsAsInputs(std::move(proto));
  }
  const bool same_architecture = graphs[0] == graphs[1];
  const int64_t heap_before = HeapBytes();
  auto t = Clock::now();
  SharedSession shared(graphs[0]);
  const double shared_create_ms = MsSince(t);
  const Inputs warm = RandomInputs(1, 1);
  (void)shared.Run(warm, weights[0]);
  const int64_t shared_bytes = HeapBytes() - heap_before;

  // Correctness: each tenant's output from the shared session vs its own session.
  const Inputs check = RandomInputs(1, 11);
  double diff[2], cross = 0;
  std::string own_out[2];
  for (int i = 0; i < 2; ++i) {
    if (!own[i]
             ->Run(1, check.visual.data(), check.audio.data(), inf::OutputFormat::kFloat32,
                   &own_out[i])
             .ok()) {
      return 1;
    }
    diff[i] = MaxAbsDiff(shared.Run(check, weights[i]), own_out[i]);
  }
  cross = MaxAbsDiff(own_out[0], own_out[1]);

  std::printf("\n### One shared session per architecture vs one session per tenant\n\n");
  std::printf(
      "same architecture (weightless graphs byte-equal): %s; max |shared - own| tenant A "
      "%g, tenant B %g (A vs B outputs differ by up to %g)\n\n",
      same_architecture ? "yes" : "NO", diff[0], diff[1], cross);
  std::printf(
      "| batch | own session Run ms (median) | shared, weights fed ms (median) | shared "
      "/ own |\n| ---: | ---: | ---: | ---: |\n");
  for (int b : {1, batch}) {
    const Inputs in = RandomInputs(b, 3);
    Series own_ms, shared_ms;
    std::string out;
    for (int r = 0; r < runs; ++r) {
      std::fprintf(stderr, "shared: batch %d run %d/%d\n", b, r + 1, runs);
      for (int i = 0; i < 2; ++i) {
        auto s = Clock::now();
        if (!own[i]
                 ->Run(b, in.visual.data(), in.audio.data(), inf::OutputFormat::kFloat32, &out)
                 .ok())
          return 1;
        own_ms.Add(MsSince(s));
        s = Clock::now();
        (void)shared.Run(in, weights[i]);
        shared_ms.Add(MsSince(s));
      }
    }
    std::printf("| %d | %.1f | %.1f | %.2f |\n", b, own_ms.Median(), shared_ms.Median(),
                shared_ms.Median() / std::max(own_ms.Median(), 1e-9));
    if (b == batch) break;
  }
  std::printf("\n| per tenant | own session | shared session |\n| --- | ---: | ---: |\n");
  std::printf(
      "| memory (heap bytes) | %lld (tenant A), %lld (B) | %lld weights + %lld / N "
      "shared session |\n",
      static_cast<long long>(own_bytes[0]), static_cast<long long>(own_bytes[1]),
      static_cast<long long>(weights[0].bytes), static_cast<long long>(shared_bytes));
  std::printf(
      "| load ms | %.1f (A), %.1f (B): session + warm-up | %.1f (A), %.1f (B): parse "
      "weights; session once %.1f |\n",
      own_load_ms[0], own_load_ms[1], weights_ms[0], weights_ms[1], shared_create_ms);
  return 0;
}

// ------------------------------------------- part 3: per-session vs shared CPU arena

// Heap bytes each of three sessions (tenants A, B, A again) adds once it has run one
// batch-1 frame, with ORT's per-session arena and with the runtime's shared one
// (session.use_env_allocators), alternating; and the first Run's time.
int RunArenaPart(const std::string& dir) {
  auto* rt = inf::OrtRuntime::Get();
  if (!rt->shared_cpu_arena()) return 0;
  const std::string paths[3] = {dir + "/tenant_a.onnx", dir + "/tenant_b.onnx",
                                dir + "/tenant_a.onnx"};
  const Inputs in = RandomInputs(1, 5);
  std::printf(
      "\n### Per-session arena vs one shared CPU arena (heap bytes added per session, "
      "after one batch-1 Run)\n\n| arena | session 1 (A) | session 2 (B) | session 3 (A) "
      "| first Run ms (1, 2, 3) |\n| --- | ---: | ---: | ---: | --- |\n");
  for (const char* use_env : {"0", "1"}) {
    std::fprintf(stderr, "arena: use_env_allocators=%s\n", use_env);
    std::vector<std::unique_ptr<Ort::Session>> sessions;
    int64_t added[3];
    double first_run[3];
    for (int i = 0; i < 3; ++i) {
      const int64_t before = HeapBytes();
      Ort::SessionOptions so;  // as MakeSessionOptions, arena choice aside
      so.DisablePerSessionThreads();
      so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      so.AddConfigEntry("session.use_env_allocators", use_env);
      sessions.push_back(std::make_unique<Ort::Session>(rt->env(), paths[i].c_str(), so));
      auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
      const std::array<int64_t, 4> vd{1, modelgen::kVisualChannels, modelgen::kFrameSize,
                                      modelgen::kFrameSize};
      const std::array<int64_t, 4> ad{1, modelgen::kAudioChannels, modelgen::kAudioHeight,
                                      modelgen::kAudioWidth};
      Ort::Value values[2] = {
          Ort::Value::CreateTensor<float>(mem, const_cast<float*>(in.visual.data()),
                                          in.visual.size(), vd.data(), vd.size()),
          Ort::Value::CreateTensor<float>(mem, const_cast<float*>(in.audio.data()), in.audio.size(),
                                          ad.data(), ad.size())};
      const char* names[] = {"input", "audio"};
      const char* out_name = "output";
      auto t = Clock::now();
      (void)sessions.back()->Run(Ort::RunOptions{nullptr}, names, values, 2, &out_name, 1);
      first_run[i] = MsSince(t);
      added[i] = HeapBytes() - before;
    }
    std::printf("| %s | %.1f MB | %.1f MB | %.1f MB | %.0f, %.0f, %.0f |\n",
                use_env[0] == '1' ? "shared (use_env_allocators=1)" : "per session (ORT default)",
                added[0] / 1e6, added[1] / 1e6, added[2] / 1e6, first_run[0], first_run[1],
                first_run[2]);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = Flags::Parse(argc - 1, argv + 1, {"dir", "rounds", "batch", "runs", "skip-shared"},
                            {"skip-shared"});
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\n", flags.status().ToString().c_str());
    return 2;
  }
  const std::string dir = flags->GetString("dir", "/tmp/model_cold_start_bench");
  const int rounds = static_cast<int>(*flags->GetInt("rounds", 5));
  const int batch = static_cast<int>(*flags->GetInt("batch", 4));
  const int runs = static_cast<int>(*flags->GetInt("runs", 3));
  auto runtime = inf::OrtRuntime::Initialize({});
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", runtime.status().ToString().c_str());
    return 1;
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string model = dir + "/tenant_a.onnx";
  if (!fs::exists(model)) {
    std::fprintf(stderr, "writing the bench model to %s...\n", model.c_str());
    if (Status st = modelgen::WriteBenchModel(model, 1); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
  }
  std::printf("ONNX Runtime %s, CPU provider, model %s (%lld bytes)\n",
              (*runtime)->version().c_str(), model.c_str(),
              static_cast<long long>(fs::file_size(model, ec)));
  if (int rc = RunCachePart(model, dir + "/cache", rounds); rc != 0) return rc;
  if (flags->Has("skip-shared")) return 0;
  if (int rc = RunSharedPart(dir, batch, runs); rc != 0) return rc;
  return RunArenaPart(dir);
}
