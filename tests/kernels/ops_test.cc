// Every op of every fast backend (cpu; cuda where the build and machine have it) against the
// reference backend, from tables of cases that name the model or path each covers: T = 1, odd
// sizes, real model sizes, many streams of different lengths in one batch, states carried over
// several calls. Inputs go to the backend's memory and results come back, so the same test runs
// on host and device backends. An op a backend lacks (Backend::Supports) is skipped, saying so.
#include <gtest/gtest.h>

#include <numeric>

#include "tests/kernels/op_test_util.h"

namespace ssm {
namespace {

using testing::NormalizedMaxError;
using testing::OwnedBatch;
using testing::Rng;

// Buffers in one backend's memory, made from host vectors and read back.
class OnBackend {
 public:
  explicit OnBackend(Backend* backend) : backend_(backend) {}
  float* Up(const std::vector<float>& host) {
    buffers_.push_back(backend_->Allocate(std::max<size_t>(host.size(), 1)));
    backend_->CopyToBackend(buffers_.back()->data(), host.data(), host.size());
    return buffers_.back()->data();
  }
  float* Zeros(size_t n) { return Up(std::vector<float>(n)); }
  std::vector<float> Down(const float* p, size_t n) {
    std::vector<float> host(n);
    backend_->CopyToHost(host.data(), p, n);
    return host;
  }

 private:
  Backend* backend_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
};

class OpsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    if (GetParam() == "cuda" && !CudaAvailable(&why)) GTEST_SKIP() << "no CUDA here: " << why;
    seed_ = testing::TestSeed();
    rng_ = std::make_unique<Rng>(seed_);
    ref_ = CreateBackend("reference", 1);
    fast_ = CreateBackend(GetParam(), 2);
    ASSERT_NE(fast_, nullptr);
    mem_ = std::make_unique<OnBackend>(fast_.get());
  }
  // Whether the backend has no kernel for `op` (the test then skips, saying so).
  bool Lacks(Op op) const { return !fast_->Supports(op); }
  std::string NoKernel(Op op) const {
    return "the " + GetParam() + " backend has no " + OpName(op) + " kernel";
  }
  std::string Case(const std::string& what) const {
    return GetParam() + ", " + what + " (seed " + std::to_string(seed_) +
           ", set SSM_TEST_SEED to replay)";
  }
  // Random varlen batch: lengths include 0, 1, 2 and up to max_len (exactly 1 when max_len is
  // 1); slots are shuffled over a pool of `capacity`.
  OwnedBatch RandomBatch(int n_seq, int max_len, int capacity) {
    std::vector<int> slots(capacity);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng_->gen());
    OwnedBatch batch;
    for (int s = 0; s < n_seq; ++s) {
      const int pick = rng_->Int(0, 9);
      const int len = max_len == 1 ? 1
                      : pick == 0  ? 0
                      : pick == 1  ? 1
                      : pick == 2  ? 2
                                   : rng_->Int(1, max_len);
      batch.Add(len, slots[s]);
    }
    return batch;
  }

  uint64_t seed_ = 0;
  std::unique_ptr<Rng> rng_;
  std::unique_ptr<Backend> ref_, fast_;
  std::unique_ptr<OnBackend> mem_;
};

struct LinearCase {
  int rows, in, out, ld_extra;
  const char* what;
};

TEST_P(OpsTest, LinearMatchesReference) {
  const LinearCase cases[] = {{1, 80, 256, 0, "input_proj, T=1"},
                              {10, 256, 1024, 0, "bench-m in_proj"},
                              {643, 256, 1024, 5, "in_proj, 64 streams"},
                              {37, 512, 48, 0, "x_proj"},
                              {29, 16, 512, 32, "dt_proj from a column slice"},
                              {21, 512, 256, 0, "out_proj"},
                              {9, 256, 2, 0, "head"},
                              {3, 7, 33, 1, "odd sizes"},
                              {17, 256, 1288, 0, "bench-m-mamba2 in_proj"},
                              {130, 768, 3072, 0, "bench-l in_proj"}};
  for (const LinearCase& c : cases) {
    for (bool bias : {true, false}) {
      const int ld_x = c.in + c.ld_extra;
      auto w = rng_->Uniform(size_t(c.out) * c.in, -1, 1);
      auto b = rng_->Uniform(c.out, -1, 1);
      auto x = rng_->Normal(size_t(c.rows) * ld_x);
      std::vector<float> y_ref(size_t(c.rows) * c.out);
      auto wr = ref_->PrepareLinear(w.data(), bias ? b.data() : nullptr, c.out, c.in);
      ref_->Linear(*wr, x.data(), ld_x, c.rows, y_ref.data(), c.out);
      auto wf = fast_->PrepareLinear(w.data(), bias ? b.data() : nullptr, c.out, c.in);
      float* y = mem_->Zeros(y_ref.size());
      fast_->Linear(*wf, mem_->Up(x), ld_x, c.rows, y, c.out);
      EXPECT_LE(NormalizedMaxError(mem_->Down(y, y_ref.size()), y_ref), testing::kLinearMaxRelErr)
          << Case(std::string(c.what) + (bias ? ", bias" : ""));
    }
  }
}

// A row's output is bitwise the same computed alone, at any position of any batch size.
TEST_P(OpsTest, LinearIsBatchInvariant) {
  const int in = 256, out = 1024 + 7, rows = 203;
  auto w = rng_->Uniform(size_t(out) * in, -1, 1);
  auto b = rng_->Uniform(out, -1, 1);
  auto x = rng_->Normal(size_t(rows) * in);
  auto wf = fast_->PrepareLinear(w.data(), b.data(), out, in);
  const float* dx = mem_->Up(x);
  float* dall = mem_->Zeros(size_t(rows) * out);
  fast_->Linear(*wf, dx, in, rows, dall, out);
  const std::vector<float> all = mem_->Down(dall, size_t(rows) * out);
  for (int r : {0, 1, 7, 8, 63, 64, 100, 202}) {
    for (int count : {1, 3, 9}) {
      if (r + count > rows) continue;
      float* dpart = mem_->Zeros(size_t(count) * out);
      fast_->Linear(*wf, dx + size_t(r) * in, in, count, dpart, out);
      const std::vector<float> part = mem_->Down(dpart, size_t(count) * out);
      for (int i = 0; i < count; ++i)
        for (int o = 0; o < out; ++o)
          ASSERT_EQ(part[size_t(i) * out + o], all[size_t(r + i) * out + o])
              << Case("row " + std::to_string(r + i) + " in a batch of " + std::to_string(count));
    }
  }
}

