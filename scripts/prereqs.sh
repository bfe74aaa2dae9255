#!/usr/bin/env bash
# prereqs.sh — make sure this host can run m3sup: root, containerd and runc.
# Installs containerd and runc with apt when they are missing and apt exists;
# otherwise says exactly what to install. `prereqs.sh test` also installs what
# the end-to-end tests use: a local registry (docker-registry), curl and
# Prometheus (it scrapes m3sup's metrics listener in TestE2EDiskFull).
set -euo pipefail

if [[ "$(id -u)" != 0 ]]; then
  echo "m3sup needs root (it runs containerd, bind mounts and raises rlimits): re-run with sudo" >&2
  exit 1
fi
missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
if [[ "${1:-}" == test ]]; then
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "missing: ${missing[*]}. Install them with your package manager, e.g. 'apt-get install -y ${missing[*]}' (containerd >= 1.6)" >&2
exit 1
