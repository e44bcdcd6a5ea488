// Cold-tenant first batch and hot path driver (issue 11 "Numbers to reach"), run by
// bench/tenants/coldstart_bench.sh (which makes the tenants and starts the servers);
// see docs/perf/tenants.md. Not run by ctest.
//
//   coldstart_bench cold --server HOST:PORT --tenants demo,bench --model-root DIR
//       [--store-dir DIR] [--cache-dir DIR] [--rounds 5] [--batch 8] [--out FILE]
//       Per round and tenant (tenants interleaved): one hot batch (everything resident),
//       then the tenant is made cold: UnloadModel on the compositing server (which also
//       unloads it on the inference server), its files under model_root, its prepared
//       avatar file (--store-dir) and every optimized-graph cache entry (--cache-dir)
//       dropped from the page cache (posix_fadvise DONTNEED), then one batch timed at
//       the client. The response carries the avatar load and the model load the request
//       itself waited for; GetModelStats afterwards gives the model's own load time and
//       when it finished (with the prefetch the model loads while the avatar loads, so
//       the request may not wait for it at all). Prints p50/min/max hot and cold per
//       tenant, cold - hot, the per-stage split and the load average.
//   coldstart_bench hot --server A,B[,...] --labels old,new[,...] --tenant demo
//       [--rounds 10] [--per-round 8] [--batch 8] [--out FILE]
//       Side by side: rounds of --per-round consecutive batches (a stream walking the
//       utterance: start frame 0, 8, 16, ...) sent to each server in turn (A, B, A, B,
//       ...; the first server of each round alternates), after one warm-up round each.
//       Prints each server's p50 per round and the per-round ratio to the first server.
//   coldstart_bench memory --server HOST:PORT --tenants m0,m1,... --compositing-pid N
//       --inference-pid N [--out FILE]
//       Idle-but-cached memory: resident memory of both servers before and after
//       LoadModel of each tenant but the first (loaded before, it takes the one-time
//       costs; nothing is sent to any), per tenant; and each one's avatar and model
//       footprint from GetModelStats.
//
// A benchmark program, not a library: plain main, no exception is thrown on purpose.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audio/batch_audio.h"
#include "bench_util.h"
#include "common/flags.h"
#include "compositing.grpc.pb.h"
#include "rpc/grpc_status.h"

namespace {

namespace fs = std::filesystem;
namespace bench = lipsync::bench;
using Clock = std::chrono::steady_clock;
using Stub = compositing::CompositingService::Stub;

constexpr int kUtteranceFrames = 250;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int64_t UnixMsNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string Fmt(double v, int digits = 0) {
  if (std::isnan(v)) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

std::unique_ptr<Stub> NewStub(const std::string& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(100 << 20);
  return compositing::CompositingService::NewStub(
      grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args));
}

// One batch's answer, as the client saw it and as the server split it.
struct Batch {
  bool ok = false;
  std::string error;
  double ms = 0;  // client wall time
  int64_t sent_unix_ms = 0;
  bool loaded = false;                           // model_loaded_on_demand
  double avatar_load_ms = 0, model_wait_ms = 0;  // model: the part the request waited for
  double inference_ms = 0, inference_rpc_ms = 0, queue_wait_ms = 0, audio_ms = 0;
  double composite_ms = 0, encode_ms = 0, server_total_ms = 0;
};

Batch SendBatch(Stub& stub, const std::string& tenant, const std::string& speech, int batch,
                int start_frame) {
  Batch b;
  lipsync::audio::BatchAudioSpec spec;
  spec.start_frame = start_frame;
  spec.batch_size = batch;
  spec.utterance_frames = kUtteranceFrames;
  auto pcm = lipsync::audio::SliceBatchAudio(speech, spec);
  if (!pcm.ok()) {
    b.error = "driver bug: " + pcm.status().ToString();
    return b;
  }
  compositing::CompositeBatchRequest request;
  request.set_model_id(tenant);
  request.set_batch_size(batch);
  request.set_start_frame_idx(start_frame);
  request.set_raw_audio(std::move(*pcm));
  request.set_sample_rate(16000);
  request.set_utterance_frames(kUtteranceFrames);
  request.set_output_format(compositing::JPEG);
  compositing::CompositeBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  b.sent_unix_ms = UnixMsNow();
  const auto t0 = Clock::now();
  grpc::Status status = stub.InferBatchComposite(&context, request, &response);
  b.ms = MsSince(t0);
  b.ok = status.ok() && response.composited_frames_size() == batch;
  if (!b.ok) {
    b.error = status.ok() ? "missing frames"
                          : std::string(lipsync::rpc::StatusCodeName(status.error_code())) + ": " +
                                status.error_message().substr(0, 200);
  }
  b.loaded = response.model_loaded_on_demand();
  b.avatar_load_ms = response.avatar_load_time_ms();
  b.model_wait_ms = std::max(0.0, double(response.model_load_time_ms()) - b.avatar_load_ms);
  b.inference_ms = response.inference_time_ms();
  b.inference_rpc_ms = response.inference_rpc_ms();
  b.queue_wait_ms = response.queue_wait_ms();
  b.audio_ms = response.audio_processing_ms();
  b.composite_ms = response.composite_time_ms();
  b.encode_ms = response.encode_time_ms();
  b.server_total_ms = response.total_time_ms();
  return b;
}

// GetModelStats for one tenant (both servers' view, merged by the compositing server).
bool GetStats(Stub& stub, const std::string& tenant, lipsync::admin::ModelInfo* info) {
  lipsync::admin::GetModelStatsRequest request;
  request.set_model_id(tenant);
  lipsync::admin::GetModelStatsResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!stub.GetModelStats(&context, request, &response).ok() || response.models_size() == 0)
    return false;
  *info = response.models(0);
  return true;
}

