// /metrics of the real poold: the body matches GetStats and passes
// `promtool check metrics` (Debian's prometheus package); metrics and
// GetStats answer while the worker takes no command at all; every family is
// documented in the README; a real Prometheus server scrapes poold, and every
// query of the Grafana dashboard in deploy/ runs against it.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"
#include "tests/support/subprocess.h"

namespace poold::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

// The file's contents; empty (and a failed expectation) when unreadable.
std::string ReadFileOrFail(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// "http://127.0.0.1:PORT/metrics" -> "http://127.0.0.1:PORT".
std::string Origin(const std::string& url) {
  return url.substr(0, url.find('/', strlen("http://")));
}

// One scrape; fails the test when it does not answer 200.
std::string Scrape(const PooldProcess& poold) {
  httplib::Client client(Origin(poold.metrics_url()));
  client.set_read_timeout(10, 0);
  httplib::Result result = client.Get("/metrics");
  EXPECT_TRUE(result) << httplib::to_string(result.error());
  if (!result) return "";
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"),
            "text/plain; version=0.0.4; charset=utf-8");
  return result->body;
}

// The value of the sample written exactly as `series` ("name{labels}").
std::optional<double> SampleValue(const std::string& body,
                                  const std::string& series) {
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (!absl::ConsumePrefix(&line, series) || !absl::ConsumePrefix(&line, " "))
      continue;
    double value = 0;
    if (absl::SimpleAtod(line, &value)) return value;
  }
  return std::nullopt;
}

// Family names (from the # TYPE lines) of a body.
std::set<std::string> Families(const std::string& body) {
  std::set<std::string> names;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (!absl::ConsumePrefix(&line, "# TYPE ")) continue;
    names.insert(std::string(line.substr(0, line.find(' '))));
  }
  return names;
}

class MetricsE2eTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags = {}) {
    PooldProcess::Options options;
    options.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<PooldProcess>> started =
        PooldProcess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    poold_ = *std::move(started);
    ASSERT_FALSE(poold_->metrics_url().empty()) << poold_->Log();
    client_ = std::make_unique<PoolTestClient>(poold_->NewChannel());
  }

  std::unique_ptr<PooldProcess> poold_;
  std::unique_ptr<PoolTestClient> client_;
};

