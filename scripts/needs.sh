# Sourced by scripts/test and scripts/uni-wizard: installs missing commands from Debian's
# packages (`apt-get`, as root or through sudo) and exports PROTOC.

log() { printf '\n==> %s\n' "$*" >&2; }

# What building needs at all: the etcd-client crate's build script compiles etcd's protos with
# `protoc` (our own protos build with protox, in Rust).
build_needs=(
  "protoc:protobuf-compiler"
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need CMD:PACKAGE...: installs the packages of the commands that are missing, then checks.
need() {
  local missing=() entry
  for entry in "$@"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
  for entry in "$@"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || { echo "error: ${entry%%:*} is still missing after install" >&2; exit 1; }
  done
}