std::string Unload(Stub& stub, const std::string& tenant) {
  lipsync::admin::UnloadModelRequest request;
  request.set_model_id(tenant);
  lipsync::admin::UnloadModelResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status status = stub.UnloadModel(&context, request, &response);
  if (!status.ok()) return status.error_message();
  if (!response.success()) return response.error();
  return "";
}

std::string LoadModel(Stub& stub, const std::string& tenant) {
  lipsync::admin::LoadModelRequest request;
  request.set_model_id(tenant);
  lipsync::admin::LoadModelResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  grpc::Status status = stub.LoadModel(&context, request, &response);
  if (!status.ok()) return status.error_message();
  if (!response.success()) return response.error();
  return "";
}

struct Summary {
  double p50 = 0, min = 0, max = 0;
};
Summary Summarize(const std::vector<double>& v) {
  Summary s;
  s.p50 = bench::Percentile(v, 0.5);
  s.min = v.empty() ? std::nan("") : *std::min_element(v.begin(), v.end());
  s.max = v.empty() ? std::nan("") : *std::max_element(v.begin(), v.end());
  return s;
}
std::string Cell(const std::vector<double>& v, int digits = 0) {
  const Summary s = Summarize(v);
  return Fmt(s.p50, digits) + " (" + Fmt(s.min, digits) + ".." + Fmt(s.max, digits) + ")";
}

void Emit(const std::string& text, const std::string& out_file) {
  std::printf("%s", text.c_str());
  std::fflush(stdout);
  if (!out_file.empty()) std::ofstream(out_file) << text;
}

// ---------------------------------------------------------------------------------------
// cold
// ---------------------------------------------------------------------------------------

struct ColdOptions {
  std::string server, model_root, store_dir, cache_dir, out;
  std::vector<std::string> tenants;
  int rounds = 5, batch = 8;
};

struct TenantFigures {
  std::vector<double> hot, cold, avatar_load, model_wait, model_load, model_ready_after_send;
  std::vector<double> cold_inference, cold_rpc, cold_queue, cold_audio, cold_composite,
      cold_server_total, hot_inference, hot_rpc, hot_composite, hot_server_total;
  std::vector<double> cold_minus_hot;  // per round
  int failed = 0;
};

void MakeCold(const ColdOptions& o, const std::string& tenant) {
  bench::DropCachedUnder(fs::path(o.model_root) / tenant);
  if (!o.store_dir.empty()) bench::DropCachedUnder(o.store_dir, tenant + ".");
  if (!o.cache_dir.empty()) bench::DropCachedUnder(o.cache_dir);
}