TEST_F(MetricsE2eTest, ScrapeMatchesGetStatsAndPassesPromtool) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // Blocks in all three pools, some freed: fragmentation to report.
  std::vector<uint64_t> handles;
  for (uint64_t size : {100u, 100u, 300u, 5000u, 20000u, 100000u, 300000u}) {
    v1::AllocateResponse response;
    ASSERT_TRUE(client_->Allocate(size, "", &response).ok());
    handles.push_back(response.handle());
  }
  ASSERT_TRUE(client_->Free(handles[1]).ok());
  std::string data;
  ASSERT_TRUE(client_->Read(handles[0], 0, 0, &data).ok());
  // A defragmentation publishes a snapshot before it answers: the scrape
  // after it shows everything above.
  v1::DefragReport report;
  ASSERT_TRUE(client_->Defragment({}, &report).ok());
  v1::GetStatsResponse stats;
  ASSERT_TRUE(client_->GetStats(true, &stats).ok());
  const std::string body = Scrape(*poold_);
  ASSERT_FALSE(body.empty());

  for (const v1::PoolStats& pool : stats.pools()) {
    const std::string label = absl::AsciiStrToLower(
        std::string(absl::StripPrefix(v1::Pool_Name(pool.pool()), "POOL_")));
    EXPECT_EQ(SampleValue(body, absl::StrCat("poold_pool_live_bytes{pool=\"",
                                             label, "\"}")),
              static_cast<double>(pool.stats().live_bytes()))
        << label;
    EXPECT_EQ(SampleValue(body, absl::StrCat("poold_pool_blocks{pool=\"", label,
                                             "\"}")),
              static_cast<double>(pool.stats().blocks()));
    for (const v1::SizeClassStats& size_class : pool.classes()) {
      EXPECT_EQ(
          SampleValue(body, absl::StrCat("poold_size_class_blocks{pool=\"",
                                         label, "\",slot_bytes=\"",
                                         size_class.slot_bytes(), "\"}")),
          static_cast<double>(size_class.stats().blocks()));
    }
  }
  EXPECT_EQ(SampleValue(body, "poold_pool_live_bytes{pool=\"small\"}"), 400.0);
  EXPECT_EQ(SampleValue(body, "poold_rpc_completed_total{method=\"Allocate\"}"),
            7.0);
  EXPECT_EQ(
      SampleValue(body, "poold_rpc_service_seconds_count{method=\"Allocate\"}"),
      7.0);
  EXPECT_EQ(SampleValue(body, "poold_rpc_completed_total{method=\"Read\"}"),
            1.0);
  EXPECT_EQ(SampleValue(body, "poold_defrag_runs_total{origin=\"rpc\"}"), 1.0);
  EXPECT_EQ(
      SampleValue(body, "poold_defrag_reclaimed_bytes_total{origin=\"rpc\"}"),
      static_cast<double>(report.bytes_reclaimed()));
  EXPECT_GE(SampleValue(body,
                        "poold_defrag_slice_duration_seconds_count{"
                        "origin=\"rpc\"}")
                .value_or(0),
            1.0);
  EXPECT_EQ(SampleValue(body, "poold_queue_capacity"), 1024.0);
  EXPECT_GT(SampleValue(body, "process_resident_memory_bytes").value_or(0),
            0.0);
  EXPECT_GT(SampleValue(body, "process_open_fds").value_or(0), 0.0);
  EXPECT_GT(SampleValue(body, "process_start_time_seconds").value_or(0),
            static_cast<double>(absl::ToUnixSeconds(absl::Now()) - 3600));

  // Prometheus's own linter: format, naming conventions, help texts.
  const std::string file = poold_->temp_dir() + "/metrics.txt";
  std::ofstream(file) << body;
  absl::StatusOr<ProcessResult> check = RunProcess(
      {"/bin/sh", "-c", absl::StrCat("promtool check metrics < ", file)},
      poold_->temp_dir(), absl::Seconds(60));
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->exit_code, 0) << check->output;
  EXPECT_EQ(check->output, "") << "promtool found problems";
}

TEST_F(MetricsE2eTest, MetricsAndGetStatsAnswerWhileTheWorkerIsHeld) {
  // The worker takes no command at all: whatever answers does so without it.
  ASSERT_NO_FATAL_FAILURE(Start({"--testing_hold_worker"}));
  const std::string body = Scrape(*poold_);
  EXPECT_EQ(SampleValue(body, "poold_stats_snapshots_total"), 1.0);
  EXPECT_EQ(SampleValue(body, "poold_pool_live_bytes{pool=\"small\"}"), 0.0);
  // The Free below waits in the channel: the queue depth is read live.
  v1::FreeRequest free_request;
  free_request.set_handle(1);
  v1::FreeResponse free_response;
  grpc::ClientContext free_context;
  free_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Hours(1)));
  grpc::Status free_status;
  absl::Notification freed;
  client_->stub()->async()->Free(&free_context, &free_request, &free_response,
                                 [&](grpc::Status s) {
                                   free_status = std::move(s);
                                   freed.Notify();
                                 });
  const absl::Time limit = absl::Now() + absl::Seconds(30);
  while (SampleValue(Scrape(*poold_), "poold_queue_depth") != 1.0 &&
         absl::Now() < limit) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(SampleValue(Scrape(*poold_), "poold_queue_depth"), 1.0);

  v1::GetStatsRequest request;
  v1::GetStatsResponse stats;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  const grpc::Status status =
      client_->stub()->GetStats(&context, request, &stats);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(stats.snapshot_sequence(), 1u);
  EXPECT_EQ(stats.pools_size(), 3);
  // A consistent GetStats needs the worker: it cannot answer in time.
  request.set_consistent(true);
  grpc::ClientContext consistent_context;
  consistent_context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
  EXPECT_EQ(client_->stub()
                ->GetStats(&consistent_context, request, &stats)
                .error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  free_context.TryCancel();
  freed.WaitForNotification();
}