TEST_P(OpsTest, RmsNormMatchesReference) {
  for (auto [rows, dim] : {std::pair{1, 256}, {17, 37}, {130, 768}, {5, 16}}) {
    auto x = rng_->Normal(size_t(rows) * dim, 3.0f);
    auto w = rng_->Uniform(dim, 0.5f, 1.5f);
    std::vector<float> y_ref(x.size());
    ref_->RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, y_ref.data());
    float* y = mem_->Zeros(x.size());
    fast_->RmsNorm(mem_->Up(x), mem_->Up(w), rows, dim, 1e-5f, y);
    EXPECT_LE(NormalizedMaxError(mem_->Down(y, x.size()), y_ref), testing::kNormMaxRelErr)
        << Case("rows " + std::to_string(rows) + " dim " + std::to_string(dim));
  }
}

struct ConvCase {
  int C, K, n_seq, max_len, ld_x;
  const char* what;
};

TEST_P(OpsTest, CausalConvMatchesReferenceOverChunks) {
  const ConvCase cases[] = {{512, 4, 1, 10, 1024, "bench-m x of in_proj, one stream"},
                            {512, 4, 64, 20, 1024, "bench-m, 64 streams"},
                            {37, 3, 9, 50, 74, "odd channels"},
                            {16, 2, 5, 7, 32, "K=2"},
                            {48, 1, 4, 5, 96, "K=1 (no tail)"},
                            {768, 4, 8, 30, 1288, "bench-m-mamba2 xBC of in_proj"},
                            {1536, 4, 3, 300, 3072, "bench-l, long chunks"}};
  for (const ConvCase& c : cases) {
    const int capacity = c.n_seq + 3;
    auto w = rng_->Uniform(size_t(c.K) * c.C, -0.5f, 0.5f);
    auto bias = rng_->Uniform(c.C, -0.5f, 0.5f);
    const size_t stride = size_t(std::max(c.K - 1, 0)) * c.C;
    auto tail_ref = rng_->Normal(capacity * stride);
    float* tail = mem_->Up(tail_ref);
    const float *dw = mem_->Up(w), *db = mem_->Up(bias);
    for (int chunk = 0; chunk < 3; ++chunk) {  // the tail carries across chunks
      OwnedBatch batch = RandomBatch(c.n_seq, c.max_len, capacity);
      auto x = rng_->Normal(size_t(batch.rows()) * c.ld_x);
      std::vector<float> out_ref(size_t(batch.rows()) * c.C);
      CausalConvArgs a;
      a.channels = c.C;
      a.kernel = c.K;
      a.x = x.data();
      a.ld_x = c.ld_x;
      a.w = w.data();
      a.bias = bias.data();
      a.ld_out = c.C;
      a.tail = {tail_ref.data(), stride};
      a.out = out_ref.data();
      ref_->CausalConv(batch.view(), a);
      float* out = mem_->Zeros(out_ref.size());
      a.x = mem_->Up(x);
      a.w = dw;
      a.bias = db;
      a.tail = {tail, stride};
      a.out = out;
      fast_->CausalConv(batch.view(), a);
      const std::string what = std::string(c.what) + ", chunk " + std::to_string(chunk);
      EXPECT_LE(NormalizedMaxError(mem_->Down(out, out_ref.size()), out_ref),
                testing::kConvMaxRelErr)
          << Case(what);
      EXPECT_EQ(mem_->Down(tail, tail_ref.size()), tail_ref)
          << Case(what + ": tail (a copy of inputs) must match exactly");
    }
  }
}

struct ScanCase {
  int E, N, n_seq, max_len;
  const char* what;
};

TEST_P(OpsTest, SelectiveScanMatchesReferenceOverChunks) {
  const ScanCase cases[] = {{512, 16, 1, 1, "bench-m, T=1"},
                            {512, 16, 64, 20, "bench-m, 64 streams"},
                            {37, 1, 7, 33, "N=1, odd channels"},
                            {40, 5, 5, 61, "N=5"},
                            {64, 64, 3, 40, "N=64"},
                            {1536, 16, 2, 700, "bench-l, long"}};
  for (const ScanCase& c : cases) {
    const int capacity = c.n_seq + 2, R = 8, ld_bc = R + 2 * c.N;
    std::vector<float> A(size_t(c.N) * c.E), D = rng_->Uniform(c.E, 0.5f, 1.5f);
    for (int n = 0; n < c.N; ++n)
      for (int e = 0; e < c.E; ++e)
        A[size_t(n) * c.E + e] = -float(n + 1) * (0.8f + 0.01f * (e % 40));
    auto h_ref = rng_->Normal(size_t(capacity) * c.N * c.E, 0.5f);
    float* h = mem_->Up(h_ref);
    const float *dA = mem_->Up(A), *dD = mem_->Up(D);
    for (int chunk = 0; chunk < 3; ++chunk) {
      OwnedBatch batch = RandomBatch(c.n_seq, c.max_len, capacity);
      const size_t rows = batch.rows();
      auto u = rng_->Normal(rows * c.E);
      auto dt = rng_->Uniform(rows * c.E, -7.0f, 3.0f);
      if (rows > 0) dt[0] = 25.0f;            // softplus threshold branch
      auto xp = rng_->Normal(rows * ld_bc);   // x_proj output: [dt_rank | B | C]
      auto z = rng_->Normal(rows * 2 * c.E);  // in_proj output: [x | z]
      std::vector<float> out_ref(rows * c.E);
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
      float *dxp = mem_->Up(xp), *dz = mem_->Up(z), *out = mem_->Zeros(out_ref.size());
      a.u = mem_->Up(u);
      a.dt = mem_->Up(dt);
      a.B = dxp + R;
      a.C = dxp + R + c.N;
      a.z = dz + c.E;
      a.A = dA;
      a.D = dD;
      a.state = {h, size_t(c.N) * c.E};
      a.out = out;
      fast_->SelectiveScan(batch.view(), a);
      const std::string what = std::string(c.what) + ", chunk " + std::to_string(chunk);
      EXPECT_LE(NormalizedMaxError(mem_->Down(out, out_ref.size()), out_ref),
                testing::kScanMaxRelErr)
          << Case(what);
      EXPECT_LE(NormalizedMaxError(mem_->Down(h, h_ref.size()), h_ref), testing::kScanMaxRelErr)
          << Case(what + " state");
    }
  }
}

