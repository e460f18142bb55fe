# One image with the three Deposito commands: `deposito` (client), `deposito-operator` and
# `deposito-replica`, running as the non-root user 65532, on an empty base (`scratch`) with
# exactly the shared libraries the binaries load. Used by docker-compose.yml and the Helm chart.
#
# Two ways to build it:
#   docker build -t deposito:0.1.0 .
#       from source (the default, last stage); pulls the Rust build image.
#   cargo build --release --bins && docker/rootfs.sh docker/rootfs target/release &&
#   docker build --target prebuilt -t deposito:0.1.0 .
#       from binaries built on this machine; pulls nothing (tests/compose/e2e builds it so).
#       `prebuilt` comes first, so even the classic builder (no BuildKit) builds nothing else.

# From binaries built outside Docker: docker/rootfs must hold docker/rootfs.sh's output.
FROM scratch AS prebuilt
COPY docker/rootfs/root/ /
COPY --chown=65532:65532 docker/rootfs/data/ /data/
USER 65532:65532
WORKDIR /data
EXPOSE 7800 7070
CMD ["deposito-operator", "--help"]

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins -p deposito-operator -p deposito-client \
 && sh docker/rootfs.sh /rootfs target/release

# From source.
FROM scratch AS source
COPY --from=build /rootfs/root/ /
COPY --from=build --chown=65532:65532 /rootfs/data/ /data/
USER 65532:65532
WORKDIR /data
EXPOSE 7800 7070
CMD ["deposito-operator", "--help"]
