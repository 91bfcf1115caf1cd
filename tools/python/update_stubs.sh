#!/usr/bin/env bash
# Regenerates the Python client's shipped stubs (client/python/ldm/v1/) from
# proto/ with the build's protoc and gRPC plugin. Run after changing the
# proto; ctest python.stubs_fresh fails until then.
set -euo pipefail
cd "$(dirname "$0")/../.."
protoc --proto_path=proto --python_out=client/python \
  --grpc_python_out=client/python \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  ldm/v1/image_synthesis.proto
echo "regenerated client/python/ldm/v1/image_synthesis_pb2*.py"