// Mamba-2 scan shapes: H heads of P channels in G groups, d_state N.
struct SsdCase {
  int H, P, G, N, n_seq, max_len;
  const char* what;
};

// The Mamba-2 scan's inputs for one call, laid out as the layer has them: x, B and C side by
// side as the conv writes them (plus slack columns), dt with a slack column.
struct SsdInputs {
  std::vector<float> xbc, dt;
  int ld_x, ld_dt;
  SsdScanArgs Args(const SsdCase& c, const float* xbc_p, const float* dt_p, const float* dt_bias,
                   const float* A, const float* D) const {
    const int E = c.H * c.P, GN = c.G * c.N;
    SsdScanArgs a;
    a.heads = c.H;
    a.head_dim = c.P;
    a.groups = c.G;
    a.d_state = c.N;
    a.x = xbc_p;
    a.ld_x = ld_x;
    a.B = xbc_p + E;
    a.C = xbc_p + E + GN;
    a.ld_bc = ld_x;
    a.dt = dt_p;
    a.ld_dt = ld_dt;
    a.dt_bias = dt_bias;
    a.A = A;
    a.D = D;
    a.ld_out = E;
    return a;
  }
};

class SsdParams {
 public:
  SsdParams(Rng& rng, const SsdCase& c)
      : A(rng.Uniform(c.H, -16.0f, -1.0f)),
        D(rng.Uniform(c.H, 0.5f, 1.5f)),
        dt_bias(rng.Uniform(c.H, -6.0f, -2.0f)) {}
  std::vector<float> A, D, dt_bias;
};

SsdInputs RandomSsdInputs(Rng& rng, const SsdCase& c, size_t rows) {
  SsdInputs in;
  in.ld_x = c.H * c.P + 2 * c.G * c.N + 3;
  in.ld_dt = c.H + 1;
  in.xbc = rng.Normal(rows * in.ld_x);
  in.dt = rng.Uniform(rows * in.ld_dt, -4.0f, 4.0f);
  if (rows > 0) in.dt[0] = 30.0f;  // softplus threshold branch
  return in;
}

const SsdCase kSsdCases[] = {
    {8, 64, 1, 128, 1, 1, "bench-m-mamba2 defaults, T=1"},
    {8, 64, 1, 128, 64, 10, "bench-m-mamba2, 64 streams of 10-frame chunks"},
    {4, 16, 2, 12, 7, 33, "SmallMamba2Config: 2 groups, d_state 12 (partial packets)"},
    {6, 5, 3, 7, 5, 61, "odd sizes everywhere"},
    {1, 1, 1, 1, 3, 40, "one head of one channel, d_state 1"},
    {24, 64, 1, 128, 2, 700, "bench-l-mamba2 sizes, long chunks"},
    {8, 8, 8, 16, 4, 50, "one group per head"},
};

TEST_P(OpsTest, SsdScanMatchesReferenceOverChunks) {
  if (Lacks(Op::kSsdScan)) GTEST_SKIP() << NoKernel(Op::kSsdScan);
  for (const SsdCase& c : kSsdCases) {
    const int E = c.H * c.P, capacity = c.n_seq + 2;
    const size_t slot = size_t(c.H) * c.P * c.N;
    const SsdParams p(*rng_, c);
    const float *dA = mem_->Up(p.A), *dD = mem_->Up(p.D), *dbias = mem_->Up(p.dt_bias);
    auto s_ref = rng_->Normal(capacity * slot, 0.5f);
    float* s = mem_->Up(s_ref);
    for (int chunk = 0; chunk < 3; ++chunk) {
      OwnedBatch batch = RandomBatch(c.n_seq, c.max_len, capacity);
      const size_t rows = batch.rows();
      const SsdInputs in = RandomSsdInputs(*rng_, c, rows);
      SsdScanArgs a =
          in.Args(c, in.xbc.data(), in.dt.data(), p.dt_bias.data(), p.A.data(), p.D.data());
      std::vector<float> out_ref(rows * E);
      a.state = {s_ref.data(), slot};
      a.out = out_ref.data();
      ref_->SsdScan(batch.view(), a);
      a = in.Args(c, mem_->Up(in.xbc), mem_->Up(in.dt), dbias, dA, dD);
      float* out = mem_->Zeros(out_ref.size());
      a.state = {s, slot};
      a.out = out;
      fast_->SsdScan(batch.view(), a);
      const std::string what = std::string(c.what) + ", chunk " + std::to_string(chunk);
      EXPECT_LE(NormalizedMaxError(mem_->Down(out, out_ref.size()), out_ref),
                testing::kScanMaxRelErr)
          << Case(what);
      EXPECT_LE(NormalizedMaxError(mem_->Down(s, s_ref.size()), s_ref), testing::kScanMaxRelErr)
          << Case(what + " state");
    }
  }
}

