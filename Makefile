# Thin wrapper over CMake. The two commands a new user needs:
#   make serve   install dependencies, build, serve the shipped models
#   make test    install dependencies, build, run every test
#
# Server flags: make serve LISTEN=0.0.0.0:50051 METRICS_LISTEN=:9464 \
#                          MODELS=/path/registry.json ARGS="--max-batch=4"
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
LISTEN ?= 127.0.0.1:50051
METRICS_LISTEN ?= 127.0.0.1:9464
MODELS ?= models/registry.json
ARGS ?=

.PHONY: all deps configure build serve test format clean

all: build

deps:
	@bash deploy/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

serve: build
	./$(BUILD_DIR)/server/ldmserve --listen=$(LISTEN) \
	  --metrics-listen=$(METRICS_LISTEN) --models=$(MODELS) $(ARGS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
