# Sourced by the scripts that need root (network namespaces, nftables):
# as root they go on; as another user they run again through sudo, keeping
# the caller's PATH (cargo, kubectl); without sudo they say what to do.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo --preserve-env env "PATH=$PATH" "$(readlink -f "$0")" "$@"
  fi
  echo "$(basename "$0"): run as root (it creates network namespaces and nftables rules)" >&2
  exit 1
fi
