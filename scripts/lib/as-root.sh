# shellcheck shell=bash
# as_root CMD...: runs CMD as root: directly when root, else with sudo;
# fails when neither can. Sourced by the scripts that install Debian
# packages.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}
