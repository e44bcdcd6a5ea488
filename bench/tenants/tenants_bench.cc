// 11,000-tenant benchmark driver (issue 11, "Must show"). bench/tenants/tenants_bench.sh
// makes the tenants, starts both servers and runs this; see docs/perf/tenants.md.
//
//   tenants_bench populate --base DIR --model-root DIR --tenants N
//       Makes N tenants t00000..t(N-1) under model_root, each a directory of hard links
//       to the files of the base tenant (frames/, crop_rects.json, checkpoint/*.onnx).
//       Each tenant is still loaded on its own by the servers. Idempotent.
//   tenants_bench list --server HOST:PORT [--inference HOST:PORT] [--tenants N]
//       Times ListModels (include_available, every tenant) 3 times with no traffic: the
//       compositing server's, and with --inference the inference server's own first.
//   tenants_bench run --server HOST:PORT --model-root DIR --tenants N
//       [--seconds 120] [--streams 8] [--batch 8] [--zipf 1.0] [--seed 1]
//       [--window 10] [--list-every 0.5] [--deadline 30] [--store-dir DIR]
//       [--compositing-pid N] [--inference-pid N] [--out DIR]
//       N streams send raw-audio batches for Zipf-popular tenants for a set time. Before
//       each request every file of the tenant (and its prepared avatar file in
//       --store-dir) is dropped from the page cache (posix_fadvise DONTNEED), so a tenant
//       that is not resident is read cold from the disk; a resident one reads nothing.
//       Windows of --window seconds alternate between traffic alone and traffic while
//       a lister calls ListModels (include_available, every tenant) every --list-every
//       seconds, so the p99 of the requests can be compared with and without it.
//       Writes DIR/report.md, DIR/requests.csv, DIR/memory.csv; progress on stdout.
//
// A benchmark program, not a library: plain main, no exception is thrown on purpose.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audio/batch_audio.h"
#include "bench_util.h"
#include "common/flags.h"
#include "compositing.grpc.pb.h"
#include "inference.grpc.pb.h"
#include "rpc/grpc_status.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string TenantId(int i) {
  char id[16];
  std::snprintf(id, sizeof id, "t%05d", i);
  return id;
}

// ---------------------------------------------------------------------------------------
// populate
// ---------------------------------------------------------------------------------------

int Populate(const std::string& base, const std::string& root, int tenants) {
  std::error_code ec;
  if (!fs::is_directory(base, ec)) {
    std::fprintf(stderr, "populate: base tenant %s is not a directory\n", base.c_str());
    return 2;
  }
  std::vector<fs::path> files;  // relative to base
  for (auto it = fs::recursive_directory_iterator(base, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file()) files.push_back(fs::relative(it->path(), base));
  }
  if (ec || files.empty()) {
    std::fprintf(stderr, "populate: cannot list %s\n", base.c_str());
    return 2;
  }
  const auto t0 = Clock::now();
  int made = 0;
  for (int i = 0; i < tenants; ++i) {
    const fs::path dir = fs::path(root) / TenantId(i);
    if (fs::exists(dir / "crop_rects.json", ec)) continue;
    for (const auto& rel : files) {
      fs::create_directories((dir / rel).parent_path(), ec);
      fs::create_hard_link(fs::path(base) / rel, dir / rel, ec);
      if (ec && ec != std::errc::file_exists) {
        std::fprintf(stderr, "populate: link %s: %s\n", (dir / rel).c_str(), ec.message().c_str());
        return 1;
      }
    }
    ++made;
    if ((i + 1) % 1000 == 0) {
      std::printf("[tenants] populate %d/%d (%.1f s)\n", i + 1, tenants, SecondsSince(t0));
      std::fflush(stdout);
    }
  }
  std::printf("[tenants] populate: %d tenants made, %d present, %zu files each, %.1f s\n", made,
              tenants, files.size(), SecondsSince(t0));
  return 0;
}

// ---------------------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------------------

