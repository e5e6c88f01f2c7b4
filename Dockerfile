# Multi-stage build: a static-enough binary on distroless (glibc, no shell), running as non-root.
# The binary is /usr/bin/liqo-auth; /usr/bin/auth-service links to it so the image can replace
# the reference image in the reference Helm chart (invoked as auth-service it runs `serve`).
# The toolchain link/serve.order was made with (its symbol names are this rustc's).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# `liqo-auth version` reports this commit (build.rs; .git is not in the build context).
ARG LIQO_AUTH_GIT_COMMIT=unknown
COPY Cargo.toml Cargo.lock build.rs ./
COPY link ./link
COPY src ./src
RUN cargo build --release --locked \
 && mkdir -p /out \
 && cp target/release/liqo-auth /out/liqo-auth \
 && ln -s liqo-auth /out/auth-service

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/bin/
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/bin/liqo-auth"]
CMD ["serve", "--backend", "kubernetes", "--address", ":8443", "--enable-tls"]
