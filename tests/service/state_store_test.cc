// StateStore on its own: a bad URL is refused with what is wrong, an unreachable Redis fails every
// operation quickly, and no callback ever runs on the caller's thread, even for an operation
// refused at once (its queue full): callers hold locks their callbacks take.
#include "server/service/state_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ssm {
namespace {

TEST(StateStoreTest, BadUrlsAreRefusedSayingWhatIsWrong) {
  for (const char* url : {"http://127.0.0.1:6379", "redis://127.0.0.1", "redis://:6379",
                          "redis://127.0.0.1:0", "redis://127.0.0.1:6379/x"}) {
    SCOPED_TRACE(url);
    StateStore::Options options;
    options.url = url;
    auto store = StateStore::Create(options, nullptr);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(store.status().message().find("redis://[USER@]HOST:PORT[/DB]"), std::string::npos)
        << store.status().message();
  }
}

// The password never goes in the URL (process listings, pod specs, logs show it): it is read
// from --store-password-file, checked when the store is created.
TEST(StateStoreTest, PasswordsComeFromAFileNeverFromTheUrl) {
  char dir_template[] = "/tmp/ssm_state_store_test_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
    return dir + "/" + name;
  };
  struct Case {
    std::string url, password_file, expected;  // expected: "" = accepted
  };
  const std::vector<Case> cases = {
      {"redis://ssm:secret@127.0.0.1:6379", "", "the URL holds a password"},
      {"redis://@127.0.0.1:6379", "", "an empty user name"},
      {"redis://ssm@127.0.0.1:6379", "", "a user name needs its password in --store-password-file"},
      {"redis://127.0.0.1:6379", dir + "/absent", "cannot be read"},
      {"redis://127.0.0.1:6379", write("empty", "\nsecret\n"),
       "the first line (the password) is empty"},
      {"redis://127.0.0.1:6379", write("nul", std::string("se\0cret\n", 8)), "without NUL"},
      {"redis://127.0.0.1:6379", write("good_crlf", "s3cret pass\r\n"), ""},
      {"redis://ssm@127.0.0.1:6379/2", write("good", "s3cret pass\n"), ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.url + " " + c.password_file);
    StateStore::Options options;
    options.url = c.url;
    options.password_file = c.password_file;
    auto store = StateStore::Create(options, nullptr);
    if (c.expected.empty()) {
      ASSERT_TRUE(store.ok()) << store.status().ToString();
      EXPECT_EQ((*store)->address().find("s3cret"), std::string::npos);
      continue;
    }
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(store.status().message().find(c.expected), std::string::npos)
        << store.status().message();
    EXPECT_EQ(store.status().message().find("secret"), std::string::npos)  // never echoed
        << store.status().message();
  }
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, CallbacksNeverRunOnTheCallersThreadEvenWhenTheQueueIsFull) {
  StateStore::Options options;
  options.url = "redis://127.0.0.1:1";  // nothing listens there
  options.timeout_s = 0.2;
  options.max_queued = 1;
  auto store = StateStore::Create(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::mutex mu;  // held while submitting, taken by every callback
  std::vector<StatusCode> codes;
  std::vector<std::thread::id> threads;
  const Digest key = Sha256Of(std::string("token"));
  {
    std::lock_guard<std::mutex> lock(mu);
    for (int i = 0; i < 20; ++i) {
      (*store)->Put(key, "snapshot", 1.0, [&](Status status) {
        std::lock_guard<std::mutex> inner(mu);  // would deadlock if run inline
        codes.push_back(status.code());
        threads.push_back(std::this_thread::get_id());
      });
    }
  }
  ASSERT_TRUE((*store)->WaitIdle(std::chrono::steady_clock::now() + std::chrono::seconds(10)));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(codes.size(), 20u);
  int refused = 0;
  for (size_t i = 0; i < codes.size(); ++i) {
    EXPECT_NE(threads[i], std::this_thread::get_id());
    EXPECT_TRUE(codes[i] == StatusCode::kUnavailable || codes[i] == StatusCode::kResourceExhausted)
        << StatusCodeName(codes[i]);
    refused += codes[i] == StatusCode::kResourceExhausted;
  }
  EXPECT_GT(refused, 0);  // the queue of 1 was full for some of them
}

}  // namespace
}  // namespace ssm
