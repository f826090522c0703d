#!/bin/sh
# The image's entrypoint: `tiergate "$@"` (default `serve`), after `tiergate db upgrade` when
# TIERGATE_MIGRATE=1. exec: tiergate replaces this shell, so the SIGTERM that tini (the image's
# PID 1) forwards reaches it directly.
set -eu
case "${TIERGATE_MIGRATE:-0}" in
    1 | true | yes)
        echo "tiergate-entrypoint: tiergate db upgrade" >&2
        tiergate db upgrade
        ;;
esac
if [ "$#" -eq 0 ]; then
    set -- serve
fi
case "$1" in
    tiergate | sh | bash | python | python3) exec "$@" ;;
esac
exec tiergate "$@"
