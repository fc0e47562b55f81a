# poold's container image (see deploy/README.md).
# Stage "build" (debian:bookworm): installs the build dependencies, compiles
# poold and poolctl with CMake + Ninja and runs the unit tests (every ctest
# label but e2e and deploy). Final stage (debian:bookworm-slim): the Debian
# runtime libraries, the two binaries, a non-root user (65532:65532),
# exec-form ENTRYPOINT; by default poold serves on 127.0.0.1:50051 and on the
# Unix socket /run/poold/poold.sock, and its metrics on 0.0.0.0:9741.

FROM debian:bookworm AS build
# The repository's own list of build and test packages (one source of truth),
# and ccache.
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN /src/scripts/install-deps.sh ccache && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# A fresh build tree every time (hermetic); ccache, whose cache mount
# outlives the build, makes recompiling unchanged files cheap. It keys on
# file contents, so a stale object is never reused.
RUN --mount=type=cache,target=/ccache \
    export CCACHE_DIR=/ccache CCACHE_MAXSIZE=2G \
 && ccache --zero-stats >/dev/null \
 && cmake -S . -B /build -G Ninja -DPOOLD_BUILD_BENCH=OFF \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
 && ninja -C /build \
 && ccache --show-stats
# Unit tests only: the e2e tests start poold processes, wait out multi-second
# shutdown and reconnect timings and are CI's job (.ci/run) on the same
# sources; on a loaded builder they would only make image builds slow and
# flaky. The deploy tests check files outside the build context (deploy/).
# The shipped image itself is checked end to end by deploy/verify-image.sh.
RUN ctest --test-dir /build -LE 'e2e|deploy' --output-on-failure \
      --no-tests=error -j "$(nproc)"
# Debug info out (symbols stay, so glog's stack traces keep function names).
RUN mkdir /out \
 && strip --strip-debug -o /out/poold /build/server/poold \
 && strip --strip-debug -o /out/poolctl /build/client/poolctl

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="poold" \
      org.opencontainers.image.description="poold memory-pool gRPC server and poolctl"
# Runtime libraries of poold and poolctl (their dependencies come along:
# libgflags2.2, libunwind8, libc-ares2, libre2-9, libssl3, zlib1g,
# libbrotli1); libcpp-httplib0.11 serves /metrics.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libabsl20220623 libgoogle-glog0v6 libgrpc++1.51 libgrpc29 libprotobuf32 \
      libcpp-httplib0.11 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
      /var/log/apt /var/log/dpkg.log /var/log/alternatives.log
RUN groupadd --system --gid 65532 poold \
 && useradd --system --uid 65532 --gid 65532 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin poold \
 && install -d -o 65532 -g 65532 -m 0750 /run/poold
COPY --from=build /out/poold /out/poolctl /usr/local/bin/
# Fail the build if a shared library is missing or a binary does not start.
RUN for b in poold poolctl; do \
      if ldd "/usr/local/bin/$b" | grep 'not found'; then exit 1; fi; \
    done \
 && poold --version >/dev/null && poolctl --help >/dev/null

USER 65532:65532
EXPOSE 50051 9741
STOPSIGNAL SIGTERM
# For `docker run`; Kubernetes ignores HEALTHCHECK and uses the manifest's
# probes. Kept only by the Docker image format (buildah bud --format docker).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/poolctl", "health", "--target=unix:/run/poold/poold.sock", "--connect_timeout=2s", "--timeout=2s"]
ENTRYPOINT ["/usr/local/bin/poold"]
CMD ["--listen=127.0.0.1:50051", "--unix_socket=/run/poold/poold.sock", "--metrics_listen=0.0.0.0:9741"]
