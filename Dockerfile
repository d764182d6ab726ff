FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/stripe-sync /src/target/release/stripe-inbound \
     /src/target/release/outbox-relay /src/target/release/stripe-outbound \
     /src/target/release/order-notifier /src/target/release/stripe-commands \
     /src/target/release/salesforce-outbound /src/target/release/salesforce-inbound \
     /usr/local/bin/
USER nobody
