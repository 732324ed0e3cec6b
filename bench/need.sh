# Sourced by the bench scripts: `need COMMAND PACKAGE` stops the script with the
# Debian package to install when COMMAND is missing, before anything is measured.
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "$(basename "$0"): needs $1 (apt-get install $2)" >&2
    exit 1
  fi
}
