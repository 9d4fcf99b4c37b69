# Builds the offboard binary and a small runtime image. Used by docker-compose.yml.
#   docker build -t offboard --build-arg OFFBOARD_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .
# (without the argument, /metrics reports commit "unknown": .git is not sent to the build, see .dockerignore).
# The toolchain rust-toolchain.toml pins, so rustup downloads nothing more.
FROM rust:1.95.0-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The image's binary carries no debug info (Cargo.toml keeps line tables for local release builds), and is
# stripped. Set before the dependency layer, so both builds share one profile.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true

# Dependencies first, in a layer of their own that is rebuilt only when the manifest, the lockfile or the
# toolchain change: build them against empty targets (every target Cargo.toml names must exist).
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for b in scim filter tokens fanout audit fanout_cost; do echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked \
    && rm -rf src benches target/release/offboard target/release/deps/offboard-* target/release/deps/liboffboard-* \
        target/release/.fingerprint/offboard-*

# Then the source: only offboard itself is compiled here.
COPY . .
ARG OFFBOARD_GIT_COMMIT
RUN cargo build --release --locked && cp target/release/offboard /usr/local/bin/offboard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/offboard --create-home offboard
COPY --from=build /usr/local/bin/offboard /usr/local/bin/offboard
USER offboard
WORKDIR /var/lib/offboard
EXPOSE 8080
ENTRYPOINT ["offboard"]
CMD ["serve"]
