# pg_tenancy images. Every step is a script that CI runs on every submission (scripts/setup,
# scripts/install, and scripts/extension-volume-test for the volume layout); this file adds no
# logic of its own. There is no container engine on the machines CI runs on, so CI proves the
# scripts, not this file.
#   docker build --build-arg PG_MAJOR=18 --target runtime .           PostgreSQL + pgvector + pg_tenancy
#   docker build --build-arg PG_MAJOR=18 --target extension-volume .  only the extension's files, in the
#                                                                     layout of CloudNativePG's image-volume
#                                                                     extensions (lib/, share/extension/)
ARG PG_MAJOR=18

# Build stage: the same setup and install scripts as CI, for the chosen major.
FROM debian:bookworm AS build
ARG PG_MAJOR
COPY --from=rust:1.95-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1.95-slim-bookworm /usr/local/rustup /usr/local/rustup
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
COPY . /src/pg_tenancy
WORKDIR /src/pg_tenancy
RUN PG_MAJOR=$PG_MAJOR scripts/setup \
 && PG_MAJOR=$PG_MAJOR scripts/install --release --volume /out/pg_tenancy \
 && mkdir -p /out/pgvector/lib /out/pgvector/share/extension \
 && cp "$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --pkglibdir)/vector.so" /out/pgvector/lib/ \
 && cp "$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --sharedir)"/extension/vector* /out/pgvector/share/extension/

# Runtime: the official postgres image of the major with pgvector and pg_tenancy added.
FROM postgres:${PG_MAJOR}-bookworm AS runtime
ARG PG_MAJOR
COPY --from=build /out/pg_tenancy/lib/ /out/pgvector/lib/ /usr/lib/postgresql/${PG_MAJOR}/lib/
COPY --from=build /out/pg_tenancy/share/extension/ /out/pgvector/share/extension/ /usr/share/postgresql/${PG_MAJOR}/extension/
RUN echo "shared_preload_libraries = 'pg_tenancy'" >> /usr/share/postgresql/postgresql.conf.sample

# The extension alone, for an image volume (PostgreSQL 18: extension_control_path = '/ext/pg_tenancy/share:$system',
# dynamic_library_path = '/ext/pg_tenancy/lib:$libdir', where the volume is mounted at /ext/pg_tenancy).
FROM scratch AS extension-volume
COPY --from=build /out/pg_tenancy/ /
