#!/usr/bin/env bash
# The agent as its image ships it (scripts/build-static.sh says how and why).
exec "$(dirname "$0")/build-static.sh" flink-agent "$@"