struct Options {
  std::string server, model_root, store_dir, out_dir = "out/tenants";
  int tenants = 11000, streams = 8, batch = 8, seed = 1;
  int comp_pid = 0, inf_pid = 0;
  double seconds = 120, zipf = 1.0, window = 10, list_every = 0.5, deadline = 30;
};

struct Sample {
  double t = 0;   // seconds since the run started (at the answer)
  double ms = 0;  // client latency
  bool ok = false;
  bool cold = false;     // the server loaded the avatar and/or the model for it
  bool listing = false;  // sent in a window where ListModels ran
  double avatar_load_ms = 0, model_load_ms = 0;  // model: the inference model's part
  int tenant = 0;
  std::string code;
};

using lipsync::bench::DropCached;
using lipsync::bench::ProcMem;
using lipsync::bench::ReadProcMem;
using lipsync::bench::SyntheticSpeech;

// p in percent (nearest rank).
double Percentile(std::vector<double> v, double p) {
  return lipsync::bench::Percentile(std::move(v), p / 100.0);
}

class Run {
 public:
  explicit Run(Options o) : o_(std::move(o)) {}
  int Main();

 private:
  std::shared_ptr<grpc::Channel> NewChannel(int salt) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(100 << 20);
    args.SetInt("lipsync.tenants.channel", salt);  // a connection of its own
    return grpc::CreateCustomChannel(o_.server, grpc::InsecureChannelCredentials(), args);
  }
  bool Running() const { return !stop_.load(); }
  bool ListingWindow() const {
    return int(SecondsSince(start_) / o_.window) % 2 == 1;  // odd windows list
  }
  void Log(const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu_);
    std::printf("[tenants %6.1fs] %s\n", SecondsSince(start_), line.c_str());
    std::fflush(stdout);
  }
  void Stream(int s);
  void Lister();
  void Sampler();
  void ColdFiles(int tenant);
  std::string Report(double wall_s);

  Options o_;
  std::vector<double> cdf_;   // Zipf over popularity ranks
  std::vector<int> by_rank_;  // rank -> tenant
  std::string speech_;
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::mutex mu_, log_mu_;
  std::vector<Sample> samples_;
  struct ListCall {
    double t = 0, ms = 0;
    int entries = 0;
    std::string code;
  };
  std::vector<ListCall> lists_;
  struct Mem {
    double t = 0;
    ProcMem comp, inf;
  };
  std::vector<Mem> mem_;
  std::map<std::string, std::vector<fs::path>> store_files_;  // tenant -> prepared files
};

void Run::ColdFiles(int tenant) {
  std::error_code ec;
  const std::string id = TenantId(tenant);
  for (auto it = fs::recursive_directory_iterator(fs::path(o_.model_root) / id, ec);
       !ec && it != fs::end(it); it.increment(ec)) {
    if (it->is_regular_file(ec)) DropCached(it->path());
  }
  if (o_.store_dir.empty()) return;
  // The prepared avatar file(s): any file in the store whose name starts with the id.
  for (auto it = fs::directory_iterator(o_.store_dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, id.size(), id) == 0 &&
        (name.size() == id.size() || !std::isdigit(static_cast<unsigned char>(name[id.size()])))) {
      DropCached(it->path());
    }
  }
}