TEST_F(MetricsE2eTest, EveryMetricIsDocumentedInBothReadmes) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // A defragmentation first, so that every family has samples.
  v1::DefragReport report;
  ASSERT_TRUE(client_->Defragment({}, &report).ok());
  const std::set<std::string> families = Families(Scrape(*poold_));
  EXPECT_GT(families.size(), 40u);
  for (const char* file : {"/README.md", "/deploy/README.md"}) {
    const std::string readme =
        ReadFileOrFail(absl::StrCat(POOLD_SOURCE_DIR, file));
    for (const std::string& family : families) {
      EXPECT_TRUE(absl::StrContains(readme, absl::StrCat("`", family, "`")))
          << family << " is served but not listed in " << file;
    }
  }
}

TEST_F(MetricsE2eTest, AMetricsAddressInUseStopsPooldNamingTheFlag) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string taken =
      Origin(poold_->metrics_url()).substr(strlen("http://"));
  PooldProcess::Options options;
  options.metrics_listen = taken;
  absl::StatusOr<std::unique_ptr<PooldProcess>> second =
      PooldProcess::Spawn(options);
  ASSERT_TRUE(second.ok()) << second.status();
  absl::StatusOr<int> code = (*second)->WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_NE(*code, 0);
  EXPECT_THAT((*second)->Log(), HasSubstr("--metrics_listen"));
  EXPECT_THAT((*second)->Log(), HasSubstr(taken));
}

// A port free on loopback now (bound, read and closed: another process may
// take it before it is used, which then fails the test loudly).
int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

