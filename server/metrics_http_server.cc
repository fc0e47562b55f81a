// MetricsHttpServer: cpp-httplib set up with poold's bounds.
#include "server/metrics_http_server.h"

#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "httplib.h"
#include "server/endpoints.h"
#include "server/prometheus_text.h"

namespace poold {
namespace {

// cpp-httplib's task queue, bounded: `threads` threads serve connections,
// and `enqueue` (called by the accepting thread) waits while `max_queued`
// connections wait for them, so no more are accepted meanwhile.
class BoundedTaskQueue final : public httplib::TaskQueue {
 public:
  BoundedTaskQueue(int threads, size_t max_queued) : max_queued_(max_queued) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] { Serve(); });
    }
  }

  ~BoundedTaskQueue() override { shutdown(); }

  void enqueue(std::function<void()> task) override {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock,
                [this] { return stopping_ || tasks_.size() < max_queued_; });
    // After shutdown the task still runs (it closes its connection).
    tasks_.push_back(std::move(task));
    work_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    work_.notify_all();
    space_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }

 private:
  void Serve() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping, and nothing left
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      space_.notify_one();
      task();
    }
  }

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable work_;
  std::condition_variable space_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, Render render) {
  absl::StatusOr<HostPort> host_port = ParseListenAddress(address);
  if (!host_port.ok()) return host_port.status();
  const std::string host =
      host_port->host.empty() ? std::string("0.0.0.0") : host_port->host;

  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] {
    return new BoundedTaskQueue(kThreads, kMaxQueuedConnections);
  };
  // cpp-httplib's default also sets SO_REUSEPORT, with which a second
  // poold on the same port would share the scrapes instead of failing.
  server->set_socket_options([](socket_t sock) {
    const int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  });
  server->set_read_timeout(5, 0);
  server->set_write_timeout(5, 0);
  server->set_keep_alive_timeout(5);
  server->set_keep_alive_max_count(100);
  server->set_payload_max_length(8 << 10);
  server->Get("/metrics", [render = std::move(render)](
                              const httplib::Request& /*request*/,
                              httplib::Response& response) {
    response.set_content(render(), std::string(PrometheusText::kContentType));
  });
  server->Get("/", [](const httplib::Request& /*request*/,
                      httplib::Response& response) {
    response.set_content("poold: Prometheus metrics at /metrics\n",
                         "text/plain; charset=utf-8");
  });

  int port = host_port->port;
  const bool bound = port == 0 ? (port = server->bind_to_any_port(host)) > 0
                               : server->bind_to_port(host, port);
  if (!bound) {
    const absl::Status why = ProbeTcpBind(*host_port);
    return absl::UnavailableError(absl::StrCat(
        "cannot listen for metrics on ", address,
        " (--metrics_listen): ", why.ok() ? "bind failed" : why.message()));
  }
  auto metrics = absl::WrapUnique(new MetricsHttpServer(
      std::move(server),
      absl::StrCat("http://", FormatHostPort(host, port), "/metrics")));
  MetricsHttpServer* raw = metrics.get();
  metrics->thread_ = std::thread([raw] {
    if (!raw->server_->listen_after_bind()) {
      LOG(WARNING) << "metrics: the HTTP listener stopped with an error";
    }
    raw->listen_returned_.store(true, std::memory_order_release);
  });
  // cpp-httplib ignores a stop() that comes before its loop runs: return
  // only once it runs (or ended), so that Stop() always ends it.
  while (!raw->server_->is_running() &&
         !raw->listen_returned_.load(std::memory_order_acquire)) {
    std::this_thread::yield();
  }
  return metrics;
}

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<httplib::Server> server,
                                     std::string url)
    : server_(std::move(server)), url_(std::move(url)) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace poold
