# Helpers sourced by the scripts in this directory (run from the repository root).

# Installs Debian packages, through sudo when not root.
apt_install() {
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

# Whether the Mosquitto broker is installed.
have_mosquitto() {
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]
}

# What the measuring scripts (bench-broker.sh, bench-connect.sh, soak.sh) need: Mosquitto, then release
# builds of the plugin, the mqtt-policy CLI, mqtt-loadgen and the broker harness's mqtt-testbroker.
# Built as one workspace build: `-p` selections resolve features differently, and each different
# set rebuilds wasmtime.
prepare_release_tools() {
  if ! have_mosquitto; then
    echo "==> installing Mosquitto from Debian's packages"
    apt_install mosquitto
  fi
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
  echo "==> building the plugin, the mqtt-policy CLI, mqtt-loadgen and mqtt-testbroker (release)"
  cargo build --locked --quiet --release --workspace
}