// The chunked (SSD) form against the reference recurrence, with the state carried between
// calls and chunk sizes that do and do not divide the sequences. The reference backend's own
// chunked form is checked the same way (SsdChunkedScanOfTheReference below).
void CheckChunkedAgainstRecurrence(Backend& ref, Backend& chunked, OnBackend& mem, Rng& rng,
                                   const std::function<OwnedBatch(int, int, int)>& make_batch,
                                   const std::function<std::string(const std::string&)>& name) {
  const SsdCase cases[] = {
      {8, 64, 1, 128, 2, 300, "bench-m-mamba2 defaults, offline segments"},
      {4, 16, 2, 12, 7, 70, "SmallMamba2Config: 2 groups, d_state 12, many streams"},
      {6, 5, 3, 7, 5, 61, "odd sizes everywhere"},
      {2, 8, 1, 16, 3, 1, "T=1"},
  };
  for (const SsdCase& c : cases) {
    for (int chunk : {1, 5, 64, 256}) {
      const int E = c.H * c.P, capacity = c.n_seq + 1;
      const size_t slot = size_t(c.H) * c.P * c.N;
      const SsdParams p(rng, c);
      const float *dA = mem.Up(p.A), *dD = mem.Up(p.D), *dbias = mem.Up(p.dt_bias);
      auto s_ref = rng.Normal(capacity * slot, 0.5f);
      float* s = mem.Up(s_ref);
      for (int call = 0; call < 2; ++call) {
        OwnedBatch batch = make_batch(c.n_seq, c.max_len, capacity);
        const size_t rows = batch.rows();
        const SsdInputs in = RandomSsdInputs(rng, c, rows);
        SsdScanArgs a =
            in.Args(c, in.xbc.data(), in.dt.data(), p.dt_bias.data(), p.A.data(), p.D.data());
        std::vector<float> out_ref(rows * E);
        a.state = {s_ref.data(), slot};
        a.out = out_ref.data();
        ref.SsdScan(batch.view(), a);
        a = in.Args(c, mem.Up(in.xbc), mem.Up(in.dt), dbias, dA, dD);
        float* out = mem.Zeros(out_ref.size());
        a.state = {s, slot};
        a.out = out;
        chunked.SsdChunkedScan(batch.view(), a, chunk);
        const std::string what = std::string(c.what) + ", chunk " + std::to_string(chunk) +
                                 ", call " + std::to_string(call);
        EXPECT_LE(NormalizedMaxError(mem.Down(out, out_ref.size()), out_ref),
                  testing::kScanMaxRelErr)
            << name(what);
        EXPECT_LE(NormalizedMaxError(mem.Down(s, s_ref.size()), s_ref), testing::kScanMaxRelErr)
            << name(what + " state");
      }
    }
  }
}

TEST_P(OpsTest, SsdChunkedScanEqualsTheRecurrence) {
  if (Lacks(Op::kSsdChunkedScan)) GTEST_SKIP() << NoKernel(Op::kSsdChunkedScan);
  CheckChunkedAgainstRecurrence(
      *ref_, *fast_, *mem_, *rng_,
      [&](int n, int len, int cap) { return RandomBatch(n, len, cap); },
      [&](const std::string& what) { return Case(what); });
}

using ChunkedCheck = void (*)(Backend&, Backend&, OnBackend&, Rng&,
                              const std::function<OwnedBatch(int, int, int)>&,
                              const std::function<std::string(const std::string&)>&);

// A chunked-form check run on the reference alone (its chunked form against its recurrence),
// with batches of random lengths.
void CheckOnTheReference(ChunkedCheck check) {
  const uint64_t seed = testing::TestSeed();
  Rng rng(seed);
  auto ref = CreateBackend("reference", 1);
  OnBackend mem(ref.get());
  check(
      *ref, *ref, mem, rng,
      [&](int n, int len, int) {
        OwnedBatch b;
        for (int s = 0; s < n; ++s) b.Add(len == 1 ? 1 : rng.Int(0, len), s);
        return b;
      },
      [&](const std::string& what) {
        return "reference, " + what + " (seed " + std::to_string(seed) + ")";
      });
}

TEST(ReferenceOpsTest, SsdChunkedScanOfTheReferenceEqualsItsRecurrence) {
  CheckOnTheReference(CheckChunkedAgainstRecurrence);
}

// A sequence's outputs and state do not depend on what else is in the batch: bitwise.
TEST_P(OpsTest, SsdScanOfOneStreamIsBatchInvariant) {
  if (Lacks(Op::kSsdScan)) GTEST_SKIP() << NoKernel(Op::kSsdScan);
  const SsdCase c{4, 16, 2, 12, 9, 20, "SmallMamba2Config"};
  const int E = c.H * c.P, capacity = 12;
  const size_t slot = size_t(c.H) * c.P * c.N;
  const SsdParams p(*rng_, c);
  const float *dA = mem_->Up(p.A), *dD = mem_->Up(p.D), *dbias = mem_->Up(p.dt_bias);
  OwnedBatch batch = RandomBatch(c.n_seq, c.max_len, capacity);
  const int rows = batch.rows();
  const SsdInputs in = RandomSsdInputs(*rng_, c, rows);
  const auto state0 = rng_->Normal(capacity * slot);
  const float *dxbc = mem_->Up(in.xbc), *ddt = mem_->Up(in.dt);
  SsdScanArgs a = in.Args(c, dxbc, ddt, dbias, dA, dD);
  float *all = mem_->Zeros(size_t(rows) * E), *state = mem_->Up(state0);
  a.state = {state, slot};
  a.out = all;
  fast_->SsdScan(batch.view(), a);
  const auto all_host = mem_->Down(all, size_t(rows) * E);
  const auto state_host = mem_->Down(state, state0.size());
  for (int s = 0; s < c.n_seq; ++s) {  // each sequence again, alone
    const int first = batch.offsets[s], len = batch.offsets[s + 1] - first;
    OwnedBatch one;
    one.Add(len, batch.slots[s]);
    SsdScanArgs o =
        in.Args(c, dxbc + size_t(first) * in.ld_x, ddt + size_t(first) * in.ld_dt, dbias, dA, dD);
    float *alone = mem_->Zeros(size_t(len) * E), *alone_state = mem_->Up(state0);
    o.state = {alone_state, slot};
    o.out = alone;
    fast_->SsdScan(one.view(), o);
    const auto alone_host = mem_->Down(alone, size_t(len) * E);
    const auto alone_state_host = mem_->Down(alone_state, state0.size());
    for (size_t i = 0; i < alone_host.size(); ++i)
      ASSERT_EQ(alone_host[i], all_host[size_t(first) * E + i])
          << Case("sequence " + std::to_string(s));
    for (size_t i = 0; i < slot; ++i)
      ASSERT_EQ(alone_state_host[batch.slots[s] * slot + i], state_host[batch.slots[s] * slot + i])
          << Case("state of sequence " + std::to_string(s));
  }
}

