// Every cpu op against the reference backend on random shapes, including real model sizes and
// edge cases (T = 1, T not a multiple of anything, many streams of different lengths).
#include <gtest/gtest.h>

#include "tests/kernels/op_test_util.h"

namespace ssm {
namespace {

using testing::NormalizedMaxError;
using testing::OwnedBatch;
using testing::Rng;

class OpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing::TestSeed();
    rng_ = std::make_unique<Rng>(seed_);
    ref_ = CreateBackend("reference", 1);
    cpu_ = CreateBackend("cpu", 2);
  }
  std::string Case(const std::string& what) const {
    return what + " (seed " + std::to_string(seed_) + ", set SSM_TEST_SEED to replay)";
  }
  uint64_t seed_ = 0;
  std::unique_ptr<Rng> rng_;
  std::unique_ptr<Backend> ref_, cpu_;
};

struct LinearShape {
  int rows, in, out, ld_extra;
  const char* what;
};

TEST_F(OpsTest, LinearMatchesReference) {
  const LinearShape shapes[] = {{1, 80, 256, 0, "input_proj, T=1"},
                                {10, 256, 1024, 0, "bench-m in_proj"},
                                {643, 256, 1024, 5, "in_proj, 64 streams"},
                                {37, 512, 48, 0, "x_proj"},
                                {29, 16, 512, 32, "dt_proj from slice"},
                                {21, 512, 256, 0, "out_proj"},
                                {9, 256, 2, 0, "head"},
                                {3, 7, 33, 1, "odd sizes"},
                                {130, 768, 3072, 0, "bench-l in_proj"}};
  for (const auto& s : shapes) {
    for (bool bias : {true, false}) {
      const int ld_x = s.in + s.ld_extra;
      auto w = rng_->Uniform(size_t(s.out) * s.in, -1, 1);
      auto b = rng_->Uniform(s.out, -1, 1);
      auto x = rng_->Normal(size_t(s.rows) * ld_x);
      std::vector<float> y_ref(size_t(s.rows) * s.out), y_cpu(y_ref.size());
      auto wr = ref_->PrepareLinear(w.data(), bias ? b.data() : nullptr, s.out, s.in);
      auto wc = cpu_->PrepareLinear(w.data(), bias ? b.data() : nullptr, s.out, s.in);
      ref_->Linear(*wr, x.data(), ld_x, s.rows, y_ref.data(), s.out);
      cpu_->Linear(*wc, x.data(), ld_x, s.rows, y_cpu.data(), s.out);
      EXPECT_LE(NormalizedMaxError(y_cpu, y_ref), testing::kLinearMaxRelErr) << Case(s.what);
    }
  }
}

// A row's output is bitwise the same computed alone, at any position of any batch size.
TEST_F(OpsTest, LinearIsBatchInvariant) {
  const int in = 256, out = 1024 + 7, rows = 203;
  auto w = rng_->Uniform(size_t(out) * in, -1, 1);
  auto b = rng_->Uniform(out, -1, 1);
  auto x = rng_->Normal(size_t(rows) * in);
  auto wc = cpu_->PrepareLinear(w.data(), b.data(), out, in);
  std::vector<float> all(size_t(rows) * out);
  cpu_->Linear(*wc, x.data(), in, rows, all.data(), out);
  for (int r : {0, 1, 7, 8, 63, 64, 100, 202}) {
    for (int count : {1, 3, 9}) {
      if (r + count > rows) continue;
      std::vector<float> part(size_t(count) * out);
      cpu_->Linear(*wc, x.data() + size_t(r) * in, in, count, part.data(), out);
      for (int i = 0; i < count; ++i)
        for (int o = 0; o < out; ++o)
          ASSERT_EQ(part[size_t(i) * out + o], all[size_t(r + i) * out + o])
              << Case("row " + std::to_string(r + i) + " in a batch of " + std::to_string(count));
    }
  }
}

