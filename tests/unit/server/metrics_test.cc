// Tests of the /metrics pieces: the exposition-format writer, the renderer
// (names, labels, values, histograms), the process collector and the HTTP
// listener (bounds, errors, stop).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "poold/v1/pool_service.pb.h"
#include "server/metrics_http_server.h"
#include "server/metrics_renderer.h"
#include "server/process_metrics.h"
#include "server/prometheus_text.h"
#include "server/proto_convert.h"
#include "server/stats_board.h"

namespace poold {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

TEST(PrometheusTextTest, FamiliesSamplesAndEscaping) {
  PrometheusText text;
  text.Family("x_bytes", "gauge", "Help with a \\ and a\nnewline.");
  text.Sample("x_bytes", {{"pool", "a\"b\\c\nd"}},
              uint64_t{18446744073709551615u});
  text.Sample("x_bytes", {}, 0.1);
  EXPECT_EQ(text.Release(),
            "# HELP x_bytes Help with a \\\\ and a\\nnewline.\n"
            "# TYPE x_bytes gauge\n"
            "x_bytes{pool=\"a\\\"b\\\\c\\nd\"} 18446744073709551615\n"
            "x_bytes 0.1\n");
}

TEST(PrometheusTextTest, SpecialValues) {
  EXPECT_EQ(PrometheusText::FormatValue(1e-6), "1e-06");
  EXPECT_EQ(PrometheusText::FormatValue(1000.0 / 1e9), "1e-06");
  EXPECT_EQ(PrometheusText::FormatValue(2.5e-5), "2.5e-05");
  EXPECT_EQ(PrometheusText::FormatValue(1e-4), "0.0001");
  EXPECT_EQ(PrometheusText::FormatValue(0.00025), "0.00025");
  EXPECT_EQ(PrometheusText::FormatValue(2.5), "2.5");
  EXPECT_EQ(PrometheusText::FormatValue(1700000000.0), "1700000000");
  EXPECT_EQ(PrometheusText::FormatValue(1.5e300), "1.5e+300");
  EXPECT_EQ(PrometheusText::FormatValue(10), "10");
  EXPECT_EQ(PrometheusText::FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(PrometheusText::FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(PrometheusText::FormatValue(0.0 / 0.0), "NaN");
}

TEST(PrometheusTextTest, HistogramBucketsAreCumulative) {
  PrometheusText text;
  const double bounds[] = {0.001, 0.01};
  const uint64_t counts[] = {2, 0, 3};
  text.Histogram("h_seconds", {{"method", "Read"}}, bounds, counts, 1.5, 5);
  EXPECT_EQ(text.Release(),
            "h_seconds_bucket{method=\"Read\",le=\"0.001\"} 2\n"
            "h_seconds_bucket{method=\"Read\",le=\"0.01\"} 2\n"
            "h_seconds_bucket{method=\"Read\",le=\"+Inf\"} 5\n"
            "h_seconds_sum{method=\"Read\"} 1.5\n"
            "h_seconds_count{method=\"Read\"} 5\n");
}

// A GetStatsResponse as the worker would publish it.
v1::GetStatsResponse SampleStats() {
  StatsSnapshot snapshot;
  snapshot.sequence = 7;
  snapshot.taken_at = absl::FromUnixSeconds(1700000000);
  for (size_t i = 0; i < 3; ++i) {
    snapshot.pools.pools[i].pool = static_cast<pools::PoolKind>(i);
  }
  snapshot.pools.pools[0].stats.live_bytes = 1234;
  snapshot.pools.pools[0].stats.resident_bytes = 65536;
  snapshot.pools.pools[0].classes.push_back(
      {.slot_bytes = 48, .stats = {.live_bytes = 40, .blocks = 1}});
  snapshot.worker.channel_capacity = 1024;
  snapshot.worker.refused = 3;
  snapshot.worker.completed_of(CommandType::kRead) = 2;
  snapshot.worker.service_time[static_cast<size_t>(CommandType::kRead)].Record(
      absl::Microseconds(20));
  snapshot.worker.service_time[static_cast<size_t>(CommandType::kRead)].Record(
      absl::Microseconds(30));
  DefragOriginStats& rpc =
      snapshot.worker.by_origin[static_cast<size_t>(pools::DefragOrigin::kRpc)];
  rpc.runs = 1;
  rpc.bytes_reclaimed = 4096;
  rpc.pool_outcomes[0][static_cast<size_t>(pools::DefragOutcome::kCleaned)] = 1;
  snapshot.auto_defrag.state = AutoDefragState::kBackingOff;
  v1::GetStatsResponse stats;
  StatsSnapshotToProto(snapshot, &stats);
  v1::TransportStats& transport = *stats.mutable_transport();
  transport.set_connections_refused(10);
  transport.set_connections_refused_max_connections(6);
  transport.set_connections_refused_per_address(2);
  transport.set_connections_refused_open_files(1);
  return stats;
}

TEST(RenderMetricsTest, PoolsClassesWorkerDefragAndProcess) {
  const v1::GetStatsResponse stats = SampleStats();
  ProcessMetrics process;
  process.cpu_seconds = 1.25;
  process.open_fds = 9;
  const std::string body =
      RenderMetrics({.stats = &stats, .queue_depth = 5, .process = process});
  EXPECT_THAT(body, HasSubstr("# TYPE poold_pool_live_bytes gauge\n"));
  EXPECT_THAT(body, HasSubstr("poold_pool_live_bytes{pool=\"small\"} 1234\n"));
  EXPECT_THAT(body, HasSubstr("poold_pool_live_bytes{pool=\"large\"} 0\n"));
  EXPECT_THAT(body,
              HasSubstr("poold_pool_resident_bytes{pool=\"small\"} 65536\n"));
  EXPECT_THAT(body, HasSubstr("poold_size_class_live_bytes{pool=\"small\","
                              "slot_bytes=\"48\"} 40\n"));
  EXPECT_THAT(body, HasSubstr("poold_queue_depth 5\n"));
  EXPECT_THAT(body, HasSubstr("poold_queue_capacity 1024\n"));
  EXPECT_THAT(body, HasSubstr("poold_queue_refusals_total 3\n"));
  EXPECT_THAT(body,
              HasSubstr("poold_rpc_completed_total{method=\"Read\"} 2\n"));
  EXPECT_THAT(body,
              HasSubstr("poold_rpc_completed_total{method=\"Free\"} 0\n"));
  EXPECT_THAT(body, HasSubstr("poold_rpc_service_seconds_bucket{method="
                              "\"Read\",le=\"2.5e-05\"} 1\n"));
  EXPECT_THAT(body, HasSubstr("poold_rpc_service_seconds_bucket{method="
                              "\"Read\",le=\"5e-05\"} 2\n"));
  EXPECT_THAT(body, HasSubstr("poold_rpc_service_seconds_count{method="
                              "\"Read\"} 2\n"));
  EXPECT_THAT(body, HasSubstr("poold_rpc_queue_wait_seconds_count{method="
                              "\"Allocate\"} 0\n"));
  EXPECT_THAT(body,
              HasSubstr("poold_defrag_runs_total{origin=\"rpc\"} 1\n"
                        "poold_defrag_runs_total{origin=\"memory_limit\"} 0\n"
                        "poold_defrag_runs_total{origin=\"automatic\"} 0\n"));
  EXPECT_THAT(body, HasSubstr("poold_defrag_reclaimed_bytes_total{origin="
                              "\"rpc\"} 4096\n"));
  EXPECT_THAT(body, HasSubstr("poold_defrag_pool_outcomes_total{origin=\"rpc\","
                              "pool=\"small\",outcome=\"cleaned\"} 1\n"));
  EXPECT_THAT(body, HasSubstr("poold_defrag_slice_duration_seconds_count{"
                              "origin=\"automatic\"} 0\n"));
  EXPECT_THAT(body, HasSubstr("poold_auto_defrag_state{state=\"backing_off\"} "
                              "1\n"));
  EXPECT_THAT(body, HasSubstr("poold_auto_defrag_state{state=\"idle\"} 0\n"));
  EXPECT_THAT(body, HasSubstr("poold_stats_snapshots_total 7\n"));
  EXPECT_THAT(
      body,
      HasSubstr(
          "poold_tcp_connections_refused_total{reason=\"max_connections\"} "
          "6\n"
          "poold_tcp_connections_refused_total{reason="
          "\"max_connections_per_address\"} 2\n"
          "poold_tcp_connections_refused_total{reason=\"open_files\"} 1\n"
          "poold_tcp_connections_refused_total{reason=\"other\"} 1\n"));
  EXPECT_THAT(body,
              HasSubstr("poold_stats_snapshot_timestamp_seconds 1700000000\n"));
  EXPECT_THAT(body, HasSubstr("process_cpu_seconds_total 1.25\n"));
  EXPECT_THAT(body, HasSubstr("process_open_fds 9\n"));
  // Each family once.
  EXPECT_EQ(body.find("# TYPE poold_pool_live_bytes"),
            body.rfind("# TYPE poold_pool_live_bytes"));
}

TEST(StatsBoardTest, KeepsTheReportsWhenTheWorkerSaysTheyAreUnchanged) {
  StatsBoard board;
  EXPECT_EQ(board.Latest().sequence, 0u);
  StatsSnapshot snapshot;
  snapshot.sequence = 1;
  snapshot.recent_defragmentations.resize(2);
  board.Publish(snapshot);
  const StatsBoard::Published first = board.Latest();
  EXPECT_EQ(first.sequence, 1u);
  v1::GetStatsResponse history;
  ASSERT_TRUE(history.ParseFromString(
      std::string(first.history.begin(), first.history.end())));
  EXPECT_EQ(history.recent_defragmentations_size(), 2);

  snapshot.sequence = 2;
  snapshot.recent_defragmentations.clear();
  snapshot.history_unchanged = true;
  board.Publish(snapshot);
  const StatsBoard::Published second = board.Latest();
  EXPECT_EQ(second.sequence, 2u);
  // The same bytes, not a copy.
  EXPECT_EQ(second.history.begin(), first.history.begin());

  snapshot.sequence = 3;
  snapshot.history_unchanged = false;  // the reports are really gone
  board.Publish(snapshot);
  EXPECT_EQ(board.Latest().history.size(), 0u);
}

TEST(RenderMetricsTest, WithoutProcessMetricsThereAreNoProcessFamilies) {
  const v1::GetStatsResponse stats = SampleStats();
  const std::string body =
      RenderMetrics({.stats = &stats, .process = std::nullopt});
  EXPECT_THAT(body, Not(HasSubstr("process_cpu_seconds_total")));
  EXPECT_THAT(body, HasSubstr("poold_pool_live_bytes"));
}

TEST(ProcessMetricsTest, ReadsThisProcess) {
  absl::StatusOr<ProcessMetrics> metrics = ReadProcessMetrics();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_GT(metrics->resident_memory_bytes, 0u);
  EXPECT_GE(metrics->virtual_memory_bytes, metrics->resident_memory_bytes);
  EXPECT_GE(metrics->open_fds, 3u);  // stdin, stdout, stderr
  EXPECT_GE(metrics->max_fds, metrics->open_fds);
  const double now = static_cast<double>(absl::ToUnixSeconds(absl::Now()));
  EXPECT_LE(metrics->start_time_seconds, now + 1);
  EXPECT_GT(metrics->start_time_seconds, now - 3600);
  EXPECT_GE(metrics->cpu_seconds, 0.0);
}

TEST(MetricsHttpServerTest, ServesMetricsAndNothingElse) {
  int calls = 0;
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start("127.0.0.1:0", [&calls] {
        ++calls;
        return std::string("poold_up 1\n");
      });
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string url = (*server)->url();
  ASSERT_THAT(url, StartsWith("http://127.0.0.1:"));
  const std::string host_port =
      url.substr(strlen("http://"), url.size() - strlen("http:///metrics"));
  httplib::Client client(absl::StrCat("http://", host_port));
  httplib::Result metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->body, "poold_up 1\n");
  EXPECT_EQ(metrics->get_header_value("Content-Type"),
            PrometheusText::kContentType);
  EXPECT_EQ(client.Get("/other")->status, 404);
  EXPECT_EQ(client.Post("/metrics", "x", "text/plain")->status, 404);
  EXPECT_EQ(client.Get("/")->status, 200);
  (*server)->Stop();
  EXPECT_EQ(calls, 1);
  (*server)->Stop();  // idempotent
  httplib::Client after(absl::StrCat("http://", host_port));
  EXPECT_FALSE(after.Get("/metrics"));
}

TEST(MetricsHttpServerTest, AnAddressInUseNamesTheFlag) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> first =
      MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string(); });
  ASSERT_TRUE(first.ok());
  const std::string url = (*first)->url();
  const std::string address =
      url.substr(strlen("http://"), url.size() - strlen("http:///metrics"));
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start(address, [] { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("--metrics_listen"));
  EXPECT_THAT(second.status().message(), HasSubstr("in use"));
  EXPECT_EQ(MetricsHttpServer::Start("nonsense", [] { return std::string(); })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// A client that sends its request a byte every 100 ms and never ends it, on
// its own thread, until destroyed.
class Trickler {
 public:
  explicit Trickler(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address),
                         sizeof(address)) == 0;
    thread_ = std::thread([this] {
      const std::string start = "GET /metrics HTTP/1.1\r\nX-Slow: ";
      if (send(fd_, start.data(), start.size(), MSG_NOSIGNAL) < 0) return;
      while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
        if (send(fd_, "a", 1, MSG_NOSIGNAL) < 0) {  // the server shut it down
          cut_off_.Notify();
          return;
        }
      }
    });
  }
  ~Trickler() {
    stop_.Notify();
    thread_.join();
    close(fd_);
  }
  bool connected() const { return connected_; }
  // Notified once the server shut the connection down.
  absl::Notification& cut_off() { return cut_off_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  absl::Notification stop_;
  absl::Notification cut_off_;
  std::thread thread_;
};