struct NormCase {
  int rows, C, group;
  const char* what;
};

TEST_P(OpsTest, GatedRmsNormMatchesReference) {
  if (Lacks(Op::kGatedRmsNorm)) GTEST_SKIP() << NoKernel(Op::kGatedRmsNorm);
  const NormCase cases[] = {{1, 512, 512, "bench-m-mamba2, T=1"},
                            {640, 512, 512, "bench-m-mamba2, 64 streams x 10 frames"},
                            {33, 64, 32, "SmallMamba2Config: 2 groups"},
                            {17, 45, 9, "odd group size"},
                            {5, 1536, 192, "8 groups of bench-l-mamba2"},
                            {640, 512, 64, "bench-m-retnet output norm: 8 heads of 64"},
                            {10, 256, 64, "bench-m-gla output norm: 4 heads of 64"}};
  for (const NormCase& c : cases) {
    for (int mode = 0; mode < 3; ++mode) {  // gate first, norm before gate, no gate
      const bool norm_before_gate = mode == 1, gated = mode < 2;
      const int ld_x = c.C + 2, ld_z = c.C + 5;
      auto x = rng_->Normal(size_t(c.rows) * ld_x, 2.0f);
      auto z = rng_->Normal(size_t(c.rows) * ld_z, 3.0f);
      if (c.rows > 1) z[ld_z] = -200.0f;  // exp(-z) overflows: silu(z) must still be 0
      auto w = rng_->Uniform(c.C, 0.5f, 1.5f);
      GatedRmsNormArgs a;
      a.channels = c.C;
      a.group_size = c.group;
      a.norm_before_gate = norm_before_gate;
      a.eps = 1e-5f;
      a.x = x.data();
      a.ld_x = ld_x;
      a.z = gated ? z.data() : nullptr;
      a.ld_z = ld_z;
      a.w = w.data();
      a.ld_out = c.C;
      std::vector<float> out_ref(size_t(c.rows) * c.C);
      a.out = out_ref.data();
      ref_->GatedRmsNorm(a, c.rows);
      const std::string what = std::string(c.what) + (!gated             ? ", no gate"
                                                      : norm_before_gate ? ", norm before gate"
                                                                         : ", gate first");
      float* dx = mem_->Up(x);
      float* out = mem_->Zeros(out_ref.size());
      a.x = dx;
      a.z = gated ? mem_->Up(z) : nullptr;
      a.w = mem_->Up(w);
      a.out = out;
      fast_->GatedRmsNorm(a, c.rows);
      const auto got = mem_->Down(out, out_ref.size());
      EXPECT_LE(NormalizedMaxError(got, out_ref), testing::kNormMaxRelErr) << Case(what);
      // In place (out aliasing x), as the Mamba-2 layer runs it: the same bits.
      a.out = dx;
      a.ld_out = ld_x;
      fast_->GatedRmsNorm(a, c.rows);
      const auto inplace = mem_->Down(dx, x.size());
      for (int r = 0; r < c.rows; ++r)
        for (int i = 0; i < c.C; ++i)
          ASSERT_EQ(inplace[size_t(r) * ld_x + i], got[size_t(r) * c.C + i])
              << Case(what + ", in place, row " + std::to_string(r));
    }
  }
}

TEST_P(OpsTest, ActivationsAndAddMatchDefinitions) {
  const int rows = 5, cols = 3;
  auto x = rng_->Normal(rows * cols, 4.0f);
  float *sm = mem_->Up(x), *sg = mem_->Up(x), *id = mem_->Up(x);
  fast_->ApplyActivation(Activation::kSoftmax, sm, rows, cols);
  fast_->ApplyActivation(Activation::kSigmoid, sg, rows, cols);
  fast_->ApplyActivation(Activation::kNone, id, rows, cols);
  const auto softmax = mem_->Down(sm, x.size()), sigmoid = mem_->Down(sg, x.size());
  EXPECT_EQ(mem_->Down(id, x.size()), x) << Case("none");
  for (int r = 0; r < rows; ++r) {
    double sum = 0, denom = 0;
    for (int c = 0; c < cols; ++c) denom += std::exp(double(x[r * cols + c]));
    for (int c = 0; c < cols; ++c) {
      sum += softmax[r * cols + c];
      EXPECT_NEAR(softmax[r * cols + c], std::exp(double(x[r * cols + c])) / denom, 1e-6)
          << Case("softmax");
      EXPECT_NEAR(sigmoid[r * cols + c], 1.0 / (1.0 + std::exp(-double(x[r * cols + c]))), 1e-6)
          << Case("sigmoid");
    }
    EXPECT_NEAR(sum, 1.0, 1e-6) << Case("softmax sums to 1");
  }
  auto y = rng_->Normal(1000), d = rng_->Normal(1000);
  float* dy = mem_->Up(y);
  fast_->Add(dy, mem_->Up(d), y.size());
  const auto sum = mem_->Down(dy, y.size());
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(sum[i], y[i] + d[i]) << Case("add");
}

