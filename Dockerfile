# syntax=docker/dockerfile:1
# Production image of fido-connector: the release binary only, without the simulators
# (built with --no-default-features), on a distroless base (no shell, no package manager),
# running as a non-root user. OpenSSL is linked statically (feature vendored-openssl) so
# the runtime needs nothing but glibc and the CA certificates distroless ships.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Linker flags (packed relative relocations; glibc 2.36 as in the runtime image).
COPY .cargo ./.cargo
# The hot functions' layout (build.rs, link/symbol-order.txt: docs/performance.md).
COPY build.rs ./
COPY link ./link
COPY src ./src
RUN cargo build --release --locked --no-default-features --features vendored-openssl \
    && cp target/release/fido-connector /fido-connector \
    && mkdir -p /out/var/lib/fido-connector

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /fido-connector /usr/local/bin/fido-connector
# The embedded store and the file secret store live here when they are used (single-machine
# deployments): mount a persistent volume at this path. Azure deployments keep their state
# in Table Storage and Key Vault and need no volume.
COPY --from=build --chown=65532:65532 /out/var/lib/fido-connector /var/lib/fido-connector
ENV FIDO_CONNECTOR_LISTEN=0.0.0.0:8080 \
    FIDO_CONNECTOR_DATA_DIR=/var/lib/fido-connector
VOLUME ["/var/lib/fido-connector"]
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fido-connector"]
CMD ["serve"]