int PortOf(const std::string& url) {
  int port = 0;
  CHECK(absl::SimpleAtoi(
      url.substr(url.rfind(':') + 1,
                 url.size() - url.rfind(':') - 1 - strlen("/metrics")),
      &port));
  return port;
}

TEST(MetricsHttpServerTest, SlowClientsCannotHoldTheThreadsForLong) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(
          "127.0.0.1:0", [] { return std::string("poold_up 1\n"); },
          /*max_connection_time=*/absl::Seconds(1));
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = PortOf((*server)->url());
  // Two clients that never finish their request take both threads; each
  // byte resets cpp-httplib's read timeout.
  Trickler first(port);
  Trickler second(port);
  ASSERT_TRUE(first.connected() && second.connected());
  // Both are shut down once open for more than a second (the watcher looks
  // every second), then a scrape is served.
  EXPECT_TRUE(
      first.cut_off().WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(
      second.cut_off().WaitForNotificationWithTimeout(absl::Seconds(10)));
  httplib::Client client(absl::StrCat("http://127.0.0.1:", port));
  client.set_read_timeout(10, 0);
  httplib::Result scrape = client.Get("/metrics");
  ASSERT_TRUE(scrape) << httplib::to_string(scrape.error());
  EXPECT_EQ(scrape->body, "poold_up 1\n");
}

TEST(MetricsHttpServerTest, StopShutsDownConnectionsInProgress) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string(); });
  ASSERT_TRUE(server.ok()) << server.status();
  auto slow = std::make_unique<Trickler>(PortOf((*server)->url()));
  ASSERT_TRUE(slow->connected());
  // The slow client has its thread (it sent its first bytes); Stop must not
  // wait for it to finish, which it never does.
  absl::SleepFor(absl::Milliseconds(300));
  absl::Notification stopped;
  std::thread stopper([&] {
    (*server)->Stop();
    stopped.Notify();
  });
  const bool in_time = stopped.WaitForNotificationWithTimeout(absl::Seconds(5));
  EXPECT_TRUE(in_time) << "Stop() still waits for a slow client";
  slow.reset();  // if Stop() waits for it, this ends its wait
  stopper.join();
}

TEST(MetricsHttpServerTest, StopRightAfterStartDoesNotHang) {
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
        MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string(); });
    ASSERT_TRUE(server.ok());
  }
}

}  // namespace
}  // namespace poold