// The gated linear recurrence's shapes: H heads of K keys and V values.
struct LinearScanCase {
  int H, K, V;
  LinearDecay decay;
  FeatureMap map;
  int n_seq, max_len;
  const char* what;
};

const LinearScanCase kLinearScanCases[] = {
    {4, 32, 64, LinearDecay::kPerKey, FeatureMap::kIdentity, 1, 1, "bench-m-gla, T=1"},
    {4, 32, 64, LinearDecay::kPerKey, FeatureMap::kIdentity, 64, 10,
     "bench-m-gla, 64 streams of 10-frame chunks"},
    {8, 32, 64, LinearDecay::kConstant, FeatureMap::kIdentity, 64, 10,
     "bench-m-retnet, 64 streams"},
    {8, 32, 32, LinearDecay::kNone, FeatureMap::kEluPlusOne, 16, 20,
     "bench-m-linear_attn (elu + 1)"},
    {8, 32, 32, LinearDecay::kNone, FeatureMap::kRelu, 5, 30, "linear attention, relu"},
    {4, 16, 16, LinearDecay::kPerHead, FeatureMap::kIdentity, 7, 33,
     "a data-dependent scalar decay per head"},
    {3, 5, 7, LinearDecay::kPerKey, FeatureMap::kIdentity, 5, 61, "odd sizes everywhere"},
    {1, 1, 1, LinearDecay::kConstant, FeatureMap::kIdentity, 3, 40, "one head, K = V = 1"},
    {2, 64, 64, LinearDecay::kPerKey, FeatureMap::kIdentity, 2, 700, "GLA heads of 64, long"},
};

// q, k, v and the gate as the layer has them: column slices of one projection (plus slack).
struct LinearScanInputs {
  std::vector<float> proj;
  int ld;
  GatedLinearScanArgs Args(const LinearScanCase& c, const float* p, const float* log_gamma,
                           float clamp_min) const {
    const int Kt = c.H * c.K, Vt = c.H * c.V;
    GatedLinearScanArgs a;
    a.heads = c.H;
    a.key_dim = c.K;
    a.value_dim = c.V;
    a.decay = c.decay;
    a.feature_map = c.map;
    a.scale = float(1.0 / std::sqrt(double(c.K)));
    a.q = p;
    a.k = p + Kt;
    a.v = p + 2 * Kt;
    a.ld_q = a.ld_k = a.ld_v = a.ld_gate = ld;
    a.log_gamma = log_gamma;
    a.gate = p + 2 * Kt + Vt;
    a.gate_normalizer = 16.0f;
    a.gate_clamp_min = clamp_min;
    a.ld_out = Vt;
    return a;
  }
};

LinearScanInputs RandomLinearScanInputs(Rng& rng, const LinearScanCase& c, size_t rows) {
  LinearScanInputs in;
  in.ld = 2 * c.H * c.K + c.H * c.V + c.H * c.K + 3;
  in.proj = rng.Normal(rows * in.ld, 1.5f);
  return in;
}

// RetNet's decays, 1 - 2^(-5-h), as the layer sets them.
std::vector<float> RetentionLogGamma(int H) {
  std::vector<float> g(H);
  for (int h = 0; h < H; ++h) g[h] = float(std::log1p(-std::exp2(-5.0 - h)));
  return g;
}

TEST_P(OpsTest, GatedLinearScanMatchesReferenceOverChunks) {
  if (Lacks(Op::kGatedLinearScan)) GTEST_SKIP() << NoKernel(Op::kGatedLinearScan);
  for (const LinearScanCase& c : kLinearScanCases) {
    for (float clamp : {-3.4e38f, -0.05f}) {
      if (clamp > -1 && c.decay != LinearDecay::kPerKey) continue;  // the clamp is GLA's
      const int Vt = c.H * c.V, capacity = c.n_seq + 2;
      const size_t slot = size_t(c.H) * c.K * c.V;
      const auto gamma = RetentionLogGamma(c.H);
      const float* dgamma = mem_->Up(gamma);
      auto s_ref = rng_->Normal(capacity * slot, 0.5f);
      float* s = mem_->Up(s_ref);
      for (int chunk = 0; chunk < 3; ++chunk) {
        OwnedBatch batch = RandomBatch(c.n_seq, c.max_len, capacity);
        const size_t rows = batch.rows();
        const LinearScanInputs in = RandomLinearScanInputs(*rng_, c, rows);
        GatedLinearScanArgs a = in.Args(c, in.proj.data(), gamma.data(), clamp);
        std::vector<float> out_ref(rows * Vt);
        a.state = {s_ref.data(), slot};
        a.out = out_ref.data();
        ref_->GatedLinearScan(batch.view(), a);
        a = in.Args(c, mem_->Up(in.proj), dgamma, clamp);
        float* out = mem_->Zeros(out_ref.size());
        a.state = {s, slot};
        a.out = out;
        fast_->GatedLinearScan(batch.view(), a);
        const std::string what = std::string(c.what) + (clamp > -1 ? ", clamp_min" : "") +
                                 ", chunk " + std::to_string(chunk);
        EXPECT_LE(NormalizedMaxError(mem_->Down(out, out_ref.size()), out_ref),
                  testing::kScanMaxRelErr)
            << Case(what);
        EXPECT_LE(NormalizedMaxError(mem_->Down(s, s_ref.size()), s_ref), testing::kScanMaxRelErr)
            << Case(what + " state");
      }
    }
  }
}

