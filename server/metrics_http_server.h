// MetricsHttpServer: the HTTP listener that serves /metrics to Prometheus
// (cpp-httplib), with bounded threads, connections and request sizes.
#ifndef POOLD_SERVER_METRICS_HTTP_SERVER_H_
#define POOLD_SERVER_METRICS_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
}

namespace poold {

// Serves GET /metrics with the body `render` returns (and a short index at
// /); anything else, other methods included, is 404. One request per
// connection. Requests are served by two threads; while both are busy and
// kMaxQueuedConnections more wait, the listener stops accepting (the
// kernel's backlog holds the rest), so a flood of connections holds a
// bounded number of descriptors and threads. A connection that sends
// nothing for 5 s, or more than 8 KiB of body, is closed; one open longer
// than kMaxConnectionTime while requests are being served (a request sent a
// byte at a time) is shut down, within a second or so.
class MetricsHttpServer {
 public:
  using Render = std::function<std::string()>;

  static constexpr int kThreads = 2;
  static constexpr int kMaxQueuedConnections = 16;
  static constexpr absl::Duration kMaxConnectionTime = absl::Seconds(10);

  // Binds `address` ("host:port" or "[ipv6]:port"; port 0 picks a free
  // one) and starts serving. `render` is called on the server's threads,
  // possibly on two at once. INVALID_ARGUMENT for a malformed address,
  // UNAVAILABLE naming the address and the reason when it cannot be bound.
  // `max_connection_time`: see above (tests shorten it).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, Render render,
      absl::Duration max_connection_time = kMaxConnectionTime);

  // Stops serving (see Stop).
  ~MetricsHttpServer();

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Closes the listener, shuts down the connections still open (their
  // clients get no answer) and joins the threads: `render` is not called
  // any more. Idempotent.
  void Stop();

  // The URL of the metrics, with the port bound:
  // "http://127.0.0.1:9741/metrics".
  const std::string& url() const { return url_; }

 private:
  MetricsHttpServer(std::unique_ptr<httplib::Server> server,
                    std::unique_ptr<std::atomic<int>> port, std::string url);

  std::unique_ptr<httplib::Server> server_;
  // The bound port; read by the serving threads' watcher.
  std::unique_ptr<std::atomic<int>> port_;
  const std::string url_;
  std::atomic<bool> listen_returned_{false};
  std::thread thread_;
};

}  // namespace poold

#endif  // POOLD_SERVER_METRICS_HTTP_SERVER_H_