TEST_F(OpsTest, RmsNormMatchesReference) {
  for (auto [rows, dim] : {std::pair{1, 256}, {17, 37}, {130, 768}, {5, 16}}) {
    auto x = rng_->Normal(size_t(rows) * dim, 3.0f);
    auto w = rng_->Uniform(dim, 0.5f, 1.5f);
    std::vector<float> y_ref(x.size()), y_cpu(x.size());
    ref_->RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, y_ref.data());
    cpu_->RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, y_cpu.data());
    EXPECT_LE(NormalizedMaxError(y_cpu, y_ref), testing::kNormMaxRelErr)
        << Case("rows " + std::to_string(rows) + " dim " + std::to_string(dim));
  }
}

// Random varlen batch: lengths include 0, 1, fewer than K-1 and long; slots are shuffled.
OwnedBatch RandomBatch(Rng& rng, int n_seq, int max_len, int capacity) {
  std::vector<int> slots(capacity);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng.gen());
  OwnedBatch batch;
  for (int s = 0; s < n_seq; ++s) {
    const int pick = rng.Int(0, 9);
    const int len = pick == 0 ? 0 : pick == 1 ? 1 : pick == 2 ? 2 : rng.Int(1, max_len);
    batch.Add(len, slots[s]);
  }
  return batch;
}

TEST_F(OpsTest, CausalConvMatchesReferenceOverChunks) {
  struct Shape {
    int E, K, n_seq, max_len;
    const char* what;
  };
  const Shape shapes[] = {
      {512, 4, 1, 10, "bench-m, one stream"}, {512, 4, 64, 20, "bench-m, 64 streams"},
      {37, 3, 9, 50, "odd channels"},         {16, 2, 5, 7, "K=2"},
      {48, 1, 4, 5, "K=1 (no tail)"},         {1536, 4, 3, 300, "bench-l, long chunks"}};
  for (const auto& s : shapes) {
    const int capacity = s.n_seq + 3, ld_x = 2 * s.E;  // x is the first half of in_proj's output
    auto w = rng_->Uniform(size_t(s.K) * s.E, -0.5f, 0.5f);
    auto bias = rng_->Uniform(s.E, -0.5f, 0.5f);
    const size_t stride = size_t(std::max(s.K - 1, 0)) * s.E;
    auto tail_ref = rng_->Normal(capacity * stride);
    auto tail_cpu = tail_ref;
    for (int chunk = 0; chunk < 3; ++chunk) {  // the tail carries across chunks
      OwnedBatch batch = RandomBatch(*rng_, s.n_seq, s.max_len, capacity);
      auto x = rng_->Normal(size_t(batch.rows()) * ld_x);
      std::vector<float> out_ref(size_t(batch.rows()) * s.E), out_cpu(out_ref.size());
      CausalConvArgs a;
      a.channels = s.E;
      a.kernel = s.K;
      a.x = x.data();
      a.ld_x = ld_x;
      a.w = w.data();
      a.bias = bias.data();
      a.ld_out = s.E;
      a.tail = {tail_ref.data(), stride};
      a.out = out_ref.data();
      ref_->CausalConv(batch.view(), a);
      a.tail = {tail_cpu.data(), stride};
      a.out = out_cpu.data();
      cpu_->CausalConv(batch.view(), a);
      const std::string what = std::string(s.what) + ", chunk " + std::to_string(chunk);
      EXPECT_LE(NormalizedMaxError(out_cpu, out_ref), testing::kConvMaxRelErr) << Case(what);
      EXPECT_EQ(tail_cpu, tail_ref) << Case(what + ": tail (a copy of inputs) must match exactly");
    }
  }
}

struct ScanCase {
  int E, N, n_seq, max_len;
  const char* what;
};