// The chunked form against the reference recurrence, state carried between calls, chunk sizes
// that do and do not divide the sequences; the reference's own chunked form the same way.
void CheckLinearChunkedAgainstRecurrence(
    Backend& ref, Backend& chunked, OnBackend& mem, Rng& rng,
    const std::function<OwnedBatch(int, int, int)>& make_batch,
    const std::function<std::string(const std::string&)>& name) {
  const LinearScanCase cases[] = {
      {4, 32, 64, LinearDecay::kPerKey, FeatureMap::kIdentity, 2, 200,
       "bench-m-gla, offline segments"},
      {8, 32, 64, LinearDecay::kConstant, FeatureMap::kIdentity, 2, 150, "bench-m-retnet"},
      {8, 32, 32, LinearDecay::kNone, FeatureMap::kEluPlusOne, 3, 90, "bench-m-linear_attn"},
      {4, 16, 16, LinearDecay::kPerHead, FeatureMap::kRelu, 5, 70, "scalar decay per head"},
      {3, 5, 7, LinearDecay::kPerKey, FeatureMap::kIdentity, 5, 61, "odd sizes"},
      {2, 8, 8, LinearDecay::kPerKey, FeatureMap::kIdentity, 3, 1, "T=1"},
  };
  for (const LinearScanCase& c : cases) {
    for (int chunk : {1, 5, 64}) {
      const int Vt = c.H * c.V, capacity = c.n_seq + 1;
      const size_t slot = size_t(c.H) * c.K * c.V;
      const auto gamma = RetentionLogGamma(c.H);
      const float* dgamma = mem.Up(gamma);
      auto s_ref = rng.Normal(capacity * slot, 0.5f);
      float* s = mem.Up(s_ref);
      for (int call = 0; call < 2; ++call) {
        OwnedBatch batch = make_batch(c.n_seq, c.max_len, capacity);
        const size_t rows = batch.rows();
        const LinearScanInputs in = RandomLinearScanInputs(rng, c, rows);
        GatedLinearScanArgs a = in.Args(c, in.proj.data(), gamma.data(), -3.4e38f);
        std::vector<float> out_ref(rows * Vt);
        a.state = {s_ref.data(), slot};
        a.out = out_ref.data();
        ref.GatedLinearScan(batch.view(), a);
        a = in.Args(c, mem.Up(in.proj), dgamma, -3.4e38f);
        float* out = mem.Zeros(out_ref.size());
        a.state = {s, slot};
        a.out = out;
        chunked.GatedLinearChunkedScan(batch.view(), a, chunk);
        const std::string what = std::string(c.what) + ", chunk " + std::to_string(chunk) +
                                 ", call " + std::to_string(call);
        EXPECT_LE(NormalizedMaxError(mem.Down(out, out_ref.size()), out_ref),
                  testing::kScanMaxRelErr)
            << name(what);
        EXPECT_LE(NormalizedMaxError(mem.Down(s, s_ref.size()), s_ref), testing::kScanMaxRelErr)
            << name(what + " state");
      }
    }
  }
}

TEST_P(OpsTest, GatedLinearChunkedScanEqualsTheRecurrence) {
  if (Lacks(Op::kGatedLinearChunkedScan)) GTEST_SKIP() << NoKernel(Op::kGatedLinearChunkedScan);
  CheckLinearChunkedAgainstRecurrence(
      *ref_, *fast_, *mem_, *rng_,
      [&](int n, int len, int cap) { return RandomBatch(n, len, cap); },
      [&](const std::string& what) { return Case(what); });
}

TEST(ReferenceOpsTest, GatedLinearChunkedScanOfTheReferenceEqualsItsRecurrence) {
  CheckOnTheReference(CheckLinearChunkedAgainstRecurrence);
}

// A sequence's outputs and state do not depend on what else is in the batch: bitwise.
TEST_P(OpsTest, GatedLinearScanOfOneStreamIsBatchInvariant) {
  if (Lacks(Op::kGatedLinearScan)) GTEST_SKIP() << NoKernel(Op::kGatedLinearScan);
  for (LinearDecay decay : {LinearDecay::kPerKey, LinearDecay::kConstant, LinearDecay::kNone}) {
    const LinearScanCase c{4, 16, 24, decay, FeatureMap::kEluPlusOne, 9, 20, "small"};
    const int Vt = c.H * c.V, capacity = 12;
    const size_t slot = size_t(c.H) * c.K * c.V;
    const float* dgamma = mem_->Up(RetentionLogGamma(c.H));
    OwnedBatch batch = RandomBatch(c.n_seq, c.max_len, capacity);
    const int rows = batch.rows();
    const LinearScanInputs in = RandomLinearScanInputs(*rng_, c, rows);
    const auto state0 = rng_->Normal(capacity * slot);
    const float* dproj = mem_->Up(in.proj);
    GatedLinearScanArgs a = in.Args(c, dproj, dgamma, -3.4e38f);
    float *all = mem_->Zeros(size_t(rows) * Vt), *state = mem_->Up(state0);
    a.state = {state, slot};
    a.out = all;
    fast_->GatedLinearScan(batch.view(), a);
    const auto all_host = mem_->Down(all, size_t(rows) * Vt);
    const auto state_host = mem_->Down(state, state0.size());
    for (int s = 0; s < c.n_seq; ++s) {  // each sequence again, alone
      const int first = batch.offsets[s], len = batch.offsets[s + 1] - first;
      OwnedBatch one;
      one.Add(len, batch.slots[s]);
      GatedLinearScanArgs o = in.Args(c, dproj + size_t(first) * in.ld, dgamma, -3.4e38f);
      float *alone = mem_->Zeros(size_t(len) * Vt), *alone_state = mem_->Up(state0);
      o.state = {alone_state, slot};
      o.out = alone;
      fast_->GatedLinearScan(one.view(), o);
      const auto alone_host = mem_->Down(alone, size_t(len) * Vt);
      const auto alone_state_host = mem_->Down(alone_state, state0.size());
      for (size_t i = 0; i < alone_host.size(); ++i)
        ASSERT_EQ(alone_host[i], all_host[size_t(first) * Vt + i])
            << Case("sequence " + std::to_string(s));
      for (size_t i = 0; i < slot; ++i)
        ASSERT_EQ(alone_state_host[batch.slots[s] * slot + i],
                  state_host[batch.slots[s] * slot + i])
            << Case("state of sequence " + std::to_string(s));
    }
  }
}

