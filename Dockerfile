# certrot container image: built with the Rust toolchain, run on distroless (glibc, no shell,
# no package manager) as the non-root user 65532.
#   docker build -t certrot:0.1.0 .
# The CronJob in kubernetes/ runs `certrot rotate --if-due` with this image.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that source changes rebuild only certrot. The stand-ins
# (sandbox/, `certrot demo` and `certrot sandbox`) are left out of the image: only the
# workspace member's manifest is needed, and the build has no default features.
COPY Cargo.toml Cargo.lock ./
COPY sandbox/Cargo.toml sandbox/Cargo.toml
COPY .cargo .cargo
RUN mkdir -p src benches examples sandbox/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs sandbox/src/lib.rs \
    && echo 'fn main() {}' > benches/inspect.rs \
    && cargo fetch --locked
COPY src src
COPY benches benches
COPY examples examples
RUN cargo build --release --locked --no-default-features --bin certrot \
    && install -m 0755 target/release/certrot /certrot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /certrot /usr/local/bin/certrot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/certrot"]
CMD ["rotate", "--if-due"]
