#include "server/service/call_port.h"

#include <grpc/grpc.h>

#include <mutex>

namespace ssm {

namespace {

class GrpcCallCanceller final : public CallCanceller {
 public:
  explicit GrpcCallCanceller(grpc::CallbackServerContext* context) : context_(context) {}

  void Cancel(const char* why) override {
    grpc_call* call = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (context_ == nullptr) return;
      call = context_->c_call();
      grpc_call_ref(call);  // keeps the call valid once the lock is released
    }
    // Outside mu_: gRPC may run the call's OnCancel and OnDone here, and OnDone detaches.
    grpc_call_cancel_with_status(call, GRPC_STATUS_CANCELLED, why, nullptr);
    grpc_call_unref(call);
  }

  void Detach() override {
    std::lock_guard<std::mutex> lock(mu_);
    context_ = nullptr;
  }

 private:
  std::mutex mu_;
  grpc::CallbackServerContext* context_;  // nullptr once detached
};

}  // namespace

CallerCredentials GrpcCallPort::Credentials() const { return CallerCredentials::Of(*context_); }

void GrpcCallPort::Cancel(grpc::StatusCode code, const std::string& message) {
  // The status reaches the client even when a write is stuck (trailers are not held back by
  // flow control); gRPC fails that write (OnWriteDone(false)), then calls OnCancel.
  grpc_call_cancel_with_status(context_->c_call(), grpc_status_code(code), message.c_str(),
                               nullptr);
}

std::shared_ptr<CallCanceller> GrpcCallPort::MakeCanceller() {
  return std::make_shared<GrpcCallCanceller>(context_);
}

}  // namespace ssm
