// A Stream or ProcessFile call that sends raw bytes (which need not be a valid StreamRequest),
// through gRPC's generic async API; each operation waits for its completion. Used by the
// hostile-client tests and the `stream` fuzz target. Header-only; a completion queue that breaks
// its contract (no event, another tag) aborts, which fails a test and is a finding for a fuzzer.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace ssm::testing {

class RawCall {
 public:
  // `rpc`: "Stream" or "ProcessFile"; `authorization`: that metadata's value ("" none).
  RawCall(grpc::GenericStub* stub, const std::string& rpc, std::chrono::seconds deadline,
          const std::string& authorization = "") {
    context_.set_deadline(std::chrono::system_clock::now() + deadline);
    if (!authorization.empty()) context_.AddMetadata("authorization", authorization);
    call_ = stub->PrepareCall(&context_, "/ssmserve.v1.Ssm/" + rpc, &cq_);
    call_->StartCall(Tag());
    started_ = Wait();
  }
  ~RawCall() {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  // False once the call has ended (or never started).
  bool Write(const std::string& bytes) {
    if (!started_) return false;
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    call_->Write(buffer, Tag());
    return Wait();
  }
  void WritesDone() {
    call_->WritesDone(Tag());
    Wait();
  }
  // The next response's bytes; false once the call has ended. With `cancel_after`, a read not
  // answered by then cancels the call (which then ends the read).
  bool Read(std::string* bytes, std::chrono::milliseconds cancel_after = {}) {
    grpc::ByteBuffer buffer;
    call_->Read(&buffer, Tag());
    bool ok = false;
    if (cancel_after.count() > 0) {
      void* tag = nullptr;
      const auto status = cq_.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + cancel_after);
      if (status == grpc::CompletionQueue::TIMEOUT) {
        Cancel();
        ok = Wait();
      } else {
        Expect(status == grpc::CompletionQueue::GOT_EVENT && tag == CurrentTag(),
               "the completion queue gave no event or another tag");
      }
    } else {
      ok = Wait();
    }
    if (!ok) return false;
    std::vector<grpc::Slice> slices;
    Expect(buffer.Dump(&slices).ok(), "a response could not be read out");
    bytes->clear();
    for (const auto& s : slices) bytes->append(reinterpret_cast<const char*>(s.begin()), s.size());
    return true;
  }
  void Cancel() { context_.TryCancel(); }
  grpc::Status Finish() {
    grpc::Status status;
    call_->Finish(&status, Tag());
    Wait();
    return status;
  }

 private:
  static void Expect(bool holds, const char* what) {
    if (holds) return;
    std::fprintf(stderr, "RawCall: %s\n", what);
    std::abort();
  }
  void* Tag() { return reinterpret_cast<void*>(++tag_); }
  void* CurrentTag() const { return reinterpret_cast<void*>(tag_); }
  bool Wait() {
    void* tag = nullptr;
    bool ok = false;
    Expect(cq_.Next(&tag, &ok) && tag == CurrentTag(),
           "the completion queue gave no event or another tag");
    return ok;
  }

  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  bool started_ = false;
  intptr_t tag_ = 0;
};

}  // namespace ssm::testing
