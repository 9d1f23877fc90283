#!/usr/bin/env bash
# Regenerates docs/overlay-steps.png from a real run: a real step family of another lab
# (../shared/data/abf-recordings/171116sh_0018.abf) replayed into the daemon in real time, and the
# overlay rendered offscreen after 12 long-step labels: the verdict, its evidence and the f-I points.
set -euo pipefail
cd "$(dirname "$0")/.."
rtclassify serve --source file --replay ../shared/data/abf-recordings/171116sh_0018.abf --speed 2 \
    --publish tcp://127.0.0.1:5593 --lsl-out rtclassify-steps-doc --model genetic5 --seconds 60 &
srv=$!
QT_QPA_PLATFORM=offscreen rtclassify overlay --connect tcp://127.0.0.1:5593 --screenshot docs/overlay-steps.png \
    --after-labels 12 --timeout-s 60
kill "$srv" 2>/dev/null || true
wait 2>/dev/null || true
