// A real ldmserve in the test's process: an LdmServer on an ephemeral
// localhost port serving the tiny random text-to-image model
// (TinyTextToImageConfig from `weights_seed`) as `name`, the default for
// text to image, and a stub to it.
#ifndef LDMSERVE_TESTS_SERVICE_TINY_SERVER_H_
#define LDMSERVE_TESTS_SERVICE_TINY_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ldm/v1/image_synthesis.grpc.pb.h"
#include "server/ldm/latent_diffusion.h"
#include "server/service/server.h"
#include "tests/ldm/test_util.h"

namespace ldmserve::testing {

struct TinyServer {
  std::unique_ptr<LdmServer> server;
  std::unique_ptr<ldm::v1::ImageSynthesisService::Stub> stub;
};

inline absl::StatusOr<TinyServer> StartTinyServer(ServerOptions options,
                                                  const std::string& name,
                                                  uint64_t weights_seed) {
  auto model = ldm::LatentDiffusion::CreateRandom(
      ldm::testing::TinyTextToImageConfig(), weights_seed);
  if (!model.ok()) return model.status();
  auto registry = std::make_unique<ModelRegistry>(std::vector<ModelEntry>{});
  ModelEntry entry;
  entry.name = name;
  entry.tasks = {ldm::Task::kTextToImage};
  entry.default_for = {ldm::Task::kTextToImage};
  registry->AddLoaded(entry, *std::move(model));
  options.listen = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<LdmServer>> server =
      LdmServer::Start(options, std::move(registry));
  if (!server.ok()) return server.status();
  (*server)->MarkServing();
  TinyServer tiny;
  tiny.stub = ldm::v1::ImageSynthesisService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                          grpc::InsecureChannelCredentials()));
  tiny.server = *std::move(server);
  return tiny;
}

}  // namespace ldmserve::testing

#endif  // LDMSERVE_TESTS_SERVICE_TINY_SERVER_H_
