// Every cuda op against the reference backend on random shapes (device memory in, host out).
// Skips, saying why, where the build has no CUDA or the machine no GPU.
#include <gtest/gtest.h>

#include "tests/kernels/op_test_util.h"

namespace ssm {
namespace {

using testing::NormalizedMaxError;
using testing::OwnedBatch;
using testing::Rng;

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!CudaAvailable(&why)) GTEST_SKIP() << "no CUDA here: " << why;
    cuda_ = CreateBackend("cuda", 2);
    ref_ = CreateBackend("reference", 1);
    ASSERT_NE(cuda_, nullptr);
  }
  // Host vector -> new device buffer.
  std::unique_ptr<Buffer> Up(const std::vector<float>& v) {
    auto b = cuda_->Allocate(v.size());
    cuda_->CopyToBackend(b->data(), v.data(), v.size());
    return b;
  }
  std::vector<float> Down(Buffer& b, size_t n) {
    std::vector<float> v(n);
    cuda_->CopyToHost(v.data(), b.data(), n);
    return v;
  }
  std::string Case(const std::string& what) const {
    return what + " (seed " + std::to_string(seed_) + ")";
  }
  uint64_t seed_ = testing::TestSeed();
  Rng rng_{seed_};
  std::unique_ptr<Backend> cuda_, ref_;
};

TEST_F(CudaOpsTest, LinearMatchesReferenceAndIsBatchInvariant) {
  for (auto [rows, in, out] : {std::tuple{1, 80, 256},
                               {643, 256, 1024},
                               {37, 512, 48},
                               {29, 16, 512},
                               {9, 256, 2},
                               {3, 7, 33}}) {
    auto w = rng_.Uniform(size_t(out) * in, -1, 1), b = rng_.Uniform(out, -1, 1);
    auto x = rng_.Normal(size_t(rows) * in);
    std::vector<float> y_ref(size_t(rows) * out);
    auto wr = ref_->PrepareLinear(w.data(), b.data(), out, in);
    ref_->Linear(*wr, x.data(), in, rows, y_ref.data(), out);
    auto wc = cuda_->PrepareLinear(w.data(), b.data(), out, in);
    auto dx = Up(x);
    auto dy = cuda_->Allocate(y_ref.size());
    cuda_->Linear(*wc, dx->data(), in, rows, dy->data(), out);
    const auto y = Down(*dy, y_ref.size());
    const std::string what =
        std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out);
    EXPECT_LE(NormalizedMaxError(y, y_ref), testing::kLinearMaxRelErr) << Case(what);
    // The last row alone gives the same bits as inside the batch.
    auto d1 = cuda_->Allocate(out);
    cuda_->Linear(*wc, dx->data() + size_t(rows - 1) * in, in, 1, d1->data(), out);
    const auto one = Down(*d1, out);
    EXPECT_TRUE(std::equal(one.begin(), one.end(), y.end() - out)) << Case(what + " last row");
  }
}

TEST_F(CudaOpsTest, RmsNormMatchesReference) {
  for (auto [rows, dim] : {std::pair{1, 256}, {17, 37}, {130, 768}}) {
    auto x = rng_.Normal(size_t(rows) * dim, 3.0f), w = rng_.Uniform(dim, 0.5f, 1.5f);
    std::vector<float> y_ref(x.size());
    ref_->RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, y_ref.data());
    auto dx = Up(x), dw = Up(w), dy = cuda_->Allocate(x.size());
    cuda_->RmsNorm(dx->data(), dw->data(), rows, dim, 1e-5f, dy->data());
    EXPECT_LE(NormalizedMaxError(Down(*dy, x.size()), y_ref), testing::kNormMaxRelErr)
        << Case("rows " + std::to_string(rows));
  }
}

