# syntax=docker/dockerfile:1
# The `spamscope` binary (every role) and the built web UI in a small,
# non-root runtime image:
#   docker build -t spamscope:dev .
#   docker run --rm spamscope:dev --help
# No Docker engine runs on the machines this project is built on: this file
# is not built by CI (see README, "What is not tested").

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Node.js 22 and npm from the npm registry (bookworm's nodejs 18 is too old
# for the UI's build tools), checked against the registry's sha512.
COPY scripts/install_node.py scripts/install_node.py
RUN python3 scripts/install_node.py /opt/node
ENV PATH=/opt/node/bin:$PATH
# Dependencies first, so that a code change does not refetch them.
COPY Cargo.toml Cargo.lock ./
COPY services services
COPY proto proto
RUN cargo fetch --locked
COPY web web
RUN cd web && npm ci --no-audit --no-fund && npm run build
RUN cargo build --release --locked -p spamscope \
    && strip target/release/spamscope

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 spamscope \
    && useradd --system --uid 10001 --gid spamscope --no-create-home --shell /usr/sbin/nologin spamscope
COPY --from=build /src/target/release/spamscope /usr/local/bin/spamscope
COPY --from=build /src/web/dist /app/web/dist
ENV SPAMSCOPE_UI_DIR=/app/web/dist \
    SPAMSCOPE_HEALTH_LISTEN=0.0.0.0:9090
WORKDIR /app
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/spamscope"]
CMD ["--help"]