// A Prometheus server of Debian's prometheus package, on loopback, with its
// HTTP API.
class PrometheusServer {
 public:
  // Starts it with `config` (YAML) in `dir` and waits until it is ready.
  static absl::StatusOr<std::unique_ptr<PrometheusServer>> Start(
      const std::string& dir, const std::string& config) {
    std::ofstream(dir + "/prometheus.yml") << config;
    const int port = FreeLoopbackPort();
    absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Spawn(
        {"/usr/bin/prometheus", "--config.file=" + dir + "/prometheus.yml",
         "--storage.tsdb.path=" + dir + "/prometheus-data",
         absl::StrCat("--web.listen-address=127.0.0.1:", port),
         "--log.level=warn"},
        dir + "/prometheus.log");
    if (!process.ok()) return process.status();
    auto server =
        absl::WrapUnique(new PrometheusServer(*std::move(process), port, dir));
    const absl::Time limit = absl::Now() + absl::Seconds(60);
    while (true) {
      httplib::Result ready = server->client_.Get("/-/ready");
      if (ready && ready->status == 200) return server;
      if (!server->process_->Running() || absl::Now() >= limit) {
        return absl::UnavailableError(
            absl::StrCat("prometheus did not get ready; its log:\n",
                         server->process_->ReadOutput()));
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  }

  // GET /api/v1/query for `query`, parsed. "status" is "success" for a
  // valid query; data.result holds the series.
  absl::StatusOr<google::protobuf::Struct> Query(const std::string& query) {
    httplib::Result result = client_.Get(
        "/api/v1/query", httplib::Params{{"query", query}}, httplib::Headers{});
    if (!result) {
      return absl::UnavailableError(httplib::to_string(result.error()));
    }
    google::protobuf::Struct parsed;
    if (!google::protobuf::util::JsonStringToMessage(result->body, &parsed)
             .ok()) {
      return absl::InternalError("not JSON: " + result->body);
    }
    return parsed;
  }

  // The number of series `query` returns now (-1 when it failed).
  int SeriesCount(const std::string& query) {
    absl::StatusOr<google::protobuf::Struct> answer = Query(query);
    if (!answer.ok() ||
        answer->fields().at("status").string_value() != "success") {
      return -1;
    }
    return answer->fields()
        .at("data")
        .struct_value()
        .fields()
        .at("result")
        .list_value()
        .values_size();
  }

  std::string Log() const { return process_->ReadOutput(); }

 private:
  PrometheusServer(std::unique_ptr<Subprocess> process, int port,
                   std::string dir)
      : process_(std::move(process)),
        client_(absl::StrCat("http://127.0.0.1:", port)),
        dir_(std::move(dir)) {
    client_.set_read_timeout(30, 0);
  }

  std::unique_ptr<Subprocess> process_;
  httplib::Client client_;
  const std::string dir_;
};

TEST_F(MetricsE2eTest, ARealPrometheusScrapesPooldAndRunsTheDashboardQueries) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<uint64_t> handles;
  for (uint64_t size : {100u, 5000u, 100000u}) {
    v1::AllocateResponse response;
    ASSERT_TRUE(client_->Allocate(size, "", &response).ok());
    handles.push_back(response.handle());
  }
  v1::DefragReport report;
  ASSERT_TRUE(client_->Defragment({}, &report).ok());

  const std::string target =
      Origin(poold_->metrics_url()).substr(strlen("http://"));
  absl::StatusOr<std::unique_ptr<PrometheusServer>> prometheus =
      PrometheusServer::Start(
          poold_->temp_dir(),
          absl::StrCat("global:\n  scrape_interval: 1s\n"
                       "scrape_configs:\n  - job_name: poold\n"
                       "    static_configs:\n      - targets: ['",
                       target, "']\n"));
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  PrometheusServer& server = **prometheus;

  // Scraped: up, the three pools, and (after two scrapes) rates of the
  // eight RPCs.
  const absl::Time limit = absl::Now() + absl::Seconds(90);
  while (server.SeriesCount("up{job=\"poold\"} == 1") != 1 ||
         server.SeriesCount("poold_pool_resident_bytes{job=\"poold\"}") != 3 ||
         server.SeriesCount(
             "rate(poold_rpc_completed_total{job=\"poold\"}[30s])") != 8) {
    ASSERT_LT(absl::Now(), limit) << "Prometheus did not scrape poold; its "
                                     "log:\n"
                                  << server.Log();
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(server.SeriesCount("poold_rpc_service_seconds_bucket{job=\"poold\","
                               "method=\"Allocate\"}"),
            23);
  EXPECT_GT(server.SeriesCount("{__name__=~\"poold_.+\"}"), 100);

  // Every query of the dashboard, with its variables as Grafana would fill
  // them, is valid PromQL and returns series (but the failed-pools one:
  // nothing failed here).
  google::protobuf::Struct dashboard;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(
          ReadFileOrFail(absl::StrCat(POOLD_SOURCE_DIR,
                                      "/deploy/grafana/poold-dashboard.json")),
          &dashboard)
          .ok());
  int queries = 0;
  for (const google::protobuf::Value& panel :
       dashboard.fields().at("panels").list_value().values()) {
    const auto& fields = panel.struct_value().fields();
    if (fields.at("type").string_value() == "row") continue;
    ASSERT_TRUE(fields.contains("targets"))
        << fields.at("title").string_value();
    for (const google::protobuf::Value& target :
         fields.at("targets").list_value().values()) {
      const std::string expr = absl::StrReplaceAll(
          target.struct_value().fields().at("expr").string_value(),
          {{"$job", "poold"},
           {"$instance", ".*"},
           {"$__rate_interval", "30s"}});
      ++queries;
      const int series = server.SeriesCount(expr);
      if (absl::StrContains(expr, "outcome=\"failed\"")) {
        EXPECT_EQ(series, 0) << expr;
      } else {
        EXPECT_GT(series, 0)
            << fields.at("title").string_value() << ": " << expr;
      }
    }
  }
  EXPECT_GE(queries, 16);
}

}  // namespace
}  // namespace poold::testing