// Rotary against its formula written here in double, at positions carried in the state (one
// stream starting just below 2^24, where the counter's low float wraps), and bitwise the same
// whether a sequence's rows come in one call or several.
TEST_P(OpsTest, RotaryMatchesItsFormulaAndCarriesThePosition) {
  if (Lacks(Op::kRotary)) GTEST_SKIP() << NoKernel(Op::kRotary);
  const int H = 3, D = 10, ld = 2 * H * D + 1, len = 9;
  const double starts[] = {0, 5, 16777216.0 - 4, 3.0 * 16777216.0 + 11};
  const int n_seq = 4;
  auto x = rng_->Normal(size_t(n_seq) * len * ld);
  std::vector<float> pos(n_seq * kRotaryStateFloats);
  for (int s = 0; s < n_seq; ++s) {
    pos[s * 2] = float(std::floor(starts[s] / 16777216.0));
    pos[s * 2 + 1] = float(starts[s] - pos[s * 2] * 16777216.0);
  }
  auto run = [&](const std::vector<int>& pieces) {  // each sequence in pieces of these lengths
    float* dx = mem_->Up(x);
    float* dpos = mem_->Up(pos);
    int done = 0;
    for (int piece : pieces) {
      OwnedBatch batch;
      for (int s = 0; s < n_seq; ++s) batch.Add(piece, s);
      // Rows of the batch: sequence s's next `piece` rows, moved next to each other.
      std::vector<float> rows;
      const auto all = mem_->Down(dx, x.size());
      for (int s = 0; s < n_seq; ++s)
        rows.insert(rows.end(), all.begin() + (size_t(s) * len + done) * ld,
                    all.begin() + (size_t(s) * len + done + piece) * ld);
      float* drows = mem_->Up(rows);
      RotaryArgs a;
      a.heads = H;
      a.head_dim = D;
      a.q = drows;
      a.k = drows + H * D;
      a.ld_q = a.ld_k = ld;
      a.position = {dpos, kRotaryStateFloats};
      fast_->Rotary(batch.view(), a);
      const auto back = mem_->Down(drows, rows.size());
      std::vector<float> merged = all;
      for (int s = 0; s < n_seq; ++s)
        std::copy(back.begin() + size_t(s) * piece * ld, back.begin() + size_t(s + 1) * piece * ld,
                  merged.begin() + (size_t(s) * len + done) * ld);
      dx = mem_->Up(merged);
      done += piece;
    }
    return std::make_pair(mem_->Down(dx, x.size()), mem_->Down(dpos, pos.size()));
  };
  const auto [whole, pos_whole] = run({len});
  const auto [pieces, pos_pieces] = run({2, 1, 6});
  EXPECT_EQ(whole, pieces) << Case("one call against three");
  EXPECT_EQ(pos_whole, pos_pieces) << Case("position counters");
  for (int s = 0; s < n_seq; ++s) {
    const double end = starts[s] + len;
    EXPECT_EQ(double(pos_whole[s * 2]) * 16777216.0 + pos_whole[s * 2 + 1], end)
        << Case("counter of stream " + std::to_string(s));
    for (int t = 0; t < len; ++t) {
      for (int c = 0; c < 2 * H * D; ++c) {
        const int h = (c % (H * D)) / D, i = c % D, half = D / 2, pair = i % half;
        const size_t row = (size_t(s) * len + t) * ld, base = row + (c / (H * D)) * H * D + h * D;
        const double theta = (starts[s] + t) * std::pow(10000.0, -2.0 * pair / D);
        const double x0 = x[base + pair], x1 = x[base + pair + half];
        const double want = i < half ? x0 * std::cos(theta) - x1 * std::sin(theta)
                                     : x1 * std::cos(theta) + x0 * std::sin(theta);
        ASSERT_NEAR(whole[row + c], want, 1e-5 * (std::abs(x0) + std::abs(x1)) + 1e-6)
            << Case("stream " + std::to_string(s) + " row " + std::to_string(t) + " column " +
                    std::to_string(c));
      }
      EXPECT_EQ(whole[(size_t(s) * len + t) * ld + 2 * H * D],
                x[(size_t(s) * len + t) * ld + 2 * H * D])
          << Case("the column after q and k is not touched");
    }
  }
}

TEST_P(OpsTest, SwiGluMatchesItsDefinition) {
  if (Lacks(Op::kSwiGlu)) GTEST_SKIP() << NoKernel(Op::kSwiGlu);
  for (auto [rows, cols] : {std::pair{1, 768}, {70, 768}, {9, 37}}) {
    const int ld = 2 * cols + 1;
    auto x = rng_->Normal(size_t(rows) * ld, 3.0f);
    x[0] = -200.0f;  // exp(-x) overflows: silu must still be -0
    float* dx = mem_->Up(x);
    SwiGluArgs a;
    a.cols = cols;
    a.gate = dx;
    a.up = dx + cols;
    a.ld_gate = a.ld_up = a.ld_out = ld;
    a.out = dx;  // over the gate half, as the block runs it
    fast_->SwiGlu(a, rows);
    const auto got = mem_->Down(dx, x.size());
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        const double g = x[size_t(r) * ld + c], u = x[size_t(r) * ld + cols + c];
        const double want = g / (1.0 + std::exp(-g)) * u;
        ASSERT_NEAR(got[size_t(r) * ld + c], want, 1e-6 * (1 + std::abs(want))) << Case(
            std::to_string(rows) + " x " + std::to_string(cols) + ", row " + std::to_string(r));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, OpsTest, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ssm
