// MetricsHttpServer: cpp-httplib set up with poold's bounds.
#include "server/metrics_http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "httplib.h"
#include "server/endpoints.h"
#include "server/prometheus_text.h"

namespace poold {
namespace {

// A connection this process accepted on the metrics port, as /proc/self/fd
// shows it: its descriptor, and the socket's inode (a descriptor number can
// be reused by another socket).
struct Connection {
  int fd;
  ino_t inode;
  bool operator<(const Connection& other) const {
    return fd != other.fd ? fd < other.fd : inode < other.inode;
  }
};

// The sockets of this process bound to local port `port` that are not
// listening: the connections it accepted there. cpp-httplib does not hand
// its connections out; /proc/self/fd lists them.
std::vector<Connection> ConnectionsOnPort(int port) {
  std::vector<Connection> found;
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return found;
  while (const dirent* entry = readdir(fds)) {
    int fd = 0;
    if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == dirfd(fds)) continue;
    sockaddr_storage address = {};
    socklen_t length = sizeof(address);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      continue;  // not a socket (or closed meanwhile)
    }
    int local_port = -1;
    if (address.ss_family == AF_INET) {
      local_port = ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
    } else if (address.ss_family == AF_INET6) {
      local_port = ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
    }
    int listening = 1;
    socklen_t size = sizeof(listening);
    struct stat status;
    if (local_port != port ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 ||
        listening != 0 || fstat(fd, &status) != 0) {
      continue;
    }
    found.push_back({fd, status.st_ino});
  }
  closedir(fds);
  return found;
}

// Shuts `connections` down both ways: a thread blocked reading one sees the
// end of the stream and closes it.
void ShutDown(const std::vector<Connection>& connections, const char* why) {
  int done = 0;
  for (const Connection& connection : connections) {
    if (shutdown(connection.fd, SHUT_RDWR) == 0) ++done;
  }
  if (done > 0) {
    LOG(WARNING) << "metrics: closed " << done << " connection(s) " << why;
  }
}

// cpp-httplib's task queue, bounded: `threads` threads serve connections,
// and `enqueue` (called by the accepting thread) waits while `max_queued`
// connections wait for them, so no more are accepted meanwhile. While any
// is being served, a watcher looks at the connections open on `*port` once
// a second and shuts down those open longer than `max_connection_time` (a
// client that sends its request a byte at a time resets cpp-httplib's read
// timeout with every byte).
class BoundedTaskQueue final : public httplib::TaskQueue {
 public:
  BoundedTaskQueue(int threads, size_t max_queued,
                   absl::Duration max_connection_time,
                   const std::atomic<int>* port)
      : max_queued_(max_queued),
        max_connection_time_(max_connection_time),
        port_(port),
        busy_(threads, false) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this, i] { Serve(i); });
    }
    watcher_ = std::thread([this] { Watch(); });
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
    stop_.notify_all();
    for (std::thread& thread : threads_) thread.join();
    watcher_.join();
  }

 private:
  void Serve(int index) {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping, and nothing left
        task = std::move(tasks_.front());
        tasks_.pop_front();
        busy_[index] = true;
      }
      space_.notify_one();
      task();
      std::lock_guard<std::mutex> lock(mu_);
      busy_[index] = false;
    }
  }

  void Watch() {
    // When each connection open on the port was first seen.
    std::map<Connection, absl::Time> first_seen;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      stop_.wait_for(lock, std::chrono::seconds(1));
      bool busy = false;
      for (bool each : busy_) busy = busy || each;
      if (!busy) {
        first_seen.clear();
        continue;
      }
      lock.unlock();
      const absl::Time now = absl::Now();
      std::map<Connection, absl::Time> seen;
      std::vector<Connection> overdue;
      for (const Connection& connection : ConnectionsOnPort(port_->load())) {
        const auto known = first_seen.find(connection);
        const absl::Time since =
            known == first_seen.end() ? now : known->second;
        seen.emplace(connection, since);
        if (now - since > max_connection_time_) overdue.push_back(connection);
      }
      first_seen = std::move(seen);
      ShutDown(overdue, "open longer than allowed");
      lock.lock();
    }
  }

  const size_t max_queued_;
  const absl::Duration max_connection_time_;
  const std::atomic<int>* const port_;
  std::mutex mu_;
  std::condition_variable work_;
  std::condition_variable space_;
  std::condition_variable stop_;             // wakes the watcher at shutdown
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<bool> busy_;                   // guarded by mu_
  std::vector<std::thread> threads_;
  std::thread watcher_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, Render render,
    absl::Duration max_connection_time) {
  absl::StatusOr<HostPort> host_port = ParseListenAddress(address);
  if (!host_port.ok()) return host_port.status();
  const std::string host =
      host_port->host.empty() ? std::string("0.0.0.0") : host_port->host;

  auto server = std::make_unique<httplib::Server>();
  // The port is known once bound, before the queue is made (in the
  // listening thread).
  auto bound_port = std::make_unique<std::atomic<int>>(0);
  server->new_task_queue = [port = bound_port.get(), max_connection_time] {
    return new BoundedTaskQueue(kThreads, kMaxQueuedConnections,
                                max_connection_time, port);
  };
  // cpp-httplib's default also sets SO_REUSEPORT, with which a second
  // poold on the same port would share the scrapes instead of failing.
  server->set_socket_options([](socket_t sock) {
    const int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  });
  server->set_read_timeout(5, 0);
  server->set_write_timeout(5, 0);
  // One request per connection: no idle connection holds a thread.
  server->set_keep_alive_max_count(1);
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
  bound_port->store(port);
  auto metrics = absl::WrapUnique(new MetricsHttpServer(
      std::move(server), std::move(bound_port),
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
                                     std::unique_ptr<std::atomic<int>> port,
                                     std::string url)
    : server_(std::move(server)),
      port_(std::move(port)),
      url_(std::move(url)) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();  // closes the listener; connections in progress go on
  ShutDown(ConnectionsOnPort(port_->load()), "in progress at shutdown");
  thread_.join();
}

}  // namespace poold
