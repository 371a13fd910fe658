# usher container image.
#
#   docker build -t usher .
#   docker run -p 8080:8080 -e USHER_SECRET=... -v $PWD/usher.toml:/etc/usher/usher.toml:ro usher
#
# The image carries config/usher.toml as /etc/usher/usher.toml: mount your own over it (its
# upstream.addresses point at 127.0.0.1:8081, which is nothing inside a container). The admin
# listener stays on the file's loopback default, which the HEALTHCHECK below reaches from
# inside the container; to scrape /metrics from outside, set admin.listen = "0.0.0.0:9090"
# in your file and publish 9090.

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when a manifest or the lock
# changes. Every target the manifests name gets a stub, since cargo reads them all to load
# the workspace; the loadtest and bench stubs stay for that reason (only usher is built).
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/
RUN set -eu; \
    stub() { mkdir -p "$(dirname "$1")"; echo 'fn main() {}' > "$1"; }; \
    stub src/main.rs; : > src/lib.rs; \
    for p in $(sed -n 's/^path *= *"\(.*\)"/\1/p' loadtest/Cargo.toml); do stub "loadtest/$p"; done; \
    for b in $(sed -n '/^\[\[bench\]\]/,/^$/s/^name *= *"\(.*\)"/\1/p' Cargo.toml); do stub "benches/$b.rs"; done; \
    cargo build --release --locked -p usher --bin usher; \
    rm -rf src

COPY src src
# COPY keeps the files' times from the build context, which may be older than the stubs':
# touch them so cargo rebuilds usher itself.
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p usher --bin usher \
 && install -D -m 0755 target/release/usher /out/usher

# ---- run --------------------------------------------------------------------------------
FROM debian:bookworm-slim

# busybox for the HEALTHCHECK only: its wget is one ~1 MB binary with no library beyond
# libc, where curl would bring libcurl and a dozen libraries. (A `usher healthcheck`
# subcommand would make even that unnecessary.)
RUN apt-get update \
 && apt-get install -y --no-install-recommends busybox \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin usher

COPY --from=build /out/usher /usr/local/bin/usher
COPY config/usher.toml /etc/usher/usher.toml

USER usher:usher
ENV USHER_CONFIG=/etc/usher/usher.toml
# 8080: the public HTTP listener; 9090: admin (/metrics, /healthz), loopback unless configured.
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
# busybox wget exits non-zero on a refused connection, a timeout or a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["busybox", "wget", "-q", "-T", "2", "-O", "/dev/null", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/usher"]
CMD ["run"]
