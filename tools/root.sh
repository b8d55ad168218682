#!/bin/sh
# Runs its arguments as root: directly when already root, through sudo otherwise (keeping the
# environment, e.g. CONVOY_TEST_S3_ENDPOINT). Used by `npm run daemon` and `npm test`.
if [ "$(id -u)" = 0 ]; then exec "$@"; fi
if command -v sudo >/dev/null 2>&1; then exec sudo --preserve-env -- "$@"; fi
echo "convoy: this needs root (it mounts): run it as root, or install sudo" >&2
exit 1