TEST_F(CudaOpsTest, CausalConvAndScanMatchReferenceOverChunks) {
  for (auto [E, N, K, n_seq, max_len] : {std::tuple{512, 16, 4, 64, 20},
                                         {37, 5, 3, 7, 33},
                                         {64, 64, 2, 3, 40},
                                         {1536, 16, 4, 2, 300}}) {
    const int capacity = n_seq + 2, R = 8, ld_bc = R + 2 * N;
    auto conv_w = rng_.Uniform(size_t(K) * E, -0.5f, 0.5f), conv_b = rng_.Uniform(E, -0.5f, 0.5f);
    std::vector<float> A(size_t(N) * E);
    for (int n = 0; n < N; ++n)
      for (int e = 0; e < E; ++e) A[size_t(n) * E + e] = -float(n + 1) * (0.8f + 0.01f * (e % 40));
    auto D = rng_.Uniform(E, 0.5f, 1.5f);
    const size_t tail_stride = size_t(K - 1) * E, h_stride = size_t(N) * E;
    auto tail = rng_.Normal(capacity * tail_stride), h = rng_.Normal(capacity * h_stride, 0.5f);
    auto d_conv_w = Up(conv_w), d_conv_b = Up(conv_b), dA = Up(A), dD = Up(D);
    auto d_tail = Up(tail), d_h = Up(h);
    for (int chunk = 0; chunk < 3; ++chunk) {
      OwnedBatch batch;
      for (int s = 0; s < n_seq; ++s) batch.Add(rng_.Int(0, max_len), (s * 7 + chunk) % capacity);
      // distinct slots: s*7+chunk mod capacity is injective when gcd(7, capacity) == 1
      const size_t rows = batch.rows();
      auto xz = rng_.Normal(rows * 2 * E), xp = rng_.Normal(rows * ld_bc);
      auto dt = rng_.Uniform(rows * E, -7.0f, 3.0f);
      std::vector<float> s_ref(rows * E), out_ref(rows * E);
      CausalConvArgs c;
      c.channels = E;
      c.kernel = K;
      c.x = xz.data();
      c.ld_x = 2 * E;
      c.w = conv_w.data();
      c.bias = conv_b.data();
      c.tail = {tail.data(), tail_stride};
      c.out = s_ref.data();
      c.ld_out = E;
      ref_->CausalConv(batch.view(), c);
      SelectiveScanArgs a;
      a.channels = E;
      a.d_state = N;
      a.u = s_ref.data();
      a.ld_u = E;
      a.dt = dt.data();
      a.ld_dt = E;
      a.B = xp.data() + R;
      a.C = xp.data() + R + N;
      a.ld_bc = ld_bc;
      a.z = xz.data() + E;
      a.ld_z = 2 * E;
      a.A = A.data();
      a.D = D.data();
      a.state = {h.data(), h_stride};
      a.out = out_ref.data();
      a.ld_out = E;
      ref_->SelectiveScan(batch.view(), a);

      auto d_xz = Up(xz), d_xp = Up(xp), d_dt = Up(dt);
      auto d_s = cuda_->Allocate(rows * E), d_out = cuda_->Allocate(rows * E);
      c.x = d_xz->data();
      c.w = d_conv_w->data();
      c.bias = d_conv_b->data();
      c.tail = {d_tail->data(), tail_stride};
      c.out = d_s->data();
      cuda_->CausalConv(batch.view(), c);
      a.u = d_s->data();
      a.dt = d_dt->data();
      a.B = d_xp->data() + R;
      a.C = d_xp->data() + R + N;
      a.z = d_xz->data() + E;
      a.A = dA->data();
      a.D = dD->data();
      a.state = {d_h->data(), h_stride};
      a.out = d_out->data();
      cuda_->SelectiveScan(batch.view(), a);
      const std::string what =
          "E " + std::to_string(E) + " N " + std::to_string(N) + " chunk " + std::to_string(chunk);
      EXPECT_LE(NormalizedMaxError(Down(*d_s, rows * E), s_ref), testing::kConvMaxRelErr)
          << Case(what + " conv");
      EXPECT_LE(NormalizedMaxError(Down(*d_out, rows * E), out_ref), testing::kScanMaxRelErr)
          << Case(what + " scan");
      EXPECT_LE(NormalizedMaxError(Down(*d_h, h.size()), h), testing::kScanMaxRelErr)
          << Case(what + " state");
    }
  }
}

}  // namespace
}  // namespace ssm