void Run::Stream(int s) {
  auto stub = compositing::CompositingService::NewStub(NewChannel(s + 1));
  std::mt19937_64 rng(uint64_t(o_.seed) * 1000003u + uint64_t(s));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int total = 250;
  while (Running()) {
    const double x = u(rng);
    const int rank = int(std::lower_bound(cdf_.begin(), cdf_.end(), x) - cdf_.begin());
    const int tenant = by_rank_[size_t(std::min<int>(rank, o_.tenants - 1))];
    ColdFiles(tenant);
    lipsync::audio::BatchAudioSpec spec;
    spec.start_frame = 0;
    spec.batch_size = o_.batch;
    spec.utterance_frames = total;
    auto pcm = lipsync::audio::SliceBatchAudio(speech_, spec);
    if (!pcm.ok()) {
      Log("driver bug: " + pcm.status().ToString());
      stop_ = true;
      return;
    }
    compositing::CompositeBatchRequest request;
    request.set_model_id(TenantId(tenant));
    request.set_batch_size(o_.batch);
    request.set_start_frame_idx(0);
    request.set_raw_audio(std::move(*pcm));
    request.set_sample_rate(16000);
    request.set_utterance_frames(total);
    request.set_output_format(compositing::JPEG);
    compositing::CompositeBatchResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(int64_t(o_.deadline * 1000)));
    const bool listing = ListingWindow();
    const auto t0 = Clock::now();
    grpc::Status status = stub->InferBatchComposite(&context, request, &response);
    Sample smp;
    smp.ms = SecondsSince(t0) * 1000.0;
    smp.t = SecondsSince(start_);
    smp.ok = status.ok() && response.composited_frames_size() == o_.batch;
    smp.code = status.ok() ? (smp.ok ? "OK" : "OK with missing frames")
                           : lipsync::rpc::StatusCodeName(status.error_code());
    smp.cold = response.model_loaded_on_demand();
    smp.avatar_load_ms = response.avatar_load_time_ms();
    smp.model_load_ms = std::max(0.0, double(response.model_load_time_ms()) - smp.avatar_load_ms);
    smp.listing = listing;
    smp.tenant = tenant;
    if (!status.ok()) {
      static std::atomic<int> shown{0};
      if (shown.fetch_add(1) < 10) {
        Log("request for " + TenantId(tenant) + ": " + smp.code + ": " +
            status.error_message().substr(0, 200));
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    samples_.push_back(std::move(smp));
  }
}

void Run::Lister() {
  auto stub = compositing::CompositingService::NewStub(NewChannel(1000));
  while (Running()) {
    if (!ListingWindow()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    lipsync::admin::ListModelsRequest request;
    request.set_include_available(true);
    request.set_limit(o_.tenants + 100);
    lipsync::admin::ListModelsResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const auto t0 = Clock::now();
    grpc::Status status = stub->ListModels(&context, request, &response);
    ListCall call;
    call.ms = SecondsSince(t0) * 1000.0;
    call.t = SecondsSince(start_);
    call.entries = response.models_size();
    call.code = lipsync::rpc::StatusCodeName(status.error_code());
    if (!status.ok() && lists_.empty()) Log("ListModels: " + status.error_message());
    {
      std::lock_guard<std::mutex> lock(mu_);
      lists_.push_back(call);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.list_every));
  }
}

void Run::Sampler() {
  double next_progress = 5;
  while (Running()) {
    Mem m;
    m.t = SecondsSince(start_);
    m.comp = ReadProcMem(o_.comp_pid);
    m.inf = ReadProcMem(o_.inf_pid);
    size_t n = 0, cold = 0, failed = 0;
    std::vector<double> recent;
    {
      std::lock_guard<std::mutex> lock(mu_);
      mem_.push_back(m);
      n = samples_.size();
      for (const auto& s : samples_) {
        cold += s.cold;
        failed += !s.ok;
        if (s.t > m.t - 5) recent.push_back(s.ms);
      }
    }
    if (m.t >= next_progress) {
      next_progress += 5;
      char line[320];
      std::snprintf(line, sizeof line,
                    "%zu requests (%zu cold, %zu failed); last 5 s p50 %.0f ms p99 %.0f ms; "
                    "RSS compositing %.0f MB (anon %.0f), inference %.0f MB (anon %.0f)",
                    n, cold, failed, Percentile(recent, 50), Percentile(recent, 99),
                    double(m.comp.rss_kb) / 1024, double(m.comp.anon_kb) / 1024,
                    double(m.inf.rss_kb) / 1024, double(m.inf.anon_kb) / 1024);
      Log(line);
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

std::string Fmt(double v, int digits = 0) {
  if (std::isnan(v)) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

std::string Run::Report(double wall_s) {
  std::ostringstream r;
  std::vector<double> hot, cold, avatar, model, hot_list, hot_quiet, all_list, all_quiet;
  std::map<std::string, int> codes;
  size_t cold_with_avatar = 0, cold_with_model = 0;
  for (const auto& s : samples_) {
    ++codes[s.code];
    if (!s.ok) continue;
    (s.cold ? cold : hot).push_back(s.ms);
    (s.listing ? all_list : all_quiet).push_back(s.ms);
    if (!s.cold) (s.listing ? hot_list : hot_quiet).push_back(s.ms);
    if (s.cold && s.avatar_load_ms > 0) {
      avatar.push_back(s.avatar_load_ms);
      ++cold_with_avatar;
    }
    if (s.cold && s.model_load_ms > 0) {
      model.push_back(s.model_load_ms);
      ++cold_with_model;
    }
  }
  auto row = [&](const char* name, const std::vector<double>& v) {
    r << "| " << name << " | " << v.size() << " | " << Fmt(Percentile(v, 50)) << " | "
      << Fmt(Percentile(v, 90)) << " | " << Fmt(Percentile(v, 99)) << " | "
      << Fmt(v.empty() ? std::nan("") : *std::max_element(v.begin(), v.end())) << " |\n";
  };
  r << "# 11,000-tenant run\n\n"
    << o_.tenants << " tenants, Zipf s=" << o_.zipf << ", " << o_.streams << " streams of "
    << o_.batch << "-frame raw-audio batches for " << Fmt(wall_s, 1) << " s against `" << o_.server
    << "`. Every tenant's files (and prepared avatar file) dropped from the page cache before "
       "each of its requests.\n\n"
    << "| requests (ms) | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n";
  row("hot (nothing loaded for it)", hot);
  row("cold (avatar and/or model loaded)", cold);
  row("cold: avatar load part", avatar);
  row("cold: model load part", model);
  row("hot, ListModels not running", hot_quiet);
  row("hot, ListModels running", hot_list);
  row("all, ListModels not running", all_quiet);
  row("all, ListModels running", all_list);
  r << "\nStatus: ";
  for (const auto& [code, n] : codes) r << code << " " << n << "; ";
  r << "\n\nCold requests: " << cold.size() << " (" << Fmt(double(cold.size()) / wall_s, 2)
    << "/s; " << cold_with_avatar << " loaded an avatar, " << cold_with_model
    << " a model). Distinct tenants asked: ";
  {
    std::vector<char> seen(size_t(o_.tenants), 0);
    size_t distinct = 0;
    for (const auto& s : samples_) distinct += !seen[size_t(s.tenant)]++;
    r << distinct << ".\n\n";
  }
  std::vector<double> list_ms;
  int entries = 0;
  for (const auto& c : lists_) {
    if (c.code == "OK") list_ms.push_back(c.ms);
    entries = std::max(entries, c.entries);
  }
  r << "ListModels (include_available, limit " << o_.tenants + 100 << "): " << lists_.size()
    << " calls, " << entries << " entries, p50 " << Fmt(Percentile(list_ms, 50)) << " ms, p99 "
    << Fmt(Percentile(list_ms, 99)) << " ms.\n\n";
  r << "Memory (MB; anonymous / file-backed):\n\n| t (s) | compositing anon | compositing file "
       "| inference anon | inference file |\n|---|---|---|---|---|\n";
  const size_t step = std::max<size_t>(1, mem_.size() / 12);
  for (size_t i = 0; i < mem_.size(); i += step) {
    const auto& m = mem_[i];
    r << "| " << Fmt(m.t) << " | " << Fmt(double(m.comp.anon_kb) / 1024) << " | "
      << Fmt(double(m.comp.file_kb) / 1024) << " | " << Fmt(double(m.inf.anon_kb) / 1024) << " | "
      << Fmt(double(m.inf.file_kb) / 1024) << " |\n";
  }
  if (!mem_.empty()) {
    ProcMem peak_c, peak_i;
    for (const auto& m : mem_) {
      peak_c.anon_kb = std::max(peak_c.anon_kb, m.comp.anon_kb);
      peak_c.file_kb = std::max(peak_c.file_kb, m.comp.file_kb);
      peak_i.anon_kb = std::max(peak_i.anon_kb, m.inf.anon_kb);
      peak_i.file_kb = std::max(peak_i.file_kb, m.inf.file_kb);
    }
    r << "| peak | " << Fmt(double(peak_c.anon_kb) / 1024) << " | "
      << Fmt(double(peak_c.file_kb) / 1024) << " | " << Fmt(double(peak_i.anon_kb) / 1024) << " | "
      << Fmt(double(peak_i.file_kb) / 1024) << " |\n";
  }
  return r.str();
}

int Run::Main() {
  if (o_.tenants < 1 || o_.streams < 1 || o_.batch < 1 || o_.seconds <= 0 || o_.zipf < 0) {
    std::fprintf(stderr, "run: bad options\n");
    return 2;
  }
  double sum = 0;
  cdf_.resize(size_t(o_.tenants));
  for (int k = 0; k < o_.tenants; ++k) {
    sum += 1.0 / std::pow(double(k + 1), o_.zipf);
    cdf_[size_t(k)] = sum;
  }
  for (auto& c : cdf_) c /= sum;
  by_rank_.resize(size_t(o_.tenants));
  for (int i = 0; i < o_.tenants; ++i) by_rank_[size_t(i)] = i;
  std::mt19937_64 shuffle(uint64_t(o_.seed));
  std::shuffle(by_rank_.begin(), by_rank_.end(), shuffle);
  speech_ = SyntheticSpeech(250);
  std::error_code ec;
  fs::create_directories(o_.out_dir, ec);

  start_ = Clock::now();
  std::vector<std::thread> threads;
  for (int s = 0; s < o_.streams; ++s) threads.emplace_back([this, s] { Stream(s); });
  threads.emplace_back([this] { Lister(); });
  threads.emplace_back([this] { Sampler(); });
  std::this_thread::sleep_for(std::chrono::duration<double>(o_.seconds));
  stop_ = true;
  for (auto& t : threads) t.join();
  const double wall = SecondsSince(start_);

  std::ofstream csv(o_.out_dir + "/requests.csv");
  csv << "t_s,tenant,ms,ok,cold,avatar_load_ms,model_load_ms,listing,code\n";
  for (const auto& s : samples_) {
    csv << Fmt(s.t, 3) << "," << TenantId(s.tenant) << "," << Fmt(s.ms, 2) << "," << s.ok << ","
        << s.cold << "," << Fmt(s.avatar_load_ms, 2) << "," << Fmt(s.model_load_ms, 2) << ","
        << s.listing << "," << s.code << "\n";
  }
  std::ofstream mem(o_.out_dir + "/memory.csv");
  mem << "t_s,compositing_anon_kb,compositing_file_kb,inference_anon_kb,inference_file_kb\n";
  for (const auto& m : mem_) {
    mem << Fmt(m.t, 1) << "," << m.comp.anon_kb << "," << m.comp.file_kb << "," << m.inf.anon_kb
        << "," << m.inf.file_kb << "\n";
  }
  const std::string report = Report(wall);
  std::ofstream(o_.out_dir + "/report.md") << report;
  std::printf("%s", report.c_str());
  size_t failed = 0;
  for (const auto& s : samples_) failed += !s.ok;
  return failed == 0 ? 0 : 1;
}

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "tenants_bench: %s\n"
               "usage: tenants_bench populate --base DIR --model-root DIR --tenants N\n"
               "       tenants_bench run --server HOST:PORT --model-root DIR --tenants N "
               "[--seconds S] [--streams N] [--batch N] [--zipf S] [--seed N] [--window S] "
               "[--list-every S] [--deadline S] [--store-dir DIR] [--compositing-pid N] "
               "[--inference-pid N] [--out DIR]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage("missing subcommand");
  const std::string cmd = argv[1];
  auto flags =
      lipsync::Flags::Parse(argc - 2, argv + 2,
                            {"base", "model-root", "tenants", "server", "store-dir", "out",
                             "streams", "batch", "seed", "compositing-pid", "inference-pid",
                             "seconds", "zipf", "window", "list-every", "deadline", "inference"});
  if (!flags.ok()) return Usage(flags.status().message());
  std::string error;
  auto get_int = [&](const char* name, int* out) {
    auto v = flags->GetInt(name, *out);
    if (!v.ok())
      error = v.status().message();
    else
      *out = int(*v);
  };
  auto get_double = [&](const char* name, double* out) {
    auto v = flags->GetDouble(name, *out);
    if (!v.ok())
      error = v.status().message();
    else
      *out = *v;
  };
  Options o;
  o.model_root = flags->GetString("model-root");
  get_int("tenants", &o.tenants);
  if (cmd == "populate") {
    const std::string base = flags->GetString("base");
    if (!error.empty()) return Usage(error);
    if (base.empty() || o.model_root.empty())
      return Usage("populate needs --base and --model-root");
    return Populate(base, o.model_root, o.tenants);
  }
  if (cmd == "list") {  // times ListModels over every tenant (no traffic)
    o.server = flags->GetString("server");
    const std::string inference = flags->GetString("inference");
    if (o.server.empty()) return Usage("list needs --server");
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(100 << 20);
    auto stub = compositing::CompositingService::NewStub(
        grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args));
    std::unique_ptr<inference::InferenceService::Stub> inf;
    if (!inference.empty()) {
      inf = inference::InferenceService::NewStub(
          grpc::CreateCustomChannel(inference, grpc::InsecureChannelCredentials(), args));
    }
    for (int i = 0; i < 3; ++i) {
      // --inference: the inference server's own list first (the compositing server asks it
      // for the same list and merges its avatars in).
      for (int side = inf ? 0 : 1; side < 2; ++side) {
        lipsync::admin::ListModelsRequest request;
        request.set_include_available(true);
        request.set_limit(o.tenants + 100);
        lipsync::admin::ListModelsResponse response;
        grpc::ClientContext context;
        const auto t0 = Clock::now();
        grpc::Status status = side == 0 ? inf->ListModels(&context, request, &response)
                                        : stub->ListModels(&context, request, &response);
        std::printf("ListModels (%s): %s, %d entries, %.1f ms\n",
                    side == 0 ? "inference" : "compositing",
                    lipsync::rpc::StatusCodeName(status.error_code()), response.models_size(),
                    SecondsSince(t0) * 1000);
      }
    }
    return 0;
  }
  if (cmd != "run") return Usage("unknown subcommand '" + cmd.substr(0, 40) + "'");
  o.server = flags->GetString("server");
  o.store_dir = flags->GetString("store-dir");
  o.out_dir = flags->GetString("out", o.out_dir);
  get_int("streams", &o.streams);
  get_int("batch", &o.batch);
  get_int("seed", &o.seed);
  get_int("compositing-pid", &o.comp_pid);
  get_int("inference-pid", &o.inf_pid);
  get_double("seconds", &o.seconds);
  get_double("zipf", &o.zipf);
  get_double("window", &o.window);
  get_double("list-every", &o.list_every);
  get_double("deadline", &o.deadline);
  if (!error.empty()) return Usage(error);
  if (o.server.empty() || o.model_root.empty()) return Usage("run needs --server and --model-root");
  if (o.streams > 256 || o.batch > 64 || o.window <= 0 || o.list_every <= 0 || o.deadline <= 0) {
    return Usage("--streams 1..256, --batch 1..64, --window/--list-every/--deadline > 0");
  }
  return Run(std::move(o)).Main();
}
