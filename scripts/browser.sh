#!/usr/bin/env bash
# Headless Chromium and ChromeDriver for the console's browser tests (Debian's packages),
# installed when missing, the way scripts/azurite.sh installs Azurite.
#   scripts/browser.sh install    apt-get install chromium chromium-driver (once), and
#                                 npm install axe-core (pinned) into ./.browser
set -euo pipefail
cd "$(dirname "$0")/.."
AXE_VERSION=4.14.1
case "${1:-}" in
  install)
    if ! grep -q "\"version\": \"$AXE_VERSION\"" .browser/node_modules/axe-core/package.json 2>/dev/null; then
      command -v npm >/dev/null || { echo "npm is required to install axe-core" >&2; exit 1; }
      mkdir -p .browser
      npm install --prefix .browser --no-audit --no-fund --loglevel=error "axe-core@$AXE_VERSION" >&2
    fi
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
    command -v apt-get >/dev/null || { echo "apt-get is required to install Chromium" >&2; exit 1; }
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2 || true
    $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
    ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
