// The load generator behind `ldmctl bench`: the load loop
// (client/load_loop.h) with each request sent over gRPC as one streaming
// Generate call.
//
// Thread-safe: RunLoad may be called from any thread; it owns its threads
// and joins them all before returning.
#ifndef LDMSERVE_CLIENT_LOAD_GENERATOR_H_
#define LDMSERVE_CLIENT_LOAD_GENERATOR_H_

#include <functional>

#include "client/load_loop.h"
#include "ldm/v1/image_synthesis.grpc.pb.h"

namespace ldmctl {

// Fills everything of a request but what the plan decides (task inputs come
// from the caller: prompt, images, model...). False = a usage error.
using RequestBuilder = std::function<bool(const PlannedRequest& plan,
                                          ldm::v1::GenerateRequest* request)>;

LoadReport RunLoad(ldm::v1::ImageSynthesisService::Stub& stub,
                   const LoadOptions& options, const RequestBuilder& build);

// Name of a gRPC status code ("OK", "RESOURCE_EXHAUSTED", ...).
const char* StatusCodeName(int code);

}  // namespace ldmctl

#endif  // LDMSERVE_CLIENT_LOAD_GENERATOR_H_
