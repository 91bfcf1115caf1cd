# Two stages: build with the -dev packages, run with the run-time libraries
# only. Both use deploy/install-deps.sh, the one package list.
FROM debian:12 AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
COPY tools/buf/package.json tools/buf/package-lock.json tools/buf/
RUN bash deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DLDMSERVE_BUILD_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target ldmserve ldmctl

FROM debian:12-slim
COPY deploy/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /build/server/ldmserve /build/client/ldmctl /usr/local/bin/
COPY models /opt/ldmserve/models
RUN useradd --system --uid 10001 ldmserve
USER 10001
EXPOSE 50051 9464
# Exec form: SIGTERM reaches ldmserve, which drains and exits 0.
ENTRYPOINT ["/usr/local/bin/ldmserve", "--listen=0.0.0.0:50051", \
            "--metrics-listen=0.0.0.0:9464", \
            "--models=/opt/ldmserve/models/registry.json"]
