# The release image: drgit's static musl binary (built by
# .github/workflows/release.yml into bin/linux/<arch>/) on distroless's
# static base (CA certificates, /etc/passwd with `nonroot`, no shell).
FROM gcr.io/distroless/static-debian12:nonroot
ARG TARGETARCH
COPY bin/linux/${TARGETARCH}/drgit /usr/local/bin/drgit
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/drgit"]
