#!/bin/sh
# Walks through the crew registry API with curl. Start crewd first (make run), then:
#   examples/crews.sh [BASE_URL]        (default http://127.0.0.1:8080)
# Set CREWD_API_KEY when crewd runs with --api-key.
set -eu
BASE=${1:-http://127.0.0.1:8080}
DIR=$(dirname "$0")
AUTH=""
[ -n "${CREWD_API_KEY:-}" ] && AUTH="Authorization: Bearer $CREWD_API_KEY"
call() { # METHOD PATH [FILE]
    echo "== $1 $2"
    if [ $# -ge 3 ]; then
        curl -sS -X "$1" "$BASE$2" -H "${AUTH:-X-No-Auth: 1}" \
             -H 'Content-Type: application/json' --data-binary "@$3"
    else
        curl -sS -X "$1" "$BASE$2" -H "${AUTH:-X-No-Auth: 1}"
    fi
    echo
}
for f in research-flow sequential parallel loop; do call PUT /api/v1/crew "$DIR/$f.json"; done
call GET /api/v1/crew
call GET '/api/v1/crew/research_flow?include=plan'
call GET '/api/v1/crew?name=three_opinions'
call PUT /api/v1/crew/three_opinions "$DIR/parallel.json"
for n in research_flow summarize_then_translate three_opinions draft_and_review; do
    call DELETE "/api/v1/crew/$n"
done
