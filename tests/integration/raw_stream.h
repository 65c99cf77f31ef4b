// A Stream call driven message by message through the generated synchronous stub, for the
// integration tests of resuming and hand-off: open (or resume), send chunks, read outputs, then
// half-close or cancel. Header-only.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "ssmserve/v1/ssmserve.grpc.pb.h"

namespace ssm::testing {

namespace pb = ::ssmserve::v1;

// One Stream call driven step by step with the synchronous API.
class Call {
 public:
  explicit Call(pb::Ssm::Stub& stub) : stream_(stub.Stream(&context_)) {}
  ~Call() {
    if (!finished_) Cancel();
  }

  // Sends `open` and waits for `opened` (false: the call ended; Finish() says why). For a resume
  // from a frame before `opened.next_frame`, the replayed output is read too, into *replay.
  bool Open(const pb::StreamRequest& open, pb::StreamOutput* replay = nullptr) {
    if (!stream_->Write(open)) return false;
    pb::StreamResponse response;
    if (!stream_->Read(&response) || !response.has_opened()) return false;
    opened_ = response.opened();
    if (opened_.resumed() && open.open().resume_from_frame() < opened_.next_frame()) {
      if (!stream_->Read(&response) || !response.has_output()) return false;
      if (replay != nullptr) *replay = response.output();
    }
    return true;
  }
  bool Send(uint64_t sequence, const std::string& payload) {
    pb::StreamRequest r;
    r.mutable_chunk()->set_sequence(sequence);
    r.mutable_chunk()->set_payload(payload);
    return stream_->Write(r);
  }
  bool Read(pb::StreamOutput* out) {
    pb::StreamResponse response;
    while (stream_->Read(&response))
      if (response.has_output()) {
        *out = response.output();
        return true;
      }
    return false;
  }
  // Half-closes, reads every remaining output into *outs, returns the status.
  grpc::Status Close(std::vector<pb::StreamOutput>* outs) {
    stream_->WritesDone();
    for (pb::StreamOutput out; Read(&out);) outs->push_back(out);
    return Finish();
  }
  // Reads until the server ends the call (outputs into *outs), returns its status.
  grpc::Status Await(std::vector<pb::StreamOutput>* outs) {
    for (pb::StreamOutput out; Read(&out);) outs->push_back(out);
    return Finish();
  }
  grpc::Status Cancel() {
    context_.TryCancel();
    for (pb::StreamOutput out; Read(&out);) {
    }
    return Finish();
  }
  grpc::Status Finish() {
    finished_ = true;
    return stream_->Finish();
  }
  const pb::StreamOpened& opened() const { return opened_; }
  grpc::ClientContext& context() { return context_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::StreamRequest, pb::StreamResponse>> stream_;
  pb::StreamOpened opened_;
  bool finished_ = false;
};

inline pb::StreamRequest Open(const std::string& model, pb::SampleFormat format,
                              const std::string& token = "", int64_t from_frame = 0) {
  pb::StreamRequest r;
  r.mutable_open()->set_model(model);
  r.mutable_open()->set_format(format);
  r.mutable_open()->set_resume_token(token);
  r.mutable_open()->set_resume_from_frame(from_frame);
  return r;
}

// The chunk payloads (float32 LE) of `values` cut into `chunks` rows of `per_row` floats.
inline std::vector<std::string> Payloads(const std::vector<float>& values,
                                         const std::vector<int64_t>& chunks, size_t per_row) {
  std::vector<std::string> payloads;
  size_t pos = 0;
  for (int64_t rows : chunks) {
    const size_t n = size_t(rows) * per_row;
    payloads.emplace_back(reinterpret_cast<const char*>(values.data() + pos), n * sizeof(float));
    pos += n;
  }
  return payloads;
}

}  // namespace ssm::testing
