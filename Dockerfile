# Multi-stage build: a small image holding the m3sup binary.
# The image needs privileges to run containerd's containers:
#   docker run --privileged --network host -v /var/lib/m3sup:/var/lib/m3sup m3sup run
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/m3sup ./cmd/m3sup

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends containerd runc ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/m3sup /usr/local/bin/m3sup
VOLUME /var/lib/m3sup
ENTRYPOINT ["/usr/local/bin/m3sup"]
CMD ["run"]
