# The Deposito image, from source: the three commands `deposito` (client), `deposito-operator`
# and `deposito-replica`, running as the non-root user 65532, on an empty base (`scratch`) with
# exactly the shared libraries the binaries load. Used by docker-compose.yml and the Helm chart.
#
#   docker build -t deposito:0.1.0 .
#       compiles inside the Rust build image (pulls it). Works with BuildKit and with the
#       classic builder: nothing here reads files that a fresh checkout lacks.
#
# From binaries already built on this machine, pulling nothing (what tests/compose/e2e and
# tests/cluster/up --node real do), use docker/Dockerfile.prebuilt:
#   cargo build --release --bins && docker/rootfs.sh docker/rootfs target/release &&
#   docker build -f docker/Dockerfile.prebuilt -t deposito:0.1.0 .

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins -p deposito-operator -p deposito-client \
 && sh docker/rootfs.sh /rootfs target/release

FROM scratch
COPY --from=build /rootfs/root/ /
COPY --from=build --chown=65532:65532 /rootfs/data/ /data/
USER 65532:65532
WORKDIR /data
EXPOSE 7800 7070
CMD ["deposito-operator", "--help"]