TEST_F(OpsTest, SelectiveScanMatchesReferenceOverChunks) {
  const ScanCase cases[] = {{512, 16, 1, 1, "bench-m, T=1"},
                            {512, 16, 64, 20, "bench-m, 64 streams"},
                            {37, 1, 7, 33, "N=1, odd channels"},
                            {40, 5, 5, 61, "N=5"},
                            {64, 64, 3, 40, "N=64"},
                            {1536, 16, 2, 700, "bench-l, long"}};
  for (const auto& c : cases) {
    const int capacity = c.n_seq + 2, R = 8, ld_bc = R + 2 * c.N;
    std::vector<float> A(size_t(c.N) * c.E), D = rng_->Uniform(c.E, 0.5f, 1.5f);
    for (int n = 0; n < c.N; ++n)
      for (int e = 0; e < c.E; ++e)
        A[size_t(n) * c.E + e] = -float(n + 1) * (0.8f + 0.01f * (e % 40));
    auto h_ref = rng_->Normal(size_t(capacity) * c.N * c.E, 0.5f);
    auto h_cpu = h_ref;
    for (int chunk = 0; chunk < 3; ++chunk) {
      OwnedBatch batch = RandomBatch(*rng_, c.n_seq, c.max_len, capacity);
      const size_t rows = batch.rows();
      auto u = rng_->Normal(rows * c.E);
      auto dt = rng_->Uniform(rows * c.E, -7.0f, 3.0f);
      if (rows > 0) dt[0] = 25.0f;            // softplus threshold branch
      auto xp = rng_->Normal(rows * ld_bc);   // x_proj output: [dt_rank | B | C]
      auto z = rng_->Normal(rows * 2 * c.E);  // in_proj output: [x | z]
      std::vector<float> out_ref(rows * c.E), out_cpu(rows * c.E);
      SelectiveScanArgs a;
      a.channels = c.E;
      a.d_state = c.N;
      a.u = u.data();
      a.ld_u = c.E;
      a.dt = dt.data();
      a.ld_dt = c.E;
      a.B = xp.data() + R;
      a.C = xp.data() + R + c.N;
      a.ld_bc = ld_bc;
      a.z = z.data() + c.E;
      a.ld_z = 2 * c.E;
      a.A = A.data();
      a.D = D.data();
      a.ld_out = c.E;
      a.state = {h_ref.data(), size_t(c.N) * c.E};
      a.out = out_ref.data();
      ref_->SelectiveScan(batch.view(), a);
      a.state = {h_cpu.data(), size_t(c.N) * c.E};
      a.out = out_cpu.data();
      cpu_->SelectiveScan(batch.view(), a);
      const std::string what = std::string(c.what) + ", chunk " + std::to_string(chunk);
      EXPECT_LE(NormalizedMaxError(out_cpu, out_ref), testing::kScanMaxRelErr) << Case(what);
      EXPECT_LE(NormalizedMaxError(h_cpu, h_ref), testing::kScanMaxRelErr) << Case(what + " state");
    }
  }
}

TEST_F(OpsTest, ActivationsMatchDefinitions) {
  const int rows = 5, cols = 3;
  auto x = rng_->Normal(rows * cols, 4.0f);
  auto sm = x, sg = x, id = x;
  cpu_->ApplyActivation(Activation::kSoftmax, sm.data(), rows, cols);
  cpu_->ApplyActivation(Activation::kSigmoid, sg.data(), rows, cols);
  cpu_->ApplyActivation(Activation::kNone, id.data(), rows, cols);
  EXPECT_EQ(id, x);
  for (int r = 0; r < rows; ++r) {
    double sum = 0, denom = 0;
    for (int c = 0; c < cols; ++c) denom += std::exp(double(x[r * cols + c]));
    for (int c = 0; c < cols; ++c) {
      sum += sm[r * cols + c];
      EXPECT_NEAR(sm[r * cols + c], std::exp(double(x[r * cols + c])) / denom, 1e-6);
      EXPECT_NEAR(sg[r * cols + c], 1.0 / (1.0 + std::exp(-double(x[r * cols + c]))), 1e-6);
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
}

}  // namespace
}  // namespace ssm
