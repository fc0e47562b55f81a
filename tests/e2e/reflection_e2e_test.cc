// End-to-end tests of server reflection on the real poold, with a client of
// the grpc.reflection.v1alpha protocol: it lists poold.v1.PoolService and
// describes it and grpc.health.v1.Health completely.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

using ::grpc::reflection::v1alpha::ServerReflection;
using ::grpc::reflection::v1alpha::ServerReflectionRequest;
using ::grpc::reflection::v1alpha::ServerReflectionResponse;
using ::testing::IsSupersetOf;

class ReflectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
        PooldProcess::Start({});
    ASSERT_TRUE(poold.ok()) << poold.status();
    poold_ = poold->release();
  }
  static void TearDownTestSuite() {
    if (poold_ == nullptr) return;
    EXPECT_EQ(poold_->Stop().value_or(-1), 0);
    delete poold_;
    poold_ = nullptr;
  }

  // One request on a ServerReflectionInfo stream; its one response.
  static ServerReflectionResponse Ask(const ServerReflectionRequest& request) {
    auto stub = ServerReflection::NewStub(poold_->NewChannel());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    auto stream = stub->ServerReflectionInfo(&context);
    ServerReflectionResponse response;
    EXPECT_TRUE(stream->Write(request));
    EXPECT_TRUE(stream->WritesDone());
    EXPECT_TRUE(stream->Read(&response));
    grpc::Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Loads the files reflection returns for `symbol` (with their imports)
  // into `database`.
  static void LoadFilesContaining(
      const std::string& symbol,
      google::protobuf::SimpleDescriptorDatabase* database) {
    ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    ServerReflectionResponse response = Ask(request);
    ASSERT_TRUE(response.has_file_descriptor_response())
        << response.error_response().error_message();
    for (const std::string& bytes :
         response.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto file;
      ASSERT_TRUE(file.ParseFromString(bytes));
      database->Add(file);
    }
  }

  static PooldProcess* poold_;
};

PooldProcess* ReflectionTest::poold_ = nullptr;

TEST_F(ReflectionTest, ListsTheServices) {
  ServerReflectionRequest request;
  request.set_list_services("*");
  ServerReflectionResponse response = Ask(request);
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  EXPECT_THAT(names,
              IsSupersetOf({"poold.v1.PoolService", "grpc.health.v1.Health",
                            "grpc.reflection.v1alpha.ServerReflection"}));
}

TEST_F(ReflectionTest, DescribesThePoolService) {
  google::protobuf::SimpleDescriptorDatabase database;
  LoadFilesContaining("poold.v1.PoolService", &database);
  google::protobuf::DescriptorPool pool(&database);
  const google::protobuf::ServiceDescriptor* service =
      pool.FindServiceByName("poold.v1.PoolService");
  ASSERT_NE(service, nullptr);
  std::vector<std::string> methods;
  for (int i = 0; i < service->method_count(); ++i) {
    methods.push_back(service->method(i)->name());
  }
  EXPECT_THAT(methods, ::testing::ElementsAre(
                           "Allocate", "Write", "Read", "Free", "GetStats",
                           "AnalyzeFragmentation", "TriggerDefragmentation",
                           "Batch", "BatchStream"));
  const google::protobuf::MethodDescriptor* defrag =
      service->FindMethodByName("TriggerDefragmentation");
  ASSERT_NE(defrag, nullptr);
  // Resolved through the imports reflection sent (google.protobuf.Duration).
  const google::protobuf::FieldDescriptor* duration =
      defrag->output_type()->FindFieldByName("duration");
  ASSERT_NE(duration, nullptr);
  EXPECT_EQ(duration->message_type()->full_name(), "google.protobuf.Duration");
}

TEST_F(ReflectionTest, DescribesTheHealthService) {
  google::protobuf::SimpleDescriptorDatabase database;
  LoadFilesContaining("grpc.health.v1.Health", &database);
  google::protobuf::DescriptorPool pool(&database);
  const google::protobuf::ServiceDescriptor* health =
      pool.FindServiceByName("grpc.health.v1.Health");
  ASSERT_NE(health, nullptr);
  const google::protobuf::MethodDescriptor* check =
      health->FindMethodByName("Check");
  ASSERT_NE(check, nullptr);
  EXPECT_EQ(check->input_type()->full_name(),
            "grpc.health.v1.HealthCheckRequest");
  const google::protobuf::MethodDescriptor* watch =
      health->FindMethodByName("Watch");
  ASSERT_NE(watch, nullptr);
  EXPECT_TRUE(watch->server_streaming());
  const google::protobuf::EnumDescriptor* serving_status =
      pool.FindEnumTypeByName(
          "grpc.health.v1.HealthCheckResponse.ServingStatus");
  ASSERT_NE(serving_status, nullptr);
  EXPECT_NE(serving_status->FindValueByName("NOT_SERVING"), nullptr);
}

}  // namespace
}  // namespace poold::testing
