# PostgreSQL 15 + pgvector 0.8.0 + pg_tenancy, ready for CREATE EXTENSION pg_tenancy.
# Every step is a script that CI runs on every submission (scripts/setup, scripts/install);
# this file adds no logic of its own. The Rust toolchain is copied from the official image.
FROM debian:bookworm
COPY --from=rust:1.95-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1.95-slim-bookworm /usr/local/rustup /usr/local/rustup
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
COPY . /src/pg_tenancy
WORKDIR /src/pg_tenancy
RUN scripts/setup \
 && scripts/install --release
USER postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH
CMD ["bash", "-c", "initdb -D /var/lib/postgresql/data -U postgres >/dev/null && echo \"shared_preload_libraries = 'pg_tenancy'\" >> /var/lib/postgresql/data/postgresql.conf && exec postgres -D /var/lib/postgresql/data"]
