"""The ldm.v1 API's generated Python stubs (protoc 3.21 and gRPC's plugin,
from proto/ldm/v1/image_synthesis.proto; python.stubs_fresh checks that
they match the proto: regenerate with tools/python/update_stubs.sh)."""