int Cold(const ColdOptions& o) {
  auto stub = NewStub(o.server);
  const std::string speech = bench::SyntheticSpeech(kUtteranceFrames);
  std::vector<TenantFigures> figs(o.tenants.size());
  std::vector<double> load;
  // Warm-up: each tenant loaded once (prepared file and graph-cache entry present after it).
  for (const auto& t : o.tenants) {
    Batch b = SendBatch(*stub, t, speech, o.batch, 0);
    std::printf("[cold] warm-up %s: %s %.0f ms\n", t.c_str(), b.ok ? "OK" : b.error.c_str(), b.ms);
    if (!b.ok) return 1;
  }
  for (int r = 0; r < o.rounds; ++r) {
    for (size_t i = 0; i < o.tenants.size(); ++i) {
      const std::string& t = o.tenants[i];
      TenantFigures& f = figs[i];
      load.push_back(bench::LoadAverage1());
      Batch hot = SendBatch(*stub, t, speech, o.batch, 0);
      if (!hot.ok || hot.loaded) {
        std::printf("[cold] round %d %s hot: %s%s\n", r, t.c_str(), hot.error.c_str(),
                    hot.loaded ? " (loaded something: not hot)" : "");
        ++f.failed;
        continue;
      }
      const std::string unload = Unload(*stub, t);
      if (!unload.empty()) {
        std::printf("[cold] round %d %s unload: %s\n", r, t.c_str(), unload.c_str());
        ++f.failed;
        continue;
      }
      MakeCold(o, t);
      Batch cold = SendBatch(*stub, t, speech, o.batch, 0);
      if (!cold.ok || !cold.loaded) {
        std::printf("[cold] round %d %s cold: %s%s\n", r, t.c_str(), cold.error.c_str(),
                    cold.loaded ? "" : " (loaded nothing: not cold)");
        ++f.failed;
        continue;
      }
      lipsync::admin::ModelInfo info;
      double model_load = std::nan(""), ready_after = std::nan("");
      if (GetStats(*stub, t, &info) && info.has_inference()) {
        model_load = info.inference().load_time_ms();
        ready_after = double(info.inference().loaded_at_unix_ms() - cold.sent_unix_ms);
      }
      f.hot.push_back(hot.ms);
      f.cold.push_back(cold.ms);
      f.cold_minus_hot.push_back(cold.ms - hot.ms);
      f.avatar_load.push_back(cold.avatar_load_ms);
      f.model_wait.push_back(cold.model_wait_ms);
      if (!std::isnan(model_load)) f.model_load.push_back(model_load);
      if (!std::isnan(ready_after)) f.model_ready_after_send.push_back(ready_after);
      f.cold_inference.push_back(cold.inference_ms);
      f.cold_rpc.push_back(cold.inference_rpc_ms);
      f.cold_queue.push_back(cold.queue_wait_ms);
      f.cold_audio.push_back(cold.audio_ms);
      f.cold_composite.push_back(cold.composite_ms);
      f.cold_server_total.push_back(cold.server_total_ms);
      f.hot_inference.push_back(hot.inference_ms);
      f.hot_rpc.push_back(hot.inference_rpc_ms);
      f.hot_composite.push_back(hot.composite_ms);
      f.hot_server_total.push_back(hot.server_total_ms);
      std::printf(
          "[cold] round %d %s: hot %.0f ms, cold %.0f ms (avatar load %.0f, model wait %.0f, "
          "model load %.0f ready %.0f ms after send; inference %.0f, call %.0f, composite "
          "%.0f, server %.0f); load %.2f\n",
          r, t.c_str(), hot.ms, cold.ms, cold.avatar_load_ms, cold.model_wait_ms, model_load,
          ready_after, cold.inference_ms, cold.inference_rpc_ms, cold.composite_ms,
          cold.server_total_ms, load.back());
      std::fflush(stdout);
    }
  }
  std::ostringstream r;
  r << "Cold first batch of " << o.batch << " vs hot, " << o.rounds
    << " interleaved rounds against `" << o.server << "`; p50 (min..max), ms. Load average "
    << Cell(load, 2) << " (1 min, sampled per round; now " << bench::LoadAverageText()
    << ").\n\n| tenant | hot | cold | cold - hot (per round) | avatar load | model load "
       "(server) | model ready after send | request waited for the model |\n"
       "|---|---|---|---|---|---|---|---|\n";
  int failed = 0;
  for (size_t i = 0; i < o.tenants.size(); ++i) {
    const auto& f = figs[i];
    failed += f.failed;
    r << "| " << o.tenants[i] << " | " << Cell(f.hot) << " | " << Cell(f.cold) << " | "
      << Cell(f.cold_minus_hot) << " | " << Cell(f.avatar_load, 1) << " | " << Cell(f.model_load, 1)
      << " | " << Cell(f.model_ready_after_send) << " | " << Cell(f.model_wait, 1) << " |\n";
  }
  r << "\nPer stage, p50 (server figures from the response): \n\n| tenant | batch | inference "
       "Run | inference call (incl. transport, model wait) | queue wait | audio | composite + "
       "encode | compositing server total |\n|---|---|---|---|---|---|---|---|\n";
  for (size_t i = 0; i < o.tenants.size(); ++i) {
    const auto& f = figs[i];
    auto p = [](const std::vector<double>& v) { return Fmt(bench::Percentile(v, 0.5)); };
    r << "| " << o.tenants[i] << " | hot | " << p(f.hot_inference) << " | " << p(f.hot_rpc)
      << " | | | " << p(f.hot_composite) << " | " << p(f.hot_server_total) << " |\n";
    r << "| " << o.tenants[i] << " | cold | " << p(f.cold_inference) << " | " << p(f.cold_rpc)
      << " | " << p(f.cold_queue) << " | " << p(f.cold_audio) << " | " << p(f.cold_composite)
      << " | " << p(f.cold_server_total) << " |\n";
  }
  if (failed > 0) r << "\n" << failed << " round(s) failed (see the lines above).\n";
  Emit(r.str(), o.out);
  return failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// hot (side by side)
// ---------------------------------------------------------------------------------------

struct HotOptions {
  std::vector<std::string> servers, labels;
  std::string tenant = "demo", out;
  int rounds = 10, per_round = 8, batch = 8;
};

int Hot(const HotOptions& o) {
  const size_t n = o.servers.size();
  std::vector<std::unique_ptr<Stub>> stubs;
  for (const auto& s : o.servers) stubs.push_back(NewStub(s));
  const std::string speech = bench::SyntheticSpeech(kUtteranceFrames);
  const int span = kUtteranceFrames - o.batch;
  // Per server: per-round p50s and every batch.
  std::vector<std::vector<double>> round_p50(n), all(n);
  std::vector<double> load;
  int failed = 0;
  for (int r = -1; r < o.rounds; ++r) {  // round -1: warm-up, not counted
    load.push_back(bench::LoadAverage1());
    for (size_t k = 0; k < n; ++k) {
      const size_t s = (size_t(std::max(r, 0)) + k) % n;  // who goes first alternates
      std::vector<double> ms;
      for (int j = 0; j < o.per_round; ++j) {
        const int start = (j * o.batch) % span;
        Batch b = SendBatch(*stubs[s], o.tenant, speech, o.batch, start);
        if (!b.ok) {
          std::printf("[hot] %s: %s\n", o.labels[s].c_str(), b.error.c_str());
          ++failed;
          continue;
        }
        ms.push_back(b.ms);
      }
      if (r < 0) continue;
      round_p50[s].push_back(bench::Percentile(ms, 0.5));
      all[s].insert(all[s].end(), ms.begin(), ms.end());
    }
    if (r >= 0) {
      std::printf("[hot] round %d:", r);
      for (size_t s = 0; s < n; ++s)
        std::printf(" %s %.0f ms", o.labels[s].c_str(), round_p50[s].back());
      std::printf(" (load %.2f)\n", load.back());
      std::fflush(stdout);
    }
  }
  std::ostringstream out;
  out << "Hot path side by side: tenant `" << o.tenant << "`, " << o.rounds << " rounds of "
      << o.per_round << " consecutive " << o.batch
      << "-frame batches per server (start frame 0, 8, 16, ...), servers alternating first; "
         "load average "
      << Cell(load, 2)
      << " (1 min, per round).\n\n| server | batches | p50 of round p50s (min..max) "
      << "| all batches p50 | p90 | ratio to " << o.labels[0]
      << " per round: median (min..max) |\n|---|---|---|---|---|---|\n";
  for (size_t s = 0; s < n; ++s) {
    std::vector<double> ratio;
    for (size_t i = 0; i < round_p50[s].size() && i < round_p50[0].size(); ++i)
      ratio.push_back(round_p50[s][i] / round_p50[0][i]);
    out << "| " << o.labels[s] << " | " << all[s].size() << " | " << Cell(round_p50[s]) << " | "
        << Fmt(bench::Percentile(all[s], 0.5)) << " | " << Fmt(bench::Percentile(all[s], 0.9))
        << " | " << Fmt(bench::Percentile(ratio, 0.5), 3) << " ("
        << Fmt(ratio.empty() ? std::nan("") : *std::min_element(ratio.begin(), ratio.end()), 3)
        << ".."
        << Fmt(ratio.empty() ? std::nan("") : *std::max_element(ratio.begin(), ratio.end()), 3)
        << ") |\n";
  }
  if (failed > 0) out << "\n" << failed << " batch(es) failed.\n";
  Emit(out.str(), o.out);
  return failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// memory (idle but cached)
// ---------------------------------------------------------------------------------------

struct MemoryOptions {
  std::string server, out;
  std::vector<std::string> tenants;
  int comp_pid = 0, inf_pid = 0;
};

int Memory(const MemoryOptions& o) {
  auto stub = NewStub(o.server);
  // The first tenant pays the one-time costs (ONNX Runtime environment, arenas, thread
  // pools, store): loaded first and not counted.
  if (o.tenants.size() < 2) {
    std::fprintf(stderr, "memory needs at least 2 tenants (the first warms up)\n");
    return 2;
  }
  const std::string warm = LoadModel(*stub, o.tenants[0]);
  if (!warm.empty()) {
    std::printf("[memory] LoadModel %s: %s\n", o.tenants[0].c_str(), warm.c_str());
    return 1;
  }
  auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(500)); };
  settle();
  const bench::ProcMem c0 = bench::ReadProcMem(o.comp_pid), i0 = bench::ReadProcMem(o.inf_pid);
  std::vector<double> avatar_bytes, model_bytes;
  for (size_t k = 1; k < o.tenants.size(); ++k) {
    const std::string& t = o.tenants[k];
    const std::string err = LoadModel(*stub, t);
    if (!err.empty()) {
      std::printf("[memory] LoadModel %s: %s\n", t.c_str(), err.c_str());
      return 1;
    }
    lipsync::admin::ModelInfo info;
    if (GetStats(*stub, t, &info)) {
      avatar_bytes.push_back(double(info.avatar().memory_bytes()));
      model_bytes.push_back(double(info.inference().memory_bytes()));
    }
  }
  settle();
  const bench::ProcMem c1 = bench::ReadProcMem(o.comp_pid), i1 = bench::ReadProcMem(o.inf_pid);
  const double n = double(o.tenants.size() - 1);
  auto per = [&](int64_t a, int64_t b) { return Fmt(double(b - a) / 1024.0 / n, 2); };
  std::ostringstream r;
  r << "Idle but cached: " << o.tenants.size() - 1
    << " tenants loaded with LoadModel after a first one (not counted), no request sent to "
       "them; load average "
    << bench::LoadAverageText() << ".\n\n| | before (MB) | after (MB) | per tenant (MB) |\n"
    << "|---|---|---|---|\n"
    << "| compositing RSS | " << Fmt(double(c0.rss_kb) / 1024) << " | "
    << Fmt(double(c1.rss_kb) / 1024) << " | " << per(c0.rss_kb, c1.rss_kb) << " |\n"
    << "| compositing anonymous | " << Fmt(double(c0.anon_kb) / 1024) << " | "
    << Fmt(double(c1.anon_kb) / 1024) << " | " << per(c0.anon_kb, c1.anon_kb) << " |\n"
    << "| inference RSS | " << Fmt(double(i0.rss_kb) / 1024) << " | "
    << Fmt(double(i1.rss_kb) / 1024) << " | " << per(i0.rss_kb, i1.rss_kb) << " |\n"
    << "| inference anonymous | " << Fmt(double(i0.anon_kb) / 1024) << " | "
    << Fmt(double(i1.anon_kb) / 1024) << " | " << per(i0.anon_kb, i1.anon_kb) << " |\n\n"
    << "Per tenant as the servers count it (GetModelStats): avatar memory_bytes p50 "
    << Fmt(bench::Percentile(avatar_bytes, 0.5) / 1024, 1) << " KB, model memory_bytes p50 "
    << Fmt(bench::Percentile(model_bytes, 0.5) / 1048576, 2) << " MB.\n";
  Emit(r.str(), o.out);
  return 0;
}

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "coldstart_bench: %s\n"
               "usage: coldstart_bench cold --server HOST:PORT --tenants a,b --model-root DIR "
               "[--store-dir DIR] [--cache-dir DIR] [--rounds N] [--batch N] [--out FILE]\n"
               "       coldstart_bench hot --server A,B --labels a,b [--tenant ID] [--rounds N] "
               "[--per-round N] [--batch N] [--out FILE]\n"
               "       coldstart_bench memory --server HOST:PORT --tenants a,b "
               "--compositing-pid N --inference-pid N [--out FILE]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage("missing subcommand");
  const std::string cmd = argv[1];
  auto flags = lipsync::Flags::Parse(
      argc - 2, argv + 2,
      {"server", "tenants", "tenant", "labels", "model-root", "store-dir", "cache-dir", "rounds",
       "per-round", "batch", "out", "compositing-pid", "inference-pid"});
  if (!flags.ok()) return Usage(flags.status().message());
  std::string error;
  auto get_int = [&](const char* name, int* out) {
    auto v = flags->GetInt(name, *out);
    if (!v.ok())
      error = v.status().message();
    else
      *out = int(*v);
  };
  const std::string server = flags->GetString("server");
  const std::string out = flags->GetString("out");
  if (server.empty()) return Usage("--server is required");
  if (cmd == "cold") {
    ColdOptions o;
    o.server = server;
    o.out = out;
    o.tenants = SplitList(flags->GetString("tenants", "demo"));
    o.model_root = flags->GetString("model-root");
    o.store_dir = flags->GetString("store-dir");
    o.cache_dir = flags->GetString("cache-dir");
    get_int("rounds", &o.rounds);
    get_int("batch", &o.batch);
    if (!error.empty()) return Usage(error);
    if (o.model_root.empty() || o.tenants.empty()) return Usage("cold needs --model-root");
    if (o.rounds < 1 || o.batch < 1 || o.batch > 64) return Usage("--rounds >= 1, --batch 1..64");
    return Cold(o);
  }
  if (cmd == "hot") {
    HotOptions o;
    o.servers = SplitList(server);
    o.labels = SplitList(flags->GetString("labels"));
    o.tenant = flags->GetString("tenant", o.tenant);
    o.out = out;
    get_int("rounds", &o.rounds);
    get_int("per-round", &o.per_round);
    get_int("batch", &o.batch);
    if (!error.empty()) return Usage(error);
    if (o.labels.size() != o.servers.size()) return Usage("--labels: one per --server");
    if (o.rounds < 1 || o.per_round < 1 || o.batch < 1 || o.batch > 64)
      return Usage("--rounds, --per-round >= 1, --batch 1..64");
    return Hot(o);
  }
  if (cmd == "memory") {
    MemoryOptions o;
    o.server = server;
    o.out = out;
    o.tenants = SplitList(flags->GetString("tenants"));
    get_int("compositing-pid", &o.comp_pid);
    get_int("inference-pid", &o.inf_pid);
    if (!error.empty()) return Usage(error);
    if (o.tenants.empty()) return Usage("memory needs --tenants");
    return Memory(o);
  }
  return Usage("unknown subcommand '" + cmd.substr(0, 40) + "'");
}
