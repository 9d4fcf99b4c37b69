# Builds the offboard binary and a small runtime image. Used by docker-compose.yml.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
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
