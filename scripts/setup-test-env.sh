#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, idempotently:
#  - Debian packages: nftables and iproute2 (node networking tests), curl,
#    iptables (the kube2iam stand-in of the cut-over test) and prometheus
#    (for promtool: the shipped alert rules are checked and unit-tested);
#  - a project-local Python venv (.venv) with moto (STS/IAM/S3), awscli, boto3,
#    kubernetes-validate (offline schema checks of the manifests) and
#    helm-python-sdk (Helm's Go library, to render and lint the chart
#    without a helm binary; Python >= 3.10).
# kubectl and the Rust toolchain are expected on the machine already.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq
  # --no-install-recommends: promtool is all the tests need of prometheus.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

command -v kubectl >/dev/null 2>&1 || { echo "setup: kubectl is required" >&2; exit 1; }

venv=${IAMLET_TEST_VENV:-.venv}
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/aws" ] || [ ! -x "$venv/bin/kubernetes-validate" ] \
  || ! "$venv/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
  echo "setup: creating $venv with moto, awscli, boto3, kubernetes-validate and helm-python-sdk"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    'moto[server]==5.2.5' 'awscli==1.46.3' 'boto3==1.44.5' 'botocore==1.44.5' \
    'kubernetes-validate==1.37.0' 'helm-python-sdk==0.2.2'
fi
