# Bulkhead appliance image: the dataplane on Debian 12's DPDK 22.11 LTS, with bulkhead-control and the web
# console (served by control from /usr/share/bulkhead/web) in the same image. Built and tried elsewhere: the
# project's test machines have no container engine; there, install the Debian packages (`cargo xtask package`,
# README "Install from packages").
#
#   docker build -t bulkhead .
#   docker run --rm --privileged --network host -v /dev/hugepages:/dev/hugepages \
#       -v $PWD/config:/etc/bulkhead bulkhead --config /etc/bulkhead/dataplane.toml
#   docker run --rm --network host -v /run/bulkhead:/run/bulkhead -v bulkhead-store:/var/lib/bulkhead-control \
#       --entrypoint bulkhead-control bulkhead --config /etc/bulkhead/control.toml
#
# The dataplane binds NICs through DPDK, so it needs --privileged (or the specific capabilities and devices
# of the PMD in use) and, in production, hugepages mounted from the host.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libdpdk-dev dpdk-dev libclang-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bulkhead-dataplane -p bulkhead-control -p bulkhead-pktgen

FROM debian:bookworm-slim
# `dpdk` brings the shared libraries and every PMD plugin (the EAL loads them from its plugin directory).
RUN apt-get update \
 && apt-get install -y --no-install-recommends dpdk iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/bulkhead-dataplane /src/target/release/bulkhead-control \
     /src/target/release/bulkhead-pktgen /usr/local/bin/
COPY config/ /etc/bulkhead/
COPY web/ /usr/share/bulkhead/web/
ENTRYPOINT ["/usr/local/bin/bulkhead-dataplane"]
CMD ["--config", "/etc/bulkhead/dataplane.toml"]
