// ssm-batch: offline processing of many files through ssm-server (the ProcessFile rpc), J at a
// time, to DIR/<name>.npy, with progress on stderr. Exit code 0 only if every file succeeded.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "clients/lib/client_input.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/ssm_client.h"
#include "clients/tools/tool_flags.h"
#include "common/io/npy.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string server, model, output_dir, format = "auto";
  std::vector<std::string> files;
  int jobs = 2;
  int raw_rate = 0;
  bool force = false;
  client::ConnectOptions connect;
  double idle_timeout_s = 120;
};

// What happens to one input file.
struct Job {
  std::string input;
  fs::path output;
  std::string problem;  // set up front: the file is not processed
};

// Per-file lines and a one-line progress bar on stderr (the bar only on a terminal).
class Reporter {
 public:
  explicit Reporter(size_t total) : total_(total), tty_(isatty(STDERR_FILENO)) {}

  void FileDone(bool ok, int64_t frames, const std::string& line) {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    if (!ok) ++failed_;
    frames_done_ += frames;
    ClearBarLocked();
    std::fprintf(stderr, "%s\n", line.c_str());
    DrawBarLocked();
  }
  // Frames of the files in flight changed by `delta`; redrawn at most 10 times a second.
  void FramesInFlight(int64_t delta) {
    std::lock_guard<std::mutex> lock(mu_);
    frames_in_flight_ += delta;
    const Clock::time_point now = Clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(100)) return;
    DrawBarLocked();
  }
  void Finish() {
    std::lock_guard<std::mutex> lock(mu_);
    ClearBarLocked();
  }
  size_t failed() const { return failed_; }
  int64_t frames() const { return frames_done_; }

 private:
  void DrawBarLocked() {
    if (!tty_) return;
    last_draw_ = Clock::now();
    const int width = 30, filled = total_ ? int(width * done_ / total_) : width;
    std::fprintf(stderr, "\r[%s%s] %zu/%zu files, %lld frames, %zu failed ",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), done_,
                 total_, (long long)(frames_done_ + frames_in_flight_), failed_);
    std::fflush(stderr);
    bar_drawn_ = true;
  }
  void ClearBarLocked() {
    if (bar_drawn_) std::fprintf(stderr, "\r\033[K");
    bar_drawn_ = false;
  }

  std::mutex mu_;  // guards everything below and stderr
  const size_t total_;
  const bool tty_;
  size_t done_ = 0, failed_ = 0;
  int64_t frames_done_ = 0, frames_in_flight_ = 0;
  bool bar_drawn_ = false;
  Clock::time_point last_draw_;
};

// Processes one file; returns its frame count. Writes through a temporary file and a rename, so
// an interrupted run never leaves a partial output that a later run would skip.
StatusOr<int64_t> ProcessOne(client::Client& client, const ssmserve::v1::ModelInfo& model,
                             const Args& args, const Job& job, Reporter& reporter) {
  SSM_ASSIGN_OR_RETURN(client::ClientInput input,
                       client::ReadClientInput(job.input, model, {args.raw_rate}));
  client::FileRequest request;
  request.model = model.name();
  SSM_ASSIGN_OR_RETURN(request.format,
                       client::ChoosePayloadFormat(args.format, input.is_audio(), input.fits_s16));
  request.values_per_row = input.is_audio() ? 1 : model.d_in();
  request.label = "ssm-batch " + fs::path(job.input).filename().string();
  request.idle_timeout_s = args.idle_timeout_s;
  int64_t shown = 0;
  auto outputs = client.ProcessFile(request, input.values, [&](const client::FileProgress& p) {
    reporter.FramesInFlight(p.frames_received - shown);
    shown = p.frames_received;
  });
  reporter.FramesInFlight(-shown);
  if (!outputs.ok()) return outputs.status();
  const fs::path tmp = job.output.string() + fmt::format(".tmp{}", getpid());
  SSM_RETURN_IF_ERROR(
      WriteNpy(tmp.string(), {outputs->frames, int64_t(outputs->d_out)}, outputs->values.data()));
  std::error_code ec;
  fs::rename(tmp, job.output, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return InternalError(fmt::format("cannot move the output to {}", job.output.string()));
  }
  return outputs->frames;
}

