#!/usr/bin/env bash
# Regenerates docs/overlay.png from a real run: the simulator plays real Allen APs
# (../shared/data/allen-ctdb-spikes; without it, the built-in neuron models), the daemon classifies
# them with the shipped genetic5, and the overlay renders offscreen after a cell's third label.
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/allen-ctdb-spikes
[ -d "$data" ] && data_opt=(--data "$data") || data_opt=()
rtclassify simulate --sink zmq --bind tcp://127.0.0.1:5591 "${data_opt[@]}" --headstages 2 --sweeps 6 \
    --subthreshold-every 6 --seconds 30 --seed 3 &
sim=$!
rtclassify serve --source zmq --connect tcp://127.0.0.1:5591 --publish tcp://127.0.0.1:5592 --model genetic5 --label-window \
    --seconds 40 &
srv=$!
QT_QPA_PLATFORM=offscreen rtclassify overlay --connect tcp://127.0.0.1:5592 --screenshot docs/overlay.png \
    --after-labels 8 --timeout-s 40
kill "$sim" "$srv" 2>/dev/null || true
wait 2>/dev/null || true
