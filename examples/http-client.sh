#!/usr/bin/env bash
# A client of stead's HTTP/JSON API, with nothing but curl.
#
# usage: examples/http-client.sh [BASE_URL]     (default: http://127.0.0.1:7480)
# needs: a node with the `account` entity deployed, e.g.
#   stead up &  stead deploy target/guests/account.wasm
set -euo pipefail

BASE=${1:-${STEAD_HTTP_URL:-http://127.0.0.1:7480}}
ID=${ACCOUNT_ID:-curl-$$}
URL="$BASE/v1/entities/account/$ID"

# POST a command; prints "<status> <body>".
send() {
  local body=$1; shift
  curl -sS -o /tmp/stead-curl-$$ -w '%{http_code}' -X POST "$URL" \
    -H 'content-type: application/json' "$@" -d "$body"
  echo " $(cat /tmp/stead-curl-$$)"
  rm -f /tmp/stead-curl-$$
}

echo "open:            $(send '{"open":{"owner":"curl"}}')"
echo "deposit:         $(send '{"deposit":{"amount":100}}' -H 'Idempotency-Key: dep-1')"
echo "deposit (retry): $(send '{"deposit":{"amount":100}}' -H 'Idempotency-Key: dep-1')"
echo "withdraw 500:    $(send '{"withdraw":{"amount":500}}')"
echo "view:            $(curl -sS "$URL")"
echo "events:          $(curl -sS "$URL/events?from=1")"
echo "types:           $(curl -sS "$BASE/v1/types")"