// Output paths for the inputs; a clash or an existing output (without --force) is noted.
std::vector<Job> PlanJobs(const Args& args, size_t* skipped) {
  std::vector<Job> jobs;
  std::map<fs::path, std::string> claimed;  // output -> the input that writes it
  for (const std::string& file : args.files) {
    Job job{file, fs::path(args.output_dir) / (fs::path(file).stem().string() + ".npy"), ""};
    auto [it, fresh] = claimed.emplace(job.output, file);
    if (!fresh) {
      job.problem = fmt::format("{} would also write {} (from {}); rename one of them", file,
                                job.output.string(), it->second);
    } else if (!args.force && fs::exists(job.output)) {
      ++*skipped;
      continue;
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

int Run(const Args& args) {
  const Clock::time_point start = Clock::now();
  std::error_code ec;
  fs::create_directories(args.output_dir, ec);
  if (ec || !fs::is_directory(args.output_dir)) {
    std::fprintf(stderr, "ssm-batch: error: cannot create the output directory %s: %s\n",
                 args.output_dir.c_str(), ec.message().c_str());
    return 1;
  }
  auto client = client::Client::Connect(args.server, args.connect);
  if (!client.ok()) {
    std::fprintf(stderr, "ssm-batch: error: %s\n", client.status().ToString().c_str());
    return 1;
  }
  auto model = (*client)->GetModelInfo(args.model);
  if (!model.ok()) {
    std::fprintf(stderr, "ssm-batch: error: %s\n", model.status().ToString().c_str());
    return 1;
  }

  size_t skipped = 0;
  const std::vector<Job> jobs = PlanJobs(args, &skipped);
  if (skipped > 0)
    std::fprintf(stderr,
                 "ssm-batch: skipping %zu file(s) whose output exists (--force redoes "
                 "them)\n",
                 skipped);
  Reporter reporter(jobs.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      const Job& job = jobs[i];
      const Clock::time_point t0 = Clock::now();
      StatusOr<int64_t> frames = job.problem.empty()
                                     ? ProcessOne(**client, *model, args, job, reporter)
                                     : StatusOr<int64_t>(InvalidArgumentError(job.problem));
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (frames.ok()) {
        reporter.FileDone(true, *frames,
                          fmt::format("ok    {} -> {} ({} frames, {:.2f} s)", job.input,
                                      job.output.string(), *frames, s));
      } else {
        reporter.FileDone(false, 0,
                          fmt::format("FAIL  {}: {}", job.input, frames.status().ToString()));
      }
    }
  };
  std::vector<std::thread> threads;
  for (int j = 0; j < std::min<int>(args.jobs, int(jobs.size())); ++j) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  reporter.Finish();

  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::fprintf(stderr,
               "ssm-batch: %zu file(s): %zu done, %zu skipped, %zu failed; %lld frames in "
               "%.2f s\n",
               args.files.size(), jobs.size() - reporter.failed(), skipped, reporter.failed(),
               (long long)reporter.frames(), wall_s);
  return reporter.failed() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::Args args;
  CLI::App app{
      "Processes files offline through ssm-server and writes DIR/<name>.npy, float32 "
      "(frames, d_out), for each. Files whose output exists are skipped unless --force. "
      "Exit code 0 only if every file succeeded."};
  ssm::tools::AddServerFlags(app, &args.server, &args.model, &args.format, &args.connect);
  ssm::tools::AddRawRateFlag(app, &args.raw_rate);
  app.add_option("--output-dir", args.output_dir, "Output directory (created if missing)")
      ->required();
  app.add_option("--jobs,-j", args.jobs, "Files processed concurrently")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_flag("--force", args.force, "Process files whose output already exists");
  app.add_option("--idle-timeout-s", args.idle_timeout_s,
                 "Fail a file if the server makes no progress on it for this long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("files", args.files,
                 "Input files: audio (WAV/FLAC/.raw/1-D .npy) or (T, d_in) .npy frames")
      ->required();
  CLI11_PARSE(app, argc, argv);
  return ssm::Run(args);
}
