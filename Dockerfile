# syntax=docker/dockerfile:1
#
# The Shoal node's image: one static binary (musl; the only C in the build is ring's,
# which musl builds) on distroless `static`, run as the non-root user 65532, as
# deploy/base/statefulset.yaml expects (command /usr/local/bin/shoal, read-only root
# filesystem, every file it reads mounted under /etc/shoal, its store on /var/lib/shoal).
#
#   docker build -t shoal:dev .
#
# This image is NOT built or tested on Shoal's development machines: they have no
# container runtime and no registry. The tests run the same binary as a local process
# in place of each pod instead (tests/src/pods.rs). tests/kind/run.sh builds it on a
# machine with Docker.

FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shoal-node --bin shoal \
    && cp target/release/shoal /usr/local/bin/shoal

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /usr/local/bin/shoal /usr/local/bin/shoal
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/shoal"]
CMD ["run", "--config", "/etc/shoal/config/shoal.toml"]
